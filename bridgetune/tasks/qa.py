"""Extractive question answering: the answer is a span of the context (SQuAD, CMRC 2018).

The model is transformers' question-answering model (start and end logits per token; plain
`transformers` loads it). A context longer than `model.max_length` is read in overlapping
windows (a quarter of max_length overlaps, so an answer cut by one window is whole in the
next); one example is a question with all its windows, and the best span over the windows is
mapped back to character offsets of the context (a SentencePiece piece's without the space its
`▁` stands for; a bare `▁` piece is never an answer's end: `context_offsets`). Training labels
each window with the answer's first and last token, or the first position ([CLS], XLM-R's
`<s>`) when the answer is not inside it (or there is none). A question the context does not
answer (SQuAD 2.0) is predicted when the score of that position beats the best span by more
than a threshold tuned on dev (`calibrate`); a model trained without such questions always
answers.

Exact match and F1 follow the official scripts: SQuAD's (lower case, no punctuation or
articles, word overlap) for English, CMRC 2018's for Chinese (punctuation removed, Chinese
characters as tokens, F1 of the longest common subsequence), picked per reference answer.

One module (under 600 lines): SQuAD reading, context windows, span search and SQuAD/CMRC
scoring share the offsets of one example; they change together.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from bridgetune.config import DataConfig, RunConfig
from bridgetune.data.io import (
    TOO_DEEP,
    detect_format,
    read_records,
    read_text,
)
from bridgetune.data.schema import DataError, Example
from bridgetune.models.pretrained import load_pretrained
from bridgetune.tasks.base import TASKS, Feature, Task, pad_batch, refuse_entities
from bridgetune.tasks.pieces import piece_span
from bridgetune.tasks.predictions import AnswerPrediction


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
        where = f"{path}:{number}: question {qid!r}" if "id" in record else f"{path}:{number}"
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
            moved += isinstance(start, int) and found is not None and found != start
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
    except RecursionError:
        raise DataError(f"{path}: {TOO_DEEP}") from None
    articles = document.get("data") if isinstance(document, dict) else None
    if not _squad_shaped(articles):
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


def _squad_shaped(articles: Any) -> bool:
    """Whether `articles` is a list of {"paragraphs": [{"qas": [{...}]}]} (any other shape
    would fail as an AttributeError deep in the reader)."""

    def objects(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(item, dict) for item in value)

    return objects(articles) and all(
        objects(article.get("paragraphs", []))
        and all(objects(p.get("qas", [])) for p in article.get("paragraphs", []))
        for article in articles
    )


def _is_squad(path: Path) -> bool:
    """Whether a .json file is one SQuAD-style document (else: JSON lines)."""
    try:
        return isinstance(json.loads(read_text(path)), dict)
    except RecursionError:
        return True  # squad_records says so
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


MAX_ANSWER_TOKENS = 64  # longest span considered (a CJK character is a token)
TOP_K = 20  # start and end candidates per window


@TASKS.register("qa")
class QATask(Task):
    """Answer spans of a context; `labels` are the model's two outputs (start, end)."""

    name = "qa"
    auto_class = "AutoModelForQuestionAnswering"
    problem = "span"
    default_metric = "f1"
    lower_is_better: frozenset[str] = frozenset()
    takes_pairs = True  # (question, context)
    second_text = "a context per question"
    output = "answer"
    prediction = AnswerPrediction
    reader = QAReader()

    def __init__(self, labels: list[str], threshold: float | None = None) -> None:
        self.labels = labels
        self.threshold = threshold  # no-answer margin; None: always answer

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> QATask:
        return cls(labels, settings.get("threshold"))

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Spans have no classes, and windows need a context as the second text."""
        if cfg.train.class_weights is not None or cfg.train.label_smoothing or cfg.train.rdrop:
            raise ValueError(
                "train.class_weights, label_smoothing and rdrop apply to classification, not "
                "question answering; remove them"
            )
        if cfg.method.name in ("prompt", "ptuning"):
            raise ValueError(
                f"method.name={cfg.method.name!r} prepends virtual tokens, which would shift the "
                "answer spans; for question answering use lora, prefix, bitfit or full"
            )

    def build_model(self, name_or_path: str, **kwargs: Any) -> torch.nn.Module:
        from transformers import AutoModelForQuestionAnswering

        return load_pretrained(AutoModelForQuestionAnswering, name_or_path, self.labels, **kwargs)

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        """One feature per question: its windows over the context, with character offsets of
        the context tokens (None elsewhere) and, when labelled, the answer's token span."""
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                "question answering maps answers to characters with a fast tokenizer; this "
                "model's tokenizer has none (tokenizer.json)"
            )
        if not examples:
            return []
        questions = [e.text for e in examples]
        contexts = [e.text_pair or "" for e in examples]
        try:
            encoded = tokenizer(
                questions,
                contexts,
                truncation="only_second",
                max_length=max_length,
                stride=max_length // 4,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
        except Exception:  # a question alone longer than max_length
            raise ValueError(_too_long(examples, tokenizer, max_length)) from None
        features: list[Feature] = [
            {"rows": [], "truncated": False, "labels": None} for _ in examples
        ]
        for row in range(len(encoded["input_ids"])):
            index = encoded["overflow_to_sample_mapping"][row]
            offsets = context_offsets(
                contexts[index],
                encoded["offset_mapping"][row],
                encoded.sequence_ids(row),
                tokenizer.convert_ids_to_tokens(encoded["input_ids"][row]),
            )
            window: Feature = {"input_ids": encoded["input_ids"][row], "offsets": offsets}
            if "token_type_ids" in encoded:
                window["token_type_ids"] = encoded["token_type_ids"][row]
            label = examples[index].label
            if label is not None:
                window["labels"] = _token_span(offsets, label[0] if label else None)
            features[index]["rows"].append(window)
        for feature, example in zip(features, examples):
            rows = feature["rows"]
            feature["length"] = max(len(r["input_ids"]) for r in rows) * len(rows)
            if example.label is not None:
                feature["labels"] = [r["labels"] for r in rows]
        return features

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        rows = [row for feature in features for row in feature["rows"]]
        return pad_batch(rows, pad_id)

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]:
        logits = logits.float().cpu()
        predictions, row = [], 0
        for feature, example in zip(features, examples):
            best: tuple[float, int, int] | None = None
            null = float("inf")
            for window in feature["rows"]:
                start_logits, end_logits = logits[row, :, 0], logits[row, :, 1]
                row += 1
                null = min(null, float(start_logits[0] + end_logits[0]))
                span = _best_span(start_logits, end_logits, window["offsets"])
                if span is not None and (best is None or span[0] > best[0]):
                    best = span
            predictions.append(self._prediction(example.text_pair or "", best, null))
        return predictions

    def _prediction(
        self, context: str, best: tuple[float, int, int] | None, null: float
    ) -> dict[str, Any]:
        if best is None:  # no window had a valid span (an empty context)
            return {
                "answer": "",
                "start": None,
                "end": None,
                "score": None,
                "null_score": null,
                "truncated": False,
            }
        score, start, end = best
        prediction = {
            "answer": context[start:end],
            "start": start,
            "end": end,
            "score": round(score, 4),
            "null_score": round(null, 4),
            "truncated": False,  # windows read the whole context
        }
        return self._decided(prediction, self.threshold)

    @staticmethod
    def _decided(prediction: dict[str, Any], threshold: float | None) -> dict[str, Any]:
        """The prediction with the no-answer rule applied for `threshold`."""
        span = prediction.get("best_span") or {
            k: prediction[k] for k in ("start", "end") if prediction["start"] is not None
        }
        base = {k: v for k, v in prediction.items() if k != "best_span"}
        if span and "text" not in span:
            span = {"text": prediction["answer"], **span}
        if not span:
            return base
        no_answer = (
            threshold is not None
            and prediction["score"] is not None
            and prediction["null_score"] - prediction["score"] > threshold
        )
        if no_answer:
            return {**base, "answer": "", "start": None, "end": None, "best_span": span}
        return {**base, "answer": span["text"], "start": span["start"], "end": span["end"]}

    def calibrate(
        self, predictions: list[dict[str, Any]], examples: list[Example]
    ) -> list[dict[str, Any]]:
        """With unanswerable dev questions: the no-answer threshold of the best dev F1."""
        if not any(e.label == [] for e in examples):
            self.threshold = None
            return [self._decided(p, None) for p in predictions]
        margins = sorted(
            {p["null_score"] - p["score"] for p in predictions if p["score"] is not None}
        )
        if not margins:
            return predictions
        best, best_f1 = None, -1.0
        for threshold in [margins[0] - 1.0, *margins]:
            decided = [self._decided(p, threshold) for p in predictions]
            f1 = self.metrics(decided, examples)["f1"]
            if f1 > best_f1 + 1e-12:
                best, best_f1 = threshold, f1
        self.threshold = best
        return [self._decided(p, best) for p in predictions]

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict:
        return qa_metrics(
            [[a["text"] for a in e.label or []] for e in examples],
            [p["answer"] for p in predictions],
        )

    def monitor_signal(self, prediction: dict[str, Any]) -> tuple[list[str], float | None]:
        """No classes to count and no calibrated confidence: the drift monitor watches nothing."""
        return [], None

    def counted_labels(self, prediction: dict[str, Any]) -> list[str]:
        return []

    def feedback_label(self, label: Any, entities: list[dict] | None, text: str) -> Any:
        """The correct answer text ("" when the context holds none); `feedback_example` checks
        with the reader's rules that it is a span of the context (text_pair)."""
        refuse_entities(entities, self.name)
        if not isinstance(label, str):
            raise ValueError("label: give the correct answer text ('' when there is none)")
        return label


