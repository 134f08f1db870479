"""The one loss of the classification and tagging tasks, shared by every model that computes it.

Heads (embedding, prompt, NLI), adapter and prefix models and the training objective (class
weights, label smoothing, R-Drop around it) all call `task_loss`, so a change to how a task
learns is made once. Pure torch: tasks, heads, methods and training all import it (DESIGN:
methods never import tasks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # label of positions that do not count (word pieces after the first, padding)


def task_loss(
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    problem: str,
    weights: torch.Tensor | None = None,
    smoothing: float = 0.0,
) -> torch.Tensor | None:
    """Mean loss of `logits` against `labels` for a task's `problem` (None without labels,
    as at prediction time).

    "regression": mean squared error of the outputs against the float targets;
    "multi": binary cross-entropy on sigmoid logits (`weights`: BCE's pos_weight per label);
    "single" and "token": cross-entropy over the last axis (`weights` per class, `smoothing`
    as label smoothing; token positions labelled IGNORE do not count).
    """
    if labels is None:
        return None
    logits = logits.float()
    if weights is not None:
        weights = weights.to(logits.device)
    if problem == "regression":
        return F.mse_loss(logits, labels.float().view_as(logits))
    if problem == "multi":
        return F.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=weights)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        weight=weights,
        ignore_index=IGNORE,
        label_smoothing=smoothing,
    )
