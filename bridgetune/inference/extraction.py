"""Relation extraction, sentence by sentence: the ONE core that `bridgetune extract`,
`bridgetune.extract()` and the service's `POST /v1/extract` share, so they give the same triples.

Sentences are split (bridgetune.data.sentences), the NER model finds their entities, candidate
pairs are built (ordered: head, tail; two distinct entities of one sentence whose types the
relation model saw with a relation in training, at most `max_distance` characters apart), the
relation model classifies each pair, and a pair becomes a triple unless its label is the
model's no-relation label or its score is below `min_score`. A triple is a dict (the fields of
triples.jsonl, TRIPLE_FIELDS) with offsets into its document.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from bridgetune.data.schema import Example
from bridgetune.data.sentences import DEFAULT_MAX_CHARS, split_sentences
from bridgetune.knowledge.graph import normalize_mention

DEFAULT_MAX_DISTANCE = 200
DEFAULT_MIN_SCORE = 0.5
DEFAULT_BATCH_SIZE = 32
SCORE_DIGITS = 6
TRIPLE_FIELDS = (
    "head", "head_type", "relation", "tail", "tail_type", "score", "sentence", "doc",
    "sentence_start", "sentence_end", "head_start", "head_end", "tail_start", "tail_end",
)  # fmt: skip


@dataclass(frozen=True)
class ExtractionSettings:
    """How candidates are built and triples kept (module docstring).

    Raises:
        ValueError: a setting out of its range.
    """

    max_distance: int = DEFAULT_MAX_DISTANCE
    min_score: float = DEFAULT_MIN_SCORE
    batch_size: int = DEFAULT_BATCH_SIZE
    max_sentence_chars: int = DEFAULT_MAX_CHARS

    def __post_init__(self) -> None:
        if self.max_distance < 0:
            raise ValueError(f"max_distance is {self.max_distance}; give 0 or more characters")
        if not 0 <= self.min_score <= 1:
            raise ValueError(f"min_score is {self.min_score}; give a score from 0 to 1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size is {self.batch_size}; give 1 or more")
        if self.max_sentence_chars < 1:
            raise ValueError(f"max_sentence_chars is {self.max_sentence_chars}; give 1 or more")


@dataclass(frozen=True)
class DocumentSentence:
    """A sentence of document `doc`: `text == document[start:end]`."""

    doc: int
    start: int
    end: int
    text: str


@dataclass
class ExtractionCounts:
    """What a run saw, for its summary and to tell why few triples came out."""

    documents: int = 0
    sentences: int = 0
    truncated_sentences: int = 0  # longer than the NER model's max_length: its end unread
    entities: int = 0
    candidates: int = 0
    pairs_of_other_types: int = 0  # the relation model saw no relation between such types
    pairs_too_far: int = 0
    triples: int = 0

    def add(self, other: ExtractionCounts) -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_models(ner: Any, relations: Any, names: tuple[str, str] | None = None) -> None:
    """Refuse an NER model that finds no entities or a relation model that classifies no
    entity pairs: Predictors, or their tasks (classes, as the service checks them before it
    starts; `names` then says where each model is).

    Raises:
        ValueError: which model is of the wrong kind (or that the two are swapped).
    """
    ner_task, relation_task = _task(ner), _task(relations)
    ner_at, relation_at = names or (_where(ner), _where(relations))
    ner_ok, relation_ok = finds_entities(ner_task), classifies_pairs(relation_task)
    if not ner_ok and not relation_ok and finds_entities(relation_task):
        raise ValueError(
            f"the models are swapped: {relation_at} is the NER model and {ner_at} the relation "
            "model; give the NER model as --ner and the relation one as --relations"
        )
    if not ner_ok:
        raise ValueError(
            f"{ner_at} is a {ner_task.name} model; the NER model must find entities: give a "
            "model trained with task: ner"
        )
    if not relation_ok:
        raise ValueError(
            f"{relation_at} is a {relation_task.name} model; the relation model must classify "
            "entity pairs: give a model trained with task: relation"
        )


def finds_entities(task: Any) -> bool:
    """Whether a task (or its class) predicts entities with offsets (NER)."""
    return getattr(task, "output", None) == "entities"


def classifies_pairs(task: Any) -> bool:
    """Whether a task (or its class) classifies the relation of an entity pair."""
    return callable(getattr(task, "allowed_pair", None))


def _task(model: Any) -> Any:
    return getattr(model, "task", model)


def _where(model: Any) -> str:
    directory = getattr(model, "directory", None)
    return str(directory) if directory is not None else f"the {_task(model).name} model"


def document_sentences(
    doc: int, text: str, max_chars: int = DEFAULT_MAX_CHARS
) -> list[DocumentSentence]:
    """The sentences of document number `doc` (bridgetune.data.sentences)."""
    return [DocumentSentence(doc, s.start, s.end, s.text) for s in split_sentences(text, max_chars)]


def candidate_pairs(
    entities: Sequence[dict[str, Any]],
    allowed_pair: Any,
    max_distance: int,
    counts: ExtractionCounts | None = None,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Ordered (head, tail) pairs of distinct entities of one sentence: not the same span nor
    the same normalized mention, `allowed_pair(head_type, tail_type)` true, and at most
    `max_distance` characters between the end of the first and the start of the second.
    `counts` receives the pairs left out for their types and for their distance."""
    counts = counts if counts is not None else ExtractionCounts()
    pairs = []
    for head in entities:
        for tail in entities:
            if head is tail or (head["start"], head["end"]) == (tail["start"], tail["end"]):
                continue
            if normalize_mention(head["text"]) == normalize_mention(tail["text"]):
                continue
            if not allowed_pair(head.get("type"), tail.get("type")):
                counts.pairs_of_other_types += 1
                continue
            first, second = sorted((head, tail), key=lambda e: e["start"])
            if max(0, second["start"] - first["end"]) > max_distance:
                counts.pairs_too_far += 1
                continue
            pairs.append((head, tail))
    return pairs


