"""distill: a smaller student trained on a teacher's soft labels (`bridgetune distill CONFIG`).

The student is a run of the train recipe: the same data, splits, augmentation, loop, reports and
model directory, with three differences. Its model is the teacher itself cut to
`distill.student_layers` of its layers (or any smaller model, `model.name`); the teacher's
temperature-scaled outputs on every training example, computed once before training, are mixed
into its loss (`distill.alpha`; per token for NER); unlabelled text (`distill.unlabelled`)
joins the training split labelled by the teacher's predictions. The teacher's dev figures are
written beside the student's (bridgetune.json "distillation").
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bridgetune.config import RunConfig
from bridgetune.data.io import Splits
from bridgetune.data.schema import Example
from bridgetune.inference.predictor import Predictor, infer
from bridgetune.lifecycle.reports import headline
from bridgetune.models.layers import (
    chosen_layers,
    greedy_layers,
    keep_layers,
    layer_stack,
    with_layers,
)
from bridgetune.recipes.check import ConfigLike, as_config
from bridgetune.recipes.evaluate import read_inputs
from bridgetune.recipes.finish import TrainResult
from bridgetune.recipes.train import claimed_run, train_run
from bridgetune.tasks import TASKS, Task
from bridgetune.training.distill import SoftTargets, teacher_targets


def distill(
    config: ConfigLike,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_step: Callable[[Any], None] | None = None,
) -> TrainResult:
    """Train a student on the soft labels of `distill.teacher` (a trained model directory of
    the same task and labels), evaluate it on dev (and test) and save its model directory.

    Args:
        config: a RunConfig, a YAML path or a raw dict with a `distill:` section.
        overrides: dotted overrides such as ``["distill.student_layers=3"]``.
        resume, overwrite, on_step: as for `bridgetune.train`.

    Raises:
        ValueError: no teacher, a teacher of another task or labels, a task that cannot be
            distilled, or settings a student cut from its teacher cannot take.
    """
    cfg = as_config(config, overrides)
    distiller = Distiller(cfg)
    with claimed_run(distiller.cfg, resume, overwrite) as run:
        return train_run(distiller.cfg, run, resume, on_step, distiller=distiller)


def student_layers(total: int, setting: int | list[int], how: str) -> list[int]:
    """The teacher layers a student keeps: a count picked `how` (importance: the bounds only,
    until `Distiller.choose_layers` picks them on dev data), or an explicit list.

    Raises:
        ValueError: a count out of bounds, or a list with repeats or layers the teacher lacks.
    """
    if isinstance(setting, int):
        return chosen_layers(total, setting, "every" if how == "importance" else how)
    if not setting or len(set(setting)) != len(setting) or not all(0 <= i < total for i in setting):
        raise ValueError(
            f"distill.student_layers={setting}: give distinct layers from 0 to {total - 1} (the "
            f"teacher has {total}), or a count"
        )
    return sorted(setting)


class Distiller:
    """The teacher of a distillation run and what the train recipe asks of it: the unlabelled
    examples it labels, the student built from it, its soft targets, its dev figures."""

    def __init__(self, cfg: RunConfig) -> None:
        settings = cfg.distill
        if not settings.teacher:
            raise ValueError(
                "distill.teacher is not set: name the trained model directory to distill, e.g. "
                "distill.teacher=runs/sst2/model"
            )
        kind: Any = TASKS.get(cfg.task.name)
        if kind.distills is None:
            able = sorted(name for name in TASKS if TASKS.get(name).distills)
            raise ValueError(
                f"task {cfg.task.name} cannot be distilled yet; distillation is built for "
                f"{', '.join(able)}"
            )
        teacher_dir = Path(settings.teacher).expanduser()
        if not (teacher_dir / "bridgetune.json").is_file():
            raise ValueError(
                f"distill.teacher={settings.teacher}: not a model directory (no bridgetune.json); "
                "give the model folder a training run wrote (runs/<name>/model)"
            )
        self.teacher = Predictor.load(teacher_dir, cfg.train.device)
        if self.teacher.meta.get("runtime"):
            runtime = self.teacher.meta["runtime"].get("name", "exported")
            raise ValueError(
                f"distill.teacher={settings.teacher} is an exported ({runtime}) directory; give "
                "the PyTorch model directory it was exported from"
            )
        if self.teacher.task.name != cfg.task.name:
            raise ValueError(
                f"distill.teacher={settings.teacher} is a {self.teacher.task.name} model; this "
                f"run's task is {cfg.task.name}"
            )
        self.layers: list[int] | None = None
        if settings.student_layers is not None:
            if cfg.model.prune_vocab is not None or cfg.model.extend_vocab:
                raise ValueError(
                    "distill.student_layers: the student is the teacher cut to fewer layers and "
                    "keeps its (already pruned or extended) vocabulary; override "
                    "model.prune_vocab=null model.extend_vocab=null"
                )
            total = len(layer_stack(self.teacher.model)[1])
            self.layers = student_layers(total, settings.student_layers, settings.layer_selection)
            # the student reads text with the teacher's own tokenizer and task tokens
            cfg = cfg.model_copy(deep=True)
            cfg.model.name = str(teacher_dir)
        self.cfg, self.settings, self.directory = cfg, settings, teacher_dir
        self.unlabelled_count = 0
        self.pruning: list[dict[str, Any]] | None = None

    @property
    def task(self) -> Task:
        return self.teacher.task

    def check_task(self, task: Task) -> None:
        """The student's task learns the teacher's labels, in the teacher's order."""
        if list(task.labels) != list(self.task.labels):
            raise ValueError(
                f"the training data's labels {task.labels} are not the teacher's "
                f"{self.task.labels} ({self.directory}): distill on data of the teacher's labels"
            )

    def prepare(self, splits: Splits) -> Splits:
        """Before the student is built: its layers chosen on dev (`importance`), and the
        unlabelled examples added to train (`with_unlabelled`)."""
        by_importance = self.settings.layer_selection == "importance"
        if by_importance and isinstance(self.settings.student_layers, int):
            self.choose_layers(splits.dev)
        return self.with_unlabelled(splits)

    def choose_layers(self, dev: list[Example], limit: int = 500) -> None:
        """The layers to keep by importance: greedy removal scored by the dev metric of the
        teacher without each layer (the first `limit` dev examples), with the path recorded."""
        assert self.layers is not None
        examples = dev[:limit]
        if not examples:
            raise ValueError("layer_selection: importance needs dev data to score the layers on")
        model = self.teacher.model
        features = self.task.encode(examples, self.teacher.tokenizer, self.teacher.max_length)
        metric = self.cfg.train.metric or self.task.default_metric

        def score(layers: list[int]) -> float:
            with with_layers(model, layers):
                predictions = self.task.calibrate(self._infer(features, examples), examples)
            return float(self.task.metrics(predictions, examples)[metric])

        total = len(layer_stack(model)[1])
        lower = metric in self.task.lower_is_better
        self.layers, self.pruning = greedy_layers(total, len(self.layers), score, lower)

    def with_unlabelled(self, splits: Splits) -> Splits:
        """`splits` with `distill.unlabelled`'s examples added to train, labelled by the
        teacher's predictions (pseudo-labels; the soft targets come later, with the rest)."""
        if not self.settings.unlabelled:
            return splits
        path = Path(self.settings.unlabelled).expanduser()
        if not path.is_file():
            raise ValueError(f"distill.unlabelled={self.settings.unlabelled}: no such file")
        examples = read_inputs(self.directory, path)[: self.settings.max_unlabelled]
        if not examples:
            raise ValueError(f"distill.unlabelled={path}: no text in it")
        features = self.task.encode(examples, self.teacher.tokenizer, self.teacher.max_length)
        predictions = self._infer(features, examples)
        worded = [f.get("example") or e for f, e in zip(features, examples)]
        labelled = [self.task.labelled_by(e, p) for e, p in zip(worded, predictions)]
        self.unlabelled_count = len(labelled)
        return dataclasses.replace(splits, train=[*splits.train, *labelled])

    def student(self) -> torch.nn.Module:
        """A copy of the teacher cut to the chosen layers, head included."""
        assert self.layers is not None
        model = copy.deepcopy(self.teacher.model).cpu().float().train()
        keep_layers(model, self.layers)
        return model

    def soft_targets(
        self, examples: list[Example], student_features: list[dict], precision: str
    ) -> SoftTargets:
        """The teacher's soft targets of the training examples, in the student's features'
        order (the teacher reads them with its own tokenizer).

        Raises:
            ValueError: a token task's student reads a text in other pieces than the teacher.
        """
        # encoded again even for a student cut from the teacher: the check below then also
        # catches a config whose task options (split_pieces, ...) read other pieces
        features = self.task.encode(examples, self.teacher.tokenizer, self.teacher.max_length)
        if len(features) != len(student_features):
            raise ValueError(
                f"the teacher reads {len(features)} training features, the student "
                f"{len(student_features)}: distill with the teacher's max_length"
            )
        if self.task.distills == "token":
            for ours, theirs in zip(student_features, features):
                if ours["input_ids"] != theirs["input_ids"]:
                    raise ValueError(
                        "NER distillation teaches every piece: the student must read text in "
                        "the teacher's pieces (distill.student_layers, or a student with the "
                        "teacher's tokenizer and model.max_length)"
                    )
        return teacher_targets(
            self.teacher.model,
            self.task,
            features,
            self.teacher.tokenizer.pad_token_id,
            precision=precision,
        )

    def teacher_dev(self, examples: list[Example]) -> dict[str, float]:
        """The teacher's dev metrics (headline figures), for the student's report."""
        if not examples:
            return {}
        features = self.task.encode(examples, self.teacher.tokenizer, self.teacher.max_length)
        predictions = self.task.calibrate(self._infer(features, examples), examples)
        return headline(self.task.metrics(predictions, examples))

    def summary(self, targets: SoftTargets, teacher_dev: dict[str, float]) -> dict[str, Any]:
        """What bridgetune.json records of the distillation."""
        return {
            "teacher": str(self.directory),
            "teacher_base_model": self.teacher.meta.get("base_model"),
            "student_layers": self.layers,
            "layer_selection": self.settings.layer_selection,
            **({"pruning_path": self.pruning} if self.pruning else {}),
            "temperature": self.settings.temperature,
            "alpha": self.settings.alpha,
            "unlabelled_examples": self.unlabelled_count,
            "soft_targets_mb": round(targets.nbytes() / 1e6, 2),
            "teacher_dev": teacher_dev,
        }

    def _infer(self, features: list[dict], examples: list[Example]) -> list[dict[str, Any]]:
        return infer(
            self.teacher.model,
            self.task,
            features,
            examples,
            self.teacher.tokenizer.pad_token_id,
            self.teacher.device,
        )
