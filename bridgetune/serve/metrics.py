"""Prometheus metrics of the service, on a registry of its own (one per app).

With several worker processes (`PROMETHEUS_MULTIPROC_DIR` set), values live in files shared by
the workers and `/metrics` aggregates them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CONFIDENCE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 10)) + (0.95, 0.99, 1.0)


class ServiceMetrics:
    """Every metric the service exposes, named `bridgetune_*`."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "bridgetune_requests", "HTTP requests.", ["endpoint", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "bridgetune_request_seconds",
            "Request latency.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_texts = Histogram(
            "bridgetune_batch_texts", "Texts per micro-batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "bridgetune_batch_seconds",
            "Inference time per micro-batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.texts = Counter("bridgetune_texts", "Texts predicted.", registry=r)
        self.labels = Counter(
            "bridgetune_predicted_labels",
            "Predicted labels (entity types for NER).",
            ["label"],
            registry=r,
        )
        self.confidence = Histogram(
            "bridgetune_confidence",
            "Confidence of single-label predictions (top probability).",
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.truncated = Counter(
            "bridgetune_truncated_texts", "Texts longer than max_length.", registry=r
        )
        self.feedback = Counter("bridgetune_feedback", "Feedback rows stored.", registry=r)
        self.generated_tokens = Counter(
            "bridgetune_generated_tokens", "Tokens generated (rate: tokens/s).", registry=r
        )
        self.generation_seconds = Histogram(
            "bridgetune_generation_seconds",
            "Time generating one request (queue excluded).",
            buckets=GENERATION_BUCKETS,
            registry=r,
        )
        self.generation_queue = Histogram(
            "bridgetune_generation_queue_seconds",
            "Time a generation request waited before its first forward pass.",
            buckets=GENERATION_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "bridgetune_time_to_first_token_seconds",
            "From a generation request's arrival to its first token (queue included).",
            buckets=GENERATION_BUCKETS,
            registry=r,
        )
        self.cancelled_generations = Counter(
            "bridgetune_cancelled_generations",
            "Generations stopped because the client went away.",
            registry=r,
        )
        self.retrieval_seconds = Histogram(
            "bridgetune_retrieval_seconds",
            "Knowledge-base search of one chat request (embedding the question included).",
            registry=r,
        )
        self.generation_batch = Histogram(
            "bridgetune_generation_batch_rows",
            "Generations advanced together by one forward pass (continuous batching).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.reloads = Counter(
            "bridgetune_model_reloads", "Model reloads.", ["outcome"], registry=r
        )
        gauge_mode: dict[str, Any] = {"multiprocess_mode": "mostrecent"}
        self.model_info = Gauge(
            "bridgetune_model_info",
            "The model being served (value 1).",
            ["version", "task"],
            registry=r,
            **gauge_mode,
        )
        self.label_share = Gauge(
            "bridgetune_monitor_label_share",
            "Label share in the monitoring window.",
            ["label"],
            registry=r,
            **gauge_mode,
        )
        self.expected_share = Gauge(
            "bridgetune_monitor_expected_share",
            "Label share in the training data.",
            ["label"],
            registry=r,
            **gauge_mode,
        )
        self.mean_confidence = Gauge(
            "bridgetune_monitor_mean_confidence",
            "Mean confidence in the monitoring window.",
            registry=r,
            **gauge_mode,
        )
        self.alerts = Counter(
            "bridgetune_monitor_alerts", "Monitoring alerts raised.", ["kind", "label"], registry=r
        )
        self.alert_active = Gauge(
            "bridgetune_monitor_alert_active",
            "1 while a monitoring alert is active.",
            ["kind", "label"],
            registry=r,
            **gauge_mode,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text for `/metrics` and its content type."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def set_model(self, version: str, task: str, previous: str | None = None) -> None:
        if previous is not None:
            self.model_info.labels(version=previous, task=task).set(0)
        self.model_info.labels(version=version, task=task).set(1)
