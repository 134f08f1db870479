"""Readers for CSV, TSV, JSONL, CoNLL-style token files and hub datasets, with validation.

Every error names the file and the line (or row) and says what to do. Nothing here knows about
models: readers turn files into `Example`s, `load_splits` adds labels and the dev split.

One module (about 500 lines): every file form's reading, encodings and line numbers for
errors; the readers of each task build on it.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridgetune.config import DataConfig
from bridgetune.data.schema import DataError, Example
from bridgetune.data.tags import check_sequence

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
TOKEN_EXTENSIONS = (".conll", ".txt", ".bio", ".bmes", ".bioes", ".iob", ".iob2", ".ner")


@dataclass
class Splits:
    """Train/dev/test examples plus the label set (class labels, or tags for NER)."""

    train: list[Example]
    dev: list[Example]
    test: list[Example] | None
    labels: list[str]
    fingerprint: str


def read_text(path: Path) -> str:
    """Read a file as strict UTF-8, naming the line of the first bad byte."""
    if not path.is_file():
        raise DataError(f"{path}: file does not exist; check the data path in your config")
    return decode_utf8(path.read_bytes(), str(path))


def decode_utf8(raw: bytes, source: str) -> str:
    """`raw` as strict UTF-8 (a BOM dropped); DataError naming `source`, line and column of the
    first bad byte otherwise."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise DataError(
            f"{source}:{line}: byte 0x{raw[error.start]:02x} at column {column} is not valid "
            "UTF-8; re-save the text as UTF-8 (e.g. iconv -f GBK -t UTF-8 for GBK files)"
        ) from None


def detect_format(path: Path, declared: str, tagged: bool) -> str:
    """The format of `path`: `declared`, or guessed from the suffix (token files for tagged
    data unless JSONL)."""
    if declared == "parallel":
        raise DataError(f"{path}: data.format: parallel is for causal_lm and seq2seq data")
    if declared != "auto":
        return declared
    suffix = path.suffix.lower()
    if tagged and suffix not in (".jsonl", ".json"):
        return "conll"
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if suffix in TOKEN_EXTENSIONS:
        return "conll"
    raise DataError(f"{path}: cannot tell the format from '{suffix}'; set data.format")


def json_row(line: str, path: Path, number: int) -> dict[str, Any]:
    """One JSON-lines row, or a DataError naming the file and line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}:{number}: each line must be a JSON object")
    return row


def json_array_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each element of a top-level JSON array."""
    decoder = json.JSONDecoder()
    at, line, counted = text.index("[") + 1, 1, 0
    while True:
        while at < len(text) and text[at] in " \t\r\n,":
            at += 1
        if at >= len(text):
            raise DataError(f"{path}: the JSON array is not closed with ']'")
        if text[at] == "]":
            return
        line += text.count("\n", counted, at)
        counted = at
        try:
            row, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line}: each element of the array must be a JSON object")
        yield line, row


