"""Drift monitoring: predicted-label shares and confidence against the training distribution.

A *window* is a set of predictions: the last `MonitorConfig.window` predictions of a service
(`DriftMonitor`) or a fixed stretch of time in batch mode (`bridgetune monitor`). Its figures:

- ``count``: the predictions (texts) in it; a window with fewer than ``min_samples`` alerts never.
- ``shares``: each label's share among all labels predicted in the window. That is the rule that
  ``label_distribution`` in ``bridgetune.json`` follows for the training data, so the two compare
  directly: one label per text for classification and pair (shares of texts), each predicted
  label for multilabel (shares of label occurrences, not of texts), each token's tag for NER.
- ``mean_confidence``: the mean over predictions of the probability of what was predicted: the
  top score for classification and pair; for multilabel the mean over all labels of the
  probability of the decision taken (p when predicted, 1 - p when not); none for NER.

This module is pure (standard library and the config): the service imports it.
"""

from __future__ import annotations

import datetime
import difflib
import json
import logging
import threading
import urllib.parse
import urllib.request
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from bridgetune.config import ConfigError, MonitorConfig

logger = logging.getLogger("bridgetune.monitor")

WEBHOOK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Alert:
    """A threshold that a window crossed.

    Attributes:
        kind: "share_shift" (a share moved more than max_share_shift from training),
            "share_max" (a share exceeds its label_share_max) or "low_confidence" (mean
            confidence below min_mean_confidence).
        label: the label concerned; None for low_confidence.
        value: the observed share, or the mean confidence.
        threshold: the configured threshold that was crossed.
        expected: the label's training share (None for low_confidence).
        count: predictions in the window.
    """

    kind: str
    label: str | None
    value: float
    threshold: float
    expected: float | None
    count: int

    @property
    def key(self) -> tuple[str, str | None]:
        """What identifies an alert across windows: its kind and label."""
        return self.kind, self.label

    def message(self) -> str:
        """One readable line, e.g. for a log or a chat message."""
        window = f"{self.count} predictions in the window"
        share = f"share of '{self.label}' is {self.value:.2f}"
        if self.kind == "share_shift":
            return (
                f"{share} vs {self.expected:.2f} in training, a shift over "
                f"{self.threshold:.2f} ({window})"
            )
        if self.kind == "share_max":
            trained = f"{self.expected:.2f} in training; " if self.expected is not None else ""
            return f"{share}, above its limit {self.threshold:.2f} ({trained}{window})"
        return f"mean confidence is {self.value:.2f}, below {self.threshold:.2f} ({window})"

    def to_dict(self) -> dict[str, Any]:
        """The fields plus "message": what reports, snapshots and webhooks carry."""
        return {**asdict(self), "message": self.message()}


def label_shares(counts: Mapping[str, int], labels: Iterable[str]) -> dict[str, float]:
    """Each label's share of all label occurrences in `counts` (0.0 for an empty window).

    The result lists `labels` first, in order, then any other counted label.
    """
    total = sum(counts.values())
    names = list(dict.fromkeys([*labels, *counts]))
    return {name: counts.get(name, 0) / total if total else 0.0 for name in names}


def check_labels(cfg: MonitorConfig, labels: Iterable[str]) -> None:
    """Raise ConfigError when label_share_max names a label the model does not have."""
    known = list(labels)
    for label in cfg.label_share_max:
        if label not in known:
            close = difflib.get_close_matches(label, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"monitor.label_share_max: the model has no label '{label}'{hint} "
                f"(its labels: {', '.join(known)})"
            )


def check_window(
    shares: dict[str, float],
    mean_confidence: float | None,
    count: int,
    expected: dict[str, float],
    cfg: MonitorConfig,
) -> list[Alert]:
    """All thresholds crossed by one window (none if count < cfg.min_samples).

    Args:
        shares: each label's share in the window (see the module docstring).
        mean_confidence: the window's mean confidence; None when the task has none (NER).
        count: predictions in the window.
        expected: training shares (``label_distribution``); labels missing from it get no
            share_shift alert.
        cfg: the thresholds. Shifts and limits alert when strictly exceeded, confidence when
            strictly below.

    Returns:
        share_shift alerts in `expected` order, then share_max, then low_confidence.
    """
    if count < cfg.min_samples:
        return []
    alerts = []
    if cfg.max_share_shift is not None:
        for label, share in expected.items():
            value = shares.get(label, 0.0)
            if abs(value - share) > cfg.max_share_shift:
                alerts.append(Alert("share_shift", label, value, cfg.max_share_shift, share, count))
    for label, limit in cfg.label_share_max.items():
        value = shares.get(label, 0.0)
        if value > limit:
            alerts.append(Alert("share_max", label, value, limit, expected.get(label), count))
    low = cfg.min_mean_confidence
    if low is not None and mean_confidence is not None and mean_confidence < low:
        alerts.append(Alert("low_confidence", None, mean_confidence, low, None, count))
    return alerts


