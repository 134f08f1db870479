"""The continuous-batching generation engine (bridgetune.serve.engine): rows that join a running
batch and rows that leave it give what `model.generate` gives each prompt alone (Llama's rotary
and GPT-2's absolute positions), the shared cache drops padding-only columns, decoding options,
cancellation, deadlines, a failing model and closing for a reload."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bridgetune.serve.engine import GenerationEngine

PROMPTS = [
    "refund the money",
    "what colour",
    "refund the money is back in five days what colour black and white user",
    "user assistant",
    "black",
    "in five days what colour",
]


class Run:
    """A submitted job's events, collected on the engine thread."""

    def __init__(self, engine: GenerationEngine, prompt: list[int], **options: Any) -> None:
        self.pieces: list[str] = []
        self.summary: dict[str, Any] | None = None
        self.error: str | None = None
        self.done = threading.Event()
        self.widths: list[int] = []  # cached columns at each new piece
        self.engine = engine
        options.setdefault("max_new_tokens", 12)
        self.job = engine.submit(prompt, emit=self.emit, **options)

    def emit(self, event: tuple[str, Any]) -> None:
        kind, value = event
        if kind == "text":
            self.pieces.append(value)
            if self.engine._mask is not None:
                self.widths.append(self.engine._mask.shape[1])
        elif kind == "end":
            self.summary = value
            self.done.set()
        else:
            self.error = value
            self.done.set()

    def result(self) -> dict[str, Any]:
        assert self.done.wait(60), "the engine did not finish the job"
        assert self.error is None, self.error
        assert self.summary is not None
        return self.summary


def load(directory: Path) -> tuple[Any, Any]:
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    return model, AutoTokenizer.from_pretrained(directory)


def alone(model: Any, tokenizer: Any, ids: list[int], **options: Any) -> list[int]:
    """What model.generate writes after `ids` on its own (greedy), without the EOS."""
    with torch.inference_mode():
        output = model.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            do_sample=False, **options,
        )[0, len(ids) :].tolist()  # fmt: skip
    eos = tokenizer.eos_token_id
    return output[: output.index(eos)] if eos in output else output


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_rows_joining_and_leaving_a_running_batch_match_generate_alone(fixture, request):
    model, tokenizer = load(request.getfixturevalue(fixture))
    engine = GenerationEngine(model, tokenizer, device=torch.device("cpu"), max_length=64)
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    try:
        # a long row starts alone; the others join it mid-run, with their own limits
        first = Run(engine, ids[0], max_new_tokens=30, decoding={"min_new_tokens": 30})
        while len(first.pieces) < 3 and not first.done.is_set():
            time.sleep(0.001)
        assert not first.done.is_set()
        rest = [Run(engine, row, max_new_tokens=4 + 3 * i) for i, row in enumerate(ids[1:])]
        results = [first.result()] + [run.result() for run in rest]
    finally:
        engine.close(wait=True)
    expected = [alone(model, tokenizer, ids[0], max_new_tokens=30, min_new_tokens=30)]
    expected += [alone(model, tokenizer, row, max_new_tokens=4 + 3 * i) for i, row in
                 enumerate(ids[1:])]  # fmt: skip
    for result, run, tokens in zip(results, [first, *rest], expected):
        assert result["text"] == tokenizer.decode(tokens, skip_special_tokens=True).strip()
        assert result["tokens"] == len(tokens)
        assert "".join(run.pieces).strip() == result["text"]  # streamed = whole
    assert results[0]["tokens"] == 30 and not results[0]["finished"]
    assert engine.running == 0


def test_columns_of_rows_that_left_are_dropped(tiny_llama):
    model, tokenizer = load(tiny_llama)
    engine = GenerationEngine(model, tokenizer, device=torch.device("cpu"), max_length=64)
    long, short = tokenizer(PROMPTS[2])["input_ids"], tokenizer(PROMPTS[4])["input_ids"]
    try:
        # the short row shares the long row's (padded) columns, then keeps only its own
        gone = Run(engine, long, max_new_tokens=3, decoding={"min_new_tokens": 3})
        stays = Run(engine, short, max_new_tokens=20, decoding={"min_new_tokens": 20})
        gone.result(), stays.result()
    finally:
        engine.close(wait=True)
    # the short row's last pieces: its own columns only (prompt + tokens but the newest)
    assert stays.widths[-1] == len(short) + 20 - 1
    assert max(stays.widths) > len(short) + 3  # while the long row ran: its wider columns