def extract_sentences(
    ner: Any,
    relations: Any,
    sentences: Sequence[DocumentSentence],
    settings: ExtractionSettings,
    counts: ExtractionCounts | None = None,
) -> list[dict[str, Any]]:
    """The triples of `sentences`, in sentence order, then by the head's and the tail's start
    (`ner` and `relations`: Predictors; check_models first)."""
    counts = counts if counts is not None else ExtractionCounts()
    counts.sentences += len(sentences)
    if not sentences:
        return []
    found = ner.predict([s.text for s in sentences], batch_size=settings.batch_size)
    task = relations.task
    no_relation = getattr(task, "no_relation", None)
    candidates: list[tuple[DocumentSentence, dict[str, Any], dict[str, Any]]] = []
    for sentence, prediction in zip(sentences, found):
        counts.truncated_sentences += bool(prediction.get("truncated"))
        entities = sorted(prediction["entities"], key=lambda e: (e["start"], e["end"]))
        counts.entities += len(entities)
        for head, tail in candidate_pairs(entities, task.allowed_pair, settings.max_distance,
                                          counts):  # fmt: skip
            candidates.append((sentence, head, tail))
    counts.candidates += len(candidates)
    if not candidates:
        return []
    examples = [Example(text=s.text, mentions=[_mention(h), _mention(t)]) for s, h, t in candidates]
    labels = relations.predict(examples, batch_size=settings.batch_size)
    triples = []
    for (sentence, head, tail), prediction in zip(candidates, labels):
        if prediction["label"] == no_relation or prediction["score"] < settings.min_score:
            continue
        triples.append(_triple(sentence, head, tail, prediction))
    counts.triples += len(triples)
    return triples


def extract_documents(
    ner: Any,
    relations: Any,
    documents: Iterable[tuple[int, str]],
    settings: ExtractionSettings,
    counts: ExtractionCounts | None = None,
) -> list[dict[str, Any]]:
    """The triples of whole documents, given as (number, text), in their order."""
    counts = counts if counts is not None else ExtractionCounts()
    sentences = []
    for number, text in documents:
        counts.documents += 1
        sentences += document_sentences(number, text, settings.max_sentence_chars)
    return extract_sentences(ner, relations, sentences, settings, counts)


def _mention(entity: dict[str, Any]) -> dict[str, Any]:
    return {"start": entity["start"], "end": entity["end"], "type": entity.get("type")}


def _triple(
    sentence: DocumentSentence, head: dict[str, Any], tail: dict[str, Any], prediction: dict
) -> dict[str, Any]:
    """One line of triples.jsonl (TRIPLE_FIELDS): offsets into the document."""
    at = sentence.start
    return {
        "head": head["text"],
        "head_type": head.get("type"),
        "relation": prediction["label"],
        "tail": tail["text"],
        "tail_type": tail.get("type"),
        "score": round(float(prediction["score"]), SCORE_DIGITS),
        "sentence": sentence.text,
        "doc": sentence.doc,
        "sentence_start": sentence.start,
        "sentence_end": sentence.end,
        "head_start": at + head["start"],
        "head_end": at + head["end"],
        "tail_start": at + tail["start"],
        "tail_end": at + tail["end"],
    }
