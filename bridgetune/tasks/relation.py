"""Relation classification between two marked entities of a sentence (`task: relation`).

Inputs (SemEval inline markers, FinRE head/tail/relation/sentence rows, JSONL spans with types)
are read by `RelationReader` (bridgetune.tasks.relation_reader).

An example keeps the plain sentence in `text` and the two mentions in `mentions` (head first).
The model (bridgetune.heads.relation) reads the sentence with marker tokens around the
entities: typed markers `<e1:ORG>` ... `</e1:ORG>` when the training data has entity types
(`task.typed_markers`), `<e1>` ... `</e1>` otherwise, added to the tokenizer as special tokens
(`prepare_tokenizer`), and classifies from the opening markers' hidden states.

Labels may be directed (`Cause-Effect(e1,e2)` and `Cause-Effect(e2,e1)`); one label is "no
relation" (`task.no_relation`; found among Other/unknown/no_relation/NA when not set). The
metrics are SemEval-2010 Task 8's official score (macro-F1 over the relation types, the
no-relation label excluded, a prediction right only with the right direction: its scorer's
rules, bridgetune.tasks.metrics.relation_metrics), micro-F1 and the per-label table.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from bridgetune.data.schema import DataError, Example
from bridgetune.heads.relation import RelationModel
from bridgetune.models.pretrained import load_pretrained
from bridgetune.tasks.base import TASKS, Feature, Task, pad_batch, refuse_entities
from bridgetune.tasks.metrics import relation_metrics
from bridgetune.tasks.predictions import LabelPrediction
from bridgetune.tasks.relation_reader import (
    RelationReader,
    checked_mentions,
    parse_marked,
)

HEAD_OPEN, HEAD_CLOSE, TAIL_OPEN, TAIL_CLOSE = "<e1>", "</e1>", "<e2>", "</e2>"
NO_RELATION_NAMES = ("Other", "other", "unknown", "no_relation", "NA", "None", "无关系")


class RelationOptions(BaseModel):
    """`task.*` of task relation."""

    model_config = ConfigDict(extra="forbid")

    no_relation: str | None = Field(
        None,
        description="The label that means 'no relation' (left out of the macro-F1 and of "
        "extracted triples); default: the first of Other, unknown, no_relation, NA found "
        "among the labels.",
    )
    pooling: Literal["entity_start", "cls"] = Field(
        "entity_start",
        description="What the head classifies: the hidden states of the two entities' opening "
        "markers, concatenated (R-BERT / Matching the Blanks), or [CLS] alone (ablation).",
    )
    typed_markers: bool = Field(
        True,
        description="Markers that carry the entity type (<e1:ORG>) when the training data has "
        "types; false: <e1> ... </e1> always.",
    )


@TASKS.register("relation")
class RelationTask(Task):
    """The relation between a sentence's head and tail entity: one label (see the module)."""

    name = "relation"
    # the model is always the relation head (bridgetune.heads.relation) around an encoder; a
    # method is checked before training on a sequence classifier of the same architecture,
    # whose body is the encoder's
    auto_class = "AutoModelForSequenceClassification"
    problem = "single"
    default_metric = "macro_f1"
    output = "label"
    prediction = LabelPrediction
    reader = RelationReader()
    distills = "sequence"
    Options = RelationOptions
    second_text = "no second text (mark the head and tail in the text)"

    def __init__(
        self,
        labels: list[str],
        no_relation: str | None = None,
        pooling: str = "entity_start",
        typed_markers: bool = True,
        entity_types: list[str] | None = None,
        type_pairs: list[list[str]] | None = None,
    ) -> None:
        self.labels = labels
        self.index = {label: i for i, label in enumerate(labels)}
        if no_relation is None:
            no_relation = next((n for n in NO_RELATION_NAMES if n in labels), None)
        elif no_relation not in labels:
            raise ValueError(
                f"task.no_relation {no_relation!r} is not a label of the data ({', '.join(labels)})"
            )
        self.no_relation = no_relation
        self.pooling = pooling
        self.typed_markers = typed_markers
        self.entity_types = sorted(entity_types or []) if typed_markers else []
        self.type_pairs = {tuple(pair) for pair in type_pairs or []}
        self.opening: tuple[list[int], list[int]] | None = None  # set by prepare_tokenizer

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> RelationTask:
        return cls(
            labels,
            settings.get("no_relation"),
            settings.get("pooling") or "entity_start",
            settings.get("typed_markers", True),
            settings.get("entity_types"),
            settings.get("type_pairs"),
        )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Methods the relation head cannot take (ValueError), before any work."""
        method = cfg.method.name
        if method in ("prompt", "ptuning", "prefix"):
            raise ValueError(
                f"method.name={method!r}: it prepends virtual tokens or keys that the relation "
                "head does not read; use full, lora, ia3, head_only or bitfit"
            )
        if getattr(cfg.method, "export", "merged") == "adapter":
            raise ValueError(
                "method.export: adapter cannot rebuild the relation head on its base model; "
                "use method.export: merged"
            )

    @classmethod
    def learn_settings(cls, train: list[Example], options: dict[str, Any]) -> dict[str, Any]:
        """The entity types of the training mentions (typed markers) and the (head type, tail
        type) pairs seen with a real relation (the candidates extraction builds)."""
        labels = {e.label for e in train if isinstance(e.label, str)}
        none = options.get("no_relation") or next(
            (n for n in NO_RELATION_NAMES if n in labels), None
        )
        types: set[str] = set()
        pairs: set[tuple[str, str]] = set()
        for example in train:
            kinds = [m.get("type") for m in example.mentions or []]
            types.update(k for k in kinds if k)
            if len(kinds) == 2 and all(kinds) and example.label != none:
                pairs.add((kinds[0], kinds[1]))
        return {"entity_types": sorted(types), "type_pairs": sorted(list(p) for p in pairs)}

    def settings(self) -> dict[str, Any]:
        return {
            "no_relation": self.no_relation,
            "pooling": self.pooling,
            "typed_markers": self.typed_markers,
            "entity_types": self.entity_types,
            "type_pairs": sorted(list(p) for p in self.type_pairs),
        }

    def allowed_pair(self, head_type: str | None, tail_type: str | None) -> bool:
        """Whether a (head type, tail type) candidate can hold a relation: a pair seen with one
        in training (a type training never saw: no); any pair when training had no types, or
        when a mention has no type (None)."""
        if not self.type_pairs or head_type is None or tail_type is None:
            return True
        return (head_type, tail_type) in self.type_pairs

    # -- markers ------------------------------------------------------------------------------

    def markers(self, entity_type: str | None, role: int) -> tuple[str, str]:
        """The open and close marker of the head (role 0) or tail (1) of `entity_type`."""
        name = f"e{role + 1}"
        if entity_type and entity_type in self.entity_types:
            return f"<{name}:{entity_type}>", f"</{name}:{entity_type}>"
        return f"<{name}>", f"</{name}>"

    def marker_tokens(self) -> list[str]:
        tokens = [HEAD_OPEN, HEAD_CLOSE, TAIL_OPEN, TAIL_CLOSE]
        for kind in self.entity_types:
            for role in (0, 1):
                tokens.extend(self.markers(kind, role))
        return tokens

    def prepare_tokenizer(self, tokenizer: Any) -> list[str]:
        new = [m for m in self.marker_tokens() if m not in tokenizer.get_vocab()]
        if new:
            tokenizer.add_special_tokens(
                {"extra_special_tokens": new}, replace_extra_special_tokens=False
            )
        # the ids the model looks for, in this tokenizer (a pruned vocabulary remaps them on
        # the model: RelationModel.remap_token_ids)
        self.opening = (self.opening_ids(tokenizer, 0), self.opening_ids(tokenizer, 1))
        return new

    def opening_ids(self, tokenizer: Any, role: int) -> list[int]:
        opening = [self.markers(None, role)[0]]
        opening += [self.markers(kind, role)[0] for kind in self.entity_types]
        return tokenizer.convert_tokens_to_ids(opening)

    def marked(self, example: Example) -> str:
        """The example's text with the marker tokens around its head and tail."""
        text, mentions = example.text, example.mentions
        if mentions is None:
            text, mentions = parse_marked(text, example.source or "input")
        else:
            checked_mentions(text, mentions, example.source or "input")
        inserts = []
        for role, mention in enumerate(mentions):
            opening, closing = self.markers(mention.get("type"), role)
            inserts += [(mention["start"], 1, opening), (mention["end"], 0, closing)]
        out, position = [], 0
        for offset, _, marker in sorted(inserts):
            out += [text[position:offset], marker]
            position = offset
        return "".join(out) + text[position:]

    # -- the model ----------------------------------------------------------------------------

    def build_model(self, name_or_path: str, **kwargs: Any) -> torch.nn.Module:
        from transformers import AutoModel, AutoTokenizer

        extra = {"trust_remote_code": kwargs.get("trust_remote_code", False)}
        try:
            encoder = load_pretrained(
                AutoModel, name_or_path, self.labels, kwargs.get("dropout"),
                model_kwargs={"add_pooling_layer": False}, **extra,
            )  # fmt: skip
        except TypeError:  # an architecture without a pooler option
            encoder = load_pretrained(AutoModel, name_or_path, self.labels, kwargs.get("dropout"),
                                      **extra)  # fmt: skip
        if self.opening is None:  # built without the run's tokenizer: the model's own
            self.prepare_tokenizer(AutoTokenizer.from_pretrained(name_or_path))
        assert self.opening is not None
        return RelationModel(encoder, len(self.labels), *self.opening, self.pooling)

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        texts = [self.marked(example) for example in examples]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        prefix, suffix = special_ids(tokenizer)
        room = max_length - len(prefix) - len(suffix)
        heads = set(self.opening_ids(tokenizer, 0))
        tails = set(self.opening_ids(tokenizer, 1))
        marker_ids = set(tokenizer.convert_tokens_to_ids(self.marker_tokens()))
        features = []
        for ids, example in zip(encoded, examples):
            truncated = len(ids) > room
            if truncated:
                ids = window(ids, room, marker_ids)
            if not heads.intersection(ids) or not tails.intersection(ids):
                raise DataError(
                    f"{example.source or 'input'}: the tokenizer split the entity markers; "
                    "the model directory's tokenizer must hold them as single tokens"
                )
            label = None if example.label is None else self.index[example.label]
            features.append({"input_ids": prefix + ids + suffix, "labels": label,
                             "truncated": truncated})  # fmt: skip
        return features

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        return pad_batch(features, pad_id)

    # -- predictions --------------------------------------------------------------------------

    def labelled_by(self, example: Example, prediction: dict[str, Any]) -> Example:
        return dataclasses.replace(example, label=prediction["label"])

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]:
        probabilities = torch.softmax(logits.float(), -1).cpu().tolist()
        predictions = []
        for row, feature in zip(probabilities, features):
            best = max(range(len(row)), key=row.__getitem__)
            predictions.append({
                "label": self.labels[best], "score": row[best],
                "scores": dict(zip(self.labels, row)), "truncated": feature["truncated"],
            })  # fmt: skip
        return predictions

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict:
        gold = [str(e.label) for e in examples]
        predicted = [p["label"] for p in predictions]
        return relation_metrics(gold, predicted, self.labels, self.no_relation)

    def monitor_signal(self, prediction: dict[str, Any]) -> tuple[list[str], float | None]:
        return [prediction["label"]], prediction["score"]

    def counted_labels(self, prediction: dict[str, Any]) -> list[str]:
        return [prediction["label"]]

    def feedback_label(self, label: Any, entities: list[dict] | None, text: str) -> Any:
        refuse_entities(entities, self.name)
        if label not in self.labels:
            raise ValueError(f"label: unknown relation {label!r}; the model's are {self.labels}")
        return label


def special_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text's own ([CLS] and [SEP], <s> and
    </s>), so a cut text gets them as a whole one does."""
    whole = tokenizer("x")["input_ids"]
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    start = next(i for i in range(len(whole)) if whole[i : i + len(bare)] == bare)
    return whole[:start], whole[start + len(bare) :]


def window(ids: list[int], room: int, markers: set[int]) -> list[int]:
    """`room` of a sentence's token ids that keep both entities' markers: a window around
    both, or, where they lie further apart, the start of each entity's stretch."""
    positions = [i for i, token in enumerate(ids) if token in markers]
    if not positions:
        return ids[:room]
    low, high = positions[0], positions[-1]
    if high - low + 1 <= room:
        start = max(0, min(low - (room - (high - low + 1)) // 2, len(ids) - room))
        return ids[start : start + room]
    second = positions[2] if len(positions) > 2 else high  # the second entity's opening
    half = room // 2
    return ids[low : low + half] + ids[second : second + room - half]
