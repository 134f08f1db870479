"""Reading data files: paths, encodings and line ends, CSV, TSV, JSONL rows and hub datasets,
token examples, fingerprints; token files themselves are bridgetune.data.tokenfiles.

Every error names the file and the line (or row) and says what to do. Nothing here knows about
models: readers turn files into `Example`s, `load_splits` adds labels and the dev split.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridgetune.config import DataConfig
from bridgetune.config.base import check_file, decode_text, read_file_text
from bridgetune.data.schema import DataError, Example
from bridgetune.data.tags import check_sequence, decode_spans

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
TOKEN_EXTENSIONS = (".conll", ".txt", ".bio", ".bmes", ".bioes", ".iob", ".iob2", ".ner")
DATA_PATH_HINT = "check the data path in your config"
DATA_SUFFIXES = (*_EXTENSIONS, *TOKEN_EXTENSIONS, ".text", ".md")  # named first in errors


@dataclass
class Splits:
    """Train/dev/test examples plus the label set (class labels, or tags for NER)."""

    train: list[Example]
    dev: list[Example]
    test: list[Example] | None
    labels: list[str]
    fingerprint: str


def read_text(path: Path) -> str:
    """A data file's text: strict UTF-8, or UTF-16/UTF-32 with a byte-order mark (configs are
    read the same way, bridgetune.config.base.decode_text); a DataError naming the file when it
    is missing, a directory or not such text, with the line of the first bad byte."""
    return read_file_text(path, "data file", DATA_PATH_HINT, DataError, DATA_SUFFIXES)


def decode_utf8(raw: bytes, source: str) -> str:
    """`raw` decoded as data files are (UTF-8, a BOM dropped; UTF-16/UTF-32 with a byte-order
    mark); a DataError naming `source`, the line and column of the first bad byte otherwise."""
    return decode_text(raw, source, DataError)


# line ends: \n, \r\n and a lone \r (old Macs, some exporters), never U+2028, U+0085 and the
# other breaks str.splitlines knows: in JSON and CSV those are characters of the text
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")  # one line with its end


def iter_lines(text: str) -> Iterator[str]:
    """The lines of `text` without their ends (str.split at LF, but at every kind of end), one
    at a time: a file's lines are never all copied at once."""
    start = 0
    for match in _LINE_BREAK.finditer(text):
        yield text[start : match.start()]
        start = match.end()
    yield text[start:]


def line_at(text: str, position: int) -> int:
    """The line number (from 1) of character `position` of `text`, every kind of end counted."""
    ends = text.count("\n", 0, position) + text.count("\r", 0, position)
    return ends - text.count("\r\n", 0, position) + 1


def count_line_breaks(value: str) -> int:
    return value.count("\n") + value.count("\r") - value.count("\r\n")


# Spreadsheets run a cell that starts with = + - @ as a formula (a tab or a CR first as well);
# exports write it with a leading ' (OWASP's CSV-injection escape) and readers strip it again.
# A cell that already starts with 's before such a character gets one more, so reading back
# returns exactly what was written.
_FORMULA_START = "=+-@\t\r"
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")
DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # a number as text


