"""Dynamic micro-batching: concurrent requests share forward passes.

Requests arrive already tokenized as jobs. One inference thread takes the queued jobs in arrival
order, up to `max_texts` texts, sorts their texts by length and runs them in forward passes under
a token budget (little padding), then hands each request its own predictions. The first job waits
at most `max_wait_ms` for company; under load the queue fills while the previous batch runs, so
batches grow with load and nobody waits for a timer. Jobs remember the predictor that encoded
them, so a batch never mixes models: requests in flight when the model is reloaded finish on the
model they started on.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bridgetune.data.schema import Example


@dataclass
class Job:
    """One request's encoded texts waiting for a batch."""

    predictor: Any
    features: list[dict]
    examples: list[Example]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


RunBatch = Callable[[Any, list[dict], list[Example]], list[dict[str, Any]]]


class MicroBatcher:
    """Queue of jobs and the single thread that runs them in batches.

    Args:
        run: predictions for (predictor, features, examples), called on the inference thread;
            it cuts the batch into forward passes of similar lengths.
        max_texts: most texts in one batch (a request with more still runs, alone).
        max_wait_ms: longest time the oldest job waits for more to arrive.
        on_batch: called with (texts, seconds) after each batch (metrics).
    """

    def __init__(
        self,
        run: RunBatch,
        max_texts: int = 256,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.run = run
        self.max_texts = max_texts
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: collections.deque[Job] = collections.deque()
        self._ready = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridgetune-infer")
        self._task: asyncio.Task | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """Finish the batch that is running, fail the queued requests, free the thread."""
        self._closing = True
        self._ready.set()
        if self._task is not None:
            await self._task
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._queue.clear()
        self._executor.shutdown(wait=False)

    async def submit(
        self, predictor: Any, features: list[dict], examples: list[Example]
    ) -> list[dict[str, Any]]:
        """Predictions for one request's features, computed in a shared batch."""
        if self._closing:
            raise RuntimeError("the server is shutting down")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(Job(predictor, features, examples, future))
        self._ready.set()
        return await future

    def fits(self, jobs: list[Job], job: Job, texts: int) -> bool:
        if not jobs:
            return True
        same_model = job.predictor is jobs[0].predictor
        return same_model and texts + len(job.features) <= self.max_texts

    def take(self) -> list[Job]:
        """The jobs of the next batch, from the head of the queue."""
        jobs: list[Job] = []
        texts = 0
        while self._queue and self.fits(jobs, self._queue[0], texts):
            job = self._queue.popleft()
            if job.future.cancelled():
                continue
            jobs.append(job)
            texts += len(job.features)
        return jobs

    def _full(self) -> bool:
        texts = sum(len(job.features) for job in self._queue)
        return texts >= self.max_texts

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await self._ready.wait()
            if self._closing:
                return
            if not self._queue:
                self._ready.clear()
                continue
            wait = self._queue[0].enqueued + self.max_wait - time.perf_counter()
            if wait > 0 and not self._full():
                await asyncio.sleep(wait)
            jobs = self.take()
            if not jobs:
                continue
            await self._run_jobs(loop, jobs)

    async def _run_jobs(self, loop: asyncio.AbstractEventLoop, jobs: list[Job]) -> None:
        features = [f for job in jobs for f in job.features]
        examples = [e for job in jobs for e in job.examples]
        started = time.perf_counter()
        try:
            predictions = await loop.run_in_executor(
                self._executor, self.run, jobs[0].predictor, features, examples
            )
        except Exception as error:  # noqa: BLE001 - every waiting request must hear about it
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        if self.on_batch is not None:
            self.on_batch(len(features), time.perf_counter() - started)
        start = 0
        for job in jobs:
            end = start + len(job.features)
            if not job.future.done():
                job.future.set_result(predictions[start:end])
            start = end
