"""Documents streamed from an input, one at a time (a corpus larger than memory is read line
by line): a list of texts, a .txt file (a document per line), or a .jsonl / .csv / .tsv file
with a text column.

Document `i` is the input's i-th item: list position, line of a .txt (blank lines are
documents without text, so document i is line i + 1), row of a .jsonl (blank lines are not
rows) or of a .csv/.tsv (the header is not a row). Files are UTF-8 (a BOM is dropped); every
error names the file and the line and says what to do.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bridgetune.data.io import json_row
from bridgetune.data.schema import DataError

FORMATS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv"}
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")  # one line with its end
_WIDE_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class DocumentSource:
    """The documents of `inputs` (a path, or a list of texts), read when iterated:
    `(number, text, done)` where `done` counts the bytes (file) or texts (list) read so far,
    out of `total`; `texts_read` counts the documents with text so far.

    Raises:
        DataError: the file is missing, or of a format that holds no documents.
        ValueError: an item of a list is not a text.
    """

    def __init__(self, inputs: str | Path | Sequence[str], text_column: str = "text") -> None:
        self.text_column = text_column
        self.texts_read = 0
        if isinstance(inputs, (str, Path)):
            self.path: Path | None = Path(inputs)
            self.texts: Sequence[str] = ()
            self.format = _format(self.path)
            self.total = self.path.stat().st_size
            self.name = str(self.path)
        else:
            for index, text in enumerate(inputs):
                if not isinstance(text, str):
                    raise ValueError(
                        f"inputs[{index}] is a {type(text).__name__}; give the documents as "
                        "texts (str), or a path to a file of them"
                    )
            self.path, self.texts, self.format = None, inputs, "list"
            self.total = len(inputs)
            self.name = "the input list"

    @property
    def known_empty(self) -> bool:
        """Whether the input has no text, as far as can be told without reading a file."""
        if self.path is None:
            return not any(text.strip() for text in self.texts)
        return self.total == 0

    def __iter__(self) -> Iterator[tuple[int, str, int]]:
        self.texts_read = 0
        for number, (text, done) in enumerate(self._documents()):
            self.texts_read += bool(text.strip())
            yield number, text, done

    def _documents(self) -> Iterator[tuple[str, int]]:
        if self.path is None:
            yield from ((text, number) for number, text in enumerate(self.texts, 1))
            return
        rows = {"txt": self._lines, "jsonl": self._json_rows}.get(self.format, self._table_rows)
        yield from rows()

    def _lines(self) -> Iterator[tuple[str, int]]:
        for _, line, done in file_lines(self.path):
            yield line.rstrip("\r\n"), done

    def _json_rows(self) -> Iterator[tuple[str, int]]:
        for number, line, done in file_lines(self.path):
            if line.strip():
                row = json_row(line, self.path, number)
                yield self._text(row, number), done

    def _table_rows(self) -> Iterator[tuple[str, int]]:
        done = [0]

        def lines() -> Iterator[str]:
            for _, line, read in file_lines(self.path):
                done[0] = read
                yield line

        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # long documents are data
        delimiter = "\t" if self.format == "tsv" else ","
        reader = csv.DictReader(lines(), delimiter=delimiter, strict=True)
        try:
            for row in reader:
                yield self._text(row, reader.line_num), done[0]
        except csv.Error as error:
            raise DataError(
                f"{self.path}:{reader.line_num}: not valid {self.format.upper()} ({error}); "
                'check the quoting: a quote inside a quoted cell is written twice ("")'
            ) from None

    def _text(self, row: dict[str, Any], number: int) -> str:
        if self.text_column not in row:
            fields = ", ".join(str(k) for k in row)
            raise DataError(
                f"{self.path}:{number}: no '{self.text_column}' field (fields: {fields}); name "
                "the field that holds the text with --text-column (text_column=)"
            )
        text = row[self.text_column]
        if text is None:
            return ""
        if not isinstance(text, str):
            raise DataError(
                f"{self.path}:{number}: '{self.text_column}' is a {type(text).__name__}, not a "
                "text; give the document's text as a string"
            )
        return text


def _format(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path of the documents")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a .txt, .jsonl or .csv file of documents")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(
            f"{path}: cannot tell the format from '{suffix}'; give a .txt (a document per "
            "line), .jsonl or .csv/.tsv (with a text column) file"
        )
    return FORMATS[suffix]


def file_lines(path: Path) -> Iterator[tuple[int, str, int]]:
    """(line number from 1, the line with its end, bytes read) of a UTF-8 file, line by line;
    a line may end in LF, CRLF or a lone CR.

    Raises:
        DataError: bytes that are not UTF-8 (the line and column), or UTF-16/32 text.
    """
    with path.open("rb") as stream:
        head = stream.read(4)
        if head.startswith(_WIDE_BOMS):
            raise DataError(
                f"{path}: UTF-16 or UTF-32 text; documents are streamed as UTF-8: convert the "
                f"file first (iconv -f UTF-16 -t UTF-8 {path.name} > documents.txt)"
            )
        done = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
        stream.seek(done)
        number = 0
        for raw in stream:  # split at LF; a lone CR is split below
            done += len(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                line = number + 1 + raw[: error.start].count(b"\r")
                raise DataError(
                    f"{path}:{line}: byte 0x{raw[error.start]:02x} is not UTF-8 text; save the "
                    "file as UTF-8"
                ) from None
            for match in _LINE.finditer(text):
                number += 1
                yield number, match.group(), done