def escape_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: `'` before a formula start (plain numbers such
    as -0.5, which spreadsheets read as numbers, stay as they are)."""
    bare = value.lstrip("'")
    if bare[:1] and bare[0] in _FORMULA_START and not DECIMAL.fullmatch(value):
        return "'" + value
    return value


def unescape_cell(value: str) -> str:
    """A CSV/TSV cell as it was before escape_cell (what exports with OWASP's escape wrote)."""
    return value[1:] if value[:1] == "'" and _ESCAPED.match(value) else value


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


TOO_DEEP = "JSON nested too deeply (thousands of brackets) to be a row; check the line"


def json_row(line: str, path: Path, number: int) -> dict[str, Any]:
    """One JSON-lines row, or a DataError naming the file and line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    except RecursionError:  # thousands of nested brackets: Python's parser recurses
        raise DataError(f"{path}:{number}: {TOO_DEEP}") from None
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
        line += count_line_breaks(text[counted:at])
        counted = at
        try:
            row, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as error:
            where = line_at(text, error.pos)
            raise DataError(f"{path}:{where}: not valid JSON ({error.msg})") from None
        except RecursionError:
            raise DataError(f"{path}:{line}: {TOO_DEEP}") from None
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
    sides = [list(iter_lines(read_text(path))) for path in (source, target)]
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
        yield where, number, {"prompt": left, "completion": right}


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
    `columns`: the names of a CSV/TSV file without a header row. Lines may end in LF, CRLF
    or CR, also mixed in one file; CSV/TSV cells lose the `'` of escape_cell."""
    text = read_text(path)
    if fmt == "jsonl" and text.lstrip().startswith("["):
        yield from json_array_rows(path, text)
        return
    if fmt == "jsonl":
        for number, line in enumerate(iter_lines(text), 1):
            if line.strip():
                yield number, json_row(line, path, number)
        return
    yield from _delimited_rows(path, text, fmt, columns)


def _delimited_rows(
    path: Path, text: str, fmt: str, columns: list[str] | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(first line, row) of CSV/TSV `text`; escaped cells unescaped (unescape_cell)."""
    # the file is in memory already, so the csv module's 128 KiB field cap protects nothing:
    # a field may be as long as the file (long documents are real data)
    csv.field_size_limit(max(csv.field_size_limit(), min(len(text) + 1, 2**31 - 1)))
    # the csv module reads \r, \n and \r\n alike (and keeps them inside quoted fields) when
    # given lines with their ends, as from a file opened with newline=""
    lines = (match.group() for match in _LINE.finditer(text))
    # strict: a quote that closes a cell in its middle (`"so good\tpos` ... `he said "fine`)
    # is an error at its line; lenient, the cells between the quotes, rows and all, would be
    # one silently merged text
    delimiter = "\t" if fmt == "tsv" else ","
    reader = csv.DictReader(lines, fieldnames=columns, delimiter=delimiter, strict=True)
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as error:  # a quote closed mid-cell, a field over 2 GiB
            first = text.split("\n", 1)[0]
            hint = (
                SEMICOLONS
                if fmt == "csv" and ";" in first and "," not in first
                else "check the quoting: a cell that starts with a quote is quoted to its "
                'closing quote, rows and all, and a quote inside it is written twice ("")'
            )
            raise DataError(
                f"{path}:{max(reader.reader.line_num, 1)}: not valid {fmt.upper()} ({error}); "
                + hint
            ) from None
        # line_num is the record's last line; quoted fields may span several lines
        start = reader.line_num - sum(count_line_breaks(str(v)) for v in row.values() if v)
        if None in row:
            raise DataError(
                f"{path}:{start}: more fields than the "
                + ("header has" if columns is None else f"{len(columns)} of data.columns")
                + f"; quote fields that contain {'tabs' if fmt == 'tsv' else 'commas'}"
            )
        yield start, {k: unescape_cell(v) if isinstance(v, str) else v for k, v in row.items()}


def join_tokens(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Text of the tokens (no spaces between CJK characters) and each token's span in it."""
    glue = "" if all(len(t) == 1 for t in tokens) and any(_CJK.match(t) for t in tokens) else " "
    offsets, position = [], 0
    for token in tokens:
        offsets.append((position, position + len(token)))
        position += len(token) + len(glue)
    return glue.join(tokens), offsets


def token_example(
    tokens: list[str],
    tags: list[str] | None,
    source: str,
    scheme: str = "IOB2",
    blank: list[str] | None = None,
) -> Example:
    """An example of tokens (and valid `scheme` tags). White space as a token (a space of a
    character-per-line sentence) stays in the text, so offsets point into the real sentence,
    but is no word: tokenizers give it no piece, so no tag of it could be learnt or predicted.
    The entities are tagged again around it (one keeps its other tokens); an entity of white
    space only is left out, and listed in `blank`."""
    text, offsets = join_tokens(tokens)
    words = [i for i, token in enumerate(tokens) if token.strip()]
    if len(words) < len(tokens):
        if tags is not None:
            tags = _tags_of_words(tags, words, scheme, source, blank)
        tokens, offsets = [tokens[i] for i in words], [offsets[i] for i in words]
    return Example(text=text, tokens=tokens, tags=tags, offsets=offsets, source=source)


def _tags_of_words(
    tags: list[str], words: list[int], scheme: str, source: str, blank: list[str] | None
) -> list[str]:
    """The tags of the tokens `words` (indices into `tags`) alone, every entity in `scheme`."""
    new = {index: place for place, index in enumerate(words)}
    kept = ["O"] * len(words)
    for kind, start, end in decode_spans(tags, scheme):
        inside = [new[i] for i in range(start, end) if i in new]
        if not inside:
            if blank is not None:
                blank.append(f"{source}: {kind} at token {start + 1}")
            continue
        kept[inside[0] : inside[-1] + 1] = entity_tags(kind, len(inside), scheme)
    if scheme == "IOB1":
        kept = iob1_tags(kept)
    separator = next((tag[1] for tag in tags if tag != "O"), "-")  # B_PER files stay B_PER
    return [tag if tag == "O" else tag[0] + separator + tag[2:] for tag in kept]


# Excel in locales with a decimal comma saves "CSV" separated by semicolons
SEMICOLONS = (
    "the file looks separated by ';' (Excel's CSV in many locales): re-save it separated by "
    "commas, or as Unicode Text (.tsv)"
)


def column(row: dict[str, Any], name: str, path: Path, number: int) -> Any:
    if name in row:
        return row[name]
    close = difflib.get_close_matches(name, [str(k) for k in row], n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    header = [str(k) for k in row]
    if len(header) == 1 and (";" in header[0] or header[0].startswith("sep=")):
        hint = f" {SEMICOLONS[0].upper()}{SEMICOLONS[1:]}."
    raise DataError(
        f"{path}:{number}: column '{name}' not found (columns: {', '.join(map(str, row))}).{hint} "
        "Set data.text_column/label_column or map it with data.column_map."
    )


def read_file(path: Path, cfg: DataConfig, reader: Any, labelled: bool = True) -> list[Example]:
    """Examples of one local file, as the task's `reader` (bridgetune.data.readers) reads them."""
    if cfg.format != "parallel":  # a parallel pair is named by its prefix, no file of its own
        check_file(path, "data file", DATA_PATH_HINT, DataError, DATA_SUFFIXES)
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
    problem = sequence_problem(tokens, tags, scheme, path, first_line, line_per_token)
    if problem:
        raise DataError(problem)
    return token_example(tokens, tags, f"{path}:{first_line}", scheme)


def sequence_problem(
    tokens: list[str],
    tags: list[str],
    scheme: str,
    path: str,
    first_line: int,
    line_per_token: bool = False,
) -> str | None:
    """Why `tags` are no valid `scheme` sequence, at its file and line, or None."""
    problem = check_sequence(tags, scheme)
    if problem is None:
        return None
    index, reason = problem
    line = first_line + index if line_per_token else first_line
    return (
        f"{path}:{line}: invalid {scheme} sequence at token {tokens[index]!r}: "
        f"{reason}. Fix the tag or set data.tag_scheme to the file's scheme."
    )


def entity_tags(kind: str, length: int, scheme: str) -> list[str]:
    """The tags of an entity of `length` words in `scheme` (IOB1 written as IOB2)."""
    if scheme in ("IOB1", "IOB2"):
        return [f"B-{kind}"] + [f"I-{kind}"] * (length - 1)
    if length == 1:
        return [f"S-{kind}"]
    inside = "M" if scheme == "BMES" else "I"
    return [f"B-{kind}"] + [f"{inside}-{kind}"] * (length - 2) + [f"E-{kind}"]


def iob1_tags(tags: list[str]) -> list[str]:
    """IOB2 tags written in IOB1: B only where an entity follows one of its own type."""
    out, previous = [], "O"
    for tag in tags:
        if tag.startswith("B-") and not (previous != "O" and previous[2:] == tag[2:]):
            tag = "I-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


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
