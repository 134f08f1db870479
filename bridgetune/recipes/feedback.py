"""The feedback store's corrections as a training file (`bridgetune feedback export`)."""

from __future__ import annotations

import logging
from pathlib import Path

from bridgetune.lifecycle.atomic import atomic_write_text
from bridgetune.recipes.check import tags_words
from bridgetune.tasks import TASKS

log = logging.getLogger("bridgetune")


def export_feedback(
    database: str | Path,
    output: str | Path,
    since: str | None = None,
    model_version: str | None = None,
) -> int:
    """Write the feedback store's corrections as a training file; returns the rows written.

    The format follows the extension of `output`: .csv/.jsonl for classification tasks,
    .conll (IOB2 words) for NER, .jsonl (messages or prompt/completion) for generative models.
    Rows of several tasks cannot share one file.
    """
    from bridgetune.lifecycle.store import FeedbackStore, export_rows, sft_records

    database, output = Path(database), Path(output)
    if not database.is_file():
        raise FileNotFoundError(f"{database}: no feedback database there")
    rows = [
        row
        for row in FeedbackStore(database).rows(since)
        if model_version is None or row.model_version == model_version
    ]
    tasks = sorted({row.task for row in rows})
    if len(tasks) > 1:
        raise ValueError(
            f"{database} holds feedback of several tasks {tasks}; pick one model with "
            "--model-version"
        )
    fmt = {".csv": "csv", ".jsonl": "jsonl", ".conll": "conll", ".txt": "conll"}.get(
        output.suffix.lower()
    )
    if fmt is None:
        raise ValueError(f"{output}: use a .csv, .jsonl or .conll file name")
    if tasks and TASKS.get(tasks[0]).generative:
        if fmt != "jsonl":
            raise ValueError(
                "generation feedback exports as JSONL (messages or prompt/completion, as "
                "`bridgetune train` reads): name the output *.jsonl"
            )
        skipped = len(rows) - len(sft_records(rows))
        if skipped:
            log.warning("%d rated-down generations without a corrected answer are not training "
                     "data: left out", skipped)  # fmt: skip
        atomic_write_text(output, export_rows(rows, "sft"))
        return len(rows) - skipped
    token_level = bool(tasks) and tags_words(tasks[0])
    if token_level and fmt != "conll":
        raise ValueError("NER feedback exports as CoNLL: name the output *.conll")
    if tasks and not token_level and fmt == "conll":
        raise ValueError("classification feedback exports as .csv or .jsonl, not CoNLL")
    if tasks == ["qa"] and fmt != "jsonl":  # the QA reader reads JSON and JSONL only
        raise ValueError("question-answering feedback exports as JSONL: name the output *.jsonl")
    if tasks == ["ranking"]:
        rows = ranked_groups(rows)
    atomic_write_text(output, export_rows(rows, fmt))
    return len(rows)


def ranked_groups(rows: list) -> list:
    """Ranking corrections whose query has at least one relevant candidate: a group of
    relevance-0 rows alone is no training data (the ranking reader refuses it); they are left
    out with a warning and exported once a relevant candidate of their query is stored."""
    relevant = {row.text for row in rows if _relevance(row.label) > 0}
    kept = [row for row in rows if row.text in relevant]
    left = len({row.text for row in rows} - relevant)
    if left:
        log.warning("%d ranking queries whose corrections have no relevant candidate (every "
                    "relevance 0) are not training data yet: left out", left)  # fmt: skip
    return kept


def _relevance(label: object) -> float:
    try:
        return float(label)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
