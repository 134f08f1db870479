"""Property-based tests of the file readers: whatever texts a CSV/JSONL writer produces come
back unchanged, with the line on which each record starts."""

from __future__ import annotations

import csv
import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bridgetune.config import DataConfig
from bridgetune.data.io import read_file, read_records
from bridgetune.tasks import reader_for

TEXTS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),
    min_size=1,
    max_size=40,
).filter(str.strip)
ROWS = st.lists(st.tuples(TEXTS, st.sampled_from(["a", "b"])), min_size=1, max_size=12)


def _csv_bytes(rows: list[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return buffer.getvalue()


@settings(max_examples=60, deadline=None)
@given(ROWS)
def test_csv_roundtrip_and_start_lines(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    content = _csv_bytes(rows)
    path.write_text(content, encoding="utf-8")
    records = list(read_records(path, "csv"))
    assert [(r["text"], r["label"]) for _, r in records] == rows
    expected, line = [], 2
    for text, _ in rows:  # each record starts after the previous one's lines
        expected.append(line)
        line += text.count("\n") + 1
    assert [number for number, _ in records] == expected


@settings(max_examples=60, deadline=None)
@given(ROWS)
def test_jsonl_roundtrip(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("jsonl") / "data.jsonl"
    lines = [json.dumps({"text": t, "label": y}, ensure_ascii=False) for t, y in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    examples = read_file(path, DataConfig(train=str(path)), reader_for("classification"))
    assert [(e.text, e.label) for e in examples] == [(t, y.strip()) for t, y in rows]
    assert [e.source for e in examples] == [f"{path}:{i}" for i in range(1, len(rows) + 1)]
