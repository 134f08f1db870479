"""Regression: a number per text or text pair (a rating, the similarity of two texts).

The model is the classification task's sequence classifier with one output and
`problem_type="regression"` (built by the inherited `build_model`,
so plain `transformers` loads it); the loss is the mean squared error; the dev metric that picks
the best checkpoint is Spearman's rank correlation (the STS convention), with Pearson, MAE and
RMSE beside it and a scatter plot of predicted against true values in the report.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bridgetune.config import RunConfig
from bridgetune.data.readers import NumberReader
from bridgetune.data.schema import Example
from bridgetune.tasks.base import TASKS, Feature, pad_batch
from bridgetune.tasks.classification import ClassificationTask

SCATTER_POINTS = 2000  # (true, predicted) pairs kept in the metrics for the plot


@TASKS.register("regression")
class RegressionTask(ClassificationTask):
    """One float target per text (or text pair); `labels` holds the target's name."""

    name = "regression"
    problem_type = "regression"
    problem = "regression"
    default_metric = "spearman"
    lower_is_better = frozenset({"mae", "rmse"})
    output = "value"
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
        if cfg.train.class_weights is not None or cfg.train.label_smoothing:
            raise ValueError(
                "train.class_weights and train.label_smoothing apply to classification, not "
                "regression; remove them"
            )

    def encode_label(self, label: Any) -> Any:
        return None if label is None else [float(value) for value in label]

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        return pad_batch(features, pad_id, label_dtype=torch.float)

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]:
        values = logits.float().reshape(len(features), -1)[:, 0].cpu().tolist()
        return [
            {"value": round(value, 6), "truncated": feature["truncated"]}
            for value, feature in zip(values, features)
        ]

    def calibrate(
        self, predictions: list[dict[str, Any]], examples: list[Example]
    ) -> list[dict[str, Any]]:
        return predictions

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict:
        return regression_metrics(
            [float(e.label[0]) for e in examples], [p["value"] for p in predictions]
        )

    def monitor_signal(self, prediction: dict[str, Any]) -> tuple[list[str], float | None]:
        """No classes to count and no confidence: the drift monitor watches nothing yet."""
        return [], None

    def counted_labels(self, prediction: dict[str, Any]) -> list[str]:
        return []

    def feedback_label(self, label: Any, entities: list[dict] | None, text: str) -> Any:
        """The correct value, a number (as JSON number or string).

        Raises:
            ValueError: no label, or one that is not a finite number.
        """
        try:
            value = float(label)
        except (TypeError, ValueError):
            raise ValueError("give 'label': the correct value, a number") from None
        if not math.isfinite(value):
            raise ValueError("'label' must be a finite number")
        return value


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
