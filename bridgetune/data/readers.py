"""How a task's examples are read: the data layer's half of the Task protocol.

Each task class names its reader (`Task.reader`); the data layer, which never imports tasks,
reads files and hub rows, infers and checks labels and splits off dev through it. This module
holds the protocol, the generic `TextReader` (a text, or a text pair, per row and a label, or
several: `multilabel`) and what readers share; a task with a format of its own keeps its reader
in its module (bridgetune.tasks): `NumberReader` (regression), `TokenReader` (ner: CoNLL-style
files or JSONL token lists), `RankingReader` (query, candidate, relevance rows), `QAReader` (SQuAD
JSON or JSONL), `GenerationReader` (prompt/completion, chat `messages`, alpaca rows: causal_lm,
seq2seq) and `CorpusReader` (mlm).
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from bridgetune.config import DataConfig
from bridgetune.data.io import (
    DECIMAL,
    TOKEN_EXTENSIONS,
    column,
    detect_format,
    parallel_rows,
    read_records,
)
from bridgetune.data.schema import DataError, Example


class Reader(Protocol):
    """Reads one task's examples and knows its label set; see the module docstring.

    `tagged`: examples carry one tag per word (a tag scheme applies, files may be CoNLL).
    """

    tagged: bool

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]: ...

    def read_row(self, row: dict[str, Any], cfg: DataConfig, where: tuple[Path, int]) -> Example:
        """One row of a hub dataset (labelled)."""
        ...

    def infer_labels(self, train: list[Example], scheme: str | None) -> list[str]: ...

    def check_label_set(self, labels: list[str], source: str) -> None: ...

    def stratum(self, example: Example) -> str | None:
        """What a stratified dev split keeps in proportion (None: not stratified)."""
        ...


def row_examples(
    read_one: Any, path: Path, cfg: DataConfig, labelled: bool, instead: str, parallel: bool = False
) -> list[Example]:
    """`read_one(row, cfg, (path, line), labelled)` for every row of a CSV/TSV/JSONL file (or,
    for a reader that says `parallel`, of parallel text files; rows that fail it are errors,
    or with `data.invalid_rows: skip` left out and listed); a token file is refused with
    `instead` (what to give)."""
    if cfg.format == "parallel" and parallel:
        records = parallel_rows(path, cfg.languages or [])
    else:
        fmt = detect_format(path, cfg.format, tagged=False)
        if fmt == "conll":
            raise DataError(f"{path}: a token file cannot feed this task; {instead}")
        records = ((path, n, row) for n, row in read_records(path, fmt, cfg.columns))
    examples, skipped = [], []
    for source, number, row in records:
        try:
            examples.append(read_one(row, cfg, (source, number), labelled))
        except DataError as error:
            if cfg.invalid_rows != "skip":
                raise
            skipped.append(str(error))
    report_skipped(path, skipped)
    return examples


def report_skipped(path: Path, skipped: list[str]) -> None:
    """One warning line for the rows of `path` that `data.invalid_rows: skip` left out (their
    errors, the first three shown)."""
    if skipped:
        shown = "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        Console(stderr=True).print(
            f"[yellow]{path}: {len(skipped)} invalid rows skipped (data.invalid_rows: skip): "
            f"{shown}[/yellow]"
        )


def example_labels(example: Example) -> list[str]:
    """Every class label an example carries: its class, its classes (multilabel) or its tags;
    numeric targets (regression) are not labels."""
    if example.tags is not None:
        return example.tags
    values = example.label if isinstance(example.label, list) else [example.label]
    return [value for value in values if isinstance(value, str)]


def found_labels(train: list[Example]) -> set[str]:
    return {label for example in train for label in example_labels(example)}


def label_name(value: Any) -> str:
    """The class a raw label value names: text as written (stripped); a JSON number by its
    value, as JSON has one kind of number (2 and 2.0 are class "2", 0.5 is "0.5"); true and
    false as JSON writes them.

    Raises:
        ValueError: a list or an object where one label belongs, or a number that is not
            finite.
    """
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"label {value} is not a class name")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (list, dict)):
        raise ValueError(
            f"label {json.dumps(value, ensure_ascii=False)[:80]} is a JSON "
            f"{'list' if isinstance(value, list) else 'object'}, not one class; task "
            "multilabel reads lists of labels"
        )
    return "" if value is None else str(value).strip()


@dataclass
class LabelSpellings:
    """The class labels of one file, checked once it is read: JSON true/false beside other
    labels (is true the class 1, or "yes"?) and one number written two ways ("2" and "2.0",
    which are one class to the user and two to a model) are refused, naming both rows."""

    names: dict[str, str] = field(default_factory=dict)  # label -> where it first occurs
    boolean: tuple[Any, str] | None = None  # the first JSON true/false, and where
    other: tuple[Any, str] | None = None  # the first label that is not one

    def add(self, raw: Any, label: Any, where: str) -> None:
        """Note a row's raw label value(s) and the class name(s) read from them."""
        for value in raw if isinstance(raw, list) else [raw]:
            if isinstance(value, bool):
                self.boolean = self.boolean or (value, where)
            elif value is not None:
                self.other = self.other or (value, where)
        for name in label if isinstance(label, list) else [label]:
            if isinstance(name, str):
                self.names.setdefault(name, where)

    def check(self) -> None:
        """Raises DataError when the file mixes JSON booleans with other labels or writes one
        number two ways."""
        if self.boolean and self.other:
            (flag, where), (value, elsewhere) = self.boolean, self.other
            raise DataError(
                f"{where}: label {json.dumps(flag)} is a JSON boolean, but {elsewhere} has "
                f"label {json.dumps(value, ensure_ascii=False)}: write every label of the file "
                "the same way (all true/false, or all text or numbers)"
            )
        spellings: dict[float, tuple[str, str]] = {}
        for name, where in self.names.items():
            if not DECIMAL.fullmatch(name):
                continue
            known = spellings.setdefault(float(name), (name, where))
            if known[0] != name:
                raise DataError(
                    f"{where}: label {name!r} is the number of label {known[0]!r} at {known[1]}"
                    " written another way, so they would be two classes; write each class one "
                    "way"
                )


