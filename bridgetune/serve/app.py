"""The HTTP service: `create_app(model_dir)` returns a FastAPI app with its OpenAPI document.

Endpoints (bridgetune.serve.routes; chat in bridgetune.serve.chat): POST /v1/predict, POST
/v1/rank (ranking models), POST /v1/generate and OpenAI's POST /v1/chat/completions and GET
/v1/models (generative models), POST /v1/feedback, GET /v1/info, GET /health, GET /ready, GET
/metrics, POST /admin/reload, and the playground page at /. This module builds the app: the
model loading in the background, the micro-batcher, middleware and error handlers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from bridgetune.config import ServeConfig
from bridgetune.inference.predictor import Predictor
from bridgetune.serve.batching import MicroBatcher
from bridgetune.serve.errors import add_error_handlers
from bridgetune.serve.metrics import ServiceMetrics
from bridgetune.serve.middleware import BodyLimit, FiniteJSONRoute, RequestMetrics, RequireJSON
from bridgetune.serve.routes import ENDPOINTS, JSON_BODIES, add_routes
from bridgetune.serve.service import run_batch
from bridgetune.serve.state import Service

log = logging.getLogger("bridgetune.serve")


def create_app(model: str | Path | Predictor, config: ServeConfig | None = None) -> FastAPI:
    """A FastAPI app serving `model` (a model directory, or a loaded Predictor).

    A directory is loaded in the background at start-up: `/health` answers at once and `/ready`
    says when predictions can be served, or why the model could not be loaded (every 503 says
    it too; `POST /admin/reload` can then load a repaired directory).
    """
    config = config or ServeConfig()
    service = Service(config, model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        _set_threads(config)
        service.batcher = MicroBatcher(
            lambda p, f, e: run_batch(config, p, f, e),
            config.max_batch_texts,
            config.max_wait_ms,
            on_batch=_batch_metrics(service.metrics),
        )
        service.batcher.start()
        loading = []
        if service.slot is None:
            loading.append(asyncio.create_task(_load_initial(service)))
        if config.knowledge.documents:
            loading.append(asyncio.create_task(_load_knowledge(service)))
        yield
        for task in loading:
            task.cancel()
        await service.batcher.stop()
        if service.slot is not None and service.slot.engine:
            service.slot.engine.close()
        if service.store is not None:
            service.store.close()

    app = FastAPI(
        title="bridgetune",
        summary="Predictions, feedback and monitoring for a fine-tuned transformer.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.service = service
    app.router.route_class = FiniteJSONRoute  # set before the routes: each reads finite JSON
    add_error_handlers(app)
    add_routes(app, service)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(RequireJSON, paths=JSON_BODIES)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=service.metrics, endpoints=ENDPOINTS)
    return app


def _version() -> str:
    from bridgetune._version import __version__

    return __version__


def _set_threads(config: ServeConfig) -> None:
    import torch

    cores = os.cpu_count() or 1
    torch.set_num_threads(config.threads or max(1, cores // config.workers))


def _batch_metrics(metrics: ServiceMetrics):
    def record(texts: int, seconds: float) -> None:
        metrics.batch_texts.observe(texts)
        metrics.batch_seconds.observe(seconds)

    return record


async def _load_initial(service: Service) -> None:
    try:
        predictor = await run_in_threadpool(service.load, service.source)
        service.install(predictor)  # a ConfigError: monitor thresholds name unknown labels
    except (OSError, ValueError, KeyError) as error:  # the directory: ModelError and kin
        service.failed(f"cannot load {service.source}: {error}")
        return
    except Exception as error:  # noqa: BLE001 - a bug: the traceback is logged, the reason told
        log.exception("could not load the model from %s", service.source)
        service.failed(f"cannot load {service.source}: {type(error).__name__}: {error}")
        return
    log.info("serving %s (%s)", service.slot.version, service.slot.task)


async def _load_knowledge(service: Service) -> None:
    from bridgetune.inference.retrieval import KnowledgeBase

    settings = service.config.knowledge
    try:
        service.knowledge = await run_in_threadpool(
            KnowledgeBase.load, settings.documents, settings.encoder, settings.chunk_chars,
            retriever=settings.model,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 - reported on /ready and in every 503
        log.exception("could not load the knowledge base %s", settings.documents)
        service.failed(
            f"cannot load the knowledge base {settings.documents}: {error}", knowledge=True
        )
