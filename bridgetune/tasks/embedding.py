"""Sentence embeddings for semantic search: a bi-encoder fine-tuned with in-batch negatives.

Data are (query, positive[, hard negatives]) rows, or a ranking file (query, candidate,
relevance: relevant candidates are positives, relevance 0 hard negatives); rows of one query
(its text, or `data.group_column`) form one example: the query in `text`, its candidates in
`candidates`, their relevance in `label`. Both sides are read by one shared encoder
(bridgetune.heads.bi_encoder: mean or [CLS] pooling, normalized), with the query and passage
prefixes the model was trained with (`task.query_prefix`, `task.passage_prefix`: e5's
"query: " / "passage: ").

Training (`train.loss`): "mnrl", the multiple-negatives ranking loss (van den Oord et al.
2018's InfoNCE as sentence-transformers names it; Henderson et al. 2017): each (query, positive)
row is a softmax over `task.scale` x cosine against every passage of the batch, its own positive
the target, the other queries' passages and all hard negatives the negatives; the other
positives of the same query are left out, never counted as negatives. A batch holds each
distinct text once (two questions about one passage share it, which is then a positive of
both). "cosine" regresses the cosine of each (query, candidate) pair on its relevance
(CoSENT-free MSE, pair scores in [0, 1]); "mnrl+cosine" adds the two.

Evaluation ranks every distinct dev candidate (the corpus) for every distinct dev query:
recall@1/5/10/100, MRR@10, NDCG@10 (binary relevance) and a histogram of the first relevant
passage's rank, exact search in blocks (`retrieval_metrics`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from bridgetune.config import DataConfig, RunConfig
from bridgetune.data.io import Splits
from bridgetune.data.schema import Example
from bridgetune.heads.bi_encoder import BiEncoder
from bridgetune.models.pretrained import load_pretrained
from bridgetune.tasks.base import TASKS, Feature, Task, pad_batch, refuse_entities
from bridgetune.tasks.embedding_reader import EmbeddingReader
from bridgetune.tasks.losses import embedding_loss
from bridgetune.tasks.predictions import EmbeddingPrediction

RECALL_CUTOFFS = (1, 5, 10, 100)
HISTOGRAM_RANKS = 10  # first-relevant ranks shown one by one; later ones in one bar


class EmbeddingOptions(BaseModel):
    """`task.*` options of embedding."""

    model_config = ConfigDict(extra="forbid")

    pooling: Literal["mean", "cls"] = Field(
        "mean", description="How token states become one vector: their mean, or [CLS]'s."
    )
    normalize: bool = Field(True, description="Unit-length embeddings (cosine = dot product).")
    scale: float = Field(
        20.0, gt=0, description="mnrl: the cosines' scale before the softmax (1/temperature)."
    )
    hard_negatives: int = Field(
        1,
        ge=0,
        description="Hard negatives of each query a training batch takes (the first "
        "ones of its rows; every one is a negative for all queries of the batch).",
    )
    memory: int = Field(
        0,
        ge=0,
        description="mnrl: the embeddings of this many passages of earlier batches, kept "
        "without gradients, are negatives for every query too (a cross-batch memory, XBM): "
        "more negatives than a batch holds in memory; a query's own positives are never among "
        "them. 0: off.",
    )
    query_prefix: str = Field(
        "", description="Put before every query, as the encoder was trained (e5: 'query: ')."
    )
    passage_prefix: str = Field("", description="Put before every passage (e5: 'passage: ').")


@TASKS.register("embedding")
class EmbeddingTask(Task):
    """A bi-encoder's embeddings; `labels` is ["relevance"]."""

    name = "embedding"
    auto_class = "AutoModel"
    problem = "embedding"
    default_metric = "mrr@10"
    output = "embedding"
    prediction = EmbeddingPrediction
    reader = EmbeddingReader()
    Options = EmbeddingOptions
    second_text = "passages (a second text per query)"
    embeds = True
    baseline_eval = True  # the untuned encoder's retrieval is reported beside the tuned one's

    def __init__(self, labels: list[str], options: EmbeddingOptions | None = None,
                 max_length: int | None = None) -> None:  # fmt: skip
        self.labels = ["relevance"]
        self.options = options or EmbeddingOptions()
        self.max_length = max_length
        self.bank = PassageMemory(self.options.memory)

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> EmbeddingTask:
        known = EmbeddingOptions.model_fields
        options = EmbeddingOptions(**{k: v for k, v in settings.items() if k in known and
                                      v is not None})  # fmt: skip
        return cls(labels, options, settings.get("max_length"))

    def settings(self) -> dict[str, Any]:
        return self.options.model_dump()

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Methods that add no trainable weights to the encoder, or none at all, do not fit a
        bi-encoder, whose head has no parameters; R-Drop's doubled batch does not either."""
        if cfg.method.name in ("head_only", "prompt", "ptuning", "prefix"):
            raise ValueError(
                f"method.name={cfg.method.name!r} does not apply to embedding: the bi-encoder "
                "has no head layers and scores by its pooled states; use full, lora, ia3 or "
                "bitfit"
            )
        if getattr(cfg.method, "export", "merged") == "adapter":
            raise ValueError(
                "method.export: adapter cannot rebuild the bi-encoder on its base model; use "
                "method.export: merged (the saved model is then a plain encoder that "
                "sentence-transformers loads)"
            )
        if cfg.train.rdrop:
            raise ValueError("train.rdrop does not apply to embedding (its batches are "
                             "contrastive); leave it out")  # fmt: skip
        if cfg.train.class_weights or cfg.train.label_smoothing:
            raise ValueError("train.class_weights and train.label_smoothing do not apply to "
                             "embedding (it learns no classes); leave them out")  # fmt: skip

    @classmethod
    def losses(cls) -> tuple[str, ...]:
        return ("mnrl", "cosine", "mnrl+cosine")

    def evaluation_splits(self, splits: Splits, cfg: DataConfig) -> Splits:
        """Dev and test with the passages of `data.corpus` as candidates of no query (an empty
        query text: they join the corpus that evaluation ranks, and score nothing)."""
        if not cfg.corpus:
            return splits
        passages = self.reader.read_passages(Path(cfg.corpus))
        extra = [Example(text="", candidates=[text], label=[0.0], source=f"{cfg.corpus}")
                 for text in passages]  # fmt: skip
        return dataclasses.replace(
            splits, dev=splits.dev + extra,
            test=None if splits.test is None else splits.test + extra,
        )  # fmt: skip

    def added_texts(self) -> list[str]:
        return [text for text in self.prompts().values() if text]

    def prompts(self) -> dict[str, str]:
        return {"query": self.options.query_prefix, "passage": self.options.passage_prefix}

    def prefixed(self, texts: list[str], role: str = "query") -> list[str]:
        """Texts with the prefix of `role` (query or passage), as the model reads them."""
        if role not in ("query", "passage"):
            raise ValueError(f"role {role!r}: choose query or passage")
        prefix = self.prompts()[role]
        return [prefix + text for text in texts]

    def build_model(self, name_or_path: str, **kwargs: Any) -> torch.nn.Module:
        from transformers import AutoModel

        extra = {"trust_remote_code": kwargs.get("trust_remote_code", False)}
        try:
            encoder = load_pretrained(AutoModel, name_or_path, self.labels, kwargs.get("dropout"),
                                      model_kwargs={"add_pooling_layer": False},
                                      **extra)  # fmt: skip
        except TypeError:  # an architecture without a pooler option
            encoder = load_pretrained(AutoModel, name_or_path, self.labels, kwargs.get("dropout"),
                                      **extra)  # fmt: skip
        return BiEncoder(encoder, self.options.pooling, self.options.normalize, self.prompts(),
                         self.max_length)  # fmt: skip

    # -- features and batches -----------------------------------------------------------------

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        """A feature per example: the query's ids and, with candidates, each candidate's ids
        (`passages`) and relevance. Plain texts (prediction) are embedded as they are: give
        them their prefix with `prefixed`."""
        queries = [e.text for e in examples]
        has_candidates = [e.candidates is not None for e in examples]
        queries = [self.options.query_prefix + q if c else q
                   for q, c in zip(queries, has_candidates)]  # fmt: skip
        passages = [self.options.passage_prefix + text for e in examples for text in
                    (e.candidates or [])]  # fmt: skip
        encoded = tokenizer(queries + passages, truncation=True, max_length=max_length)
        ids = encoded["input_ids"]
        overflow = [bool(e.overflowing) for e in encoded.encodings] if encoded.encodings else None
        features, start = [], len(queries)
        for row, example in enumerate(examples):
            count = len(example.candidates or [])
            own = list(range(start, start + count))
            start += count
            cut = any(overflow[i] for i in [row, *own]) if overflow else False
            feature: Feature = {
                "input_ids": ids[row],
                "passages": [ids[i] for i in own] if example.candidates is not None else None,
                "labels": list(example.label) if isinstance(example.label, list) else None,  # type: ignore[arg-type]
                "truncated": cut,
                "length": len(ids[row]) + sum(len(ids[i]) for i in own),
            }
            features.append(feature)
        return features

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        return self._batch(features, pad_id, None)

    def collate_train(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        return self._batch(features, pad_id, self.options.hard_negatives)

    def _batch(
        self, features: list[Feature], pad_id: int, negatives: int | None
    ) -> dict[str, torch.Tensor]:
        """Distinct queries and passages of `features` padded (module docstring); with
        relevance, `labels` rows (query, passage, relevance) and `groups`, the passages each
        row must not count as negatives (its query's other positives)."""
        layout = batch_layout(features, negatives)
        batch = pad_batch([{"input_ids": ids} for ids in layout.queries], pad_id)
        if layout.passages:
            passages = pad_batch([{"input_ids": ids} for ids in layout.passages], pad_id)
            batch.update({f"passage_{k}": v for k, v in passages.items()})
        if layout.rows:
            batch["labels"] = torch.tensor(layout.rows, dtype=torch.float)
            exclude = torch.zeros(len(layout.rows), len(layout.passages), dtype=torch.bool)
            for row, (query, passage, _) in enumerate(layout.rows):
                for other in layout.positives.get(int(query), ()):
                    if other != passage:
                        exclude[row, other] = True
            batch["groups"] = exclude
            if self.bank.size:  # the passages' keys ride along as one more row
                keys = torch.tensor([[hash(tuple(ids)) for ids in layout.passages]])
                batch["groups"] = torch.cat([exclude.long(), keys])
        return batch

    def loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        smoothing: float = 0.0,
        kind: str | None = None,
    ) -> torch.Tensor:
        assert groups is not None  # training batches carry the exclusions
        kind = kind or "mnrl"
        if not self.bank.size:
            return embedding_loss(logits, labels, groups, kind, self.options.scale)
        exclude, keys = groups[:-1].bool(), groups[-1]  # with a memory: keys in the last row
        if "mnrl" not in kind:
            return embedding_loss(logits, labels, exclude, kind, self.options.scale)
        count = logits.shape[0] - exclude.shape[1]
        memory, hidden = self.bank.negatives(labels, exclude, keys, logits.device)
        loss = embedding_loss(logits, labels, exclude, kind, self.options.scale, memory, hidden)
        self.bank.add(logits[count:].detach(), keys)
        return loss

    # -- predictions and metrics --------------------------------------------------------------

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]:
        layout = batch_layout(features, None)
        vectors = logits.float().cpu()
        queries, passages = vectors[: len(layout.queries)], vectors[len(layout.queries) :]
        predictions = []
        for feature, query, own in zip(features, layout.query_of, layout.passages_of):
            prediction: dict[str, Any] = {
                "embedding": queries[query].tolist(), "truncated": feature["truncated"],
            }  # fmt: skip
            if feature.get("passages") is not None:
                prediction["candidate_embeddings"] = passages[own].tolist()
            predictions.append(prediction)
        return predictions

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict:
        corpus: dict[str, int] = {}
        corpus_vectors: list[list[float]] = []
        queries: dict[str, int] = {}
        query_vectors: list[list[float]] = []
        relevant: list[set[int]] = []
        for prediction, example in zip(predictions, examples):
            if not example.text:  # a passage of data.corpus: in the corpus, no query
                for text, vector in zip(example.candidates or [],
                                        prediction.get("candidate_embeddings") or []):  # fmt: skip
                    if text not in corpus:
                        corpus[text] = len(corpus)
                        corpus_vectors.append(vector)
                continue
            if example.text not in queries:
                queries[example.text] = len(queries)
                query_vectors.append(prediction["embedding"])
                relevant.append(set())
            gold = relevant[queries[example.text]]
            for text, vector, value in zip(example.candidates or [],
                                           prediction.get("candidate_embeddings") or [],
                                           example.label or []):  # fmt: skip
                if text not in corpus:
                    corpus[text] = len(corpus)
                    corpus_vectors.append(vector)
                if float(value) > 0:  # type: ignore[arg-type]
                    gold.add(corpus[text])
        return retrieval_metrics(np.asarray(query_vectors, np.float32),
                                 np.asarray(corpus_vectors, np.float32), relevant)  # fmt: skip

    def feedback_label(self, label: Any, entities: list[dict] | None, text: str) -> Any:
        refuse_entities(entities, self.name)
        raise ValueError(
            "embedding models take no corrections through the service yet; add the (query, "
            "passage) pairs to the training data"
        )


