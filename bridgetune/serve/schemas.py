"""Request and response bodies of the HTTP API (they make its OpenAPI document)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        """JSON may escape lone surrogates ("\\ud800") that no tokenizer or database takes."""
        for where, text in _strings(data, ""):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ValueError(
                    f"{where} is not valid Unicode: a lone surrogate "
                    f"(U+{ord(text[error.start]):04X}) at character {error.start}; send text "
                    "that is valid UTF-8"
                ) from None
        return data


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """(path such as "texts[2]", string) for every string in a parsed JSON value."""
    if isinstance(value, str):
        yield where or "body", value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"a key of {where or 'the body'}", str(key)  # checked before it names a path
            yield from _strings(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")


def _has_text(value: str) -> str:
    if not value.strip():
        raise ValueError("text is empty or only whitespace")
    return value


class PredictRequest(_Body):
    """Texts to predict; pair models also need `text_pairs` (one per text)."""

    texts: list[str] = Field(
        min_length=1, description="Texts to classify or tag.", examples=[["Where is my order?"]]
    )
    text_pairs: list[str] | None = Field(
        None, description="Second texts for sentence-pair models, one per text."
    )

    @field_validator("texts")
    @classmethod
    def _texts_have_content(cls, texts: list[str]) -> list[str]:
        for index, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"texts[{index}] is empty or only whitespace")
        return texts

    @model_validator(mode="after")
    def _pairs_match(self) -> PredictRequest:
        if self.text_pairs is not None and len(self.text_pairs) != len(self.texts):
            raise ValueError(
                f"{len(self.texts)} texts but {len(self.text_pairs)} text_pairs; "
                "give one text_pair per text"
            )
        return self


class RankRequest(_Body):
    """A query (or a user's profile) and the candidate texts to rank against it."""

    query: str = Field(min_length=1, description="The query or user profile text.")
    candidates: list[str] = Field(
        min_length=1,
        description="Candidate texts (items, documents, answers) to score and sort.",
        examples=[["Wireless earbuds with noise cancelling", "A cast-iron skillet"]],
    )
    top_k: int | None = Field(None, ge=1, description="Return only the best K candidates.")

    _query_has_content = field_validator("query")(_has_text)

    @field_validator("candidates")
    @classmethod
    def _candidates_have_content(cls, candidates: list[str]) -> list[str]:
        for index, text in enumerate(candidates):
            if not text.strip():
                raise ValueError(f"candidates[{index}] is empty or only whitespace")
        return candidates


class RankedCandidate(BaseModel):
    index: int = Field(description="Position of the candidate in the request.")
    text: str
    score: float = Field(description="The model's score; higher ranks first.")


class RankResponse(BaseModel):
    model_version: str
    task: str
    ranking: list[RankedCandidate] = Field(description="Candidates, best first.")
    truncated: bool = Field(description="True when a query-candidate pair was cut to max_length.")


class Entity(_Body):
    type: str = Field(description="Entity type.")
    start: int = Field(ge=0, description="Character offset of the first character.")
    end: int = Field(ge=0, description="Character offset after the last character.")
    text: str | None = Field(None, description="The entity's text (informational).")

    @model_validator(mode="after")
    def _ordered(self) -> Entity:
        if self.end <= self.start:
            raise ValueError(f"entity end {self.end} must be after start {self.start}")
        return self


def predict_response_model() -> type[BaseModel]:
    """The /v1/predict response, its `predictions` documented from the prediction models of the
    tasks registered now (`Task.prediction`): every field any task's prediction carries,
    optional except `truncated`. Unknown fields pass through (a task registered later)."""
    import operator
    from functools import reduce

    from pydantic import create_model

    from bridgetune.tasks import TASKS

    types: dict[str, list[Any]] = {}
    descriptions: dict[str, str] = {}
    for name in TASKS:
        model = getattr(TASKS.get(name), "prediction", None)
        for key, field in (model.model_fields if model else {}).items():
            if key == "truncated":
                continue
            if field.annotation not in types.setdefault(key, []):
                types[key].append(field.annotation)
            descriptions.setdefault(key, field.description or "")
    fields: dict[str, Any] = {
        key: (reduce(operator.or_, annotations) | None, Field(None, description=descriptions[key]))
        for key, annotations in types.items()
    }
    fields["truncated"] = (
        bool,
        Field(description="True when the text was longer than max_length and cut."),
    )
    prediction = create_model(
        "Prediction",
        __config__=ConfigDict(extra="allow"),
        __doc__="One input's prediction; which fields are present depends on the task.",
        **fields,
    )
    return create_model(
        "PredictResponse",
        model_version=(str, ...),
        task=(str, ...),
        predictions=(list[prediction], ...),  # type: ignore[valid-type]
    )


class Turn(BaseModel):
    """One turn of a conversation."""

    role: Literal["system", "user", "assistant"]
    content: str


class FeedbackRequest(_Body):
    """A correction: the text, what the model said, and the right answer (generative models:
    the prompt or conversation, the answer given, and a corrected answer or a rating)."""

    text: str | None = Field(
        None,
        min_length=1,
        description="The text that was predicted (generative models: the prompt; chat models "
        "may send `messages` instead).",
    )
    messages: list[Turn] | None = Field(
        None,
        min_length=1,
        description="Generative chat models: the conversation the model answered, ending with "
        "the user's turn.",
    )
    rating: Literal["up", "down"] | None = Field(
        None,
        description="Generative models: thumbs up (`predicted` was right: it becomes training "
        "data) or down (with `label`, the corrected answer; without, it is kept but not "
        "exported for training).",
    )
    text_pair: str | None = Field(None, description="Second text (pair models).")
    predicted: str | list[str] | list[Entity] | None = Field(
        None, description="What the model predicted (informational)."
    )
    label: str | float | list[str] | list[float] | None = Field(
        None,
        description="The correct class (a list for multilabel models), value (regression; a "
        "list, one per target, for several targets) or answer text (question answering).",
    )
    entities: list[Entity] | None = Field(
        None, description="The correct entities (NER models), offsets into `text`."
    )
    id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Your id for this feedback; sending it again does not store it twice.",
    )

    @field_validator("text")
    @classmethod
    def _text_has_content(cls, value: str | None) -> str | None:
        return None if value is None else _has_text(value)

    @model_validator(mode="after")
    def _says_what(self) -> FeedbackRequest:
        if self.text is None and self.messages is None:
            raise ValueError("give `text` (the text the model saw; chat models: or `messages`)")
        return self


