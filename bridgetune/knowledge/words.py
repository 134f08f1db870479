"""Word lists: the files of tokens, phrases and rule words that knowledge features read."""

from __future__ import annotations

from pathlib import Path

from bridgetune.data.io import iter_lines, read_text
from bridgetune.data.schema import DataError


def read_word_list(path: str | Path, missing: str) -> list[tuple[int, str]]:
    """(line number, entry) of a word list: one entry per line, blank lines and lines starting
    with # skipped. A missing file is a DataError: "<path>: <missing>"."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {missing}")
    entries = []
    for number, line in enumerate(iter_lines(read_text(path)), 1):  # any line end, BOM or not
        entry = line.strip()
        if entry and not entry.startswith("#"):
            entries.append((number, entry))
    return entries
