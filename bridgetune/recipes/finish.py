"""The end of every kind of run (train, few-shot, zero-shot): dev and test metrics, reports, the
bridgetune.json entries of the run, and the model directory published with the run."""

from __future__ import annotations

import datetime
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridgetune.config import RunConfig
from bridgetune.data.schema import Example
from bridgetune.data.splits import Splits, example_labels
from bridgetune.inference.generation import configure_generation, scored_generations
from bridgetune.lifecycle.failpoints import failpoint
from bridgetune.lifecycle.reports import headline, write_report
from bridgetune.lifecycle.rundir import RunDirectory
from bridgetune.recipes.check import tag_scheme_of
from bridgetune.tasks import Task


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    model_dir: Path
    metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None = None
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False


@dataclass
class Fitted:
    """What a model builder hands back to the composing layer: the trained model, how to
    predict an encoded split with it (`predict(EvalData)`), the training history."""

    model: Any
    predict: Callable[[Any], list[dict[str, Any]]]
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    collective: bool = False  # `model` runs only when every process runs it (FSDP)
    saved: Any = None  # the model to save when not `model` (FSDP: an unsharded copy)


def finish_run(
    run: RunDirectory,
    cfg: RunConfig,
    fitted: Fitted,
    task: Task,
    tokenizer: Any,
    splits: Splits,
    method: str | None = None,
    save: bool = True,
    dev: Any = None,
    notes: dict[str, Any] | None = None,
) -> TrainResult:
    """The end of every kind of run (train, few-shot): dev metrics (the task calibrates its
    decision parameters on dev), test metrics, then reports and the model directory (`save`:
    this process writes it). `dev`: the dev split already encoded (EvalData), if it is;
    `notes`: more entries for bridgetune.json (each also written as <key>.json in the run)."""
    from bridgetune.training.loop import EvalData

    length = cfg.model.max_length
    if dev is None:
        dev = EvalData(task.encode(splits.dev, tokenizer, length), splits.dev)
    dev_metrics = final_metrics(task, fitted.predict(dev), dev.examples, calibrate=True)
    generative = task.generative
    if generative and (save or fitted.collective):
        configure_generation(fitted.model, tokenizer, cfg.generate)
        scores = scored_generations(fitted.model, tokenizer, task, cfg, dev.examples)
        if save:
            dev_metrics.update(scores)
    test_metrics = None
    if splits.test is not None:
        test = EvalData(task.encode(splits.test, tokenizer, length), splits.test)
        test_metrics = final_metrics(task, fitted.predict(test), test.examples, calibrate=False)
    result = TrainResult(
        run.path,
        run.path / "model",
        dev_metrics,
        test_metrics,
        fitted.history,
        fitted.stopped_early,
    )
    if save:
        model = fitted.model if fitted.saved is None else fitted.saved
        if generative:
            configure_generation(model, tokenizer, cfg.generate)
        save_run(run, cfg, result, model, tokenizer, task, splits, method, notes)
    return result


def final_metrics(
    task: Task, predictions: list[dict[str, Any]], examples: list[Example], calibrate: bool
) -> dict[str, Any]:
    """Full metrics of a trained model's `predictions` on `examples`; on dev (`calibrate`) the
    task first fits its decision parameters (the multi-label threshold)."""
    if calibrate:
        predictions = task.calibrate(predictions, examples)
    return task.metrics(predictions, examples)


def model_meta(
    cfg: RunConfig, task: Task, splits: Splits, metrics: dict[str, Any], method: str | None = None
) -> dict:
    from bridgetune._version import __version__

    counts = Counter(label for e in splits.train for label in example_labels(e))
    total = sum(counts.values()) or 1
    return {
        "task": cfg.task.name,
        "labels": task.labels,
        "tag_scheme": tag_scheme_of(cfg),
        "threshold": task.threshold,
        "settings": task.settings(),
        "max_length": cfg.model.max_length,
        "base_model": cfg.model.name,
        "method": method or cfg.method.name,
        "seed": cfg.train.seed,
        "metrics": metrics,
        "label_distribution": {label: counts[label] / total for label in task.labels},
        "data_fingerprint": splits.fingerprint,
        "data": cfg.data.model_dump(
            include={
                "format",
                "text_column",
                "text_pair_column",
                "label_column",
                "column_map",
                "label_separator",
                "group_column",
                "tag_scheme",
                "columns",
                "languages",
            }
        ),
        "bridgetune_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def save_run(
    run: RunDirectory,
    cfg: RunConfig,
    result: TrainResult,
    model: Any,
    tokenizer: Any,
    task: Task,
    splits: Splits,
    method: str | None = None,
    notes: dict[str, Any] | None = None,
) -> None:
    """Reports, plots, the resolved config and the model directory of a finished run, made
    visible together (`run.publish`)."""
    from bridgetune.export.model_dir import save_model_dir

    def write(staging: Path) -> None:
        write_report(staging, "dev", result.metrics, result.history, title=f"{cfg.name}: dev")
        scores = {"dev": headline(result.metrics)}
        if result.test_metrics is not None:
            write_report(staging, "test", result.test_metrics, title=f"{cfg.name}: test")
            scores["test"] = headline(result.test_metrics)
        (staging / "config.yaml").write_text(
            yaml.safe_dump(cfg.model_dump(), sort_keys=False), encoding="utf-8"
        )
        (staging / "history.json").write_text(
            json.dumps(result.history, indent=1), encoding="utf-8"
        )
        failpoint("reports")
        meta = model_meta(cfg, task, splits, scores, method)
        for key, value in (notes or {}).items():
            meta[key] = value
            (staging / f"{key}.json").write_text(json.dumps(value, indent=1, ensure_ascii=False),
                                                 encoding="utf-8")  # fmt: skip
        save_model_dir(staging / "model", model, tokenizer, meta)

    run.publish(write)
