"""Token files for tagging tasks (NER): CoNLL-style files (a token per line; character-per-line
Chinese files, Weibo NER's position digits), JSONL token rows and entity-span records (CLUENER2020,
`entities` lists), each sentence checked as `data.invalid_rows` says (TagChecker).

Errors name the file and line; what was skipped, repaired or left out is reported once per file.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console

from bridgetune.config import DataConfig
from bridgetune.data.io import (
    column,
    entity_tags,
    iob1_tags,
    iter_lines,
    read_records,
    read_text,
    sequence_problem,
    token_example,
)
from bridgetune.data.schema import DataError, Example
from bridgetune.data.tags import check_tag, repair_tags


class Sentence(NamedTuple):
    """A sentence of a token file: its first line, tokens and tags, and why it cannot be read
    as it is (a token line without its tag; data.invalid_rows decides), or None."""

    first: int
    tokens: list[str]
    tags: list[str]
    problem: str | None = None


_COLUMN_GAP = re.compile(r"[ \t]+")


def token_columns(line: str, width: int) -> list[str]:
    """The columns of a token-file line, split at spaces and tabs only (U+3000, U+00A0 and
    the other white space are characters of the text). A line that starts with a space or a tab
    has that character as its token, as character-per-line files write a space of a sentence,
    unless the rest alone has the file's `width` (columns of its other lines): then the line
    was indented."""
    line = line.rstrip(" \t")
    if line[:1] not in (" ", "\t"):
        return _COLUMN_GAP.split(line)
    rest = _COLUMN_GAP.split(line.lstrip(" \t"))
    return rest if len(rest) == width else [line[0], *rest]


def read_token_file(path: Path, tagged: bool = True) -> Iterator[Sentence]:
    """The sentences of a CoNLL-style file: a token per line, first column the token, last the
    tag (other columns ignored), a blank line or -DOCSTART- between sentences; lines may end
    in LF, CRLF or CR.

    With `tagged=False` (prediction input) one-column lines are tokens without tags.
    """
    tokens: list[str] = []
    tags: list[str] = []
    first, width, problem = 0, 0, None
    shared: dict[str, str] = {}  # one string per distinct token and tag: files repeat them
    for number, line in enumerate(iter_lines(read_text(path)), 1):
        columns = token_columns(line, width) if line.strip() else []
        if not columns or columns[0] == "-DOCSTART-":
            if tokens:
                yield Sentence(first, tokens, tags, problem)
            tokens, tags, problem = [], [], None
            continue
        if not width and line[0] not in " \t":
            width = len(columns)
        if len(columns) < 2 and tagged and problem is None:
            problem = (
                f"{path}:{number}: expected 'TOKEN [...] TAG' but found one column {line!r}; "
                "every token line needs its tag in the last column"
            )
        if not tokens:
            first = number
        tokens.append(shared.setdefault(columns[0], columns[0]))
        tags.append(shared.setdefault(columns[-1], columns[-1]) if len(columns) > 1 else "O")
    if tokens:
        yield Sentence(first, tokens, tags, problem)


@dataclass
class TagChecker:
    """The sentences of one token file checked as `data.invalid_rows` says: a bad one is an
    error, left out (skip) or, when only its tag sequence is wrong, mended (repair:
    bridgetune.data.tags.repair_tags); what was left out or mended is reported by `report`."""

    path: Path
    cfg: DataConfig
    problems: list[str] = field(default_factory=list)
    blank: list[str] = field(default_factory=list)  # entities of white space only

    def example(
        self, tokens: list[str], tags: list[str] | None, first: int, line_per_token: bool
    ) -> Example | None:
        """The example of a sentence (tags None: unlabelled), or None when it is skipped."""
        source, scheme = f"{self.path}:{first}", self.cfg.tag_scheme
        if tags is None:
            return token_example(tokens, None, source)
        problem = sequence_problem(tokens, tags, scheme, str(self.path), first, line_per_token)
        if problem is None:
            return token_example(tokens, tags, source, scheme, self.blank)
        mendable = all(check_tag(tag, scheme) is None for tag in set(tags))
        if self.cfg.invalid_rows == "repair" and mendable:
            self.problems.append(problem)
            return token_example(tokens, repair_tags(tags, scheme), source, scheme, self.blank)
        self.refuse(problem)
        return None

    def refuse(self, problem: str) -> None:
        """A sentence that cannot be read: a DataError, or with `skip` left out and counted."""
        if self.cfg.invalid_rows == "error":
            raise DataError(problem)
        if self.cfg.invalid_rows == "repair":
            raise DataError(
                f"{problem} (data.invalid_rows: repair mends tag sequences, not a missing or "
                "unknown tag or a malformed row; fix it, or use skip)"
            )
        self.problems.append(problem)

    def report(self) -> None:
        """Warn (stderr) about the sentences left out or mended and the blank entities."""
        console = Console(stderr=True)
        if self.problems:
            done = "repaired" if self.cfg.invalid_rows == "repair" else "skipped"
            console.print(
                f"[yellow]{self.path}: {len(self.problems)} sentences with invalid tags {done} "
                f"(data.invalid_rows: {self.cfg.invalid_rows}), e.g. {self.problems[0]}[/yellow]"
            )
        if self.blank:
            console.print(
                f"[yellow]{self.path}: {len(self.blank)} entities of white space only were left "
                f"out (white space is text, not a word), e.g. {self.blank[0]}[/yellow]"
            )


def conll_examples(path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
    """The examples of a CoNLL-style token file (read_token_file) checked by a TagChecker;
    Weibo NER's position digits dropped with `data.char_position_digits`."""
    checker, examples = TagChecker(path, cfg), []
    for first, tokens, tags, problem in read_token_file(path, tagged=labelled):
        try:
            if problem:
                raise DataError(problem)
            if cfg.char_position_digits:
                tokens = strip_position_digits(tokens, path, first)
        except DataError as error:
            checker.refuse(str(error))
            continue
        example = checker.example(tokens, tags if labelled else None, first, True)
        if example is not None:
            examples.append(example)
    checker.report()
    return examples