class FeedbackResponse(BaseModel):
    id: str
    created: str
    stored: bool = Field(description="False when this id was already stored (nothing new).")
    model_version: str


class ReloadRequest(_Body):
    model_dir: str = Field(min_length=1, description="Model directory to serve from now on.")


class ReloadResponse(BaseModel):
    model_version: str
    previous_version: str
    task: str


class Info(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    model_dir: str
    task: str
    output: str = Field(
        description="What a prediction carries: 'label' (+ scores), 'labels' (multi-label), "
        "'entities' (tags and spans), 'value' (regression), 'answer' (question answering), "
        "'ranking' (served by /v1/rank) or 'generation' (text: /v1/chat/completions, "
        "/v1/generate)."
    )
    chat: bool = Field(
        False, description="Generative models: prompts are conversations (chat template)."
    )
    knowledge_passages: int | None = Field(
        None, description="Passages in the knowledge base searched per chat request (none: off)."
    )
    takes_pairs: bool = Field(description="Every input is a text pair: send text_pairs.")
    labels: list[str]
    tag_scheme: str | None = None
    max_length: int
    precision: str = Field(description="Inference precision: fp32, bf16 or fp16.")
    base_model: str | None = None
    method: str | None = None
    metrics: dict = Field(default_factory=dict)
    label_distribution: dict[str, float] = Field(default_factory=dict)
    created: str | None = None
    bridgetune_version: str | None = None
    limits: dict = Field(default_factory=dict)


class ErrorBody(BaseModel):
    error: str
    message: str
