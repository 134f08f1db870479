"""Batch drift monitoring of a timestamped stream: reading, fixed time windows and the report.

`bridgetune monitor` reads JSONL lines ``{"text": ..., "timestamp": ...}``, cuts time into fixed
windows aligned on the epoch (``1h`` windows start on the hour, UTC), summarizes the predictions
of each window like the service's rolling window (see `bridgetune.lifecycle.monitor`) and writes
monitor_report.json, monitor_report.md and label_shares.png.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridgetune.config import ConfigError, MonitorConfig
from bridgetune.data.io import read_records
from bridgetune.data.schema import DataError
from bridgetune.lifecycle.atomic import atomic_write_bytes, atomic_write_text
from bridgetune.lifecycle.monitor import Alert, check_window, label_shares

UTC = datetime.timezone.utc
WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WINDOW = re.compile(r"(\d+(?:\.\d*)?)\s*([smhd])")
TIMESTAMP_HINT = "use ISO 8601 (2024-05-01T09:30:00Z, 2024-05-01 09:30) or epoch seconds"

Observation = tuple[Sequence[str], float | None]


@dataclass(frozen=True)
class StreamRecord:
    """One line of a monitored stream; `source` is "file:line" for messages."""

    text: str
    timestamp: datetime.datetime
    text_pair: str | None
    source: str


def parse_window(text: str) -> datetime.timedelta:
    """A window length such as "90s", "30m", "1h" or "1d".

    Raises:
        ConfigError: not a positive number followed by s, m, h or d.
    """
    match = _WINDOW.fullmatch(text.strip().lower())
    if not match or float(match[1]) <= 0:
        raise ConfigError(
            f"window {text!r} is not a duration: give a positive number and a unit "
            "s, m, h or d (90s, 30m, 1h, 1d)"
        )
    return datetime.timedelta(seconds=float(match[1]) * WINDOW_UNITS[match[2]])


def parse_timestamp(value: Any) -> datetime.datetime:
    """An aware UTC datetime from ISO 8601 text (no offset means UTC) or epoch seconds.

    Raises:
        ValueError: anything else; the message says why.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError) as error:
            raise ValueError(f"epoch seconds out of range ({error})") from None
    if not isinstance(value, str):
        raise ValueError(f"a {type(value).__name__} is neither text nor a number")
    text = value.strip()
    if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not read "Z"
        text = text[:-1] + "+00:00"
    parsed = datetime.datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def read_stream(path: Path, pair: bool = False) -> list[StreamRecord]:
    """The records of a JSONL stream, sorted by time (stable for equal times).

    Args:
        path: JSONL, one object per line with "text", "timestamp" and optional "text_pair".
        pair: the model classifies text pairs, so "text_pair" is required.

    Raises:
        DataError: a bad line (named file:line, with what to do) or no records at all.
    """
    records = [_record(path, number, row, pair) for number, row in read_records(path, "jsonl")]
    if not records:
        raise DataError(f"{path}: no records; give one JSON object per line with text, timestamp")
    return sorted(records, key=lambda record: record.timestamp)


def _record(path: Path, number: int, row: dict[str, Any], pair: bool) -> StreamRecord:
    where = f"{path}:{number}"
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: 'text' is missing or empty; every line needs a text")
    if "timestamp" not in row:
        raise DataError(f"{where}: 'timestamp' is missing; {TIMESTAMP_HINT}")
    try:
        timestamp = parse_timestamp(row["timestamp"])
    except ValueError as error:
        raise DataError(
            f"{where}: timestamp {row['timestamp']!r} not understood ({error}); {TIMESTAMP_HINT}"
        ) from None
    text_pair = row.get("text_pair")
    if pair and (not isinstance(text_pair, str) or not text_pair.strip()):
        raise DataError(f"{where}: 'text_pair' is missing or empty; this model classifies pairs")
    return StreamRecord(text, timestamp, text_pair if isinstance(text_pair, str) else None, where)


def window_start(timestamp: datetime.datetime, width: datetime.timedelta) -> datetime.datetime:
    """The start of the epoch-aligned window of `width` that holds `timestamp`."""
    seconds = width.total_seconds()
    return datetime.datetime.fromtimestamp(
        math.floor(timestamp.timestamp() / seconds) * seconds, tz=UTC
    )