class PassageMemory:
    """The last `size` passages' embeddings of earlier training batches (detached) and their
    keys (a hash of their token ids), as extra negatives (`task.memory`)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.vectors: torch.Tensor | None = None
        self.keys: torch.Tensor | None = None

    def negatives(
        self, rows: torch.Tensor, exclude: torch.Tensor, keys: torch.Tensor, device: Any
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The memory's vectors, and per relevant row the ones it must not count: a passage of
        this batch (its fresh embedding is in the batch) or one of the row's query's positives."""
        if self.vectors is None or self.keys is None:
            return None, None
        relevant = rows[:, 2] > 0
        target = torch.nn.functional.one_hot(rows[relevant, 1].long(), exclude.shape[1]).bool()
        positives = exclude[relevant] | target  # (rows, passages)
        keys = keys.to(device)
        same = self.keys[None, :] == keys[:, None]  # (passages, memory)
        own = (positives.float() @ same.float()) > 0  # a row's positive is in the memory
        hidden = own | same.any(0)[None, :]
        return self.vectors, hidden

    def add(self, vectors: torch.Tensor, keys: torch.Tensor) -> None:
        keys = keys.to(vectors.device)
        if self.vectors is None or self.keys is None:
            self.vectors, self.keys = vectors[-self.size :], keys[-self.size :]
            return
        self.vectors = torch.cat([self.vectors, vectors])[-self.size :]
        self.keys = torch.cat([self.keys, keys])[-self.size :]


