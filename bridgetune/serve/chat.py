"""Generative models over HTTP: `POST /v1/generate`, and OpenAI's `POST /v1/chat/completions`
(plain or streamed as server-sent events) and `GET /v1/models`, so applications that speak
OpenAI's API (the official client included) talk to a fine-tuned model unchanged.

Requests go through the service's keys, body limits and metrics. Decoder-only models run every
request as a row of one continuously batched generation (bridgetune.serve.engine: requests
join and leave between tokens, up to `serve.max_batch_generations` at once); models the engine
cannot run (encoder-decoders, beam search, prompt-learning adapters) generate one request at a
time through `model.generate`. The wait before a request's first forward pass is the queue
time in the metrics. `max_tokens` is capped by `serve.max_new_tokens` and every generation by
`serve.generation_timeout_s` (it then ends as if the token limit was reached). A request whose
client goes away (a closed stream, a dropped connection) stops its generation at the next
token.
Decoding follows the model's generation config (the run's `generate:` section) unless the
request sets `temperature` (0: greedy; above 0: sampling at that temperature) or `top_p`.

One module (about 500 lines): the OpenAI-compatible endpoints, their streaming and
cancellation are one protocol; the batching engine is engine.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from bridgetune.modeldir import saved_task_options
from bridgetune.serve.engine import EngineClosed, Event, GenerationEngine
from bridgetune.serve.schemas import _Body
from bridgetune.serve.service import RequestError
from bridgetune.tasks.prompts import fill_template

log = logging.getLogger("bridgetune.serve")

ROLES = ("system", "user", "assistant")


class Decoding(BaseModel):
    """Decoding options a request may set (the model's generation config otherwise)."""

    max_tokens: int | None = Field(None, gt=0, description="Most tokens to generate.")
    max_completion_tokens: int | None = Field(None, gt=0, description="OpenAI's newer name.")
    temperature: float | None = Field(
        None, ge=0, le=2, description="0: greedy; above 0: sampling at this temperature."
    )
    top_p: float | None = Field(None, gt=0, le=1, description="Sampling: nucleus mass.")

    def decoding(self, cap: int) -> dict[str, Any]:
        """model.generate options; max_new_tokens checked against the server's cap."""
        limit = self.max_completion_tokens or self.max_tokens
        if limit is not None and limit > cap:
            raise RequestError(422, f"max_tokens={limit} is over this server's cap of {cap}")
        options: dict[str, Any] = {"max_new_tokens": limit}
        if self.temperature is not None:
            options["do_sample"] = self.temperature > 0
            if self.temperature > 0:
                options["temperature"] = self.temperature
        if self.top_p is not None and options.get("do_sample", True):
            options["top_p"] = self.top_p
        return options


class GenerateRequest(Decoding, _Body):
    """Prompts to continue (the model's saved prompt template applies, as in `bridgetune
    generate`)."""

    prompts: list[str] = Field(min_length=1, examples=[["Where is my order #4821?"]])

    @field_validator("prompts")
    @classmethod
    def _not_empty(cls, prompts: list[str]) -> list[str]:
        for index, prompt in enumerate(prompts):
            if not prompt.strip():
                raise ValueError(f"prompts[{index}] is empty or only whitespace")
        return prompts


class Generation(BaseModel):
    text: str
    tokens: int = Field(description="Tokens generated.")
    finished: bool = Field(description="Ended with EOS before the token limit.")
    truncated: bool = Field(description="The prompt was longer than max_length (its start cut).")


class GenerateResponse(BaseModel):
    model_version: str
    task: str
    generations: list[Generation]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI messages carry optional fields (name)

    role: Literal["system", "user", "assistant"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        """The content as text (OpenAI's content parts: their text parts joined)."""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(422, "only text content parts are supported")
            texts.append(part["text"])
        return "".join(texts)


class ChatRequest(Decoding, _Body):
    """OpenAI's chat completion request (the fields a text model uses; others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="Any name: this server serves one model.")
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="One choice per request.")
    retrieval: bool = Field(
        True,
        description="Search the server's knowledge base (serve.knowledge) and answer from the "
        "best passages, returned as `sources`; false: the model alone.",
    )
    stop: str | list[str] | None = Field(
        None,
        description="Not supported: generation ends at the model's end of turn or max_tokens. "
        "Only null, '' or [] is accepted (ignoring another value would answer past it).",
    )

    @field_validator("stop")
    @classmethod
    def _no_stop(cls, value: Any) -> Any:
        if value not in (None, "", []):
            raise ValueError(
                "stop sequences are not supported by this server: generation ends at the "
                "model's end of turn or at max_tokens; leave `stop` out"
            )
        return value


def add_chat_routes(app: FastAPI, service: Any, user: Any, errors: dict) -> None:
    """The generative endpoints on `app` (keys checked by the `user` dependency)."""
    config = service.config

    def generative_slot() -> Any:
        service.follow()
        slot = service.ready_slot()
        if not slot.predictor.task.generative:
            raise RequestError(
                422, f"this {slot.task} model does not generate text; it answers /v1/predict"
            )
        return slot

    def capped(slot: Any, options: dict[str, Any]) -> dict[str, Any]:
        """A request without max_tokens gets the model's default, within the server's cap."""
        from bridgetune.inference.generation import default_new_tokens

        if options.get("max_new_tokens") is None:
            model = slot.predictor.model
            default = default_new_tokens(getattr(model, "peft_model", model))
            options = {**options, "max_new_tokens": min(default, config.max_new_tokens)}
        return options

    def events(
        slot: Any, prompt: Any, options: dict[str, Any], ids: list[int] | None = None
    ) -> AsyncIterator[Event]:
        """("text", piece)... then ("end", summary) for one prompt (`ids`: its tokens, when
        known), by the engine when it can run this model, else one request at a time."""
        engine = engine_for(service, slot)
        if engine is not None:
            ids = ids if ids is not None else slot.predictor.prompt_ids(prompt)
            return _engine_events(service, slot, prompt, ids, options)
        return _serial_events(service, slot, prompt, options)

    async def complete(
        slot: Any, prompts: list, options: dict, ids: list[list[int]] | None = None
    ) -> list[dict[str, Any]]:
        """Whole generations, in order (`ids`: the prompts' tokens, when known)."""
        if engine_for(service, slot) is None:
            return await _serial_generate(service, slot, prompts, options)

        async def one(prompt: Any, tokens: list[int] | None) -> dict[str, Any]:
            async for kind, value in events(slot, prompt, options, tokens):
                if kind == "end":
                    return value
            raise RuntimeError("the generation ended without a result")

        known = ids or [None] * len(prompts)
        results = await asyncio.gather(*(one(p, t) for p, t in zip(prompts, known)))
        return [{k: r[k] for k in ("text", "tokens", "finished", "truncated")} for r in results]

    @app.post(
        "/v1/generate",
        tags=["generation"],
        response_model=GenerateResponse,
        responses=errors,
        dependencies=[Depends(user)],
    )
    async def generate_text(body: GenerateRequest) -> dict[str, Any]:
        """Text generated for each prompt (causal_lm and seq2seq models)."""
        if len(body.prompts) > config.max_texts:
            raise RequestError(413, f"{len(body.prompts)} prompts; at most {config.max_texts}")
        slot = generative_slot()
        # the template's own text is the prompts' structure, the prompts are text (their
        # control tokens included: bridgetune.tasks.prompts)
        template = saved_task_options(slot.predictor.meta).get("prompt_template")
        prompts = [fill_template(template, p) for p in body.prompts]
        results = await complete(slot, prompts, capped(slot, body.decoding(config.max_new_tokens)))
        return {"model_version": slot.version, "task": slot.task, "generations": results}

    @app.get("/v1/models", tags=["generation"], dependencies=[Depends(user)])
    async def models() -> dict[str, Any]:
        """The served model, as OpenAI's model list."""
        slot = service.ready_slot()
        return {
            "object": "list",
            "data": [
                {"id": slot.version, "object": "model", "created": 0, "owned_by": "bridgetune"}
            ],  # fmt: skip
        }

    @app.post(
        "/v1/chat/completions",
        tags=["generation"],
        responses={
            **errors,
            200: {
                "description": "A chat.completion, or with stream: true "
                "server-sent chat.completion.chunk events."
            },
        },  # fmt: skip
        dependencies=[Depends(user)],
    )
    async def chat_completions(body: ChatRequest) -> Any:
        """OpenAI-compatible chat completion (`stream: true`: server-sent events)."""
        slot = generative_slot()
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        options = capped(slot, body.decoding(config.max_new_tokens))
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        predictor = slot.predictor
        sources: list[dict[str, Any]] | None = None
        if config.knowledge.documents and body.retrieval:
            messages, ids, sources = await _retrieve(service, predictor, messages)
        else:
            ids = predictor.prompt_ids(messages)
        prompt_tokens = min(len(ids), predictor.max_length)
        if body.stream:
            source = events(slot, messages, options, ids)
            chunks = _chunks(source, slot, reply_id, created, sources)
            return StreamingResponse(chunks, media_type="text/event-stream")
        result = (await complete(slot, [messages], options, [ids]))[0]
        extra = {} if sources is None else {"sources": sources}
        return {
            **extra,
            "id": reply_id,
            "object": "chat.completion",
            "created": created,
            "model": slot.version,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result["text"]},
                    "finish_reason": "stop" if result["finished"] else "length",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": result["tokens"],
                "total_tokens": prompt_tokens + result["tokens"],
            },
        }


def generation_feedback(slot: Any, body: Any) -> tuple[str, dict[str, Any]]:
    """(text, label) to store for feedback on a generation: the label holds the answer to
    train on (`completion`: the corrected `label`, or `predicted` rated up; None for a thumbs
    down without a correction), the `rating`, and for a chat model the conversation
    (`messages`, ending with the user's turn) that `bridgetune feedback export` writes back as
    training data."""
    chat = slot.predictor.task.chat
    turns = None
    if body.messages is not None:
        if not chat:
            raise RequestError(
                422, f"this {slot.task} model continues plain prompts: send `text` (the "
                "prompt), not messages",
            )  # fmt: skip
        turns = [turn.model_dump() for turn in body.messages]
        if turns[-1]["role"] != "user":
            raise RequestError(422, "messages end with the user turn the model answered")
        if body.text is not None and body.text != turns[-1]["content"]:
            raise RequestError(422, "send `messages` or `text`, not both")
    elif chat:
        turns = [{"role": "user", "content": body.text}]
    text = turns[-1]["content"] if turns else body.text
    if body.entities is not None:
        raise RequestError(422, "entities are for NER models; send `label`: the right answer")
    if body.label is not None:
        if not isinstance(body.label, str) or not body.label.strip():
            raise RequestError(422, "`label` is the answer the model should have given (text)")
        answer: str | None = body.label
    elif body.rating == "up":
        if not isinstance(body.predicted, str) or not body.predicted.strip():
            raise RequestError(422, "a thumbs up needs `predicted`: the answer the model gave")
        answer = body.predicted
    elif body.rating == "down":
        answer = None
    else:
        raise RequestError(
            422, "give `label` (the answer the model should have given) or `rating` (up/down)"
        )
    label: dict[str, Any] = {"completion": answer, "rating": body.rating}
    if turns is not None:
        label["messages"] = turns
    return text, label


async def _retrieve(
    service: Any, predictor: Any, messages: list[dict[str, str]]
) -> tuple[list[dict[str, str]], list[int], list[dict[str, Any]]]:
    """The conversation with the knowledge base's best passages for its last user turn in the
    system turn, its tokens, and the passages (numbered as in the prompt) to return as
    sources. Passages that would push the prompt past the model's max_length go, the weakest
    first, so truncation never cuts the conversation's start for them."""
    from bridgetune.inference.retrieval import with_passages

    knowledge = service.knowledge
    if knowledge is None:
        raise RequestError(503, "the knowledge base is still loading; retry in a moment")
    settings = service.config.knowledge
    question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    started = time.perf_counter()
    found = await run_in_threadpool(knowledge.search, question, settings.top_k,
                                    settings.min_score)  # fmt: skip
    service.metrics.retrieval_seconds.observe(time.perf_counter() - started)
    plain = predictor.prompt_ids(messages)
    while True:
        prompt = with_passages(messages, found, settings.instruction)
        ids = predictor.prompt_ids(prompt) if found else plain
        if not found or len(ids) <= predictor.max_length or len(plain) > predictor.max_length:
            break
        found = found[:-1]
    sources = [{"index": i, **passage} for i, passage in enumerate(found, 1)]
    return prompt, ids, sources


def engine_for(service: Any, slot: Any) -> GenerationEngine | None:
    """The slot's generation engine, started on first use; None where the engine cannot run
    the model (the reason is logged once)."""
    if slot.engine is None:
        predictor = slot.predictor
        model = getattr(predictor.model, "peft_model", predictor.model)
        reason = GenerationEngine.supports(model, getattr(model, "generation_config", None))
        if reason is not None:
            log.info("%s: no batched generation for %s; one request at a time", slot.version,
                     reason)  # fmt: skip
            slot.engine = False
            return None
        precision = service.config.precision
        autocast = None
        if precision in ("bf16", "fp16"):  # 'auto' keeps the model's dtype (bf16 autocast on a
            # CPU made generation slower: casts per step outweigh the faster matmuls)
            from bridgetune.inference.predictor import autocast_for

            def autocast() -> Any:
                return autocast_for(predictor.device, precision)

        rows = service.metrics.generation_batch

        slot.engine = GenerationEngine(
            model,
            predictor.tokenizer,
            device=predictor.device,
            max_length=predictor.max_length,
            max_batch=service.config.max_batch_generations,
            autocast=autocast,
            on_step=lambda count, seconds: rows.observe(count),
        )
    return slot.engine or None


async def _engine_events(
    service: Any, slot: Any, prompt: Any, ids: list[int], options: dict[str, Any]
) -> AsyncIterator[Event]:
    """One job on the slot's engine as an async stream of its events, recorded in the
    metrics; a consumer that stops listening (its client left) cancels the job. A model
    replaced between the request's arrival and its submission (a reload) closed that engine:
    the request then goes to the model served now."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()
    metrics = service.metrics
    decoding = {k: v for k, v in options.items() if k != "max_new_tokens"}
    submission = {
        "max_new_tokens": options["max_new_tokens"],
        "deadline": time.perf_counter() + service.config.generation_timeout_s,
        "decoding": decoding,
        "emit": lambda event: loop.call_soon_threadsafe(queue.put_nowait, event),
    }
    try:
        job = engine_for(service, slot).submit(ids, **submission)
    except EngineClosed:
        slot = service.ready_slot()
        engine = engine_for(service, slot)
        if engine is None:
            raise RequestError(503, "the model was replaced; send the request again") from None
        job = engine.submit(slot.predictor.prompt_ids(prompt), **submission)
    ended = False
    try:
        while True:
            kind, value = await queue.get()
            if kind == "error":
                raise RuntimeError(value)
            ended = kind == "end"
            yield kind, value
            if ended:
                return
    finally:
        if not ended:
            job.cancel()
            metrics.cancelled_generations.inc()
        metrics.generated_tokens.inc(len(job.generated))
        started = job.started
        if started is not None:
            metrics.generation_queue.observe(started - job.submitted)
            metrics.generation_seconds.observe(time.perf_counter() - started)
        else:  # cancelled before its first forward pass: it waited until then
            metrics.generation_queue.observe(time.perf_counter() - job.submitted)
        if job.first_token is not None:
            metrics.time_to_first_token.observe(job.first_token - job.submitted)


def _stopping(timeout_s: float, stop: threading.Event) -> Any:
    """Stopping criteria for model.generate: `stop` set, or `timeout_s` passed."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    deadline = time.monotonic() + timeout_s

    class Stop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
            return stop.is_set() or time.monotonic() > deadline

    return StoppingCriteriaList([Stop()])


async def _serial_generate(
    service: Any, slot: Any, prompts: list, options: dict[str, Any]
) -> list[dict[str, Any]]:
    """Whole generations through model.generate, one request at a time."""
    metrics = service.metrics
    queued = time.perf_counter()
    async with service.generating:
        metrics.generation_queue.observe(time.perf_counter() - queued)
        started = time.perf_counter()
        stopping = _stopping(service.config.generation_timeout_s, threading.Event())
        options = {**options, "stopping_criteria": stopping}
        results = await run_in_threadpool(slot.predictor.generate, prompts, **options)
    metrics.generated_tokens.inc(sum(r["tokens"] for r in results))
    metrics.generation_seconds.observe(time.perf_counter() - started)
    return results


async def _serial_events(
    service: Any, slot: Any, prompt: Any, options: dict[str, Any]
) -> AsyncIterator[Event]:
    """One streamed generation through model.generate, one request at a time."""
    stop = threading.Event()
    stats: dict[str, Any] = {}
    metrics = service.metrics
    queued = time.perf_counter()
    ended = False
    try:
        async with service.generating:
            started = time.perf_counter()
            metrics.generation_queue.observe(started - queued)
            stopping = _stopping(service.config.generation_timeout_s, stop)
            pieces = slot.predictor.stream(prompt, stats=stats, stopping_criteria=stopping,
                                           **options)  # fmt: skip
            text, first = [], True
            async for piece in iterate_in_threadpool(pieces):
                if first:
                    metrics.time_to_first_token.observe(time.perf_counter() - queued)
                    first = False
                if piece:
                    text.append(piece)
                    yield "text", piece
            metrics.generation_seconds.observe(time.perf_counter() - started)
        ended = True
        yield "end", {"text": "".join(text).strip(), "tokens": stats.get("tokens", 0),
                      "finished": bool(stats.get("finished")), "truncated": False}  # fmt: skip
    finally:
        stop.set()  # the client left (or the stream ended): the generation thread stops
        metrics.generated_tokens.inc(stats.get("tokens", 0))
        if not ended:
            metrics.cancelled_generations.inc()


async def _chunks(
    source: AsyncIterator[Event],
    slot: Any,
    reply_id: str,
    created: int,
    sources: list[dict[str, Any]] | None = None,
) -> AsyncIterator[str]:
    """chat.completion.chunk events: the role (with the retrieved `sources`, if any), the text
    as it is generated, the finish reason, then [DONE]."""

    def chunk(delta: dict[str, str], finish: str | None = None, **extra: Any) -> str:
        event = {"id": reply_id, "object": "chat.completion.chunk", "created": created,
                 "model": slot.version, **extra,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
        return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"

    extra = {} if sources is None else {"sources": sources}
    yield chunk({"role": "assistant", "content": ""}, **extra)
    try:
        async for kind, value in source:
            if kind == "text" and value:
                yield chunk({"content": value})
            elif kind == "end":
                yield chunk({}, "stop" if value["finished"] else "length")
        yield "data: [DONE]\n\n"
    finally:
        await source.aclose()  # type: ignore[attr-defined]
