"""Knowledge distillation's teacher side: the teacher's soft targets for every training feature,
computed once before the student trains and cached in memory (`bridgetune distill`).

The loop puts each batch's targets under "teacher" (bridgetune.data.batching.LOSS_KEYS) and the
objective mixes the task's loss with `Task.distillation_loss` against them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bridgetune.data.batching import LOSS_KEYS, eval_batches, feature_length
from bridgetune.heads import output_logits
from bridgetune.tasks.base import Feature, Task


class SoftTargets:
    """The teacher's outputs, one tensor per training feature (in the features' order), batched
    as the student's logits are: a row per example, or (token tasks) positions padded to the
    batch's width."""

    def __init__(self, rows: list[torch.Tensor], per_token: bool) -> None:
        self.rows, self.per_token = rows, per_token

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices: Sequence[int], width: int) -> torch.Tensor:
        chosen = [self.rows[i] for i in indices]
        if not self.per_token:
            return torch.stack(chosen)
        out = chosen[0].new_zeros((len(chosen), width, chosen[0].shape[-1]))
        for row, target in enumerate(chosen):
            length = min(len(target), width)
            out[row, :length] = target[:length]
        return out

    def nbytes(self) -> int:
        return sum(row.numel() * row.element_size() for row in self.rows)


def teacher_targets(
    teacher: torch.nn.Module,
    task: Task,
    features: list[Feature],
    pad_id: int,
    batch_size: int = 64,
    precision: str = "fp32",
    progress: bool = True,
) -> SoftTargets:
    """The teacher's soft targets of `features` (tokenized by the teacher's tokenizer: the same
    features the student trains on when the two share it), with a progress bar."""
    from rich.console import Console
    from rich.progress import Progress

    from bridgetune.inference.predictor import autocast_for

    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    rows: list[torch.Tensor] = [torch.empty(0)] * len(features)  # every index is batched
    batches = eval_batches([feature_length(f) for f in features], batch_size)
    with (
        torch.inference_mode(),
        autocast_for(device, precision),
        Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar,
    ):
        job = bar.add_task(
            f"teacher soft labels for {len(features):,} examples", total=len(features)
        )
        for batch in batches:
            chosen = [features[i] for i in batch]
            tensors = task.collate(chosen, pad_id)
            tensors = {k: v.to(device) for k, v in tensors.items() if k not in LOSS_KEYS}
            logits = output_logits(teacher(**tensors))
            for index, target in zip(batch, task.soft_targets(logits, chosen)):
                rows[index] = target
            bar.advance(job, len(batch))
    teacher.train(was_training)
    return SoftTargets(rows, task.distills == "token")
