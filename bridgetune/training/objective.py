"""The training loss of a batch: the task's one loss (`bridgetune.tasks.losses.task_loss`, the kind
`train.loss` picks) with class weights and label smoothing, and R-Drop (two dropout passes
pulled together by a symmetric KL; Liang et al., 2021), and knowledge distillation (the batch's
"teacher" soft targets: `bridgetune distill`).

The loss is computed here from the model's logits, never by the model: the batch entries the
loss reads (labels, ranking groups) do not enter the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bridgetune.config import DistillConfig, TrainConfig
from bridgetune.data.batching import IGNORE, LOSS_KEYS
from bridgetune.heads import output_logits
from bridgetune.tasks.base import Task


class Objective:
    """`objective(model, batch)` -> scalar loss: the task's loss (`Task.loss`) of the model's
    logits, with the run's class weights, label smoothing and loss kind, R-Drop around it.

    When the task names an output layer (`Task.output_layer`: a causal LM's), its input is cut
    to the positions whose next token is a target before it runs, so the vocabulary projection
    and softmax skip every prompt token and all padding, also inside packed rows, where
    transformers' `logits_to_keep` (one column range for the whole batch) cannot.
    """

    def __init__(
        self,
        task: Task,
        cfg: TrainConfig,
        weights: torch.Tensor | None = None,
        output_layer: torch.nn.Module | None = None,
        distill: DistillConfig | None = None,
    ):
        self.task = task
        self.kind = cfg.loss
        self.smoothing = cfg.label_smoothing
        self.rdrop = cfg.rdrop
        self.weights = weights
        self.output_layer = output_layer
        self.distill = distill

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels, groups = batch["labels"], batch.get("groups")
        inputs = {k: v for k, v in batch.items() if k not in LOSS_KEYS}
        if "teacher" in batch:
            return self.distilled_loss(model, inputs, batch)
        if self.output_layer is not None and not self.rdrop:
            return self.scored_tokens_loss(model, inputs, labels)
        if not self.rdrop:
            return self.task_loss(output_logits(model(**inputs)), labels, groups)
        doubled = {k: torch.cat([v, v]) for k, v in inputs.items()}
        first, second = output_logits(model(**doubled)).chunk(2)
        loss = (self.task_loss(first, labels, groups) + self.task_loss(second, labels, groups)) / 2
        return loss + self.rdrop * self.task.divergence(first, second, labels)

    def distilled_loss(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], batch: dict
    ) -> torch.Tensor:
        """(1 - alpha) x the task's loss on the labels + alpha x the distillation loss against
        the teacher's soft targets (`Task.distillation_loss`)."""
        assert self.distill is not None, "soft targets in a batch of a run without distill"
        logits = output_logits(model(**inputs))
        alpha = self.distill.alpha
        soft = self.task.distillation_loss(
            logits, batch["teacher"], inputs["attention_mask"], self.distill.temperature
        )
        if alpha == 1.0:
            return soft
        hard = self.task_loss(logits, batch["labels"], batch.get("groups"))
        return (1 - alpha) * hard + alpha * soft

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
        return self.task.loss(logits, labels, groups, self.weights, self.smoothing, self.kind)