class BatchLayout:
    """Where a batch's texts went: distinct query and passage ids, each feature's query row and
    passage rows, the training rows (query, passage, relevance) and each query's positives."""

    def __init__(self) -> None:
        self.queries: list[list[int]] = []
        self.passages: list[list[int]] = []
        self.query_of: list[int] = []
        self.passages_of: list[list[int]] = []
        self.rows: list[tuple[int, int, float]] = []
        self.positives: dict[int, set[int]] = {}


def batch_layout(features: list[Feature], negatives: int | None) -> BatchLayout:
    """The batch `features` make (`negatives`: hard negatives kept per feature, None: all,
    as evaluation keeps every candidate). Identical texts are one row: a passage two queries
    share is a positive of both and nobody's negative."""
    layout = BatchLayout()
    query_rows: dict[tuple[int, ...], int] = {}
    passage_rows: dict[tuple[int, ...], int] = {}
    for feature in features:
        key = tuple(feature["input_ids"])
        if key not in query_rows:
            query_rows[key] = len(layout.queries)
            layout.queries.append(feature["input_ids"])
        query = query_rows[key]
        layout.query_of.append(query)
        own: list[int] = []
        relevance = feature.get("labels")
        kept_negatives = 0
        for index, ids in enumerate(feature.get("passages") or []):
            value = float(relevance[index]) if relevance is not None else None
            if value is not None and value <= 0 and negatives is not None:
                if kept_negatives >= negatives:
                    continue
                kept_negatives += 1
            passage_key = tuple(ids)
            if passage_key not in passage_rows:
                passage_rows[passage_key] = len(layout.passages)
                layout.passages.append(ids)
            passage = passage_rows[passage_key]
            own.append(passage)
            if value is not None:
                layout.rows.append((query, passage, value))
                if value > 0:
                    layout.positives.setdefault(query, set()).add(passage)
        layout.passages_of.append(own)
    return layout


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """Indices of the `k` highest-scoring corpus rows (dot product) per query, best first,
    exact, in blocks of `block` queries (memory: block x corpus scores at a time)."""
    k = min(k, len(corpus))
    found = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), block):
        found[start : start + block] = best_of(queries[start : start + block] @ corpus.T, k)
    return found


