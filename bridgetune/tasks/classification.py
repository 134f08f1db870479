"""Sequence classification: single-label, sentence pairs and multi-label (sigmoid + threshold)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from pydantic import BaseModel

from bridgetune.config import RunConfig
from bridgetune.data.bounds import clip_text, is_clipped
from bridgetune.data.readers import TextReader
from bridgetune.data.schema import Example
from bridgetune.knowledge.gazetteer import Gazetteer, LexiconModel
from bridgetune.models.pretrained import load_pretrained
from bridgetune.tasks.base import TASKS, Feature, Task, pad_batch, refuse_entities
from bridgetune.tasks.metrics import classification_metrics, multilabel_metrics
from bridgetune.tasks.predictions import LabelPrediction, LabelsPrediction


@TASKS.register("classification")
class ClassificationTask(Task):
    """One label per text (or per text pair); softmax scores."""

    name = "classification"
    auto_class = "AutoModelForSequenceClassification"
    problem_type = "single_label_classification"
    problem = "single"
    default_metric = "accuracy"
    takes_pairs = False
    output = "label"  # what a prediction carries: label + scores
    prediction: type[BaseModel] = LabelPrediction
    distills = "sequence"
    lower_is_better: frozenset[str] = frozenset()  # metrics that improve downwards
    reader = TextReader()

    takes_rules = True  # rules: (bridgetune.knowledge.rules) override or veto labels
    text_classes = True
    takes_gazetteers = True  # knowledge.gazetteers: match counts per type as features

    def __init__(
        self,
        labels: list[str],
        rules: list[dict[str, Any]] | None = None,
        lexicon: dict[str, str] | None = None,
    ) -> None:
        self.labels = labels
        self.index = {label: i for i, label in enumerate(labels)}
        self.rules = rules or []
        self.lexicon = lexicon or {}
        self.gazetteer = Gazetteer(self.lexicon) if self.lexicon else None
        for rule in self.rules:
            if rule["action"] == "add" or rule.get("label") not in labels:
                raise ValueError(
                    f"{rule['name']}: a classification rule overrides or vetoes one of the "
                    f"labels {labels} (action: override|veto, label: ...)"
                )

    def settings(self) -> dict[str, Any]:
        saved: dict[str, Any] = {"rules": self.rules} if self.rules else {}
        if self.lexicon:
            saved["lexicon"] = self.lexicon
        return saved

    def build_model(self, name_or_path: str, **kwargs: Any) -> torch.nn.Module:
        from transformers import AutoModelForSequenceClassification

        model = load_pretrained(
            AutoModelForSequenceClassification,
            name_or_path,
            self.labels,
            problem_type=self.problem_type,
            **kwargs,
        )
        if self.gazetteer:
            model = LexiconModel(model, len(self.gazetteer.types), self.auto_class)
        return model

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> ClassificationTask:
        """The task for `labels` (with the model's `rules` and gazetteers, `lexicon`, if
        any); other `settings` (tag_scheme, threshold) are for other tasks."""
        return cls(labels, settings.get("rules"), settings.get("lexicon"))

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Options of `cfg` that this task cannot take (ValueError), before any work."""
        if cls.takes_pairs and not cfg.data.text_pair_column:
            raise ValueError(
                f"task {cls.name!r} needs data.text_pair_column (the second text's column)"
            )
        if cls.multilabel and cfg.train.label_smoothing:
            raise ValueError("train.label_smoothing applies to single-label tasks, not multilabel")

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        # cut to a character bound first: tokenizing all of a huge text costs memory for
        # tokens truncation drops, and a text longer than the bound is truncated either way
        texts = [clip_text(e.text, max_length) for e in examples]
        pairs = None
        if examples[0].text_pair is not None:
            pairs = [clip_text(e.text_pair or "", max_length) for e in examples]
        encoded = tokenizer(texts, pairs, truncation=False)
        long_rows = [
            i
            for i, ids in enumerate(encoded["input_ids"])
            if len(ids) > max_length
            or is_clipped(examples[i].text, max_length)
            or is_clipped(examples[i].text_pair, max_length)
        ]
        if long_rows:
            clipped = tokenizer(
                [texts[i] for i in long_rows],
                [pairs[i] for i in long_rows] if pairs else None,
                truncation=True,
                max_length=max_length,
            )
        features = []
        for i, example in enumerate(examples):
            feature: Feature = {"input_ids": encoded["input_ids"][i], "truncated": False}
            if "token_type_ids" in encoded:
                feature["token_type_ids"] = encoded["token_type_ids"][i]
            feature["labels"] = self.encode_label(example.label)
            features.append(feature)
        for j, i in enumerate(long_rows):
            features[i]["input_ids"] = clipped["input_ids"][j]
            if "token_type_ids" in clipped:
                features[i]["token_type_ids"] = clipped["token_type_ids"][j]
            features[i]["truncated"] = True
        if self.gazetteer:
            for i, feature in enumerate(features):  # the names in what the model reads
                feature["lexicon"] = self.gazetteer.counts(texts[i], pairs[i] if pairs else None)
        return features

    def encode_label(self, label: Any) -> Any:
        return None if label is None else self.index[label]

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        batch = pad_batch(features, pad_id)
        if self.gazetteer:
            batch["lexicon"] = torch.tensor([f["lexicon"] for f in features])
        return batch

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=-1)

    def labelled_by(self, example: Example, prediction: dict[str, Any]) -> Example:
        return dataclasses.replace(example, label=prediction["label"])

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]:
        probs = self.probabilities(logits).cpu().tolist()
        predictions = [self._prediction(row, f["truncated"]) for row, f in zip(probs, features)]
        if self.rules:
            from bridgetune.knowledge.rules import apply_to_label

            texts = ["\n".join(filter(None, [e.text, e.text_pair])) for e in examples]
            predictions = [apply_to_label(self.rules, t, p) for t, p in zip(texts, predictions)]
        return predictions

    def _prediction(self, probs: list[float], truncated: bool) -> dict[str, Any]:
        best = max(range(len(probs)), key=probs.__getitem__)
        scores = {label: round(p, 6) for label, p in zip(self.labels, probs)}
        return {
            "label": self.labels[best],
            "score": round(probs[best], 6),
            "scores": scores,
            "truncated": truncated,
        }

    def calibrate(
        self, predictions: list[dict[str, Any]], examples: list[Example]
    ) -> list[dict[str, Any]]:
        """Fit decision parameters on dev predictions (nothing for softmax classification)."""
        return predictions

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict:
        return classification_metrics(
            [e.label for e in examples], [p["label"] for p in predictions], self.labels
        )

    def monitor_signal(self, prediction: dict[str, Any]) -> tuple[list[str], float | None]:
        """The labels and the confidence one prediction adds to a monitoring window."""
        return [prediction["label"]], float(prediction["score"])

    def counted_labels(self, prediction: dict[str, Any]) -> list[str]:
        """The labels the service counts for this prediction (its metrics)."""
        return [prediction["label"]]

    def feedback_label(self, label: Any, entities: list[dict] | None, text: str) -> Any:
        """A corrected answer checked against the model's labels.

        Raises:
            ValueError: no label, several for a single-label model, or an unknown one.
        """
        refuse_entities(entities, self.name)
        if label is None:
            raise ValueError("label: give the correct class")
        if isinstance(label, float):  # a JSON number for a numeric class name ("1")
            label = str(int(label)) if label.is_integer() else str(label)
        chosen = [label] if isinstance(label, str) else list(label)
        if not self.multilabel and len(chosen) != 1:
            raise ValueError("label: this model predicts one label per text; give one")
        unknown = [item for item in chosen if item not in self.labels]
        if unknown:
            raise ValueError(f"label: unknown label(s) {unknown}; the model's are {self.labels}")
        return chosen if self.multilabel else chosen[0]