@dataclass(frozen=True)
class TextReader:
    """Rows of CSV, TSV or JSONL: `text_column` (+ `text_pair_column`) and `label_column`."""

    multilabel: bool = False
    tagged = False

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        spellings = LabelSpellings()
        read_one = functools.partial(self._example, spellings=spellings)
        examples = row_examples(read_one, path, cfg, labelled, "use CSV/TSV/JSONL")
        spellings.check()
        return examples

    def read_row(self, row: dict[str, Any], cfg: DataConfig, where: tuple[Path, int]) -> Example:
        return self._example(row, cfg, where, labelled=True)

    def _example(
        self,
        row: dict[str, Any],
        cfg: DataConfig,
        where: tuple[Path, int],
        labelled: bool,
        spellings: LabelSpellings | None = None,
    ) -> Example:
        path, number = where
        row = {cfg.column_map.get(k, k): v for k, v in row.items()}
        text = column(row, cfg.text_column, path, number)
        if not isinstance(text, str) or not text.strip():
            raise DataError(
                f"{path}:{number}: empty text in column '{cfg.text_column}'; fill it or remove "
                "the row"
            )
        pair = None
        if cfg.text_pair_column:
            pair = column(row, cfg.text_pair_column, path, number)
            if not isinstance(pair, str) or not pair.strip():
                raise DataError(f"{path}:{number}: empty text in column '{cfg.text_pair_column}'")
        label = None
        if labelled:
            raw = column(row, cfg.label_column, path, number)
            try:
                label = self._label(raw, cfg)
            except ValueError as error:  # a reader's own label rules (subclasses)
                if isinstance(error, DataError):
                    raise
                raise DataError(f"{path}:{number}: {error}") from None
            if label in ("", []):
                raise DataError(f"{path}:{number}: empty label in column '{cfg.label_column}'")
            if spellings is not None:
                spellings.add(raw, label, f"{path}:{number}")
        return Example(text=text, text_pair=pair, label=label, source=f"{path}:{number}")

    def _label(self, value: Any, cfg: DataConfig) -> str | list[str]:
        """The label(s) of a raw column value (label_name); a ValueError becomes a DataError
        at file:line."""
        if not self.multilabel:
            return label_name(value)
        if isinstance(value, list):
            names = [label_name(v) for v in value]
        elif isinstance(value, str):
            names = value.split(cfg.label_separator)
        else:  # one JSON number or true/false
            names = [label_name(value)]
        return list(dict.fromkeys(n.strip() for n in names if n.strip()))  # once each, in order

    def infer_labels(self, train: list[Example], scheme: str | None) -> list[str]:
        """Sorted label set of train; numeric labels sort numerically."""
        found = found_labels(train)
        if all(DECIMAL.fullmatch(label) for label in found):  # decimals only: not "nan"
            return sorted(found, key=float)
        return sorted(found)

    def check_label_set(self, labels: list[str], source: str) -> None:
        if not self.multilabel and len(labels) < 2:
            raise DataError(
                f"{source}: found only the label {labels}; classification needs at least two "
                "classes"
            )

    def stratum(self, example: Example) -> str | None:
        return example_labels(example)[0]


TAG_PATTERN = re.compile(r"(O|[BIESM]-\S+)")  # a tag as token files write it


def starts_with(path: Path, prefix: bytes) -> bool:
    """Whether the file's first non-blank bytes are `prefix` (a JSON array, not JSON lines)."""
    with path.open("rb") as stream:
        return stream.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(prefix)


TOKEN_ONLY = tuple(e for e in TOKEN_EXTENSIONS if e != ".txt")  # never plain text
