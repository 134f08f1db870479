"""Drift monitoring in batch (`bridgetune monitor`): a timestamped stream's label shares per
time window."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from bridgetune.config import MonitorConfig
from bridgetune.data.schema import Example
from bridgetune.modeldir import read_meta
from bridgetune.recipes.predict import load


def monitor(
    model_dir: str | Path,
    input_path: str | Path,
    output_dir: str | Path,
    window: str = "1h",
    cfg: MonitorConfig | None = None,
) -> dict[str, Any]:
    """Drift monitoring in batch: a timestamped stream's label shares per time window.

    Predicts every text of `input_path` (JSONL: text, timestamp, optional text_pair), cuts time
    into fixed windows, compares each window with the training distribution, logs the alerts
    (and POSTs them to cfg.webhook_url), and writes monitor_report.json, monitor_report.md and
    label_shares.png into `output_dir`.

    Args:
        model_dir: a saved model directory.
        input_path: the stream.
        output_dir: where the report goes.
        window: window length such as "90s", "30m", "1h", "1d".
        cfg: thresholds (default: MonitorConfig()); cfg.window (a count) is the service's.

    Returns:
        The report: settings, expected shares, and per window start, end, count, shares,
        mean_confidence, flagged and alerts.
    """
    from bridgetune.lifecycle.monitor import WEBHOOK_TIMEOUT_S, check_labels, notify
    from bridgetune.lifecycle.monitor_report import (
        group_by_window,
        parse_window,
        read_stream,
        summarize_window,
        write_monitor_report,
    )

    cfg = cfg or MonitorConfig()
    width = parse_window(window)
    meta = read_meta(Path(model_dir))
    check_labels(cfg, meta["labels"])
    predictor = load(model_dir)
    pair = predictor.task.takes_pairs
    records = read_stream(Path(input_path), pair=pair)
    inputs = [Example(text=r.text, text_pair=r.text_pair if pair else None) for r in records]
    observations = [predictor.task.monitor_signal(p) for p in predictor.predict(inputs)]
    expected = meta.get("label_distribution") or {}
    windows, alerts = [], []
    for start, indices in group_by_window(records, width):
        entry, raised = summarize_window(
            start, start + width, [observations[i] for i in indices], meta["labels"], expected, cfg
        )
        windows.append(entry)
        alerts += raised
    threads = notify(alerts, cfg, str(model_dir))
    report = monitor_report_header(model_dir, input_path, window, meta, cfg)
    report.update(
        predictions=len(records),
        flagged_windows=sum(w["flagged"] for w in windows),
        windows=windows,
    )
    write_monitor_report(Path(output_dir), report)
    for thread in threads:  # this process may exit next: let the webhooks finish
        thread.join(WEBHOOK_TIMEOUT_S + 1)
    return report


def monitor_report_header(
    model_dir: str | Path, input_path: str | Path, window: str, meta: dict, cfg: MonitorConfig
) -> dict[str, Any]:
    """The settings part of a monitoring report (the webhook URL redacted: it may be secret)."""
    settings = cfg.model_dump()
    if settings["webhook_url"]:
        settings["webhook_url"] = "(set)"
    return {
        "model": str(model_dir),
        "input": str(input_path),
        "task": meta["task"],
        "window": window,
        "expected": meta.get("label_distribution") or {},
        "config": settings,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
