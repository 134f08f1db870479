"""Text-pair similarity: the internal task of the contrastive few-shot body phase.

Features hold both texts of a pair (`input_ids`, `pair_input_ids`) and the target cosine
similarity as `labels`; the model answers one similarity per pair. It is not a user-facing task
(not in TASKS): the loop trains and evaluates it like any other.
"""

from __future__ import annotations

from typing import Any

import torch

from bridgetune.data.schema import Example
from bridgetune.tasks.base import Feature, pad_batch


class PairSimilarityTask:
    """Collate, decode and score (pair accuracy at 0.5) similarity pairs."""

    name = "similarity"
    labels = ["similarity"]

    def __init__(self, targets: list[float] | None = None) -> None:
        self.targets = targets or []  # the dev pairs' targets, in order, for `metrics`

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        first = pad_batch([_side(f, "") for f in features], pad_id)
        second = pad_batch([_side(f, "pair_") for f in features], pad_id)
        batch = {**first, **{f"pair_{k}": v for k, v in second.items()}}
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
        """Share of dev pairs on the right side of 0.5, and the mean squared error."""
        pairs = list(zip(predictions, self.targets))
        right = sum((p["similarity"] > 0.5) == (t > 0.5) for p, t in pairs)
        error = sum((p["similarity"] - t) ** 2 for p, t in pairs)
        return {"pair_accuracy": right / max(len(pairs), 1), "mse": error / max(len(pairs), 1)}


def _side(feature: Feature, prefix: str) -> Feature:
    side = {"input_ids": feature[f"{prefix}input_ids"]}
    if f"{prefix}token_type_ids" in feature:
        side["token_type_ids"] = feature[f"{prefix}token_type_ids"]
    return side