def _too_long(examples: list[Example], tokenizer: Any, max_length: int) -> str:
    """Which questions leave no room for their context in max_length tokens, and what to do."""
    sizes = [len(ids) for ids in tokenizer([e.text for e in examples])["input_ids"]]
    long = [i for i, size in enumerate(sizes) if size >= max_length - 1]
    shown = ", ".join(f"{examples[i].source or i} ({sizes[i]} tokens)" for i in long[:5])
    return (
        f"question {shown or '?'} leaves no room for its context within max_length="
        f"{max_length} tokens (the context is read in windows, the question must fit whole): "
        "shorten the question, or train with a larger model.max_length"
    )


def context_offsets(
    context: str, spans: list[Any], sequence: list[int | None], pieces: list[str]
) -> list[tuple[int, int] | None]:
    """The characters of `context` each token of a window covers, None for a token that is no
    possible answer end: a question or special token, and a bare marker piece (SentencePiece's
    `▁` alone: over a space, or repeating the next character's offsets at the context's start).
    A SentencePiece token's span starts after the white space its `▁` stands for (`▁smith` is
    (4, 10) over " smith"), so an answer's first token is its word's and its text has no
    leading space."""
    return [
        piece_span(context, start, end, piece) if part == 1 else None
        for (start, end), part, piece in zip(spans, sequence, pieces)
    ]


