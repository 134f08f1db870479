"""POST /v1/embeddings in the OpenAI embeddings shape (the official client works), for a served
embedding model (`task: embedding`).

`input` is one text or a list of texts (token-id inputs are refused: the model's tokenizer is
the service's); `encoding_format` float (lists) or base64 (little-endian float32, the client's
default); `input_type` (an extension: query or passage) picks the prefix the model was trained
with for each. The texts go through the micro-batcher like every prediction.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI
from pydantic import Field, field_validator

from bridgetune.data.schema import Example
from bridgetune.serve.schemas import _Body
from bridgetune.serve.service import RequestError
from bridgetune.serve.state import Service


class EmbeddingsRequest(_Body):
    """What OpenAI's embeddings endpoint takes (`model` is informational: the served model
    answers), with `input_type` as an extension."""

    input: str | list[str] = Field(description="A text, or a list of texts, to embed.",
                                   examples=[["where is my order", "我的订单在哪里"]])  # fmt: skip
    model: str | None = Field(None, description="Informational; the served model answers.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: little-endian float32 bytes."
    )
    dimensions: int | None = Field(
        None, ge=1, description="Must be the model's size when given (no truncation)."
    )
    user: str | None = Field(None, description="Informational.")
    input_type: Literal["query", "passage"] = Field(
        "query", description="Read the texts as queries or as passages (the model's prefix)."
    )

    @field_validator("input")
    @classmethod
    def _texts_have_content(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input is an empty list; give at least one text")
        for index, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"input[{index}] is empty or only whitespace")
        return value


class EmbeddingItem(_Body):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="The vector, or its base64 float32 bytes.")


class EmbeddingsUsage(_Body):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(_Body):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingsUsage


def add_embeddings_route(app: FastAPI, service: Service, user: Any, errors: dict) -> None:
    """POST /v1/embeddings on `app` (bridgetune.serve.routes.add_routes)."""
    config = service.config

    @app.post(
        "/v1/embeddings",
        tags=["model"],
        response_model=EmbeddingsResponse,
        responses=errors,
        dependencies=[Depends(user)],
    )
    async def embeddings(body: EmbeddingsRequest) -> dict[str, Any]:
        """Embeddings of the input texts (embedding models), in OpenAI's shape."""
        texts = [body.input] if isinstance(body.input, str) else body.input
        if len(texts) > config.max_texts:
            raise RequestError(
                413, f"{len(texts)} texts in one request; at most {config.max_texts}"
            )
        service.follow()
        slot = service.ready_slot()
        task = slot.predictor.task
        if not task.embeds:
            raise RequestError(
                422, f"this {slot.task} model gives no embeddings; /v1/embeddings needs an "
                "embedding model (task: embedding)",
            )  # fmt: skip
        size = int(slot.predictor.model.config.hidden_size)
        if body.dimensions is not None and body.dimensions != size:
            raise RequestError(422, f"dimensions: this model's embeddings have {size}")
        examples = [Example(text=text) for text in task.prefixed(texts, body.input_type)]
        features = slot.encode(examples, config.truncation)
        predictions = await service.batcher.submit(slot.predictor, features, examples)
        service.observer.record(slot, predictions)
        data = []
        for index, prediction in enumerate(predictions):
            vector = prediction["embedding"]
            if body.encoding_format == "base64":
                vector = base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(f["input_ids"]) for f in features)
        return {"object": "list", "data": data, "model": slot.version,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip
