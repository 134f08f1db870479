"""The training loss of a batch: the task's one loss (`bridgetune.losses.task_loss`, the kind
`train.loss` picks) with class weights and label smoothing, and R-Drop (two dropout passes
pulled together by a symmetric KL; Liang et al., 2021).

The loss is computed here from the model's logits, never by the model: the batch entries the
loss reads (labels, ranking groups) do not enter the model.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F

from bridgetune.config import TrainConfig
from bridgetune.losses import IGNORE, LOSS_KEYS, output_logits, task_loss


class Objective:
    """`objective(model, batch)` -> scalar loss.

    `output_layer`: a causal LM's output layer (problem "lm"). Its input is then cut to the
    positions whose next token is a target before it runs, so the vocabulary projection and
    softmax skip every prompt token and all padding, also inside packed rows, where
    transformers' `logits_to_keep` (one column range for the whole batch) cannot.
    """

    def __init__(
        self,
        problem: str,
        cfg: TrainConfig,
        weights: torch.Tensor | None = None,
        output_layer: torch.nn.Module | None = None,
    ):
        self.problem = problem
        self.kind = cfg.loss
        self.smoothing = cfg.label_smoothing
        self.rdrop = cfg.rdrop
        self.weights = weights
        self.output_layer = output_layer

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels, groups = batch["labels"], batch.get("groups")
        inputs = {k: v for k, v in batch.items() if k not in LOSS_KEYS}
        if self.output_layer is not None and not self.rdrop:
            return self.scored_tokens_loss(model, inputs, labels)
        if not self.rdrop:
            return self.task_loss(output_logits(model(**inputs)), labels, groups)
        doubled = {k: torch.cat([v, v]) for k, v in inputs.items()}
        first, second = output_logits(model(**doubled)).chunk(2)
        loss = (self.task_loss(first, labels, groups) + self.task_loss(second, labels, groups)) / 2
        return loss + self.rdrop * self.divergence(first, second, labels)

    def scored_tokens_loss(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        """Next-token cross-entropy with the output layer run on the scored positions only
        (the same value as `task_loss` on full logits, tested)."""
        targets = labels[:, 1:]
        scored = targets != IGNORE
        if not bool(scored.any()):  # nothing to learn in this batch: the usual (NaN) loss
            return self.task_loss(output_logits(model(**inputs)), labels, None)
        inputs = {k: v for k, v in inputs.items() if k != "logits_to_keep"}

        def select(module: torch.nn.Module, args: tuple) -> tuple:
            hidden = args[0]
            if hidden.shape[:2] != labels.shape:
                raise ValueError(f"output layer input {tuple(hidden.shape)} for labels "
                                 f"{tuple(labels.shape)}")  # fmt: skip
            return (hidden[:, :-1][scored], *args[1:])

        handle = self.output_layer.register_forward_pre_hook(select)
        try:
            logits = output_logits(model(**inputs))
        finally:
            handle.remove()
        return F.cross_entropy(logits.float(), targets[scored])

    def task_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None
    ) -> torch.Tensor:
        loss = task_loss(
            logits, labels, self.problem, self.weights, self.smoothing, groups, self.kind
        )
        assert loss is not None  # training batches carry labels
        return loss

    def divergence(
        self, first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Symmetric KL between the two passes' predictions (tokens: labelled positions only;
        regression: the squared difference of the two outputs)."""
        first, second = first.float(), second.float()
        if self.problem in ("regression", "ranking"):
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
