"""`POST /v1/extract`: the triples of documents, when the service serves a relation model with
an NER model beside it (`bridgetune serve RE_DIR --ner NER_DIR`, or `serve.extract_ner`).

The triples are those `bridgetune extract` writes to triples.jsonl for the same texts: both
run the one core of bridgetune.inference.extraction. The NER model is loaded at the first
request (a reload of the relation model keeps it).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from bridgetune.inference.extraction import (
    DEFAULT_MAX_DISTANCE,
    DEFAULT_MIN_SCORE,
    ExtractionCounts,
    ExtractionSettings,
    check_models,
    classifies_pairs,
    extract_documents,
)
from bridgetune.inference.predictor import Predictor, checked_meta
from bridgetune.serve.schemas import _Body
from bridgetune.serve.service import RequestError, model_version
from bridgetune.serve.state import Service
from bridgetune.tasks import TASKS

NO_NER = (
    "this service extracts no relations: start it with an NER model beside the relation model "
    "(bridgetune serve RE_DIR --ner NER_DIR, or serve.extract_ner)"
)


class ExtractRequest(_Body):
    """Documents to extract triples from; each is split into sentences."""

    texts: list[str] = Field(
        min_length=1,
        description="Documents (one or more sentences each).",
        examples=[["Acme Corp acquired Beta Labs. 张伟是星辰科技的首席执行官。"]],
    )
    max_distance: int | None = Field(
        None, ge=0, description=f"Most characters between two entities ({DEFAULT_MAX_DISTANCE})."
    )
    min_score: float | None = Field(
        None, ge=0, le=1, description=f"Least score of a kept triple ({DEFAULT_MIN_SCORE})."
    )

    @field_validator("texts")
    @classmethod
    def _texts_have_content(cls, texts: list[str]) -> list[str]:
        for index, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"texts[{index}] is empty or only whitespace")
        return texts


class Triple(BaseModel):
    """A relation between two entities of a sentence; offsets are into its document."""

    head: str
    head_type: str | None
    relation: str
    tail: str
    tail_type: str | None
    score: float = Field(description="The relation model's score of `relation`.")
    sentence: str
    doc: int = Field(description="Position of the document in `texts`.")
    sentence_start: int
    sentence_end: int
    head_start: int
    head_end: int
    tail_start: int
    tail_end: int


class ExtractResponse(BaseModel):
    model_version: str = Field(description="The relation model's version.")
    ner_model_version: str
    sentences: int = Field(description="Sentences the documents were split into.")
    triples: list[Triple]


class NerModel:
    """The NER model of extraction, loaded once at the first request that needs it."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.predictor: Predictor | None = None
        self.loading = asyncio.Lock()

    async def get(self) -> Predictor:
        if self.directory is None:
            raise RequestError(404, NO_NER)
        async with self.loading:
            if self.predictor is None:
                try:
                    self.predictor = await run_in_threadpool(Predictor.load, self.directory)
                except (OSError, ValueError, KeyError) as error:
                    raise RequestError(
                        503, f"cannot load the NER model {self.directory}: {error}"
                    ) from None
        return self.predictor


def add_extract_route(app: FastAPI, service: Service, user: Any, errors: dict) -> None:
    """POST /v1/extract on `app` (bridgetune.serve.routes.add_routes)."""
    config = service.config
    ner = NerModel(config.extract_ner)
    answers = {**errors, 404: {"description": "The service has no NER model (--ner)."},
               409: {"description": "The served model is not a relation model."}}  # fmt: skip

    @app.post(
        "/v1/extract",
        tags=["model"],
        response_model=ExtractResponse,
        responses=answers,
        dependencies=[Depends(user)],
    )
    async def extract(body: ExtractRequest) -> dict[str, Any]:
        """Triples (head, relation, tail, types, score, sentence, offsets) of each document:
        entities found by the NER model, relations by the served relation model."""
        if len(body.texts) > config.max_texts:
            raise RequestError(
                413, f"{len(body.texts)} texts in one request; at most {config.max_texts}"
            )
        if config.extract_ner is None:
            raise RequestError(404, NO_NER)
        service.follow()
        slot = service.ready_slot()
        if not classifies_pairs(slot.predictor.task):
            raise RequestError(
                409, f"the served model is a {slot.task} model; /v1/extract needs a relation "
                "model (task: relation) served with an NER model beside it (--ner)",
            )  # fmt: skip
        tagger = await ner.get()
        try:
            check_models(tagger, slot.predictor)
        except ValueError as error:
            raise RequestError(409, str(error)) from None
        settings = ExtractionSettings(
            DEFAULT_MAX_DISTANCE if body.max_distance is None else body.max_distance,
            DEFAULT_MIN_SCORE if body.min_score is None else body.min_score,
        )
        counts = ExtractionCounts()
        documents = list(enumerate(body.texts))
        triples = await run_in_threadpool(
            extract_documents, tagger, slot.predictor, documents, settings, counts
        )
        return {
            "model_version": slot.version,
            "ner_model_version": model_version(tagger.meta, tagger.directory),
            "sentences": counts.sentences,
            "triples": triples,
        }


def check_extract_models(ner_dir: str | Path, relation_meta: dict, relation_dir: Path) -> None:
    """What `bridgetune serve --ner` checks before it starts: the NER directory keeps the
    model-directory contract, and the two models are of their kinds.

    Raises:
        ValueError: a ModelError naming the file, or which model is of the wrong kind.
    """
    ner_meta = checked_meta(Path(ner_dir))
    check_models(TASKS.get(ner_meta["task"]), TASKS.get(relation_meta["task"]),
                 (str(ner_dir), str(relation_dir)))  # fmt: skip