@TASKS.register("pair")
class PairTask(ClassificationTask):
    """Sentence-pair classification (paraphrase, entailment, matching): texts encoded together."""

    name = "pair"
    takes_pairs = True


@TASKS.register("multilabel")
class MultiLabelTask(ClassificationTask):
    """Any number of labels per text; sigmoid scores and a threshold tuned on dev."""

    name = "multilabel"
    takes_rules = False
    takes_gazetteers = False
    problem_type = "multi_label_classification"
    problem = "multi"
    multilabel = True
    default_metric = "f1_micro"
    output = "labels"
    prediction = LabelsPrediction
    reader = TextReader(multilabel=True)

    def __init__(self, labels: list[str], threshold: float = 0.5) -> None:
        super().__init__(labels)
        self.threshold = threshold

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> MultiLabelTask:
        """The task for `labels` with the saved decision `threshold` (default 0.5)."""
        threshold = settings.get("threshold")
        return cls(labels, threshold=0.5 if threshold is None else threshold)

    def encode_label(self, label: Any) -> Any:
        if label is None:
            return None
        hot = [0.0] * len(self.labels)
        for name in label:
            hot[self.index[name]] = 1.0
        return hot

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        return pad_batch(features, pad_id, label_dtype=torch.float)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def _prediction(self, probs: list[float], truncated: bool) -> dict[str, Any]:
        chosen = [label for label, p in zip(self.labels, probs) if p >= self.threshold]
        scores = {label: round(p, 6) for label, p in zip(self.labels, probs)}
        return {"labels": chosen, "scores": scores, "truncated": truncated}

    def labelled_by(self, example: Example, prediction: dict[str, Any]) -> Example:
        return dataclasses.replace(example, label=list(prediction["labels"]))

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict:
        return multilabel_metrics(
            [e.label for e in examples], [p["labels"] for p in predictions], self.labels
        )

    def monitor_signal(self, prediction: dict[str, Any]) -> tuple[list[str], float | None]:
        """The chosen labels, and the mean probability of each label's decision."""
        chosen = set(prediction["labels"])
        decided = [p if label in chosen else 1.0 - p for label, p in prediction["scores"].items()]
        return list(prediction["labels"]), sum(decided) / len(decided) if decided else None

    def counted_labels(self, prediction: dict[str, Any]) -> list[str]:
        return list(prediction["labels"])

    def calibrate(
        self, predictions: list[dict[str, Any]], examples: list[Example]
    ) -> list[dict[str, Any]]:
        """Tune the threshold on these (dev) predictions for the best micro F1 and reapply it."""
        gold = [e.label for e in examples]
        best, best_f1 = 0.5, -1.0
        for step in range(1, 20):
            threshold = step / 20
            f1 = multilabel_metrics(gold, _above(predictions, threshold), self.labels)["f1_micro"]
            if f1 > best_f1 + 1e-12:
                best, best_f1 = threshold, f1
        self.threshold = best
        return [
            {**p, "labels": chosen} for p, chosen in zip(predictions, _above(predictions, best))
        ]


def _above(predictions: list[dict[str, Any]], threshold: float) -> list[list[str]]:
    return [[k for k, p in pred["scores"].items() if p >= threshold] for pred in predictions]
