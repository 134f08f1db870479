"""Regression: one or more numbers per text or text pair (a rating, the similarity of two
texts, several scores of one review).

The model is the classification task's sequence classifier with one output per target and
`problem_type="regression"` (built by the inherited `build_model`, so plain `transformers` loads
it); the loss is the mean squared error (`train.loss: huber` for Huber, less pulled by
outliers); the dev metric that picks the best checkpoint is Spearman's rank correlation (the
STS convention; with several targets, their mean), with Pearson, MAE and RMSE beside it (and
per target) and a scatter plot of predicted against true values in the report.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bridgetune.config import DataConfig, RunConfig
from bridgetune.data.readers import TextReader
from bridgetune.data.schema import DataError, Example
from bridgetune.tasks.base import TASKS, Feature, pad_batch, refuse_entities
from bridgetune.tasks.classification import ClassificationTask
from bridgetune.tasks.predictions import ValuePrediction


@dataclass(frozen=True)
class NumberReader(TextReader):
    """Rows like TextReader's whose `label_column` holds a number (a rating, a similarity), or
    several (a JSON list, or numbers joined by `data.label_separator`: one per target)."""

    def _label(self, value: Any, cfg: DataConfig) -> list[float]:
        if isinstance(value, list):
            parts = value
        elif isinstance(value, str) and cfg.label_separator in value:
            parts = value.split(cfg.label_separator)
        else:
            parts = [value]
        numbers = []
        for part in parts:
            if isinstance(part, bool):  # float(True) would read it as 1.0
                raise ValueError(
                    f"target {str(part).lower()} in column '{cfg.label_column}' is a JSON "
                    "boolean, not a number"
                )
            try:
                number = float(str(part).strip())
            except ValueError:
                raise ValueError(
                    f"target {part!r} in column '{cfg.label_column}' is not a number"
                ) from None
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError(f"target {part!r} in column '{cfg.label_column}' is not finite")
            numbers.append(number)
        return numbers

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        examples = super().read_file(path, cfg, labelled)
        if labelled and examples:
            count = len(examples[0].label or [])
            for example in examples:
                if len(example.label or []) != count:
                    raise DataError(
                        f"{example.source}: {len(example.label or [])} targets, but the first "
                        f"row has {count}; every row needs one number per target"
                    )
        return examples

    def infer_labels(self, train: list[Example], scheme: str | None) -> list[str]:
        """The targets' names: `data.labels` when given, else "value" (one target) or
        value_1, value_2, ... (several)."""
        count = len(train[0].label or []) if train else 1
        return ["value"] if count == 1 else [f"value_{i + 1}" for i in range(count)]

    def check_label_set(self, labels: list[str], source: str) -> None:
        if not labels or len(set(labels)) != len(labels):
            raise DataError(
                f"{source}: regression needs one distinct name per target in data.labels, got "
                f"{labels}"
            )

    def stratum(self, example: Example) -> str | None:
        return None


SCATTER_POINTS = 2000  # (true, predicted) pairs kept in the metrics for the plot


@TASKS.register("regression")
class RegressionTask(ClassificationTask):
    """Float targets per text (or text pair); `labels` holds the targets' names."""

    takes_rules = False
    takes_gazetteers = False
    text_classes = False

    name = "regression"
    problem_type = "regression"
    problem = "regression"
    default_metric = "spearman"
    lower_is_better = frozenset({"mae", "rmse"})
    output = "value"
    prediction = ValuePrediction
    reader = NumberReader()

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> RegressionTask:
        """The task for the target `labels`; with `pairs` (data.text_pair_column was set)
        every input is a text pair (STS-style), otherwise a single text (a rating)."""
        task = cls(labels)
        task.takes_pairs = bool(settings.get("pairs"))
        return task

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Class weights and label smoothing are for classes; a regression has none."""
        refuse_class_options(cfg, "regression")

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        for example in examples:
            if example.label is not None and len(example.label) != len(self.labels):
                raise DataError(
                    f"{example.source}: {len(example.label)} targets, but the model predicts "
                    f"{len(self.labels)} ({', '.join(self.labels)}); give one number per target"
                )
        return super().encode(examples, tokenizer, max_length)

    def encode_label(self, label: Any) -> Any:
        return None if label is None else [float(value) for value in label]

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        return pad_batch(features, pad_id, label_dtype=torch.float)

    def labelled_by(self, example: Example, prediction: dict[str, Any]) -> Example:
        if "value" in prediction:
            return dataclasses.replace(example, label=prediction["value"])
        return dataclasses.replace(example, label=[prediction["values"][n] for n in self.labels])

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]:
        rows = logits.float().reshape(len(features), -1).cpu().tolist()
        if len(self.labels) == 1:
            return [
                {"value": round(row[0], 6), "truncated": feature["truncated"]}
                for row, feature in zip(rows, features)
            ]
        return [
            {
                "values": {name: round(v, 6) for name, v in zip(self.labels, row)},
                "truncated": feature["truncated"],
            }
            for row, feature in zip(rows, features)
        ]

    def calibrate(
        self, predictions: list[dict[str, Any]], examples: list[Example]
    ) -> list[dict[str, Any]]:
        return predictions

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict:
        """Correlations and errors; with several targets per target (`per_target`) and their
        means at the top (the scatter plot shows every target's points)."""
        if len(self.labels) == 1:
            return regression_metrics(
                [float(e.label[0]) for e in examples],  # type: ignore[index]
                [p["value"] for p in predictions],
            )
        per_target = {
            name: regression_metrics(
                [float(e.label[i]) for e in examples],  # type: ignore[index]
                [p["values"][name] for p in predictions],
            )
            for i, name in enumerate(self.labels)
        }
        result: dict[str, Any] = {
            key: sum(m[key] for m in per_target.values()) / len(per_target)
            for key in ("pearson", "spearman", "mae", "rmse")
        }
        result["per_target"] = {
            name: {k: v for k, v in m.items() if k != "scatter"} for name, m in per_target.items()
        }
        true = [t for m in per_target.values() for t in m["scatter"]["true"]]
        predicted = [p for m in per_target.values() for p in m["scatter"]["predicted"]]
        result["scatter"] = {"true": true[:SCATTER_POINTS], "predicted": predicted[:SCATTER_POINTS]}
        return result

    def monitor_signal(self, prediction: dict[str, Any]) -> tuple[list[str], float | None]:
        """No classes to count and no confidence: the drift monitor watches nothing yet."""
        return [], None

    def counted_labels(self, prediction: dict[str, Any]) -> list[str]:
        return []

    def feedback_label(self, label: Any, entities: list[dict] | None, text: str) -> Any:
        """The correct value: a number; with several targets, a list in the targets' order."""
        refuse_entities(entities, self.name)
        return numeric_label(label, self.labels)


def refuse_class_options(cfg: RunConfig, task: str) -> None:
    """Class weights and label smoothing are for classes: an error for a task without them."""
    if cfg.train.class_weights is not None or cfg.train.label_smoothing:
        raise ValueError(
            f"train.class_weights and train.label_smoothing apply to classification, not {task}; "
            "remove them"
        )


def numeric_label(label: Any, targets: list[str]) -> float | list[float]:
    """A corrected value (feedback): a number (JSON number or string), or with several
    `targets` a list of numbers in their order.

    Raises:
        ValueError: no label, or not a finite number per target.
    """
    several = len(targets) > 1
    values = label if several and isinstance(label, list) else [label]
    if len(values) != len(targets):
        raise ValueError(
            f"label: give {len(targets)} numbers, one per target ({', '.join(targets)})"
        )
    numbers = []
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            what = "a list of numbers, one per target" if several else "a number"
            raise ValueError(f"label: give the correct value, {what}") from None
        if not math.isfinite(number):
            raise ValueError("label: give a finite number")
        numbers.append(number)
    return numbers if several else numbers[0]


def regression_metrics(true: list[float], predicted: list[float]) -> dict[str, Any]:
    """Pearson and Spearman correlation, MAE and RMSE, and the points of a scatter plot."""
    from scipy.stats import pearsonr, spearmanr

    errors = [p - t for p, t in zip(predicted, true)]
    constant = len(set(true)) < 2 or len(set(predicted)) < 2  # correlations are undefined
    return {
        "pearson": 0.0 if constant else float(pearsonr(true, predicted)[0]),
        "spearman": 0.0 if constant else float(spearmanr(true, predicted)[0]),
        "mae": sum(abs(e) for e in errors) / len(errors),
        "rmse": math.sqrt(sum(e * e for e in errors) / len(errors)),
        "scatter": {"true": true[:SCATTER_POINTS], "predicted": predicted[:SCATTER_POINTS]},
    }
