"""Dynamic micro-batching: concurrent requests share one forward pass.

Requests arrive already tokenized as jobs. One inference thread takes queued jobs in arrival
order until the token budget (padded length x texts) or the text limit is reached, runs them as
one batch and hands each request its own predictions. The first job waits at most `max_wait_ms`
for company; under load the queue fills while the previous batch runs, so batches grow with load
and nobody waits for a timer. Jobs remember the predictor that encoded them, so a batch never
mixes models: requests in flight when the model is reloaded finish on the model they started on.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bridgetune.data.batching import padded
from bridgetune.data.schema import Example


@dataclass
class Job:
    """One request's encoded texts waiting for a batch."""

    predictor: Any
    features: list[dict]
    examples: list[Example]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def longest(self) -> int:
        return max(len(f["input_ids"]) for f in self.features)


RunBatch = Callable[[Any, list[dict], list[Example]], list[dict[str, Any]]]


class MicroBatcher:
    """Queue of jobs and the single thread that runs them in batches.

    Args:
        run: predictions for (predictor, features, examples), called on the inference thread.
        batch_tokens: token budget of one batch, counted as padded length x texts.
        max_texts: most texts in one batch.
        max_wait_ms: longest time the oldest job waits for more to arrive.
        on_batch: called with (texts, seconds) after each batch (metrics).
    """

    def __init__(
        self,
        run: RunBatch,
        batch_tokens: int = 8192,
        max_texts: int = 256,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.run = run
        self.batch_tokens = batch_tokens
        self.max_texts = max_texts
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: collections.deque[Job] = collections.deque()
        self._ready = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridgetune-infer")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._queue.clear()
        self._executor.shutdown(wait=True)

    async def submit(
        self, predictor: Any, features: list[dict], examples: list[Example]
    ) -> list[dict[str, Any]]:
        """Predictions for one request's features, computed in a shared batch."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append(Job(predictor, features, examples, future))
        self._ready.set()
        return await future

    def fits(self, jobs: list[Job], job: Job, texts: int, longest: int) -> bool:
        if not jobs:
            return True
        if job.predictor is not jobs[0].predictor:
            return False
        width = padded(max(longest, job.longest))
        total = texts + len(job.features)
        return total <= self.max_texts and width * total <= self.batch_tokens

    def take(self) -> list[Job]:
        """The jobs of the next batch, from the head of the queue."""
        jobs: list[Job] = []
        texts = longest = 0
        while self._queue and self.fits(jobs, self._queue[0], texts, longest):
            job = self._queue.popleft()
            if job.future.cancelled():
                continue
            jobs.append(job)
            texts += len(job.features)
            longest = max(longest, job.longest)
        return jobs

    def _full(self) -> bool:
        texts = sum(len(job.features) for job in self._queue)
        return texts >= self.max_texts

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._ready.wait()
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