# span files: a CJK character is a token of its own, a run of letters/digits one token, any
# other visible character one token
_SPAN_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_\u3400-\u9fff\uf900-\ufaff]+|\S")


def span_example(
    row: dict[str, Any], scheme: str, path: Path, number: int, dropped: list[str] | None = None
) -> Example:
    """A token example from a text with entity spans: CLUENER2020's `label` ({type: {mention:
    [[start, end inclusive], ...]}}) or `entities` ([{"type", "start", "end" exclusive}], as
    `bridgetune feedback export` and most annotation tools write). The text keeps its own
    characters and spaces; tokens are CJK characters and letter/digit runs, tagged in `scheme`.
    An entity inside another is dropped (flat tags hold one; `dropped` collects them). A span
    that does not hold its mention, leaves the text, starts or ends in white space or crosses
    another is a DataError at the file and line."""
    text = row.get("text")
    where = f"{path}:{number}"
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: a span record needs a non-empty 'text'")
    spans = _record_spans(row, text, where)
    # a letter/digit run is cut where an entity starts or ends inside it ("CPL2011" with the
    # entity "CPL": CPL | 2011), so every span falls on token boundaries
    cuts = {place for _, start, end in spans for place in (start, end)}
    offsets: list[tuple[int, int]] = []
    for match in _SPAN_TOKEN.finditer(text):
        begin = match.start()
        for place in sorted(c for c in cuts if match.start() < c < match.end()):
            offsets.append((begin, place))
            begin = place
        offsets.append((begin, match.end()))
    starts = {start: i for i, (start, _) in enumerate(offsets)}
    ends = {end: i for i, (_, end) in enumerate(offsets)}
    tags = ["O"] * len(offsets)
    taken: dict[int, tuple[str, int, int]] = {}
    # the longest first: an entity inside another (CLUENER's company inside a book title) is
    # dropped, the outer one kept, and counted in `dropped`
    for kind, start, end in sorted(spans, key=lambda s: (s[1] - s[2], s[1])):
        if start not in starts or end not in ends:  # only spaces there: nothing to tag
            raise DataError(
                f"{where}: the {kind} span {text[start:end]!r} ({start}-{end}) starts or ends "
                "in white space; trim it to the mention"
            )
        first, last = starts[start], ends[end]
        clash = next((taken[i] for i in range(first, last + 1) if i in taken), None)
        if clash is not None:
            if not (clash[1] <= start and end <= clash[2]):
                raise DataError(
                    f"{where}: the {kind} span {text[start:end]!r} overlaps the {clash[0]} span "
                    f"{text[clash[1] : clash[2]]!r} without being inside it; fix one of them"
                )
            if dropped is not None:
                dropped.append(f"{where}: {kind} {text[start:end]!r} in {clash[0]}")
            continue
        for index in range(first, last + 1):
            taken[index] = (kind, start, end)
        tags[first : last + 1] = entity_tags(kind, last - first + 1, scheme)
    if scheme == "IOB1":  # B only where an entity follows one of its own type
        tags = iob1_tags(tags)
    tokens = [text[start:end] for start, end in offsets]
    return Example(text=text, tokens=tokens, tags=tags, offsets=offsets, source=where)


