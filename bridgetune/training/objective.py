"""The training loss of a batch: the task's loss with class weights and label smoothing, and
R-Drop (two dropout passes pulled together by a symmetric KL; Liang et al., 2021).

Without any of these options the model's own loss is used unchanged.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F

from bridgetune.config import TrainConfig
from bridgetune.losses import IGNORE, task_loss


class Objective:
    """`objective(model, batch)` -> scalar loss."""

    def __init__(self, problem: str, cfg: TrainConfig, weights: torch.Tensor | None = None):
        self.problem = problem
        self.smoothing = cfg.label_smoothing
        self.rdrop = cfg.rdrop
        self.weights = weights
        self.custom = weights is not None or self.smoothing > 0 or self.rdrop > 0

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.custom:
            return model(**batch).loss
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if not self.rdrop:
            return self.task_loss(model(**inputs).logits, labels)
        doubled = {k: torch.cat([v, v]) for k, v in inputs.items()}
        first, second = model(**doubled).logits.chunk(2)
        loss = (self.task_loss(first, labels) + self.task_loss(second, labels)) / 2
        return loss + self.rdrop * self.divergence(first, second, labels)

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return task_loss(logits, labels, self.problem, self.weights, self.smoothing)

    def divergence(
        self, first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Symmetric KL between the two passes' predictions (tokens: labelled positions only;
        regression: the squared difference of the two outputs)."""
        first, second = first.float(), second.float()
        if self.problem == "regression":
            return F.mse_loss(first, second)
        if self.problem == "multi":
            p, q = torch.sigmoid(first), torch.sigmoid(second)
            p, q = torch.stack([p, 1 - p], -1), torch.stack([q, 1 - q], -1)
            log_p, log_q = p.clamp_min(1e-7).log(), q.clamp_min(1e-7).log()
        else:
            log_p, log_q = F.log_softmax(first, -1), F.log_softmax(second, -1)
            p, q = log_p.exp(), log_q.exp()
        kl = ((p * (log_p - log_q)) + (q * (log_q - log_p))).sum(-1) / 2
        if self.problem == "token":
            mask = labels != IGNORE
            return (kl * mask).sum() / mask.sum().clamp_min(1)
        return kl.mean()


def class_weights(
    setting: str | dict[str, float] | None, labels: list[str], features: list[dict], problem: str
) -> torch.Tensor | None:
    """Per-class loss weights from `train.class_weights` and the training features.

    'balanced' is n / (classes x count) as in scikit-learn (multilabel: negatives / positives of
    each label, BCE's pos_weight); a dict gives weights by label name, 1.0 for the others.
    """
    if setting is None:
        return None
    if isinstance(setting, dict):
        unknown = sorted(set(setting) - set(labels))
        if unknown:
            raise ValueError(
                f"train.class_weights names unknown labels {unknown}; labels are: "
                + ", ".join(labels)
            )
        return torch.tensor([float(setting.get(label, 1.0)) for label in labels])
    if problem == "multi":
        positives = torch.tensor([f["labels"] for f in features], dtype=torch.float).sum(0)
        negatives = len(features) - positives
        return negatives / positives.clamp_min(1)
    counts = Counter(_label_ids(features))
    total = sum(counts.values())
    present = [i for i in range(len(labels)) if counts[i]]
    return torch.tensor(
        [total / (len(present) * counts[i]) if counts[i] else 1.0 for i in range(len(labels))]
    )


def _label_ids(features: list[dict]) -> list[int]:
    ids: list[Any] = []
    for feature in features:
        value = feature["labels"]
        if isinstance(value, list):
            ids.extend(v for v in value if v != IGNORE)
        else:
            ids.append(value)
    return ids
