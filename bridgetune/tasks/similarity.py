"""Text-pair similarity: the internal task of the contrastive few-shot body phase.

A feature is one pair: the two texts' ids (`text_ids`), their token ids (`input_ids`,
`pair_input_ids`) and the target cosine similarity (`labels`). Pairs drawn from a few-shot set
repeat their texts, so `collate` encodes each distinct text of a batch once and says which rows
form the pairs; the model embeds the distinct texts in one call. It is not a user-facing task
(not in TASKS): the loop trains and evaluates it like any other.
"""

from __future__ import annotations

from typing import Any

import torch

from bridgetune.data.schema import Example
from bridgetune.tasks.base import Feature, Task, pad_batch


class PairSimilarityTask(Task):
    """Collate, decode and score (pair accuracy at 0.5) similarity pairs."""

    name = "similarity"
    labels = ["similarity"]
    problem = "regression"  # the loss: squared error of the cosine against the target
    default_metric = "pair_accuracy"
    lower_is_better: frozenset[str] = frozenset()

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        rows: dict[int, Feature] = {}
        for feature in features:
            first, second = feature["text_ids"]
            rows.setdefault(first, _side(feature, ""))
            rows.setdefault(second, _side(feature, "pair_"))
        position = {text: row for row, text in enumerate(rows)}
        batch = pad_batch(list(rows.values()), pad_id)
        batch["first"] = torch.tensor([position[f["text_ids"][0]] for f in features])
        batch["second"] = torch.tensor([position[f["text_ids"][1]] for f in features])
        if features[0].get("labels") is not None:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.float)
        return batch

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]:
        return [{"similarity": float(value)} for value in logits.float().view(-1).cpu()]

    def calibrate(
        self, predictions: list[dict[str, Any]], examples: list[Example]
    ) -> list[dict[str, Any]]:
        return predictions

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict:
        """Share of dev pairs on the right side of 0.5, and the mean squared error (each
        example is the pair, its label the target similarity)."""
        pairs = [(p, float(e.label[0])) for p, e in zip(predictions, examples)]  # type: ignore
        right = sum((p["similarity"] > 0.5) == (t > 0.5) for p, t in pairs)
        error = sum((p["similarity"] - t) ** 2 for p, t in pairs)
        return {"pair_accuracy": right / max(len(pairs), 1), "mse": error / max(len(pairs), 1)}


def _side(feature: Feature, prefix: str) -> Feature:
    side = {"input_ids": feature[f"{prefix}input_ids"]}
    if f"{prefix}token_type_ids" in feature:
        side["token_type_ids"] = feature[f"{prefix}token_type_ids"]
    return side
