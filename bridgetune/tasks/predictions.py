"""What each task's prediction holds: one pydantic model per kind of output (`Task.prediction`).

`Task.decode` returns plain dicts (cheap on the serving path); these models say exactly which
fields they carry. The conformance tests validate every registered task's decoded predictions
against its model, `predict`'s JSONL writes those fields, and the service's OpenAPI document is
built from the registered tasks' models (`bridgetune.serve.schemas.predict_response_model`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Prediction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    truncated: bool = Field(description="True when the input was longer than max_length and cut.")


class LabelPrediction(_Prediction):
    label: str = Field(description="Predicted class (classification, pair).")
    score: float = Field(description="Probability of `label` (softmax).")
    scores: dict[str, float] = Field(description="Probability per class.")
    source: str | None = Field(
        None, description="A model with rules: 'model', or 'rule' when a rule set the label."
    )
    rule: str | None = Field(None, description="The rule that set or vetoed the label.")


class LabelsPrediction(_Prediction):
    labels: list[str] = Field(description="Predicted classes (multilabel).")
    scores: dict[str, float] = Field(description="Sigmoid probability per class.")


class ValuePrediction(_Prediction):
    value: float | None = Field(None, description="Predicted value (regression, one target).")
    values: dict[str, float] | None = Field(
        None, description="Predicted value per target (regression with several targets)."
    )


class EntitySpan(BaseModel):
    type: str = Field(description="Entity type.")
    start: int = Field(ge=0, description="Character offset of the first character.")
    end: int = Field(ge=0, description="Character offset after the last character.")
    text: str | None = Field(None, description="The entity's text.")
    source: str | None = Field(
        None, description="A model with rules: 'model', or 'rule' for an entity a rule added."
    )
    rule: str | None = Field(None, description="The rule that added the entity.")


class EntitiesPrediction(_Prediction):
    tags: list[str] = Field(description="Tag per word (NER).")
    entities: list[EntitySpan] = Field(description="Entities with offsets (NER).")


class Span(BaseModel):
    text: str
    start: int
    end: int


class AnswerPrediction(_Prediction):
    answer: str = Field(description="Answer span of the context (question answering); '' for none.")
    start: int | None = Field(description="Character offset of the answer in the context.")
    end: int | None = Field(description="Character offset after the answer.")
    score: float | None = Field(description="Start + end logit of the answer span.")
    null_score: float | None = Field(description="Start + end logit of 'no answer' ([CLS]).")
    best_span: Span | None = Field(
        None, description="The best span, when the model judged the question unanswerable."
    )


class RankedCandidate(BaseModel):
    index: int = Field(description="Position of the candidate in the input.")
    score: float = Field(description="The model's score; higher ranks first.")


class RankingPrediction(_Prediction):
    ranking: list[RankedCandidate] = Field(description="Candidates, best first (ranking).")


class EmbeddingPrediction(_Prediction):
    embedding: list[float] = Field(description="The text's embedding (embedding).")
    candidate_embeddings: list[list[float]] | None = Field(
        None, description="Evaluation data only: the embeddings of the query's candidates."
    )


class LossPrediction(_Prediction):
    nll: float = Field(description="Summed next-token loss of the target tokens (dev loss).")
    tokens: int = Field(description="Target tokens scored.")


class GenerationPrediction(_Prediction):
    text: str = Field(description="The generated text (the prompt not repeated).")
    tokens: int = Field(description="Tokens generated.")
    finished: bool = Field(description="True when generation ended with EOS/end of turn.")
