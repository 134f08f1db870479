"""The mutable state of one app: served model (swapped on reload), batcher, store, metrics, keys.

With several worker processes, a reload received by one worker is published to a pointer file;
the others check it at most once a second and follow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from bridgetune.config import ServeConfig
from bridgetune.inference.predictor import Predictor
from bridgetune.lifecycle.atomic import atomic_write_text
from bridgetune.serve.batching import MicroBatcher
from bridgetune.serve.metrics import ServiceMetrics
from bridgetune.serve.service import ModelSlot, Observer, RequestError, open_store

log = logging.getLogger("bridgetune.serve")

# a multi-worker service (bridgetune.serve.run): the spec each worker builds its app from, and
# the file that names the model every worker serves (so a reload reaches them all)
SPEC_ENV = "BRIDGETUNE_SERVE_SPEC"
POINTER_ENV = "BRIDGETUNE_MODEL_POINTER"


class Service:
    """Mutable state of one app: config, served model, batcher, store, metrics."""

    def __init__(self, config: ServeConfig, model: str | Path | Predictor) -> None:
        self.config = config
        self.metrics = ServiceMetrics()
        self.observer = Observer(self.metrics, config.monitor.webhook_url)
        self.slot: ModelSlot | None = None
        self.source = model
        self.directory = None if isinstance(model, Predictor) else Path(model)
        if isinstance(model, Predictor):
            self.directory = model.directory
            self.install(model)
        self.store = open_store(config, self.directory)
        self.batcher: MicroBatcher | None = None
        self.reloading = asyncio.Lock()
        self.generating = asyncio.Lock()  # serial generation (bridgetune.serve.chat)
        self.knowledge: Any = None  # bridgetune.inference.retrieval.KnowledgeBase once loaded
        self.api_keys = [*config.api_keys, *_env_keys("BRIDGETUNE_API_KEYS")]
        self.admin_keys = [*config.admin_keys, *_env_keys("BRIDGETUNE_ADMIN_KEYS")]
        pointer = os.environ.get(POINTER_ENV)
        self.pointer = Path(pointer) if pointer else None
        self._pointer_stamp: int | None = None
        self._pointer_checked = 0.0
        self._following: asyncio.Task | None = None
        self.load_error: str | None = None  # why the model did not load at start
        self.knowledge_error: str | None = None  # why the knowledge base did not load
        self.on_load_failure: Any = None  # called with the reason (`bridgetune serve` stops)

    def install(self, predictor: Predictor) -> ModelSlot:
        previous = self.slot
        slot = ModelSlot.create(predictor, self.config)
        self.slot = slot
        if previous is not None and previous.engine:
            previous.engine.close()  # its running generations finish; new ones go to `slot`
        self.metrics.set_model(slot.version, slot.task, previous.version if previous else None)
        self.observer.reset(slot)
        return slot

    def ready_slot(self) -> ModelSlot:
        if self.batcher is None:
            raise HTTPException(503, "the service is not started: serve the app with its lifespan")
        if self.slot is None and self.load_error:
            raise HTTPException(503, f"no model is served: {self.load_error}")
        if self.slot is None:
            raise HTTPException(503, "the model is still loading; retry in a moment")
        return self.slot

    def failed(self, reason: str, knowledge: bool = False) -> None:
        """Record why loading the model (or the knowledge base) at start failed: /ready and
        every 503 say it from now on."""
        log.error("%s", reason)
        if knowledge:
            self.knowledge_error = reason
        else:
            self.load_error = reason
        if self.on_load_failure is not None:
            self.on_load_failure(reason)

    def load(self, directory: str | Path) -> Predictor:
        return Predictor.load(directory, device="auto")

    async def reload(self, directory: str | Path) -> ModelSlot:
        """Load `directory` off the event loop and switch to it (callers hold `reloading`)."""
        try:
            predictor = await run_in_threadpool(self.load, directory)
            slot = self.install(predictor)  # ConfigError: monitor thresholds name unknown labels
        except (OSError, ValueError, KeyError) as error:
            self.metrics.reloads.labels(outcome="failed").inc()
            raise RequestError(422, f"cannot load {directory}: {error}") from None
        self.directory = Path(directory)
        self.load_error = None  # a repaired model now serves
        self.metrics.reloads.labels(outcome="ok").inc()
        return slot

    def publish(self) -> None:
        """Tell the other worker processes which model directory to serve."""
        if self.pointer is None or self.directory is None:
            return
        atomic_write_text(self.pointer, json.dumps({"model_dir": str(self.directory.resolve())}))
        self._pointer_stamp = self.pointer.stat().st_mtime_ns

    def follow(self) -> None:
        """Reload in the background when another worker published a new model (checked ≤1/s)."""
        now = time.monotonic()
        if self.pointer is None or now - self._pointer_checked < 1 or self.reloading.locked():
            return
        self._pointer_checked = now
        try:
            stamp = self.pointer.stat().st_mtime_ns
            if stamp == self._pointer_stamp:
                return
            self._pointer_stamp = stamp
            target = Path(json.loads(self.pointer.read_text(encoding="utf-8"))["model_dir"])
        except (OSError, ValueError, KeyError):
            return
        if self.directory is None or target != self.directory.resolve():
            self._following = asyncio.get_running_loop().create_task(self._follow(target))

    async def _follow(self, target: Path) -> None:
        async with self.reloading:
            try:
                slot = await self.reload(target)
            except RequestError as error:
                log.error("could not follow the reload to %s: %s", target, error)
                return
        log.info("followed a reload: now serving %s", slot.version)


def _env_keys(name: str) -> list[str]:
    return [key.strip() for key in os.environ.get(name, "").split(",") if key.strip()]
