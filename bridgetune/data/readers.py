"""How a task's examples are read: the data layer's half of the Task protocol.

Each task class names its reader (`Task.reader`); the data layer, which never imports tasks,
reads files and hub rows, infers and checks labels and splits off dev through it. A new task
with a new format brings a reader of its own; these cover today's tasks:

- `TextReader`: a text (or a text pair) per row and a label, or several (`multilabel`);
- `NumberReader`: a text (or a text pair) per row and one or more numeric targets (regression);
- `TokenReader`: words with a tag each (CoNLL-style files or JSONL token lists);
- `RankingReader`: (query, candidate, relevance) rows grouped into one example per query;
- `QAReader`: questions on contexts with answer spans (SQuAD JSON or JSONL rows);
- `GenerationReader`: prompt/completion, chat `messages` or alpaca-style rows (causal_lm);
- `CorpusReader`: unlabelled text for masked-LM pre-training (mlm).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from bridgetune.config import DataConfig
from bridgetune.data.io import (
    TOKEN_EXTENSIONS,
    checked_token_example,
    column,
    detect_format,
    jsonl_token_examples,
    parallel_rows,
    read_records,
    read_text,
    read_token_file,
    strip_position_digits,
    token_example,
)
from bridgetune.data.schema import DataError, Example
from bridgetune.data.tags import SCHEME_PREFIXES, repair_iob2


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
    if skipped:
        shown = "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        Console(stderr=True).print(
            f"[yellow]{path}: {len(skipped)} invalid rows skipped (data.invalid_rows: skip): "
            f"{shown}[/yellow]"
        )
    return examples


def example_labels(example: Example) -> list[str]:
    """Every class label an example carries: its class, its classes (multilabel) or its tags;
    numeric targets (regression) are not labels."""
    if example.tags is not None:
        return example.tags
    values = example.label if isinstance(example.label, list) else [example.label]
    return [value for value in values if isinstance(value, str)]


def _found(train: list[Example]) -> set[str]:
    return {label for example in train for label in example_labels(example)}


@dataclass(frozen=True)
class TextReader:
    """Rows of CSV, TSV or JSONL: `text_column` (+ `text_pair_column`) and `label_column`."""

    multilabel: bool = False
    tagged = False

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        return row_examples(self._example, path, cfg, labelled, "use CSV/TSV/JSONL")

    def read_row(self, row: dict[str, Any], cfg: DataConfig, where: tuple[Path, int]) -> Example:
        return self._example(row, cfg, where, labelled=True)

    def _example(
        self, row: dict[str, Any], cfg: DataConfig, where: tuple[Path, int], labelled: bool
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
            try:
                label = self._label(column(row, cfg.label_column, path, number), cfg)
            except ValueError as error:  # a reader's own label rules (subclasses)
                if isinstance(error, DataError):
                    raise
                raise DataError(f"{path}:{number}: {error}") from None
            if label in ("", []):
                raise DataError(f"{path}:{number}: empty label in column '{cfg.label_column}'")
        return Example(text=text, text_pair=pair, label=label, source=f"{path}:{number}")

    def _label(self, value: Any, cfg: DataConfig) -> str | list[str]:
        """The label(s) of a raw column value; a ValueError becomes a DataError at file:line."""
        if not self.multilabel:
            return "" if value is None else str(value).strip()
        if isinstance(value, list):
            return [str(v) for v in value]
        parts = str(value).split(cfg.label_separator) if value is not None else []
        return [p.strip() for p in parts if p.strip()]

    def infer_labels(self, train: list[Example], scheme: str | None) -> list[str]:
        """Sorted label set of train; numeric labels sort numerically."""
        found = _found(train)
        try:
            return sorted(found, key=int)
        except ValueError:
            return sorted(found)

    def check_label_set(self, labels: list[str], source: str) -> None:
        if not self.multilabel and len(labels) < 2:
            raise DataError(
                f"{source}: found only the label {labels}; classification needs at least two "
                "classes"
            )

    def stratum(self, example: Example) -> str | None:
        return example_labels(example)[0]


@dataclass(frozen=True)
class NumberReader(TextReader):
    """Rows like TextReader's whose `label_column` holds a number (a rating, a similarity), or
    several (a JSON list, or numbers joined by `data.label_separator`: one per target)."""

    def _label(self, value: Any, cfg: DataConfig) -> list[float]:
        if isinstance(value, list):
            parts = value
        elif isinstance(value, str) and cfg.label_separator in value:
            parts = value.split(cfg.label_separator)
        else:
            parts = [value]
        numbers = []
        for part in parts:
            try:
                number = float(str(part).strip())
            except ValueError:
                raise ValueError(
                    f"target {part!r} in column '{cfg.label_column}' is not a number"
                ) from None
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError(f"target {part!r} in column '{cfg.label_column}' is not finite")
            numbers.append(number)
        return numbers

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        examples = super().read_file(path, cfg, labelled)
        if labelled and examples:
            count = len(examples[0].label or [])
            for example in examples:
                if len(example.label or []) != count:
                    raise DataError(
                        f"{example.source}: {len(example.label or [])} targets, but the first "
                        f"row has {count}; every row needs one number per target"
                    )
        return examples

    def infer_labels(self, train: list[Example], scheme: str | None) -> list[str]:
        """The targets' names: `data.labels` when given, else "value" (one target) or
        value_1, value_2, ... (several)."""
        count = len(train[0].label or []) if train else 1
        return ["value"] if count == 1 else [f"value_{i + 1}" for i in range(count)]

    def check_label_set(self, labels: list[str], source: str) -> None:
        if not labels or len(set(labels)) != len(labels):
            raise DataError(
                f"{source}: regression needs one distinct name per target in data.labels, got "
                f"{labels}"
            )

    def stratum(self, example: Example) -> str | None:
        return None


@dataclass(frozen=True)
class TokenReader:
    """Words with one tag each: CoNLL-style files (tag in the last column; Weibo NER's
    character+digit tokens with `data.char_position_digits`), JSONL rows with `tokens` and
    `tags`, or JSONL rows with `text` and entity spans (CLUENER2020's `label`, or `entities`);
    tags are checked against (span rows: written in) `data.tag_scheme`."""

    tagged = True

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        fmt = detect_format(path, cfg.format, tagged=True)
        if fmt == "jsonl":
            return jsonl_token_examples(path, cfg, labelled)
        if fmt != "conll":
            raise DataError(f"{path}: token tasks read CoNLL-style or JSONL files, not {fmt}")

        def words(tokens: list[str], first: int) -> list[str]:
            if cfg.char_position_digits:
                return strip_position_digits(tokens, path, first)
            return tokens

        if not labelled:
            return [
                token_example(words(tokens, first), None, f"{path}:{first}")
                for first, tokens, _ in read_token_file(path, tagged=False)
            ]
        examples, problems = [], []
        for first, tokens, tags in read_token_file(path):
            try:
                examples.append(
                    checked_token_example(
                        words(tokens, first), tags, cfg.tag_scheme, f"{path}", first, True
                    )
                )
            except DataError as error:
                if cfg.invalid_rows == "error":
                    raise
                problems.append(str(error))
                if cfg.invalid_rows == "repair":
                    if cfg.tag_scheme != "IOB2":
                        raise DataError(
                            f"{error} (data.invalid_rows: repair reads IOB2 files; use skip)"
                        ) from None
                    examples.append(
                        token_example(words(tokens, first), repair_iob2(tags), f"{path}:{first}")
                    )
        if problems:
            done = "repaired" if cfg.invalid_rows == "repair" else "skipped"
            Console(stderr=True).print(
                f"[yellow]{path}: {len(problems)} sentences with invalid tags {done} "
                f"(data.invalid_rows: {cfg.invalid_rows}), e.g. {problems[0]}[/yellow]"
            )
        return examples

    def read_row(self, row: dict[str, Any], cfg: DataConfig, where: tuple[Path, int]) -> Example:
        path, number = where
        row = {cfg.column_map.get(k, k): v for k, v in row.items()}
        tags = column(row, cfg.label_column, path, number)
        return checked_token_example(row["tokens"], tags, cfg.tag_scheme, str(path), number)

    def infer_labels(self, train: list[Example], scheme: str | None) -> list[str]:
        """'O' first, then tags by entity type. With a tag `scheme`, every entity type gets all
        of the scheme's tags (B-X and I-X for IOB2), so the model can express any valid
        sequence even when train happens to lack one, e.g. only single-token entities of a type.
        """
        found = _found(train)
        if scheme:
            found |= {f"{p}{t[1]}{t[2:]}" for t in found - {"O"} for p in SCHEME_PREFIXES[scheme]}
            found.add("O")
        rest = sorted(found - {"O"}, key=lambda t: (t[2:], t[:1]))
        return (["O"] if "O" in found else []) + rest

    def check_label_set(self, labels: list[str], source: str) -> None:
        return None  # a split of all-O sentences still trains a tagger

    def stratum(self, example: Example) -> str | None:
        return None


@dataclass(frozen=True)
class RankingReader:
    """Rows of CSV, TSV or JSONL with the query (`text_column`), one candidate
    (`text_pair_column`) and its relevance (`label_column`: 0 = not relevant, higher = more;
    binary or graded), grouped into one example per query by `group_column` (its id), or by
    the query text when no group column is set. Groups keep the order of their first row."""

    tagged = False

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        fmt = detect_format(path, cfg.format, tagged=False)
        if fmt == "conll":
            raise DataError(f"{path}: ranking reads CSV/TSV/JSONL rows, not a token file")
        if not cfg.text_pair_column:
            raise DataError(
                f"{path}: ranking needs data.text_pair_column, the column of the candidate text"
            )
        groups: dict[str, Example] = {}
        for number, raw in read_records(path, fmt):
            row = {cfg.column_map.get(k, k): v for k, v in raw.items()}
            query = self._text(row, cfg.text_column, path, number)
            candidate = self._text(row, cfg.text_pair_column, path, number)
            key = query
            if cfg.group_column:
                key = str(column(row, cfg.group_column, path, number)).strip()
            group = groups.get(key)
            if group is None:
                group = Example(text=query, candidates=[], label=[] if labelled else None)
                group.id, group.source = key, f"{path}:{number}"
                groups[key] = group
            elif group.text != query:
                raise DataError(
                    f"{path}:{number}: query id {key!r} has another query text than at "
                    f"{group.source}; one id, one query: fix the id or the text"
                )
            assert group.candidates is not None
            group.candidates.append(candidate)
            if labelled:
                value = column(row, cfg.label_column, path, number)
                group.label.append(self._relevance(value, cfg, path, number))  # type: ignore
        examples = list(groups.values())
        if labelled:
            for example in examples:
                if max(example.label) <= 0:  # type: ignore[type-var, arg-type]
                    raise DataError(
                        f"{example.source}: query {example.id!r} has no relevant candidate "
                        f"(every relevance in column '{cfg.label_column}' is 0): a ranking "
                        "group needs at least one positive; label one or remove the group"
                    )
        return examples

    @staticmethod
    def _text(row: dict[str, Any], name: str, path: Path, number: int) -> str:
        text = column(row, name, path, number)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{number}: empty text in column '{name}'; fill or remove it")
        return text

    @staticmethod
    def _relevance(value: Any, cfg: DataConfig, path: Path, number: int) -> float:
        try:
            relevance = float(str(value).strip())
        except ValueError:
            relevance = float("nan")
        if not relevance >= 0 or relevance == float("inf"):
            raise DataError(
                f"{path}:{number}: relevance {value!r} in column '{cfg.label_column}' is not a "
                "number >= 0 (0 = not relevant; 1, or higher grades, = relevant)"
            )
        return relevance

    def read_row(self, row: dict[str, Any], cfg: DataConfig, where: tuple[Path, int]) -> Example:
        raise DataError(
            f"{where[0]}: ranking groups rows of a file by query; save the hub dataset as "
            "CSV/JSONL (query, candidate, relevance[, query id]) and give its path"
        )

    def infer_labels(self, train: list[Example], scheme: str | None) -> list[str]:
        return ["relevance"]

    def check_label_set(self, labels: list[str], source: str) -> None:
        if len(labels) != 1:
            raise DataError(f"{source}: ranking scores one relevance; data.labels gave {labels}")

    def stratum(self, example: Example) -> str | None:
        return None


@dataclass(frozen=True)
class QAReader:
    """Extractive question answering: SQuAD-style JSON (`{"data": [{"paragraphs": [{"context",
    "qas": [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}`,
    SQuAD 1.1 and 2.0, CMRC 2018) or JSONL rows with `id`, `question`, `context` and `answers`
    (a list of {text, answer_start}, or {text: [...], answer_start: [...]} as in hub datasets;
    `data.column_map` renames; text, text_pair and an answer-text label, as service feedback
    exports, are read too). An empty answer list (or is_impossible) marks a question the
    context does not answer. An answer_start that misses its text is moved to the text's
    nearest occurrence (counted and reported); a question none of whose answers is a span of
    its context is an error naming file, line and question id (other references of a question
    need not be spans: they only score predictions)."""

    tagged = False

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        json_file = path.suffix.lower() == ".json" and cfg.format == "auto"
        fmt = "json" if json_file and _is_squad(path) else detect_format(path, cfg.format, False)
        if fmt == "jsonl":
            records = (
                ({cfg.column_map.get(k, k): v for k, v in row.items()}, number)
                for number, row in read_records(path, fmt)
            )
        elif fmt == "json":
            records = squad_records(path)
        else:
            raise DataError(
                f"{path}: question answering reads SQuAD-style JSON or JSONL rows "
                f"(id, question, context, answers), not {fmt}"
            )
        examples, moved = [], 0
        for record, number in records:
            example, shifted = self._example(record, path, number, labelled)
            examples.append(example)
            moved += shifted
        if moved:
            Console(stderr=True).print(
                f"[yellow]{path}: {moved} answer_start values did not point at their answer "
                "text and were moved to its nearest occurrence in the context[/yellow]"
            )
        return examples

    def _example(
        self, record: dict[str, Any], path: Path, number: int, labelled: bool
    ) -> tuple[Example, int]:
        qid = str(record.get("id", number))
        where = f"{path}:{number}: question {qid!r}"
        # text/text_pair/label: the layout of exported service feedback (label: answer text)
        question = record.get("question", record.get("text"))
        context = record.get("context", record.get("text_pair"))
        if "answers" not in record and isinstance(record.get("label"), str):
            record = {**record, "answers": [{"text": record["label"]}] if record["label"] else []}
        for name, value in (("question", question), ("context", context)):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: no {name} (a non-empty string is needed)")
        assert isinstance(question, str) and isinstance(context, str)
        example = Example(text=question.strip(), text_pair=context, id=qid)
        example.source = f"{path}:{number}"
        if not labelled:
            return example, 0
        raw = record.get("answers")
        if isinstance(raw, dict):  # hub layout: parallel lists
            raw = [
                {"text": t, "answer_start": s}
                for t, s in zip(raw.get("text", []), raw.get("answer_start", []))
            ]
        if raw is None or record.get("is_impossible"):
            raw = [] if record.get("is_impossible") or "answers" in record else None
        if raw is None:
            raise DataError(
                f"{where}: no 'answers'; give a list of {{text, answer_start}}, or an empty "
                "list for a question the context does not answer"
            )
        answers, moved = [], 0
        for answer in raw:
            text, start = answer.get("text"), answer.get("answer_start")
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}: an answer without text: {answer}")
            found = _span_start(context, text, start)
            moved += found is not None and found != start
            answers.append({"text": text, "start": found})
        spans = [a for a in answers if a["start"] is not None]
        if answers and not spans:
            raise DataError(
                f"{where}: the answer {answers[0]['text']!r} is not a span of its context; fix "
                "the answer text (it must appear in the context exactly) or the context"
            )
        # a reference that is not a span (CMRC 2018 has a few) still scores a prediction, as
        # long as another reference of the question is one to train on
        example.label = spans + [a for a in answers if a["start"] is None]
        return example, moved

    def read_row(self, row: dict[str, Any], cfg: DataConfig, where: tuple[Path, int]) -> Example:
        row = {cfg.column_map.get(k, k): v for k, v in row.items()}
        return self._example(row, where[0], where[1], True)[0]

    def infer_labels(self, train: list[Example], scheme: str | None) -> list[str]:
        return list(QA_LABELS)

    def check_label_set(self, labels: list[str], source: str) -> None:
        if list(labels) != list(QA_LABELS):
            raise DataError(f"{source}: question answering has no labels to set; drop data.labels")

    def stratum(self, example: Example) -> str | None:
        return None


QA_LABELS = ("start", "end")  # the two outputs of a span model (its num_labels)


def squad_records(path: Path) -> Iterator[tuple[dict[str, Any], int]]:
    """(question record with its context, line number of its id) of a SQuAD-style JSON file."""
    raw = read_text(path)
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list):
        raise DataError(
            f'{path}: not SQuAD-style JSON: expected {{"data": [{{"paragraphs": [...]}}]}}'
        )
    position, line, counted = 0, 1, 0
    for article in articles:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                qid = str(qa.get("id", ""))
                found = raw.find(json.dumps(qid, ensure_ascii=False), position) if qid else -1
                if found < 0 and qid:
                    found = raw.find(json.dumps(qid), position)
                position = max(position, found)
                line += raw.count("\n", counted, position)
                counted = position
                yield {**qa, "context": paragraph.get("context")}, line


def _is_squad(path: Path) -> bool:
    """Whether a .json file is one SQuAD-style document (else: JSON lines)."""
    try:
        return isinstance(json.loads(read_text(path)), dict)
    except json.JSONDecodeError as error:
        return error.msg != "Extra data"  # a broken document: squad_records says where


def _span_start(context: str, text: str, start: Any) -> int | None:
    """Where `text` is in `context`: at `start` when it is there, else its nearest occurrence."""
    if isinstance(start, int) and context[start : start + len(text)] == text:
        return start
    hits, at = [], context.find(text)
    while at >= 0:
        hits.append(at)
        at = context.find(text, at + 1)
    if not hits:
        return None
    anchor = start if isinstance(start, int) else 0
    return min(hits, key=lambda hit: abs(hit - anchor))


ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class GenerationReader:
    """Rows for supervised fine-tuning of a generative model (JSONL, or CSV/TSV for the plain
    forms), one of:

    - `messages`: a conversation, a list of {role, content} (role: system, user, assistant;
      other speaker names through `data.role_map`; dialogue corpora's {speaker, text} turns are
      read too), multi-turn, optional system turn;
    - `prompt` and `completion`: a plain prompt and the text that follows it;
    - `instruction`, optional `input`, `output` (alpaca): the prompt is the instruction, and the
      input after a blank line;
    - with `data.format: parallel`, line-aligned source and target text files (translation).

    A prompt given as a list of strings (sentences) is joined with spaces; a completion given
    as a list holds several references: the first is trained, all of them score generations.
    `data.prompt_template` wraps each prompt ("Summarize: {prompt}"); `data.as_chat` makes a
    prompt/completion row a user turn and an assistant turn (trained through the chat
    template).

    `data.column_map` renames other layouts onto these. An example keeps the prompt in `text`
    and the target in `label` ({"completion": ...} or {"messages": [...]}). Unknown roles, a
    conversation without an assistant turn (nothing to learn), and empty completions are
    errors naming the file and line.
    """

    tagged = False

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        return row_examples(
            self._example, path, cfg, labelled, "generation reads JSONL rows", parallel=True
        )

    def read_row(self, row: dict[str, Any], cfg: DataConfig, where: tuple[Path, int]) -> Example:
        return self._example(row, cfg, where, labelled=True)

    def _example(
        self, raw: dict[str, Any], cfg: DataConfig, where: tuple[Path, int], labelled: bool
    ) -> Example:
        path, number = where
        at = f"{path}:{number}"
        row = {cfg.column_map.get(k, k): v for k, v in raw.items()}
        if "messages" in row:
            messages = self._messages(row["messages"], cfg, at)
            if labelled and not any(m["role"] == "assistant" for m in messages):
                raise DataError(
                    f"{at}: the conversation has no assistant turn, so there is nothing to "
                    "learn; add the reply, or map its speaker to 'assistant' in data.role_map"
                )
            prompt = next((m["content"] for m in messages if m["role"] == "user"), "")
            return Example(text=prompt, label={"messages": messages}, source=at)
        if "prompt" in row:
            prompt, completion = row["prompt"], row.get("completion")
        elif "instruction" in row:
            prompt = _text(row["instruction"], "instruction", at)
            extra = row.get("input")
            if isinstance(extra, str) and extra.strip():
                prompt = f"{prompt}\n\n{extra}"
            completion = row.get("output")
        else:
            raise DataError(
                f"{at}: no generation columns; give 'messages', 'prompt' + 'completion', or "
                f"'instruction' + 'output' (columns: {', '.join(map(str, row))}); rename with "
                "data.column_map"
            )
        prompt = _text(_joined(prompt), "prompt", at)
        if cfg.prompt_template:
            prompt = cfg.prompt_template.replace("{prompt}", prompt)
        if not labelled:
            return Example(text=prompt, source=at)
        if isinstance(completion, list) and completion:  # several references: train the first
            references = [_text(c, f"completion[{i}]", at) for i, c in enumerate(completion)]
            target: dict[str, Any] = {"completion": references[0], "references": references}
        else:
            target = {"completion": _text(completion, "completion", at)}
        if cfg.as_chat:
            turns = [{"role": "user", "content": prompt},
                     {"role": "assistant", "content": target["completion"]}]  # fmt: skip
            return Example(text=prompt, label={**target, "messages": turns}, source=at)
        return Example(text=prompt, label=target, source=at)

    @staticmethod
    def _messages(value: Any, cfg: DataConfig, at: str) -> list[dict[str, str]]:
        if not isinstance(value, list) or not value:
            raise DataError(f"{at}: 'messages' must be a non-empty list of {{role, content}}")
        messages = []
        for index, turn in enumerate(value):
            if not isinstance(turn, dict) or not ("content" in turn or "text" in turn):
                raise DataError(f"{at}: messages[{index}] is not a {{role, content}} object")
            content = turn.get("content", turn.get("text"))
            speaker = str(turn.get("role", turn.get("speaker", "")))
            role = cfg.role_map.get(speaker, speaker)
            if role not in ROLES:
                raise DataError(
                    f"{at}: messages[{index}] has the role {speaker!r}; roles are system, user "
                    f"and assistant: map it with data.role_map, e.g. {{{speaker}: user}}"
                )
            messages.append(
                {"role": role, "content": _text(content, f"messages[{index}] content", at)}
            )
        return messages

    def infer_labels(self, train: list[Example], scheme: str | None) -> list[str]:
        return []  # a generative model has no classes

    def check_label_set(self, labels: list[str], source: str) -> None:
        if labels:
            raise DataError(f"{source}: a generative task has no labels; drop data.labels")

    def stratum(self, example: Example) -> str | None:
        return None


def _joined(value: Any) -> Any:
    """A prompt given as a list of strings (an abstract's sentences) as one text."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return " ".join(v.strip() for v in value)
    return value


def _text(value: Any, name: str, at: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{at}: empty or missing {name}; fill it or remove the row")
    return value


TAG_PATTERN = re.compile(r"(O|[BIESM]-\S+)")  # a tag as token files write it


def starts_with(path: Path, prefix: bytes) -> bool:
    """Whether the file's first non-blank bytes are `prefix` (a JSON array, not JSON lines)."""
    with path.open("rb") as stream:
        return stream.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(prefix)


TOKEN_ONLY = tuple(e for e in TOKEN_EXTENSIONS if e != ".txt")  # never plain text
