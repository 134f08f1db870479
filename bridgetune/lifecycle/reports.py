"""The evaluation report of a split: <split>_metrics.json, a Markdown table and PNG plots (confusion
matrix, regression scatter, first relevant rank, learning curve), each written atomically."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from bridgetune.lifecycle.atomic import atomic_write_bytes, atomic_write_text

# fonts that draw Chinese (and Japanese/Korean), the first one matplotlib finds is used
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
             "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Microsoft YaHei", "SimHei",
             "PingFang SC", "Heiti SC", "AR PL UMing CN", "Noto Sans CJK JP")  # fmt: skip
_WIDE = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]")


@functools.cache
def cjk_font() -> str | None:
    """A font of this machine that draws Chinese, or None (matplotlib's DejaVu Sans does not:
    install one, e.g. Debian's fonts-noto-cjk, for Chinese labels in plots)."""
    from matplotlib import font_manager

    names = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in names), None)


def numbered_labels(labels: list[str]) -> bool:
    """Whether a plot shows `labels` by number (#1, #2, ...; the report lists them): they hold
    Chinese (or other wide) characters and no font here draws them."""
    return any(_WIDE.search(label) for label in labels) and cjk_font() is None


def plot_fonts(labels: list[str]) -> dict[str, Any]:
    """matplotlib settings that draw `labels`: a Chinese font after DejaVu Sans where needed."""
    font = cjk_font() if any(_WIDE.search(label) for label in labels) else None
    return {"font.family": ["DejaVu Sans", font]} if font else {}


def headline(metrics: dict) -> dict[str, float]:
    """The scalar metrics (what goes into logs, bridgetune.json and the learning curve)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def markdown_report(title: str, metrics: dict) -> str:
    """A Markdown report: headline figures and the per-class (or per-type) table."""
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in headline(metrics).items()]
    table = metrics.get("per_class") or metrics.get("per_type") or {}
    if table:
        first = "class" if "per_class" in metrics else "entity type"
        lines += ["", f"| {first} | precision | recall | f1 | support |", "|---|---|---|---|---|"]
        lines += [
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | "
            f"{row['support']} |"
            for name, row in table.items()
        ]
    relations = metrics.get("per_relation_type") or {}
    if relations:  # the official relation score's rows (bridgetune.tasks.metrics)
        lines += ["", "| relation (direction must be right) | precision | recall | f1 | gold | "
                  "wrong direction |", "|---|---|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | "
            f"{row['gold']} | {row['wrong_direction']} |"
            for name, row in relations.items()
        ]
    labels = metrics.get("labels") or []
    if "confusion_matrix" in metrics and numbered_labels(labels):
        lines += ["", "Confusion matrix labels (no font here draws them): "
                  + ", ".join(f"#{i} = {label}" for i, label in enumerate(labels, 1))]  # fmt: skip
    if metrics.get("samples"):
        lines += ["", "## Sample generations", "", "| prompt | reference | generated |",
                  "|---|---|---|"]  # fmt: skip
        lines += [
            "| "
            + " | ".join(table_cell(row[k]) for k in ("prompt", "reference", "generated"))
            + " |"
            for row in metrics["samples"]
        ]
    return "\n".join(lines) + "\n"


def table_cell(text: str, width: int = 300) -> str:
    """Text as one Markdown table cell: one line, pipes escaped, long text cut."""
    text = " ".join(str(text).split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("|", "\\|") or " "


def write_report(
    directory: Path,
    split: str,
    metrics: dict,
    history: list[dict] | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write <split>_metrics.json, <split>_report.md and plots into `directory`; returns paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / f"{split}_metrics.json", directory / f"{split}_report.md"]
    atomic_write_text(written[0], json.dumps(metrics, indent=2))
    atomic_write_text(written[1], markdown_report(title or f"{split} evaluation", metrics))
    if "confusion_matrix" in metrics:
        path = directory / f"{split}_confusion_matrix.png"
        plot_confusion_matrix(metrics["confusion_matrix"], metrics["labels"], path)
        written.append(path)
    if "scatter" in metrics:
        path = directory / f"{split}_scatter.png"
        plot_scatter(metrics["scatter"]["true"], metrics["scatter"]["predicted"], path)
        written.append(path)
    if metrics.get("first_relevant"):
        path = directory / f"{split}_first_relevant.png"
        plot_first_relevant(metrics["first_relevant"], path)
        written.append(path)
    if history:
        path = directory / "learning_curve.png"
        plot_learning_curve(history, path)
        written.append(path)
    return written


def save_figure(figure: Any, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scatter(true: list[float], predicted: list[float], path: Path) -> None:
    """Predicted against true values (regression), with the diagonal of perfect predictions."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.scatter(true, predicted, s=10, alpha=0.5)
    low, high = min(true + predicted), max(true + predicted)
    axis.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--")
    axis.set_xlabel("true")
    axis.set_ylabel("predicted")
    axis.set_title(f"{len(true)} examples")
    save_figure(figure, path)
    plt.close(figure)


def plot_first_relevant(counts: dict[str, int], path: Path) -> None:
    """Ranking and retrieval: how many queries had their first relevant candidate at rank 1,
    2, ... (a key ">N" is the bar of all later ranks, drawn last)."""
    plt = pyplot()
    ranks = sorted(counts, key=lambda r: (r.startswith(">"), int(r.lstrip(">"))))
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.bar(range(len(ranks)), [counts[r] for r in ranks], color="tab:blue")
    axis.set_xticks(range(len(ranks)), ranks)
    axis.set_xlabel("rank of the first relevant candidate")
    axis.set_ylabel("queries")
    axis.set_title(f"{sum(counts.values())} queries")
    save_figure(figure, path)
    plt.close(figure)


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path) -> None:
    """The confusion matrix; labels no font here draws are shown by number (the report lists
    them), Chinese ones in a Chinese font where one is installed."""
    plt = pyplot()
    with plt.rc_context(plot_fonts(labels)):
        _confusion_matrix(plt, matrix, labels, path)


def _confusion_matrix(plt: Any, matrix: list[list[int]], labels: list[str], path: Path) -> None:
    size = max(4.0, 0.6 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap="Blues")
    if numbered_labels(labels):
        labels = [f"#{i}" for i in range(1, len(labels) + 1)]
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axis.text(
                j,
                i,
                str(value),
                ha="center",
                va="center",
                color="white" if value > peak / 2 else "black",
            )
    figure.colorbar(image, ax=axis, fraction=0.046)
    axis.set_title("Confusion matrix")
    save_figure(figure, path)
    plt.close(figure)


def plot_learning_curve(history: list[dict], path: Path) -> None:
    """Train loss over steps, and the dev metric at each evaluation on a second axis."""
    plt = pyplot()
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    losses = [h for h in history if "loss" in h]
    loss_axis.plot(
        [h["step"] for h in losses],
        [h["loss"] for h in losses],
        color="tab:blue",
        label="train loss",
    )
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("train loss", color="tab:blue")
    evals = [h for h in history if "metric" in h]
    if evals:
        metric_axis = loss_axis.twinx()
        metric_axis.plot(
            [h["step"] for h in evals], [h["metric"] for h in evals], "o-", color="tab:orange"
        )
        metric_axis.set_ylabel(f"dev {evals[0]['metric_name']}", color="tab:orange")
    loss_axis.set_title("Learning curve")
    save_figure(figure, path)
    plt.close(figure)
