"""The `distill:` section: how `bridgetune distill` teaches a student (its own module: sections.py
holds the training run's other sections and was at its size limit)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bridgetune.config.base import _Section


class DistillConfig(_Section):
    """`bridgetune distill`: a student trained on a teacher's temperature-scaled soft labels
    mixed with the hard labels (Hinton et al., 2015; per token for ner)."""

    teacher: str | None = Field(
        None, description="The teacher: a trained model directory of the same task and labels."
    )
    student_layers: int | list[int] | None = Field(
        None,
        description="Build the student from the teacher itself, keeping this many of its "
        "transformer layers (layer_selection picks which), or the layers of this list (0 = "
        "the bottom one); unset: the student is model.name.",
    )
    layer_selection: Literal["every", "first", "importance"] = Field(
        "every",
        description="Which teacher layers the student keeps: 'every' k-th (the last of each "
        "block of k, so the top layer stays under the head), 'first' the bottom ones, "
        "'importance' those left after removing, one at a time, the layer whose removal costs "
        "the dev metric least (whole-layer pruning; the distillation is its recovery).",
    )
    temperature: float = Field(
        2.0, gt=0, description="Softmax temperature of the soft labels (the loss is scaled by T^2)."
    )
    alpha: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Weight of the soft-label loss; 1 - alpha weighs the hard labels.",
    )
    unlabelled: str | None = Field(
        None,
        description="More training text without labels (TXT, a text per line; or the task's "
        "file format): labelled by the teacher's predictions and learnt from its soft labels.",
    )
    max_unlabelled: int | None = Field(
        None, gt=0, description="Use at most this many unlabelled examples (the first ones)."
    )
