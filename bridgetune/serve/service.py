"""What the HTTP layer calls: the served model (swappable), predictions, monitoring, feedback."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bridgetune.config import ServeConfig
from bridgetune.data.schema import Example
from bridgetune.inference.predictor import Predictor, infer
from bridgetune.lifecycle.monitor import Alert, DriftMonitor, post_alert
from bridgetune.lifecycle.store import FeedbackStore
from bridgetune.runtime.hardware import native_bf16
from bridgetune.serve.metrics import ServiceMetrics

log = logging.getLogger("bridgetune.serve")


class RequestError(ValueError):
    """A request the client must change; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def model_version(meta: dict[str, Any], directory: Path | None) -> str:
    """A readable version: the run name (or directory name) and when the model was written."""
    if meta.get("version"):
        return str(meta["version"])
    name = "model"
    if directory is not None:
        directory = Path(directory).resolve()
        name = directory.parent.name if directory.name == "model" else directory.name
    return f"{name}@{meta.get('created', 'unknown')}"


@dataclass
class ModelSlot:
    """A loaded model with its version and monitor; replaced as a whole on reload."""

    predictor: Predictor
    version: str
    monitor: DriftMonitor
    engine: Any = None  # generative models: the GenerationEngine (False: it cannot run them)

    @classmethod
    def create(cls, predictor: Predictor, config: ServeConfig) -> ModelSlot:
        meta = predictor.meta
        expected = meta.get("label_distribution") or {}
        return cls(
            predictor,
            model_version(meta, predictor.directory),
            DriftMonitor(expected, config.monitor),
        )

    @property
    def task(self) -> str:
        return self.predictor.task.name

    def examples(self, texts: list[str], pairs: list[str] | None) -> list[Example]:
        task = self.predictor.task
        if task.takes_pairs and pairs is None:
            raise RequestError(
                422, f"text_pairs: this {self.task} model reads {task.second_text}: send "
                "text_pairs, one per text",
            )  # fmt: skip
        if not task.takes_pairs and pairs is not None:
            raise RequestError(422, f"text_pairs: this {self.task} model takes no text_pairs")
        return [Example(text=t, text_pair=pairs[i] if pairs else None) for i, t in enumerate(texts)]

    def encode(self, examples: list[Example], truncation: str) -> list[dict]:
        predictor = self.predictor
        try:
            features = predictor.task.encode(examples, predictor.tokenizer, predictor.max_length)
        except ValueError as error:  # an input the task cannot encode (a QA question too long)
            raise RequestError(422, str(error)) from None
        if truncation == "reject":
            cut = [i for i, f in enumerate(features) if f["truncated"]]
            if cut:
                raise RequestError(
                    422,
                    f"texts {cut} are longer than the model's max_length "
                    f"({predictor.max_length} tokens); shorten them",
                )
        return features


def serving_precision(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    return "bf16" if native_bf16(device) else "fp32"


def run_batch(
    config: ServeConfig, predictor: Predictor, features: list[dict], examples: list[Example]
) -> list[dict[str, Any]]:
    """One micro-batch through the shared inference path (called on the inference thread)."""
    return infer(
        predictor.model,
        predictor.task,
        features,
        examples,
        predictor.tokenizer.pad_token_id,
        predictor.device,
        batch_size=config.max_batch_texts,
        precision=serving_precision(config.precision, predictor.device),
        batch_tokens=config.batch_tokens,
    )


class Observer:
    """Feeds predictions to the metrics and the slot's drift monitor; raises alerts."""

    def __init__(self, metrics: ServiceMetrics, webhook_url: str | None) -> None:
        self.metrics = metrics
        self.webhook_url = webhook_url
        self._shown: set[tuple[str, str]] = set()

    def record(self, slot: ModelSlot, predictions: list[dict[str, Any]]) -> None:
        metrics = self.metrics
        metrics.texts.inc(len(predictions))
        for prediction in predictions:
            labels, confidence = slot.predictor.task.monitor_signal(prediction)
            for label in slot.predictor.task.counted_labels(prediction):
                metrics.labels.labels(label=label).inc()
            if confidence is not None:
                metrics.confidence.observe(confidence)
            if prediction.get("truncated"):
                metrics.truncated.inc()
            for alert in slot.monitor.observe(labels, confidence):
                self.alert(slot, alert)
        self.publish(slot)

    def alert(self, slot: ModelSlot, alert: Alert) -> None:
        log.warning("monitoring alert (%s): %s", slot.version, alert.message())
        self.metrics.alerts.labels(kind=alert.kind, label=alert.label or "").inc()
        if self.webhook_url:
            post_alert(self.webhook_url, alert, slot.version)

    def publish(self, slot: ModelSlot) -> None:
        """Window shares, mean confidence and active alerts as gauges."""
        snapshot = slot.monitor.snapshot()
        for label, share in snapshot["shares"].items():
            self.metrics.label_share.labels(label=label).set(share)
        if snapshot["mean_confidence"] is not None:
            self.metrics.mean_confidence.set(snapshot["mean_confidence"])
        active = {(a["kind"], a["label"] or "") for a in snapshot["active_alerts"]}
        for kind, label in self._shown | active:
            self.metrics.alert_active.labels(kind=kind, label=label).set(
                1 if (kind, label) in active else 0
            )
        self._shown |= active

    def reset(self, slot: ModelSlot) -> None:
        for label, share in slot.monitor.snapshot()["expected"].items():
            self.metrics.expected_share.labels(label=label).set(share)


def feedback_label(
    slot: ModelSlot, text: str, text_pair: str | None, label: Any, entities: list[dict] | None
) -> Any:
    """The corrected answer to store, checked by the model's task: the label it takes
    (`Task.feedback_label`), then the row training will read (`Task.feedback_example`, the
    task's reader on the exported row), so whatever is stored can be trained on.

    Raises:
        RequestError: 422 naming the field the task refuses.
    """
    task = slot.predictor.task
    if task.takes_pairs and text_pair is None:
        raise RequestError(422, f"text_pair: this {slot.task} model reads {task.second_text}")
    if not (task.takes_pairs or task.ranks) and text_pair is not None:
        raise RequestError(422, f"text_pair: this {slot.task} model takes no text_pair")
    try:
        checked = task.feedback_label(label, entities, text)
        task.feedback_example(text, text_pair, checked)
    except ValueError as error:
        raise RequestError(422, str(error)) from None
    return checked


def open_store(config: ServeConfig, directory: Path | None) -> FeedbackStore | None:
    """The feedback store: `feedback_db`, else feedback.db beside the model directory."""
    if config.feedback_db:
        return FeedbackStore(config.feedback_db)
    if directory is None:
        return None
    return FeedbackStore(Path(directory).resolve().parent / "feedback.db")
