"""The parity check every export passes before it is written: the exported model against the
PyTorch model it came from, on the same batches of real data.

Measured: the largest and the mean absolute difference of the logits (over the positions a
batch really holds: padding is left out), the share of examples whose decoded prediction is the
same (labels, entity spans, answers, rankings: everything but the scores), the task's metric on
both when the data are labelled, and the speed of both (texts/s in batches of 32, and the median
and 99th-percentile latency of one text). An export whose agreement is under the floor is
refused: a multilingual classifier that turned "next to random" after int8 passed every
shape check.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from bridgetune.data.batching import LOSS_KEYS
from bridgetune.data.schema import Example
from bridgetune.inference.predictor import infer
from bridgetune.tasks import Task

LATENCY_TEXTS = 32  # texts timed one at a time
TIE = 1e-5  # ranking scores this close (of their scale) are a tie: either order agrees
Logits = list[tuple[torch.Tensor, torch.Tensor | None]]  # per batch: logits, attention mask


class ParityError(ValueError):
    """The exported model does not predict as the PyTorch model does."""


def decisions(prediction: Any) -> Any:
    """What must agree: a prediction without its scores (floats), recursively."""
    if isinstance(prediction, dict):
        return {key: decisions(value) for key, value in prediction.items()
                if not isinstance(value, float)}  # fmt: skip
    if isinstance(prediction, (list, tuple)):
        return [decisions(item) for item in prediction if not isinstance(item, float)]
    return prediction


def numbers(prediction: Any) -> list[float]:
    """The scores of a prediction, flattened (regression values, embeddings ...)."""
    if isinstance(prediction, float):
        return [prediction]
    if isinstance(prediction, dict):
        return [n for value in prediction.values() for n in numbers(value)]
    if isinstance(prediction, (list, tuple)):
        return [n for item in prediction for n in numbers(item)]
    return []


def agree(reference: dict[str, Any], candidate: dict[str, Any], tolerance: float) -> bool:
    """The same decision; a prediction that is only numbers (a regression value, an
    embedding) agrees when every number is within `tolerance` of the reference's scale; a
    ranking agrees when it differs only in the order of candidates the reference scores alike
    (`same_ranking`: duplicate candidates tie exactly, and a runtime's rounding breaks the tie
    either way)."""
    same = decisions(reference) == decisions(candidate)
    if not same and "ranking" in reference and "ranking" in candidate:
        return same_ranking(reference["ranking"], candidate["ranking"])
    if not same or any(decisions(reference).values()):
        return same
    ours, theirs = np.asarray(numbers(reference)), np.asarray(numbers(candidate))
    if ours.shape != theirs.shape:
        return False
    scale = max(float(np.abs(ours).max(initial=0.0)), 1e-6)
    return bool(np.abs(ours - theirs).max(initial=0.0) <= tolerance * scale)


def same_ranking(reference: list[dict], candidate: list[dict], tie: float = TIE) -> bool:
    """`candidate`'s order never puts a candidate above one that the reference scores higher
    by more than `tie` of the scores' scale (ties may come in either order; a closer call
    that flips is a disagreement, as for labels)."""
    scores = {entry["index"]: float(entry["score"]) for entry in reference}
    order = [entry["index"] for entry in candidate]
    if sorted(order) != sorted(scores):
        return False
    scale = max((abs(v) for v in scores.values()), default=0.0) or 1.0
    return all(scores[a] >= scores[b] - tie * scale for a, b in zip(order, order[1:]))


def logit_differences(ours: Logits, theirs: Logits) -> tuple[float, float]:
    """(max, mean) absolute logit difference over the batches' real positions."""
    largest, total, count = 0.0, 0.0, 0
    for (mine, mask), (other, _) in zip(ours, theirs):
        difference = (mine - other).abs()
        if mask is not None and difference.dim() >= 2 and difference.shape[:2] == mask.shape:
            difference = difference[mask.bool()]  # per-token logits: real tokens only
        largest = max(largest, float(difference.max()))
        total, count = total + float(difference.sum()), count + difference.numel()
    return largest, total / max(count, 1)


def timed(
    model: torch.nn.Module, task: Task, features: list[dict], examples: list[Example], pad_id: int
) -> tuple[list[dict[str, Any]], Logits, float]:
    """The predictions through the Predictor's path (batches of 32), every batch's logits
    (with its attention mask) and the seconds it took, in one pass."""
    logits: Logits = []

    def keep(batch: torch.Tensor, inputs: dict[str, torch.Tensor]) -> None:
        logits.append((batch.float(), inputs.get("attention_mask")))

    started = time.perf_counter()
    predictions = infer(model, task, features, examples, pad_id, torch.device("cpu"), 32,
                        precision="fp32", observe=keep)  # fmt: skip
    return predictions, logits, time.perf_counter() - started


def latency(model: torch.nn.Module, task: Task, features: list[dict], pad_id: int) -> list[float]:
    """Seconds per call with one text, over the first LATENCY_TEXTS features."""
    seconds = []
    with torch.inference_mode():
        for feature in features[:LATENCY_TEXTS]:
            tensors = task.collate([feature], pad_id)
            tensors = {k: v for k, v in tensors.items() if k not in LOSS_KEYS}
            started = time.perf_counter()
            model(**tensors)
            seconds.append(time.perf_counter() - started)
    return seconds


def check_parity(
    reference: torch.nn.Module,
    candidate: torch.nn.Module,
    task: Task,
    features: list[dict],
    examples: list[Example],
    pad_id: int,
    labelled: bool,
    tolerance: float = 0.05,
    cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The exported model against the PyTorch one on `features` (see the module docstring).
    `cache`: a dict kept between checks against the same reference (its runs are reused)."""
    cache = {} if cache is None else cache
    if not cache:
        reference.eval()
        cache["predictions"], cache["logits"], cache["seconds"] = timed(
            reference, task, features, examples, pad_id
        )
        cache["latency"] = latency(reference, task, features, pad_id)
    ours, our_seconds = cache["predictions"], cache["seconds"]
    theirs, their_logits, their_seconds = timed(candidate, task, features, examples, pad_id)
    largest, mean = logit_differences(cache["logits"], their_logits)
    agreed = sum(agree(a, b, tolerance) for a, b in zip(ours, theirs))
    report: dict[str, Any] = {
        "examples": len(features),
        "agreement": agreed / max(len(features), 1),
        "disagreements": len(features) - agreed,
        "max_logit_difference": largest,
        "mean_logit_difference": mean,
        "texts_per_second": {
            "pytorch": len(features) / max(our_seconds, 1e-9),
            "exported": len(features) / max(their_seconds, 1e-9),
        },
    }
    for name, seconds in (("pytorch", cache["latency"]),
                          ("exported", latency(candidate, task, features, pad_id))):  # fmt: skip
        report.setdefault("latency_ms_p50", {})[name] = 1000 * float(np.median(seconds))
        report.setdefault("latency_ms_p99", {})[name] = 1000 * float(np.quantile(seconds, 0.99))
    if labelled:
        metric = task.default_metric
        before, after = task.metrics(ours, examples), task.metrics(theirs, examples)
        report["metric"] = metric
        report["metric_pytorch"] = before.get(metric)
        report["metric_exported"] = after.get(metric)
        if isinstance(before.get(metric), float) and isinstance(after.get(metric), float):
            report["metric_delta"] = after[metric] - before[metric]
    return report
