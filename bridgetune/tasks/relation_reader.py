"""How task relation reads its data (bridgetune.tasks.relation): `RelationReader` and the rules
for marked sentences and mentions given as text or spans.

- inline markers, SemEval-2010 Task 8 style: `label<TAB>The <e1>author</e1> of a <e2>keygen</e2>`
  (TSV/TXT without a header), or a `text` column holding the markers (CSV/JSONL; what the
  Predictor and the service take); typed markers `<e1:ORG>` give the type;
- FinRE/OpenNRE rows `head<TAB>tail<TAB>relation<TAB>sentence` (blank lines between rows are
  allowed): each mention is located in the sentence; where one occurs several times the nearest
  non-overlapping pair of occurrences is taken, and a tie or a mention that is missing is an
  error at file:line (or, with `data.invalid_rows: skip`, the row is left out and counted);
- JSONL with character spans and entity types, as annotation tools and `feedback export` write:
  `{"text", "head": {"start", "end", "type"}, "tail": {...}, "label"}` (a mention may also be
  given as its text, located as above).

Its own module beside the task's so that each stays one thing (the reading rules here, the
markers, model, decoding and metrics there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridgetune.config import DataConfig
from bridgetune.data.io import iter_lines, read_text
from bridgetune.data.readers import LabelSpellings, TextReader, report_skipped
from bridgetune.data.schema import DataError, Example
from bridgetune.tasks.metrics import relation_type

INLINE = re.compile(r"<(/?)(e[12])(?::([^<>\s]+))?>")  # <e1>, </e2>, <e1:ORG>, </e1:ORG>
TAB_HEADERS = {"label", "relation", "sentence", "text", "head", "tail"}


def parse_marked(text: str, where: str) -> tuple[str, list[dict[str, Any]]]:
    """The plain text of a sentence with inline markers, and its [head, tail] mentions.

    `The <e1> author </e1> of` reads as `The author of` (the spaces inside the markers, which
    SemEval writes, are not part of the mention); a typed marker `<e1:ORG>` gives the type.

    Raises:
        DataError: a marker missing, repeated, unclosed or nested, naming `where`.
    """
    out: list[str] = []
    spans: dict[str, list[int]] = {}
    types: dict[str, str | None] = {}
    open_entity: str | None = None
    position = 0
    for match in INLINE.finditer(text):
        segment = text[position : match.start()]
        position = match.end()
        tag, closing, entity, kind = match.group(), match.group(1), match.group(2), match.group(3)
        if open_entity is not None:
            segment = segment.strip()
        elif out and out[-1].endswith(" ") and segment.startswith(" "):
            segment = segment[1:]
        out.append(segment)
        length = sum(map(len, out))
        if closing:
            if open_entity != entity:
                raise DataError(f"{where}: {tag} closes no open <{entity}>; mark each entity "
                                f"as <{entity}>mention</{entity}>")  # fmt: skip
            spans[entity].append(length)
            open_entity = None
        else:
            if open_entity is not None:
                raise DataError(f"{where}: {tag} inside <{open_entity}>: entities may not nest")
            if entity in spans:
                raise DataError(f"{where}: <{entity}> marked twice; mark one head (e1) and "
                                "one tail (e2)")  # fmt: skip
            spans[entity] = [length]
            types[entity] = kind
            open_entity = entity
    tail = text[position:]
    if out and out[-1].endswith(" ") and tail.startswith(" "):
        tail = tail[1:]
    out.append(tail)
    if open_entity is not None:
        raise DataError(f"{where}: <{open_entity}> is never closed with </{open_entity}>")
    missing = [f"<{e}>" for e in ("e1", "e2") if e not in spans]
    if missing:
        raise DataError(
            f"{where}: no {' or '.join(missing)} mention: mark the head as <e1>...</e1> and "
            "the tail as <e2>...</e2>, or give head and tail columns"
        )
    plain = "".join(out)
    mentions = [{"start": spans[e][0], "end": spans[e][1], "type": types[e]} for e in ("e1", "e2")]
    for mention, entity in zip(mentions, ("e1", "e2")):
        if mention["start"] == mention["end"]:
            raise DataError(f"{where}: <{entity}></{entity}> marks an empty mention")
    return plain, mentions


def locate(text: str, head: str, tail: str, where: str) -> list[dict[str, Any]]:
    """[head, tail] spans of two mentions given as text: the nearest pair of occurrences that
    do not overlap.

    Raises:
        DataError: a mention is not in the sentence, every pair overlaps, or two pairs are
            equally near (which one is meant cannot be told).
    """
    found = []
    for role, mention in (("head", head), ("tail", tail)):
        if not mention:
            raise DataError(f"{where}: empty {role} mention")
        starts = [m.start() for m in re.finditer(re.escape(mention), text)]
        if not starts:
            raise DataError(
                f"{where}: the {role} {mention!r} does not occur in the sentence; fix the row "
                "or skip such rows with data.invalid_rows: skip"
            )
        found.append([(s, s + len(mention)) for s in starts])
    pairs = sorted(
        (max(h[0], t[0]) - min(h[1], t[1]), h, t)
        for h in found[0]
        for t in found[1]
        if h[1] <= t[0] or t[1] <= h[0]
    )
    if not pairs:
        raise DataError(f"{where}: head {head!r} and tail {tail!r} overlap wherever they occur")
    if len(pairs) > 1 and pairs[0][0] == pairs[1][0]:
        raise DataError(
            f"{where}: head {head!r} and tail {tail!r} occur several times, and two pairs are "
            "equally near: give character spans (JSONL head/tail start and end) or skip such "
            "rows with data.invalid_rows: skip"
        )
    _, h, t = pairs[0]
    return [{"start": h[0], "end": h[1], "type": None}, {"start": t[0], "end": t[1], "type": None}]


def checked_mentions(text: str, mentions: list[dict[str, Any]], where: str) -> None:
    """Spans inside the text, not empty, not overlapping.

    Raises:
        DataError: naming `where` and the span.
    """
    for role, m in zip(("head", "tail"), mentions):
        start, end = m.get("start"), m.get("end")
        if not (isinstance(start, int) and isinstance(end, int)) or isinstance(start, bool):
            raise DataError(f"{where}: {role} needs integer start and end (character offsets)")
        if not 0 <= start < end <= len(text):
            raise DataError(
                f"{where}: {role} span [{start}, {end}) is not inside the text ({len(text)} "
                "characters; end is exclusive)"
            )
    (a, b) = mentions
    if a["start"] < b["end"] and b["start"] < a["end"]:
        raise DataError(f"{where}: the head and tail spans overlap")


@dataclass(frozen=True)
class RelationReader(TextReader):
    """Relation rows (see the module docstring): TSV/TXT with inline markers or FinRE columns,
    JSONL/CSV with a marked text or head/tail spans."""

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        if path.suffix.lower() in (".txt", ".tsv") and cfg.format in ("auto", "tsv"):
            return self._tab_rows(path, cfg, labelled)
        return super().read_file(path, cfg, labelled)

    def _example(
        self,
        row: dict[str, Any],
        cfg: DataConfig,
        where: tuple[Path, int],
        labelled: bool,
        spellings: LabelSpellings | None = None,
    ) -> Example:
        """TextReader's row (text, label), its mentions from head/tail or inline markers."""
        example = super()._example(row, cfg, where, labelled, spellings)
        row = {cfg.column_map.get(k, k): v for k, v in row.items()}
        head, tail = row.get("head", row.get("h")), row.get("tail", row.get("t"))
        if head is None and tail is None:
            example.text, example.mentions = parse_marked(example.text, example.source)
        elif head is None or tail is None:
            raise DataError(f"{example.source}: give both a head and a tail, or neither (markers)")
        else:
            example.mentions = self._mentions(example.text, head, tail, example.source)
        return example

    @staticmethod
    def _mentions(text: str, head: Any, tail: Any, source: str) -> list[dict[str, Any]]:
        if isinstance(head, str) and isinstance(tail, str):
            return locate(text, head, tail, source)
        if not (isinstance(head, dict) and isinstance(tail, dict)):
            raise DataError(
                f'{source}: head and tail are objects {{"start", "end", "type"}} (or both '
                "the mentions' text)"
            )
        if "start" not in head or "start" not in tail:  # {"text": ..., "type": ...}: located
            names = [m.get("text") or m.get("name") for m in (head, tail)]
            if not all(isinstance(n, str) for n in names):
                raise DataError(f"{source}: head and tail need start and end, or their text")
            mentions = locate(text, names[0], names[1], source)
        else:
            mentions = [{"start": m.get("start"), "end": m.get("end")} for m in (head, tail)]
        for mention, given in zip(mentions, (head, tail)):
            kind = given.get("type")
            mention["type"] = str(kind).strip() or None if kind is not None else None
        checked_mentions(text, mentions, source)
        for role, mention, given in zip(("head", "tail"), mentions, (head, tail)):
            said = given.get("text")
            if isinstance(said, str) and text[mention["start"] : mention["end"]] != said:
                raise DataError(
                    f"{source}: the {role} span [{mention['start']}, {mention['end']}) reads "
                    f"{text[mention['start'] : mention['end']]!r}, not its text {said!r}"
                )
        return mentions

    def _tab_rows(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        """Headerless tab-separated rows: label + marked sentence, or head, tail, relation,
        sentence (FinRE); unlabelled: a marked sentence, or head, tail, sentence."""
        examples, skipped = [], []
        spellings = LabelSpellings()
        for number, line in enumerate(iter_lines(read_text(path)), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if number == 1 and {f.strip().lower() for f in fields} <= TAB_HEADERS:
                continue  # a header row
            try:
                examples.append(self._tab_row(fields, f"{path}:{number}", labelled, spellings))
            except DataError as error:
                if cfg.invalid_rows != "skip":
                    raise
                skipped.append(str(error))
        spellings.check()
        report_skipped(path, skipped)
        return examples

    @staticmethod
    def _tab_row(
        fields: list[str], source: str, labelled: bool, spellings: LabelSpellings
    ) -> Example:
        shapes = {2: "label<TAB>marked sentence", 4: "head<TAB>tail<TAB>relation<TAB>sentence"}
        if not labelled:
            shapes = {1: "a marked sentence", 3: "head<TAB>tail<TAB>sentence"}
        if len(fields) not in shapes:
            raise DataError(
                f"{source}: {len(fields)} tab-separated fields; relation rows are "
                f"{' or '.join(shapes.values())}"
            )
        label = None
        if len(fields) in (1, 2):
            sentence = fields[-1]
            text, mentions = parse_marked(sentence.strip(), source)
            label = fields[0].strip() if labelled else None
        else:
            head, tail, *rest = fields
            text = rest[-1].strip()
            label = rest[0].strip() if labelled else None
            mentions = locate(text, head.strip(), tail.strip(), source)
        if labelled and not label:
            raise DataError(f"{source}: empty relation label")
        if label is not None:
            spellings.add(label, label, source)
        return Example(text=text, label=label, mentions=mentions, source=source)

    def stratum(self, example: Example) -> str | None:
        """A carved dev split keeps the relation types' proportions (directions pooled:
        SemEval's training set has one Entity-Destination(e2,e1) in 8,000)."""
        return relation_type(str(example.label))

    def check_label_set(self, labels: list[str], source: str) -> None:
        if len(labels) < 2:
            raise DataError(
                f"{source}: found only the relation {labels}; relation classification needs at "
                "least two labels (a no-relation label counts)"
            )