def _token_span(offsets: list[tuple[int, int] | None], answer: dict | None) -> list[int]:
    """[first, last] token of `answer` in a window, or [0, 0] ([CLS]) when it is not inside."""
    if answer is None:
        return [0, 0]
    start, end = answer["start"], answer["start"] + len(answer["text"])
    inside = [i for i, span in enumerate(offsets) if span is not None]
    if not inside or offsets[inside[0]][0] > start or offsets[inside[-1]][1] < end:  # type: ignore[index]
        return [0, 0]
    first = next(i for i in inside if offsets[i][1] > start)  # type: ignore[index]
    last = next(i for i in reversed(inside) if offsets[i][0] < end)  # type: ignore[index]
    return [first, last]


def _best_span(
    start_logits: torch.Tensor, end_logits: torch.Tensor, offsets: list[Any]
) -> tuple[float, int, int] | None:
    """(score, start char, end char) of the best valid span of one window: both ends on
    context tokens, end not before start, at most MAX_ANSWER_TOKENS long."""
    n = len(offsets)
    context = torch.tensor([span is not None for span in offsets])
    starts = start_logits[:n].masked_fill(~context, float("-inf"))
    ends = end_logits[:n].masked_fill(~context, float("-inf"))
    k = min(TOP_K, int(context.sum()))
    if k == 0:
        return None
    best = None
    top_starts, top_ends = starts.topk(k).indices.tolist(), ends.topk(k).indices.tolist()
    for s in top_starts:
        for e in top_ends:
            if e < s or e - s + 1 > MAX_ANSWER_TOKENS:
                continue
            score = float(starts[s] + ends[e])
            if best is None or score > best[0]:
                best = (score, offsets[s][0], offsets[e][1])
    return best


