"""Generative models over HTTP: `POST /v1/generate`, and OpenAI's `POST /v1/chat/completions`
(plain or streamed as server-sent events) and `GET /v1/models`, so applications that speak
OpenAI's API (the official client included) talk to a fine-tuned model unchanged.

Requests go through the service's keys, body limits and metrics. One generation runs at a time
(a second request waits its turn: on a CPU two at once only slow each other); the wait is the
queue time in the metrics. `max_tokens` is capped by `serve.max_new_tokens` and every
generation by `serve.generation_timeout_s` (it then ends as if the token limit was reached).
A streamed request whose client goes away stops its generation at the next token.
Decoding follows the model's generation config (the run's `generate:` section) unless the
request sets `temperature` (0: greedy; above 0: sampling at that temperature) or `top_p`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from bridgetune.serve.schemas import _Body
from bridgetune.serve.service import RequestError

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


def add_chat_routes(app: FastAPI, service: Any, user: Any, errors: dict) -> None:
    """The generative endpoints on `app` (keys checked by the `user` dependency)."""
    config = service.config

    def generative_slot() -> Any:
        service.follow()
        slot = service.ready_slot()
        if slot.predictor.task.output != "generation":
            raise RequestError(
                422, f"this {slot.task} model does not generate text; it answers /v1/predict"
            )
        return slot

    def stopping(stop: threading.Event) -> Any:
        from transformers import StoppingCriteria, StoppingCriteriaList

        deadline = time.monotonic() + config.generation_timeout_s

        class Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return stop.is_set() or time.monotonic() > deadline

        return StoppingCriteriaList([Stop()])

    def capped(slot: Any, options: dict[str, Any]) -> dict[str, Any]:
        """A request without max_tokens gets the model's default, within the server's cap."""
        from bridgetune.generation import default_new_tokens

        if options.get("max_new_tokens") is None:
            model = slot.predictor.model
            default = default_new_tokens(getattr(model, "peft_model", model))
            options = {**options, "max_new_tokens": min(default, config.max_new_tokens)}
        return options

    async def generate(slot: Any, prompts: list, options: dict) -> list[dict[str, Any]]:
        """Whole generations, one request at a time, recorded in the metrics."""
        queued = time.perf_counter()
        async with service.generating:
            service.metrics.generation_queue.observe(time.perf_counter() - queued)
            started = time.perf_counter()
            options = {**options, "stopping_criteria": stopping(threading.Event())}
            results = await run_in_threadpool(slot.predictor.generate, prompts, **options)
        tokens = sum(r["tokens"] for r in results)
        service.metrics.generated_tokens.inc(tokens)
        service.metrics.generation_seconds.observe(time.perf_counter() - started)
        return results

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
        template = (slot.predictor.meta.get("data") or {}).get("prompt_template")
        prompts = [template.replace("{prompt}", p) if template else p for p in body.prompts]
        results = await generate(slot, prompts, capped(slot, body.decoding(config.max_new_tokens)))
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
        prompt_tokens = await run_in_threadpool(_prompt_tokens, slot.predictor, messages)
        if body.stream:
            events = _stream(service, slot, messages, options, stopping, reply_id, created)
            return StreamingResponse(events, media_type="text/event-stream")
        result = (await generate(slot, [messages], options))[0]
        return {
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


def _prompt_tokens(predictor: Any, messages: list[dict[str, str]]) -> int:
    text = predictor.prompt_text(messages)
    return len(predictor.tokenizer(text, add_special_tokens=False)["input_ids"])


async def _stream(
    service: Any,
    slot: Any,
    messages: list[dict[str, str]],
    options: dict[str, Any],
    stopping: Any,
    reply_id: str,
    created: int,
) -> AsyncIterator[str]:
    """chat.completion.chunk events: the role, the text as it is generated, the finish reason,
    then [DONE]. A client that goes away stops the generation at its next token."""

    def chunk(delta: dict[str, str], finish: str | None = None) -> str:
        event = {"id": reply_id, "object": "chat.completion.chunk", "created": created,
                 "model": slot.version,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
        return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"

    stop = threading.Event()
    stats: dict[str, Any] = {}
    queued = time.perf_counter()
    metrics = service.metrics
    try:
        async with service.generating:
            started = time.perf_counter()
            metrics.generation_queue.observe(started - queued)
            yield chunk({"role": "assistant", "content": ""})
            pieces = slot.predictor.stream(
                messages, stats=stats, stopping_criteria=stopping(stop), **options
            )
            first = True
            async for piece in iterate_in_threadpool(pieces):
                if first:
                    metrics.time_to_first_token.observe(time.perf_counter() - queued)
                    first = False
                if piece:
                    yield chunk({"content": piece})
            metrics.generation_seconds.observe(time.perf_counter() - started)
        yield chunk({}, "stop" if stats.get("finished") else "length")
        yield "data: [DONE]\n\n"
    except (asyncio.CancelledError, GeneratorExit):
        metrics.cancelled_generations.inc()
        raise
    finally:
        stop.set()  # the client left (or the stream ended): the generation thread stops
        metrics.generated_tokens.inc(stats.get("tokens", 0))
