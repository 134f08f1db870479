"""Ranking (recommendation, search): score every candidate text against a query (or a user's
profile) and sort.

The model is a cross-encoder: the sequence classifier with one output (as regression, so plain
`transformers` loads it) reads "query [SEP] candidate" and gives a score. One example is a whole
query: a feature holds one row per candidate, and a batch keeps every query whole, so the
listwise (default) and pairwise losses compare the candidates of the same query
(`bridgetune.tasks.losses.ranking_loss`; `train.loss` picks). `train.batch_size` therefore counts
queries. Metrics are computed per query and averaged: MRR, MAP, NDCG@5/@10 (graded relevance)
and AUC; the report plots where the first relevant candidate landed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bridgetune.config import DataConfig, RunConfig
from bridgetune.data.io import (
    column,
    detect_format,
    read_records,
)
from bridgetune.data.schema import DataError, Example
from bridgetune.tasks.base import TASKS, Feature, pad_batch, refuse_entities
from bridgetune.tasks.classification import ClassificationTask
from bridgetune.tasks.predictions import RankingPrediction
from bridgetune.tasks.regression import numeric_label, refuse_class_options


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


NDCG_CUTOFFS = (5, 10)


@TASKS.register("ranking")
class RankingTask(ClassificationTask):
    """Candidates of a query scored by one output; `labels` is ["relevance"]."""

    takes_rules = False
    takes_gazetteers = False
    text_classes = False
    ranks = True
    distills = None  # a query's candidates are rows of one feature: not distilled yet

    name = "ranking"
    problem_type = "regression"  # one output: the saved model loads as a plain scorer
    problem = "ranking"
    default_metric = "ndcg@10"
    lower_is_better: frozenset[str] = frozenset()
    output = "ranking"
    prediction = RankingPrediction
    reader = RankingReader()

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> RankingTask:
        return cls(labels)

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Candidates come from data.text_pair_column; there are no classes to weight."""
        refuse_class_options(cfg, "ranking")
        if not cfg.data.text_pair_column:
            raise ValueError(
                "task 'ranking' needs data.text_pair_column, the column of the candidate text "
                "(data.text_column holds the query, data.group_column its id)"
            )

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        """One feature per query, with a row per (query, candidate) pair."""
        flat = [
            Example(text=example.text, text_pair=candidate)
            for example in examples
            for candidate in example.candidates or []
        ]
        rows = ClassificationTask.encode(self, flat, tokenizer, max_length) if flat else []
        features, start = [], 0
        for example in examples:
            n = len(example.candidates or [])
            group = rows[start : start + n]
            start += n
            longest = max((len(row["input_ids"]) for row in group), default=1)
            features.append(
                {
                    "rows": group,
                    "length": longest * max(n, 1),
                    "truncated": any(row["truncated"] for row in group),
                    "labels": None if example.label is None else [float(v) for v in example.label],
                }
            )
        return features

    def encode_label(self, label: Any) -> Any:
        return None  # rows carry no label: the group's relevance list is the label

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        rows = [row for feature in features for row in feature["rows"]]
        batch = pad_batch(rows, pad_id)
        batch.pop("labels", None)
        if features[0].get("labels") is not None:
            batch["labels"] = torch.tensor(
                [value for feature in features for value in feature["labels"]], dtype=torch.float
            )
            batch["groups"] = torch.tensor(
                [i for i, feature in enumerate(features) for _ in feature["rows"]]
            )
        return batch

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]:
        scores = logits.float().reshape(-1).cpu().tolist()
        predictions, start = [], 0
        for feature in features:
            group = scores[start : start + len(feature["rows"])]
            start += len(feature["rows"])
            order = sorted(range(len(group)), key=lambda i: -group[i])
            predictions.append(
                {
                    "ranking": [{"index": i, "score": round(group[i], 6)} for i in order],
                    "truncated": feature["truncated"],
                }
            )
        return predictions

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict:
        return ranking_metrics(
            [[float(v) for v in e.label] for e in examples],  # type: ignore[union-attr]
            [[entry["index"] for entry in p["ranking"]] for p in predictions],
        )

    def monitor_signal(self, prediction: dict[str, Any]) -> tuple[list[str], float | None]:
        """No classes and no calibrated confidence: the drift monitor watches nothing yet."""
        return [], None

    def counted_labels(self, prediction: dict[str, Any]) -> list[str]:
        return []

    def feedback_label(self, label: Any, entities: list[dict] | None, text: str) -> Any:
        """The corrected relevance of one candidate (`text_pair`) for the query (`text`)."""
        refuse_entities(entities, self.name)
        return numeric_label(label, self.labels)

    def feedback_example(self, text: str, text_pair: str | None, label: Any) -> Example:
        """One candidate's relevance read by the reader's row rules (query and candidate text,
        relevance >= 0). The reader's group rule, a query needs a relevant candidate, is one
        of the exported file as a whole: a lone "not relevant" correction is still stored."""
        row = {"text": text, "text_pair": text_pair, "label": label}
        where = (Path("feedback"), 1)
        cfg = DataConfig(train="feedback", text_pair_column="text_pair")
        if text_pair is None:
            raise ValueError("text_pair: give the candidate text whose relevance 'label' is")
        try:
            query = RankingReader._text(row, "text", *where)
            candidate = RankingReader._text(row, "text_pair", *where)
            relevance = RankingReader._relevance(label, cfg, *where)
        except DataError as error:
            message = str(error).removeprefix("feedback:1: ")
            raise ValueError(f"training could not read this correction: {message}") from None
        return Example(text=query, candidates=[candidate], label=[relevance])