class DriftMonitor:
    """Rolling window over the last cfg.window predictions (thread-safe: a lock).

    Running label counts and a confidence sum are updated as predictions enter and leave, so
    `observe` costs O(number of labels), whatever the window size.
    """

    def __init__(self, expected: dict[str, float], cfg: MonitorConfig) -> None:
        """Start an empty window.

        Args:
            expected: training shares, ``label_distribution`` of ``bridgetune.json``.
            cfg: window size and thresholds.

        Raises:
            ConfigError: label_share_max names a label that `expected` lacks.
        """
        if expected:
            check_labels(cfg, expected)
        self.expected = dict(expected)
        self.cfg = cfg
        self._window: deque[tuple[tuple[str, ...], float | None]] = deque()
        self._counts: Counter[str] = Counter()
        self._confidence_sum = 0.0
        self._confidence_count = 0
        self._active: dict[tuple[str, str | None], Alert] = {}
        self._clearing = _clearing_thresholds(cfg)
        self._lock = threading.Lock()

    def observe(self, labels: Sequence[str], confidence: float | None) -> list[Alert]:
        """Add one prediction (its task's `monitor_signal`) and re-check the thresholds.

        Args:
            labels: its label (single-label), labels (multilabel, 0..n) or tags (NER).
            confidence: its confidence, or None (NER).

        Returns:
            Only the alerts that became active with this prediction; an alert stays active
            (and is not returned again) until the window is back inside its threshold by
            `cfg.clear_margin`.
        """
        with self._lock:
            self._add(tuple(labels), confidence)
            if len(self._window) > self.cfg.window:
                self._evict()
            figures = (self._shares(), self._mean_confidence(), len(self._window), self.expected)
            current = check_window(*figures, self.cfg)
            if self._active and self.cfg.clear_margin:  # hysteresis: active ones clear later
                crossed = {alert.key for alert in current}
                current += [
                    replace(alert, threshold=_configured(alert, self.cfg))
                    for alert in check_window(*figures, self._clearing)
                    if alert.key in self._active and alert.key not in crossed
                ]
            new = [alert for alert in current if alert.key not in self._active]
            self._active = {alert.key: alert for alert in current}
            return new

    def snapshot(self) -> dict[str, Any]:
        """The window now: count, shares, expected, mean_confidence and active_alerts."""
        with self._lock:
            return {
                "count": len(self._window),
                "shares": self._shares(),
                "expected": dict(self.expected),
                "mean_confidence": self._mean_confidence(),
                "active_alerts": [alert.to_dict() for alert in self._active.values()],
            }

    @property
    def active(self) -> list[Alert]:
        """The alerts that the current window crosses (with their latest values)."""
        with self._lock:
            return list(self._active.values())

    def _add(self, labels: tuple[str, ...], confidence: float | None) -> None:
        self._window.append((labels, confidence))
        self._counts.update(labels)
        if confidence is not None:
            self._confidence_sum += confidence
            self._confidence_count += 1

    def _evict(self) -> None:
        labels, confidence = self._window.popleft()
        self._counts.subtract(labels)
        if confidence is not None:
            self._confidence_sum -= confidence
            self._confidence_count -= 1

    def _shares(self) -> dict[str, float]:
        return label_shares(self._counts, self.expected)

    def _mean_confidence(self) -> float | None:
        if not self._confidence_count:
            return None
        return self._confidence_sum / self._confidence_count


def _clearing_thresholds(cfg: MonitorConfig) -> MonitorConfig:
    """`cfg` with every threshold moved inward by `clear_margin`: what keeps an alert active."""
    margin = cfg.clear_margin
    shift = cfg.max_share_shift
    confidence = cfg.min_mean_confidence
    return cfg.model_copy(
        update={
            "max_share_shift": None if shift is None else max(shift - margin, 0.0),
            "label_share_max": {k: max(v - margin, 0.0) for k, v in cfg.label_share_max.items()},
            "min_mean_confidence": None if confidence is None else confidence + margin,
        }
    )


def _configured(alert: Alert, cfg: MonitorConfig) -> float:
    """The configured threshold of an alert's kind (what messages and webhooks show)."""
    if alert.kind == "share_shift":
        return float(cfg.max_share_shift or 0.0)
    if alert.kind == "share_max":
        return cfg.label_share_max[alert.label or ""]
    return float(cfg.min_mean_confidence or 0.0)


def webhook_payload(alert: Alert, model: str) -> dict[str, Any]:
    """The JSON a webhook receives; "text" makes it postable to Slack-style incoming webhooks."""
    return {
        "text": f"[bridgetune] {model}: {alert.message()}",
        "model": model,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "alert": alert.to_dict(),
    }


def post_alert(url: str, alert: Alert, model: str) -> threading.Thread:
    """POST the alert as JSON to a webhook in a daemon thread (urllib, 5 s timeout).

    Failures are logged, never raised. Returns the started thread, so that a short-lived
    process (batch monitoring) can join it before exiting.
    """
    thread = threading.Thread(target=_post, args=(url, webhook_payload(alert, model)), daemon=True)
    thread.start()
    return thread


def _post(url: str, payload: dict[str, Any]) -> None:
    if not url.lower().startswith(("http://", "https://")):
        logger.error("monitor.webhook_url is not an http(s) URL; alert not sent")
        return
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode("utf-8"),
        headers={"Content-Type": "application/json", "User-Agent": "bridgetune-monitor"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            response.read()
    except Exception as error:  # noqa: BLE001 - a failing webhook must never stop serving
        # the host only: webhook URLs often carry a secret token
        host = urllib.parse.urlsplit(url).netloc
        logger.warning("monitor webhook POST to %s failed: %s", host, error)


def notify(alerts: Sequence[Alert], cfg: MonitorConfig, model: str) -> list[threading.Thread]:
    """Log each alert (warning, logger "bridgetune.monitor") and POST it when a webhook is set.

    Returns:
        The webhook threads started (none without cfg.webhook_url).
    """
    threads = []
    for alert in alerts:
        logger.warning("drift alert for %s: %s", model, alert.message())
        if cfg.webhook_url:
            threads.append(post_alert(cfg.webhook_url, alert, model))
    return threads
