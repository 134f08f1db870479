"""MicroBatcher with a fake model: batches form under load, each request gets its own answers,
models are never mixed, failures reach every waiting request."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from bridgetune.data.schema import Example
from bridgetune.serve.batching import MicroBatcher


class Recorder:
    """A fake run function: echoes each text, records batches, can block or fail."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.batches: list[tuple[object, list[str]]] = []
        self.delay = delay
        self.fail = fail
        self.release = threading.Event()
        self.release.set()

    def __call__(self, predictor, features, examples):
        self.release.wait()
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model exploded")
        self.batches.append((predictor, [e.text for e in examples]))
        return [{"echo": e.text, "model": predictor} for e in examples]


def job(texts: list[str]) -> tuple[list[dict], list[Example]]:
    return [{"input_ids": [0] * len(t)} for t in texts], [Example(text=t) for t in texts]


async def _submit(batcher: MicroBatcher, predictor: object, texts: list[str]) -> list[dict]:
    return await batcher.submit(predictor, *job(texts))


def test_concurrent_requests_share_batches_and_get_their_own_answers() -> None:
    run = Recorder(delay=0.02)

    async def scenario() -> list[list[dict]]:
        batcher = MicroBatcher(run, max_texts=64, max_wait_ms=5)
        batcher.start()
        answers = await asyncio.gather(
            *[_submit(batcher, "m", [f"r{i}-a", f"r{i}-b"]) for i in range(40)]
        )
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    for i, answer in enumerate(answers):
        assert [a["echo"] for a in answer] == [f"r{i}-a", f"r{i}-b"]
    assert len(run.batches) < 10  # 80 texts in a few passes, not 40
    assert max(len(texts) for _, texts in run.batches) <= 64
    served = sorted(text for _, texts in run.batches for text in texts)
    assert served == sorted(f"r{i}-{s}" for i in range(40) for s in "ab")  # each text once


def test_a_lone_request_waits_at_most_max_wait() -> None:
    run = Recorder()

    async def scenario() -> float:
        batcher = MicroBatcher(run, max_wait_ms=20)
        batcher.start()
        started = time.perf_counter()
        await _submit(batcher, "m", ["alone"])
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return elapsed

    assert asyncio.run(scenario()) < 0.5
    assert run.batches == [("m", ["alone"])]


def test_batches_never_mix_models() -> None:
    run = Recorder()
    run.release.clear()  # hold the first batch so that the queue fills with both models

    async def scenario() -> list[list[dict]]:
        batcher = MicroBatcher(run, max_wait_ms=0)
        batcher.start()
        first = asyncio.create_task(_submit(batcher, "old", ["x"]))
        await asyncio.sleep(0.05)
        rest = [
            asyncio.create_task(_submit(batcher, model, [f"{model}{i}"]))
            for i, model in enumerate(["old", "old", "new", "old", "new"])
        ]
        await asyncio.sleep(0.05)
        run.release.set()
        answers = await asyncio.gather(first, *rest)
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    for predictor, texts in run.batches:
        assert all(text.startswith(predictor) or text == "x" for text in texts)
    assert [a[0]["model"] for a in answers] == ["old", "old", "old", "new", "old", "new"]


def test_a_failing_batch_fails_each_of_its_requests() -> None:
    async def scenario() -> list:
        batcher = MicroBatcher(Recorder(fail=True), max_wait_ms=1)
        batcher.start()
        results = await asyncio.gather(
            *[_submit(batcher, "m", ["a"]) for _ in range(3)], return_exceptions=True
        )
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)


def test_stop_fails_queued_requests_instead_of_leaving_them_hanging() -> None:
    run = Recorder()
    run.release.clear()

    async def scenario() -> None:
        batcher = MicroBatcher(run, max_wait_ms=0)
        batcher.start()
        tasks = [asyncio.create_task(_submit(batcher, "m", ["a"])) for _ in range(3)]
        await asyncio.sleep(0.05)
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0.05)
        run.release.set()
        await stopping
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:  # the running batch finished, queued ones were refused
            assert isinstance(result, list) or "shutting down" in str(result)
        with pytest.raises(RuntimeError, match="shutting down"):
            await _submit(batcher, "m", ["late"])

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))


@pytest.mark.parametrize("max_texts", [1, 3])
def test_a_request_larger_than_max_texts_still_runs(max_texts: int) -> None:
    run = Recorder()

    async def scenario() -> list[dict]:
        batcher = MicroBatcher(run, max_texts=max_texts, max_wait_ms=0)
        batcher.start()
        answer = await _submit(batcher, "m", ["a", "b", "c", "d"])
        await batcher.stop()
        return answer

    assert [a["echo"] for a in asyncio.run(scenario())] == ["a", "b", "c", "d"]