def ranking_metrics(relevance: list[list[float]], orders: list[list[int]]) -> dict[str, Any]:
    """Per-query MRR, MAP, NDCG@k and AUC averaged over queries (relevant: relevance > 0;
    NDCG uses the graded relevance, 2^rel - 1 gains); AUC over queries that have both relevant
    and irrelevant candidates. `first_relevant` counts the rank of each query's first relevant
    candidate (the report's histogram)."""
    totals: Counter[str] = Counter()
    auc_sum, auc_queries = 0.0, 0
    first_relevant: Counter[int] = Counter()
    for gains, order in zip(relevance, orders):
        ranked = [gains[i] for i in order]
        hits = [g > 0 for g in ranked]
        first = hits.index(True) + 1 if any(hits) else None
        totals["mrr"] += 1 / first if first else 0.0
        if first:
            first_relevant[first] += 1
        found, precisions = 0, []
        for rank, hit in enumerate(hits, 1):
            if hit:
                found += 1
                precisions.append(found / rank)
        totals["map"] += sum(precisions) / max(sum(hits), 1)
        for k in NDCG_CUTOFFS:
            totals[f"ndcg@{k}"] += _ndcg(ranked, k)
        positives, negatives = sum(hits), len(hits) - sum(hits)
        if positives and negatives:
            above, seen_negatives = 0, 0
            for hit in reversed(hits):  # count, for each relevant one, the irrelevant below it
                if hit:
                    above += seen_negatives
                else:
                    seen_negatives += 1
            auc_sum += above / (positives * negatives)
            auc_queries += 1
    n = max(len(orders), 1)
    result: dict[str, Any] = {name: value / n for name, value in sorted(totals.items())}
    result["auc"] = auc_sum / auc_queries if auc_queries else 0.0
    result["queries"] = len(orders)
    result["first_relevant"] = {str(k): first_relevant[k] for k in sorted(first_relevant)}
    return result


def _ndcg(ranked: list[float], k: int) -> float:
    def dcg(gains: list[float]) -> float:
        return sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(gains[:k]))

    ideal = dcg(sorted(ranked, reverse=True))
    return dcg(ranked) / ideal if ideal > 0 else 0.0