def best_of(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's `k` highest scores, best first."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def retrieval_metrics(
    queries: np.ndarray, corpus: np.ndarray, relevant: list[set[int]], block: int = 1024
) -> dict[str, Any]:
    """Recall@1/5/10/100 (share of a query's relevant passages in its top k), MRR@10, NDCG@10
    (binary gains) averaged over queries, and `first_relevant`: how many queries found their
    first relevant passage at rank 1, 2, ... (ranks past HISTOGRAM_RANKS together), from the
    exact ranking of `corpus` (one row per passage) for every query (dot products: normalized
    embeddings give cosines). Queries without a relevant passage count as misses."""
    if not len(queries) or not len(corpus):
        return {"mrr@10": 0.0, "queries": len(queries), "corpus": len(corpus)}
    deepest = min(max(RECALL_CUTOFFS), len(corpus))
    totals: Counter[str] = Counter()
    first_relevant: Counter[str] = Counter()
    for start in range(0, len(queries), block):
        scores = queries[start : start + block] @ corpus.T
        best = best_of(scores, deepest)
        for row, ranked in enumerate(best):
            gold = relevant[start + row]
            if not gold:
                continue
            hits = [int(i) in gold for i in ranked]
            for k in RECALL_CUTOFFS:
                totals[f"recall@{k}"] += sum(hits[:k]) / len(gold)
            best_gold = max(scores[row, list(gold)])
            rank = int((scores[row] > best_gold).sum()) + 1  # ties: in the gold's favour
            totals["mrr@10"] += 1 / rank if rank <= 10 else 0.0
            dcg = sum(1 / math.log2(i + 2) for i, hit in enumerate(hits[:10]) if hit)
            ideal = sum(1 / math.log2(i + 2) for i in range(min(len(gold), 10)))
            totals["ndcg@10"] += dcg / ideal
            first_relevant[str(rank) if rank <= HISTOGRAM_RANKS else f">{HISTOGRAM_RANKS}"] += 1
    count = len(queries)
    names = [f"recall@{k}" for k in RECALL_CUTOFFS] + ["mrr@10", "ndcg@10"]
    result: dict[str, Any] = {name: totals[name] / count for name in names}
    result.update(queries=count, corpus=len(corpus))
    order = [str(r) for r in range(1, HISTOGRAM_RANKS + 1)] + [f">{HISTOGRAM_RANKS}"]
    result["first_relevant"] = {r: first_relevant[r] for r in order if first_relevant[r]}
    return result