def group_by_window(
    records: Sequence[StreamRecord], width: datetime.timedelta
) -> list[tuple[datetime.datetime, list[int]]]:
    """(window start, indices of its records) for every non-empty window, in time order."""
    groups: dict[datetime.datetime, list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(window_start(record.timestamp, width), []).append(index)
    return sorted(groups.items())


def summarize_window(
    start: datetime.datetime,
    end: datetime.datetime,
    observations: Sequence[Observation],
    labels: Sequence[str],
    expected: dict[str, float],
    cfg: MonitorConfig,
) -> tuple[dict[str, Any], list[Alert]]:
    """One window's report entry and the alerts it raised (see `bridgetune.lifecycle.monitor`)."""
    counts = Counter(label for names, _ in observations for label in names)
    confidences = [c for _, c in observations if c is not None]
    mean = sum(confidences) / len(confidences) if confidences else None
    shares = label_shares(counts, labels)
    alerts = check_window(shares, mean, len(observations), expected, cfg)
    entry = {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "count": len(observations),
        "shares": shares,
        "mean_confidence": mean,
        "flagged": bool(alerts),
        "alerts": [alert.to_dict() for alert in alerts],
    }
    return entry, alerts


def markdown_report(report: dict[str, Any]) -> str:
    """monitor_report.md: the settings, one table row per window (flagged ones marked)."""
    labels = list(report["windows"][0]["shares"])
    expected = " | ".join(_share(report["expected"].get(x)) for x in labels)
    lines = [
        f"# Drift monitoring: {report['model']}",
        "",
        f"Input `{report['input']}`: {report['predictions']} predictions in "
        f"{len(report['windows'])} windows of {report['window']}; "
        f"**{report['flagged_windows']} flagged**.",
        "",
        "| window start (UTC) | count | " + " | ".join(labels) + " | mean confidence | flag |",
        "|---|---:|" + "---:|" * len(labels) + "---:|---|",
        f"| training | | {expected} | | |",
    ]
    for window in report["windows"]:
        shares = " | ".join(_share(window["shares"].get(x)) for x in labels)
        confidence = _share(window["mean_confidence"])
        flag = "**ALERT**" if window["flagged"] else ""
        start, count = readable_time(window["start"]), window["count"]
        lines.append(f"| {start} | {count} | {shares} | {confidence} | {flag} |")
    flagged = [w for w in report["windows"] if w["flagged"]]
    if flagged:
        lines += ["", "## Alerts", ""]
        lines += [
            f"- {readable_time(w['start'])}: {a['message']}" for w in flagged for a in w["alerts"]
        ]
    return "\n".join(lines) + "\n"


def readable_time(iso: str) -> str:
    """A window's UTC ISO time as "2024-06-03 10:00:00" (tables)."""
    return iso[:19].replace("T", " ")


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def plot_label_shares(report: dict[str, Any], path: Path) -> None:
    """Each label's share per window as a line (a point mid-window), its training share dashed
    in the same color, and the windows that raised alerts shaded red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    windows = report["windows"]
    spans = [
        (datetime.datetime.fromisoformat(w["start"]), datetime.datetime.fromisoformat(w["end"]))
        for w in windows
    ]
    middles = [start + (end - start) / 2 for start, end in spans]
    figure, axis = plt.subplots(figsize=(9, 4.5))
    for index, label in enumerate(windows[0]["shares"]):
        color = f"C{index % 10}"
        shares = [w["shares"].get(label, 0.0) for w in windows]
        axis.plot(middles, shares, "o-", color=color, label=label)
        if label in report["expected"]:
            axis.axhline(report["expected"][label], color=color, linestyle="--", alpha=0.7)
    for window, (start, end) in zip(windows, spans):
        if window["flagged"]:
            axis.axvspan(start, end, color="red", alpha=0.15, linewidth=0)
    axis.set_xlim(spans[0][0], spans[-1][1])
    axis.set_ylim(0, 1.02)
    axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(axis.xaxis.get_major_locator()))
    axis.set_ylabel("share of predicted labels")
    axis.set_xlabel("time (UTC)")
    axis.set_title(f"Label shares per {report['window']} window (dashed: training, red: alert)")
    axis.legend(loc="upper left", fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def write_monitor_report(directory: Path, report: dict[str, Any]) -> list[Path]:
    """Write monitor_report.json, monitor_report.md and label_shares.png; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [
        directory / "monitor_report.json",
        directory / "monitor_report.md",
        directory / "label_shares.png",
    ]
    atomic_write_text(paths[0], json.dumps(report, indent=2, ensure_ascii=False))
    atomic_write_text(paths[1], markdown_report(report))
    plot_label_shares(report, paths[2])
    return paths