def test_decoding_options_cancellation_deadline(tiny_llama):
    model, tokenizer = load(tiny_llama)
    engine = GenerationEngine(model, tokenizer, device=torch.device("cpu"), max_length=64)
    ids = tokenizer(PROMPTS[0])["input_ids"]
    try:
        greedy = Run(engine, ids, max_new_tokens=10).result()
        # sampling from the single most likely token is greedy: the sampling path, checkable
        sampled = Run(engine, ids, max_new_tokens=10, decoding={"do_sample": True, "top_k": 1})
        assert sampled.result()["text"] == greedy["text"]
        hot = Run(engine, ids, max_new_tokens=10, decoding={"do_sample": True, "temperature": 2.0})
        assert hot.result()["tokens"] <= 10
        penalized = Run(engine, ids, max_new_tokens=10, decoding={"repetition_penalty": 5.0})
        expected = alone(model, tokenizer, ids, max_new_tokens=10, repetition_penalty=5.0)
        assert penalized.result()["tokens"] == len(expected)

        endless = Run(engine, ids, max_new_tokens=400, decoding={"min_new_tokens": 400})
        while len(endless.pieces) < 2:
            time.sleep(0.001)
        endless.job.cancel()
        summary = endless.result()
        assert summary["cancelled"] and not summary["finished"] and summary["tokens"] < 400

        late = Run(engine, ids, max_new_tokens=400, decoding={"min_new_tokens": 400},
                   deadline=time.perf_counter() + 0.2)  # fmt: skip
        summary = late.result()
        assert not summary["finished"] and 0 < summary["tokens"] < 400

        cut = Run(engine, tokenizer(" ".join(["black"] * 100))["input_ids"], max_new_tokens=2)
        assert cut.result()["truncated"]  # over max_length: the beginning went
    finally:
        engine.close(wait=True)


def test_a_failing_model_fails_its_requests_and_the_engine_goes_on(tiny_llama):
    model, tokenizer = load(tiny_llama)
    engine = GenerationEngine(model, tokenizer, device=torch.device("cpu"), max_length=64)
    ids = tokenizer(PROMPTS[0])["input_ids"]
    calls = {"n": 0}
    real = engine.model

    def flaky(**arguments: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("out of memory")
        return real(**arguments)

    engine.model = flaky
    try:
        broken = Run(engine, ids, max_new_tokens=10, decoding={"min_new_tokens": 10})
        assert broken.done.wait(30) and "out of memory" in broken.error
        assert Run(engine, ids, max_new_tokens=3).result()["tokens"] > 0
    finally:
        engine.close(wait=True)


def test_close_finishes_running_jobs_and_refuses_new_ones(tiny_llama):
    model, tokenizer = load(tiny_llama)
    engine = GenerationEngine(model, tokenizer, device=torch.device("cpu"), max_length=64)
    ids = tokenizer(PROMPTS[0])["input_ids"]
    running = Run(engine, ids, max_new_tokens=20, decoding={"min_new_tokens": 20})
    queued = Run(engine, ids, max_new_tokens=5)
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        Run(engine, ids)
    assert running.result()["tokens"] == 20 and queued.result()["tokens"] > 0
    engine._thread.join(10)
    assert not engine._thread.is_alive()


def test_models_the_engine_cannot_run_are_named(tiny_t5, tiny_llama):
    from transformers import AutoModelForSeq2SeqLM, GenerationConfig

    t5 = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5)
    assert GenerationEngine.supports(t5, t5.generation_config) == "an encoder-decoder model"
    llama, _ = load(tiny_llama)
    assert GenerationEngine.supports(llama, GenerationConfig(num_beams=4)) == "beam search"
    assert "no_repeat_ngram_size" in GenerationEngine.supports(
        llama, GenerationConfig(no_repeat_ngram_size=3)
    )
    assert GenerationEngine.supports(llama, llama.generation_config) is None