def parallel_rows(prefix: Path, languages: list[str]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """(source file, line number, {"prompt", "completion"}) of line-aligned parallel text
    files `<prefix>.<source>` and `<prefix>.<target>` (one sentence per line, as Moses,
    fairseq and OpenNMT keep translation data).

    Raises:
        DataError: the files have different line counts.
    """
    source, target = (Path(f"{prefix}.{language}") for language in languages)
    sides = [read_text(path).split("\n") for path in (source, target)]
    for lines in sides:
        if lines and lines[-1] == "":
            lines.pop()  # the final newline
    if len(sides[0]) != len(sides[1]):
        raise DataError(
            f"{source} has {len(sides[0])} lines and {target} has {len(sides[1])}; parallel "
            "files must be line-aligned (line i of one translates line i of the other)"
        )
    for number, (left, right) in enumerate(zip(*sides), 1):
        # a row is reported at the file of its empty side, if it has one
        where = target if left.strip() and not right.strip() else source
        yield where, number, {"prompt": left.rstrip("\r"), "completion": right.rstrip("\r")}


def data_files(spec: str, cfg: DataConfig | None) -> list[Path]:
    """The local files a data path stands for: itself, or a parallel pair."""
    if cfg is not None and cfg.format == "parallel" and cfg.languages:
        return [Path(f"{spec}.{language}") for language in cfg.languages]
    return [Path(spec)]


def read_records(
    path: Path, fmt: str, columns: list[str] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row dict) for CSV, TSV and JSONL files; a JSON file holding one array of
    objects (as alpaca-style datasets ship) is read as rows too, each at the line it starts.
    `columns`: the names of a CSV/TSV file without a header row."""
    text = read_text(path)
    if fmt == "jsonl" and text.lstrip().startswith("["):
        yield from json_array_rows(path, text)
        return
    if fmt == "jsonl":
        for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 is text
            if line.strip():
                yield number, json_row(line, path, number)
        return
    # the file is in memory already, so the csv module's 128 KiB field cap protects nothing:
    # a field may be as long as the file (long documents are real data)
    csv.field_size_limit(max(csv.field_size_limit(), min(len(text) + 1, 2**31 - 1)))
    reader = csv.DictReader(
        io.StringIO(text), fieldnames=columns, delimiter="\t" if fmt == "tsv" else ","
    )
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as error:  # a field over the limit still (a file over 2 GiB)
            raise DataError(
                f"{path}:{reader.line_num}: not valid {fmt.upper()} ({error}); check the quoting"
            ) from None
        # line_num is the record's last line; quoted fields may span several lines
        start = reader.line_num - sum(str(v).count("\n") for v in row.values() if v)
        if None in row:
            raise DataError(
                f"{path}:{start}: more fields than the "
                + ("header has" if columns is None else f"{len(columns)} of data.columns")
                + f"; quote fields that contain {'tabs' if fmt == 'tsv' else 'commas'}"
            )
        yield start, row


def read_token_file(path: Path, tagged: bool = True) -> Iterator[tuple[int, list[str], list[str]]]:
    """(first line, tokens, tags) per sentence of a CoNLL-style file (tag in the last column).

    With `tagged=False` (prediction input) one-column lines are tokens without tags.
    """
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    for number, line in enumerate(read_text(path).split("\n"), 1):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if tokens:
                yield first, tokens, tags
            tokens, tags = [], []
            continue
        if len(parts) < 2 and tagged:
            raise DataError(
                f"{path}:{number}: expected 'TOKEN [...] TAG' but found one column {line!r}; "
                "every token line needs its tag in the last column"
            )
        if not tokens:
            first = number
        tokens.append(parts[0])
        tags.append(parts[-1] if len(parts) > 1 else "O")
    if tokens:
        yield first, tokens, tags


def join_tokens(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Text of the tokens (no spaces between CJK characters) and each token's span in it."""
    glue = "" if all(len(t) == 1 for t in tokens) and any(_CJK.match(t) for t in tokens) else " "
    offsets, position = [], 0
    for token in tokens:
        offsets.append((position, position + len(token)))
        position += len(token) + len(glue)
    return glue.join(tokens), offsets


def token_example(tokens: list[str], tags: list[str] | None, source: str) -> Example:
    text, offsets = join_tokens(tokens)
    return Example(text=text, tokens=tokens, tags=tags, offsets=offsets, source=source)


def column(row: dict[str, Any], name: str, path: Path, number: int) -> Any:
    if name in row:
        return row[name]
    close = difflib.get_close_matches(name, [str(k) for k in row], n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise DataError(
        f"{path}:{number}: column '{name}' not found (columns: {', '.join(map(str, row))}).{hint} "
        "Set data.text_column/label_column or map it with data.column_map."
    )


def read_file(path: Path, cfg: DataConfig, reader: Any, labelled: bool = True) -> list[Example]:
    """Examples of one local file, as the task's `reader` (bridgetune.data.readers) reads them."""
    examples = reader.read_file(path, cfg, labelled)
    if not examples:
        raise DataError(f"{path}: no examples found; the split is empty")
    return examples


def checked_token_example(
    tokens: list[str],
    tags: list[str],
    scheme: str,
    path: str,
    first_line: int,
    line_per_token: bool = False,
) -> Example:
    """A token example whose tags form a valid `scheme` sequence, or a DataError naming the
    line (of the token itself in CoNLL files, of the row otherwise)."""
    problem = check_sequence(tags, scheme)
    if problem:
        index, reason = problem
        line = first_line + index if line_per_token else first_line
        raise DataError(
            f"{path}:{line}: invalid {scheme} sequence at token {tokens[index]!r}: "
            f"{reason}. Fix the tag or set data.tag_scheme to the file's scheme."
        )
    return token_example(tokens, tags, f"{path}:{first_line}")


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
        tags = _iob1(tags)
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


def entity_tags(kind: str, length: int, scheme: str) -> list[str]:
    """The tags of an entity of `length` words in `scheme` (IOB1 written as IOB2)."""
    if scheme in ("IOB1", "IOB2"):
        return [f"B-{kind}"] + [f"I-{kind}"] * (length - 1)
    if length == 1:
        return [f"S-{kind}"]
    inside = "M" if scheme == "BMES" else "I"
    return [f"B-{kind}"] + [f"{inside}-{kind}"] * (length - 2) + [f"E-{kind}"]


def _iob1(tags: list[str]) -> list[str]:
    out, previous = [], "O"
    for tag in tags:
        if tag.startswith("B-") and not (previous != "O" and previous[2:] == tag[2:]):
            tag = "I-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def strip_position_digits(tokens: list[str], path: Path, first: int) -> list[str]:
    """Weibo NER's tokens without the digit glued to each character (its position in its
    jieba word: 科0 技1 -> 科 技)."""
    stripped = []
    for index, token in enumerate(tokens):
        if len(token) < 2 or not token[-1].isdigit():
            raise DataError(
                f"{path}:{first + index}: {token!r} has no position digit after its character; "
                "data.char_position_digits is for Weibo-style files (科0, 技1)"
            )
        stripped.append(token[:-1])
    return stripped


def jsonl_token_examples(path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
    """Examples of a JSONL token file: rows with `tokens` and `tags`, or rows with `text` and
    entity spans (span_example); the kind is told row by row."""
    examples: list[Example] = []
    dropped: list[str] = []
    for number, row in read_records(path, "jsonl"):
        row = {cfg.column_map.get(k, k): v for k, v in row.items()}
        if "tokens" not in row and "text" in row:
            example = span_example(row, cfg.tag_scheme, path, number, dropped)
            examples.append(example if labelled else dataclasses.replace(example, tags=None))
        elif not labelled:
            examples.append(token_example([str(t) for t in column(row, "tokens", path, number)],
                                          None, f"{path}:{number}"))  # fmt: skip
        else:
            for _, tokens, tags in jsonl_sentences([(number, row)], path, cfg):
                examples.append(
                    checked_token_example(tokens, tags, cfg.tag_scheme, str(path), number)
                )
    if dropped:
        from rich.console import Console

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


def read_hub(spec: str, cfg: DataConfig, reader: Any, role: str) -> list[Example]:
    """Examples of a hub dataset `hf:<name>[:<config>]`; role picks train/validation/test."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{spec}: hub datasets need `pip install 'bridgetune[hub]'`") from None
    name, _, subset = spec[3:].partition(":")
    split = {"train": "train", "dev": "validation", "test": "test"}[role]
    try:
        dataset = datasets.load_dataset(name, subset or None, split=split)
    except Exception as error:  # the datasets library raises many types for one cause
        raise DataError(f"{spec}: could not load split '{split}': {error}") from None
    examples = []
    for index, row in enumerate(_decode_class_labels(dataset)):
        examples.append(reader.read_row(row, cfg, (Path(spec), index + 1)))
    return examples


def _decode_class_labels(dataset: Any) -> Iterator[dict[str, Any]]:
    """Rows with integer ClassLabel values replaced by their names."""
    import datasets

    names = {}
    for column, feature in dataset.features.items():
        inner = getattr(feature, "feature", feature)
        if isinstance(inner, datasets.ClassLabel):
            names[column] = inner.names
    for row in dataset:
        for column, labels in names.items():
            value = row[column]
            row[column] = [labels[v] for v in value] if isinstance(value, list) else labels[value]
        yield row


def load_examples(spec: str, cfg: DataConfig, reader: Any, role: str) -> list[Example]:
    """The examples of `spec` (a file or `hf:<name>`) for split `role`, capped as configured."""
    if spec.startswith("hf:"):
        examples = read_hub(spec, cfg, reader, role)
    else:
        examples = read_file(Path(spec), cfg, reader)
    limit = cfg.max_train_examples if role == "train" else cfg.max_eval_examples
    return examples[:limit] if limit else examples


def fingerprint(specs: list[str | None], cfg: DataConfig | None = None) -> str:
    """sha256 over the bytes of the local data files (hub specs by name)."""
    digest = hashlib.sha256()
    for spec in specs:
        if spec is None:
            continue
        if spec.startswith("hf:"):
            digest.update(spec.encode())
            continue
        for path in data_files(spec, cfg):
            with path.open("rb") as stream:  # in pieces: a pre-training corpus can be huge
                for piece in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(piece)
    return digest.hexdigest()[:16]
