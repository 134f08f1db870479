"""The feedback store: corrections sent to the service, kept durably in SQLite (WAL).

Every insert is its own committed transaction with `synchronous=FULL` before the endpoint answers,
so a row that got a 2xx survives a crash of the server process (and of the machine). Only the
standard library is used; the SQL is plain enough to move to PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridgetune.data.io import escape_cell

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    model_version TEXT NOT NULL,
    task TEXT NOT NULL,
    text TEXT NOT NULL,
    text_pair TEXT,
    predicted TEXT,
    label TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class FeedbackRow:
    """One stored correction. `label` is a class, a list of classes, or entity spans (NER)."""

    id: str
    created: str
    model_version: str
    task: str
    text: str
    text_pair: str | None
    predicted: Any
    label: Any


class FeedbackStoreError(ValueError):
    """A feedback database that cannot be opened; the message names the file."""


class FeedbackStore:
    """Append-only SQLite table of feedback; safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the store at `path`.

        Raises:
            FeedbackStoreError: `path` is a folder, another kind of file, or cannot be opened.
        """
        self.path = Path(path)
        if self.path.is_dir():
            raise FeedbackStoreError(f"{self.path} is a folder; give the path of a .db file")
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(SCHEMA)
        except (sqlite3.Error, OSError) as error:  # a CSV given as the database, a read-only place
            raise FeedbackStoreError(
                f"{self.path} cannot be opened as a feedback database ({error}); give the "
                "feedback.db that `bridgetune serve` writes, or a new file name"
            ) from None

    def add(
        self,
        *,
        text: str,
        label: Any,
        task: str,
        model_version: str,
        text_pair: str | None = None,
        predicted: Any = None,
        feedback_id: str | None = None,
    ) -> tuple[FeedbackRow, bool]:
        """Store one correction: (row, created). A known `feedback_id` is not stored twice."""
        row = FeedbackRow(
            id=feedback_id or uuid.uuid4().hex,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            model_version=model_version,
            task=task,
            text=text,
            text_pair=text_pair,
            predicted=predicted,
            label=label,
        )
        values = (
            row.id,
            row.created,
            row.model_version,
            row.task,
            row.text,
            row.text_pair,
            json.dumps(row.predicted, ensure_ascii=False),
            json.dumps(row.label, ensure_ascii=False),
        )
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO feedback (id, created, model_version, task, text, "
                "text_pair, predicted, label) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            if cursor.rowcount == 1:
                return row, True
        existing = self.get(row.id)
        assert existing is not None
        return existing, False

    def get(self, feedback_id: str) -> FeedbackRow | None:
        with self._lock:
            found = self._db.execute(
                "SELECT id, created, model_version, task, text, text_pair, predicted, label "
                "FROM feedback WHERE id = ?",
                (feedback_id,),
            ).fetchone()
        return _row(found) if found else None

    def rows(self, since: str | None = None) -> Iterator[FeedbackRow]:
        """Stored rows in insertion order, optionally only those created at or after `since`."""
        query = (
            "SELECT id, created, model_version, task, text, text_pair, predicted, label "
            "FROM feedback WHERE created >= ? ORDER BY row"
        )
        with self._lock:
            found = self._db.execute(query, (since or "",)).fetchall()
        return (_row(item) for item in found)

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _row(values: tuple) -> FeedbackRow:
    *head, predicted, label = values
    return FeedbackRow(*head, predicted=json.loads(predicted), label=json.loads(label))


def export_rows(rows: list[FeedbackRow], fmt: str, separator: str = "|") -> str:
    """Feedback as a training file in `fmt`: "csv"/"jsonl" for classification, "conll" (IOB2)
    for NER, "sft": JSONL of `messages` (chat models) or `prompt`/`completion` for generative
    models (rows without an answer to train on, a thumbs down without a correction, are left
    out). The caller picks the format from the task (bridgetune.recipes.feedback).

    CSV cells that a spreadsheet would run as a formula (they start with = + - @, a tab or a
    CR) are written with a leading `'` (OWASP's CSV-injection escape); bridgetune's readers
    strip it again, so the file trains on exactly the stored text (data.io.escape_cell)."""
    if fmt == "conll":
        return "".join(_conll_sentence(row) for row in rows)
    if fmt == "sft":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sft_records(rows))
    records = []
    for row in rows:
        label = row.label
        if isinstance(label, list):  # multilabel classes, or one number per regression target
            label = separator.join(str(value) for value in label)
        record = {"text": row.text, "label": label}
        if row.text_pair is not None:
            record["text_pair"] = row.text_pair
        records.append(record)
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    buffer = io.StringIO()
    columns = ["text", "text_pair", "label"] if any("text_pair" in r for r in records) else None
    # every cell quoted: the csv module quotes only the line terminator's characters, and a
    # bare CR in a cell would end its row for readers (ours, pandas, spreadsheets)
    names = columns or ["text", "label"]
    writer = csv.DictWriter(buffer, names, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writeheader()
    writer.writerows(
        {k: escape_cell(v) if isinstance(v, str) else v for k, v in r.items()} for r in records
    )
    return buffer.getvalue()


def sft_records(rows: list[FeedbackRow]) -> list[dict[str, Any]]:
    """Training records of generation feedback that carries an answer."""
    records = []
    for row in rows:
        label = row.label if isinstance(row.label, dict) else {"completion": row.label}
        answer = label.get("completion")
        if not answer:
            continue
        if label.get("messages"):
            turn = {"role": "assistant", "content": answer}
            records.append({"messages": [*label["messages"], turn]})
        else:
            records.append({"prompt": row.text, "completion": answer})
    return records


# A CJK character is a word of its own (as in per-character NER files); otherwise whitespace.
_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\s\u3400-\u9fff\uf900-\ufaff]+")


def _conll_sentence(row: FeedbackRow) -> str:
    """The text's words tagged IOB2 from the corrected entity spans (character offsets)."""
    spans = sorted(row.label, key=lambda e: e["start"])
    lines = []
    for match in _WORD.finditer(row.text):
        start, end = match.span()
        tag = "O"
        for entity in spans:
            if start < entity["end"] and end > entity["start"]:
                tag = f"{'B' if start <= entity['start'] else 'I'}-{entity['type']}"
                break
        lines.append(f"{match.group()} {tag}")
    return "\n".join(lines) + "\n\n"