def _record_spans(row: dict[str, Any], text: str, where: str) -> list[tuple[str, int, int]]:
    """(type, start, end exclusive) of every entity of a span record, checked against text."""
    spans = []
    label, entities = row.get("label"), row.get("entities")
    if isinstance(label, dict):  # CLUENER2020
        for kind, mentions in label.items():
            if not isinstance(mentions, dict):
                raise DataError(f"{where}: label.{kind} must map each mention to its spans")
            for mention, places in mentions.items():
                for place in places or []:
                    if not (isinstance(place, list) and len(place) == 2):
                        raise DataError(f"{where}: label.{kind}.{mention}: spans are [start, end]")
                    start, end = int(place[0]), int(place[1]) + 1  # end inclusive there
                    _check_span(text, start, end, kind, mention, where)
                    spans.append((str(kind), start, end))
    elif isinstance(entities, list):
        for index, entity in enumerate(entities):
            if not isinstance(entity, dict) or not {"start", "end"} <= set(entity):
                raise DataError(f"{where}: entities[{index}] needs start, end and type")
            kind = entity.get("type") or entity.get("label")
            if not kind:
                raise DataError(f"{where}: entities[{index}] has no type")
            start, end = int(entity["start"]), int(entity["end"])
            _check_span(text, start, end, kind, entity.get("text"), where)
            spans.append((str(kind), start, end))
    elif label is not None or entities is not None:
        raise DataError(
            f"{where}: entities are `label` ({{type: {{mention: [[start, end]]}}}}, CLUENER) or "
            "`entities` ([{type, start, end}])"
        )
    return spans


def _check_span(text: str, start: int, end: int, kind: str, mention: Any, where: str) -> None:
    if not 0 <= start < end <= len(text):
        raise DataError(
            f"{where}: the {kind} span {start}-{end} is outside the text ({len(text)} characters)"
        )
    if mention is not None and text[start:end] != mention:
        raise DataError(
            f"{where}: the {kind} span {start}-{end} holds {text[start:end]!r}, not "
            f"{mention!r}; fix the offsets (CLUENER's end is inclusive)"
        )


def strip_position_digits(tokens: list[str], path: Path, first: int) -> list[str]:
    """Weibo NER's tokens without the digit glued to each character (its position in its
    jieba word: 科0 技1 -> 科 技)."""
    stripped = []
    for index, token in enumerate(tokens):
        if not token.strip():  # a space of the text: it has no word to take a position in
            stripped.append(token)
            continue
        if len(token) < 2 or not token[-1].isdigit():
            raise DataError(
                f"{path}:{first + index}: {token!r} has no position digit after its character; "
                "data.char_position_digits is for Weibo-style files (科0, 技1)"
            )
        stripped.append(token[:-1])
    return stripped


def jsonl_token_examples(path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
    """Examples of a JSONL token file: rows with `tokens` and `tags`, or rows with `text` and
    entity spans (span_example); the kind is told row by row. A row that fails its checks is
    handled as `data.invalid_rows` says (TagChecker)."""
    examples: list[Example] = []
    dropped: list[str] = []
    checker = TagChecker(path, cfg)
    for number, row in read_records(path, "jsonl"):
        row = {cfg.column_map.get(k, k): v for k, v in row.items()}
        try:
            if "tokens" not in row and "text" in row:
                example = span_example(row, cfg.tag_scheme, path, number, dropped)
                examples.append(example if labelled else dataclasses.replace(example, tags=None))
                continue
            if not labelled:
                tokens = [str(t) for t in column(row, "tokens", path, number)]
                examples.append(token_example(tokens, None, f"{path}:{number}"))
                continue
            ((_, tokens, tags),) = jsonl_sentences([(number, row)], path, cfg)
        except DataError as error:
            checker.refuse(str(error))
            continue
        example = checker.example(tokens, tags, number, False)
        if example is not None:
            examples.append(example)
    checker.report()
    if dropped:
        Console(stderr=True).print(
            f"[yellow]{path}: {len(dropped)} entities inside other entities were left out "
            f"(flat tags hold the outer one), e.g. {dropped[0]}[/yellow]"
        )
    return examples


def jsonl_sentences(
    rows: Any, path: Path, cfg: DataConfig
) -> Iterator[tuple[int, list[str], list[str]]]:
    for number, row in rows:
        tokens = column(row, "tokens", path, number)
        tags = column(
            row, cfg.label_column if cfg.label_column != "label" else "tags", path, number
        )
        if len(tokens) != len(tags):
            raise DataError(
                f"{path}:{number}: {len(tokens)} tokens but {len(tags)} tags; "
                "every token needs exactly one tag"
            )
        if not tokens:
            raise DataError(f"{path}:{number}: empty token list")
        yield number, [str(t) for t in tokens], [str(t) for t in tags]