# --- exact match and F1 (official SQuAD v1.1 and CMRC 2018 evaluation rules) ---

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
ARTICLES = re.compile(r"\b(a|an|the)\b")


def _is_punctuation(char: str) -> bool:
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def _english_tokens(text: str) -> list[str]:
    text = "".join(c for c in text.lower() if not _is_punctuation(c))
    return ARTICLES.sub(" ", text).split()


def _chinese_tokens(text: str) -> list[str]:
    """CMRC 2018's mixed segmentation: each CJK character a token, other runs split on
    spaces; punctuation and spaces dropped, lower case."""
    tokens, word = [], ""
    for char in text.lower():
        if CJK.match(char) or _is_punctuation(char) or char.isspace():
            if word:
                tokens.append(word)
                word = ""
            if CJK.match(char):
                tokens.append(char)
        else:
            word += char
    if word:
        tokens.append(word)
    return tokens


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        previous = 0
        for j, y in enumerate(b, 1):
            current = row[j]
            row[j] = previous + 1 if x == y else max(row[j], row[j - 1])
            previous = current
    return row[-1]


def answer_scores(prediction: str, reference: str) -> tuple[float, float]:
    """(exact match, F1) of one prediction against one reference answer."""
    if CJK.search(reference):
        gold, guess = _chinese_tokens(reference), _chinese_tokens(prediction)
        common = _lcs(gold, guess)
    else:
        gold, guess = _english_tokens(reference), _english_tokens(prediction)
        common = sum((Counter(gold) & Counter(guess)).values())
    exact = float(gold == guess)
    if not gold or not guess or common == 0:
        return exact, exact if not gold and not guess else 0.0
    precision, recall = common / len(guess), common / len(gold)
    return exact, 2 * precision * recall / (precision + recall)


def qa_metrics(references: list[list[str]], predictions: list[str]) -> dict[str, Any]:
    """Exact match and F1 (best over each question's references, in [0, 1]); a question with
    no reference is unanswerable and scores 1 only for an empty prediction. With unanswerable
    questions, also the scores on the answerable ones and the no-answer accuracy."""
    exact, f1 = [], []
    for refs, guess in zip(references, predictions):
        if not refs:
            exact.append(float(not guess))
            f1.append(float(not guess))
            continue
        pairs = [answer_scores(guess, ref) for ref in refs]
        exact.append(max(p[0] for p in pairs))
        f1.append(max(p[1] for p in pairs))
    n = max(len(predictions), 1)
    result: dict[str, Any] = {"exact_match": sum(exact) / n, "f1": sum(f1) / n}
    unanswerable = [i for i, refs in enumerate(references) if not refs]
    if unanswerable:
        answerable = [i for i, refs in enumerate(references) if refs]
        result["has_answer_f1"] = sum(f1[i] for i in answerable) / max(len(answerable), 1)
        result["no_answer_accuracy"] = sum(exact[i] for i in unanswerable) / len(unanswerable)
    result["questions"] = len(predictions)
    return result
