"""The losses library tasks call: the one loss of every kind of task (`task_loss`), R-Drop's
divergence between two passes, and class weights. `Task.loss`, `Task.divergence` and
`Task.class_weights` use it; the training objective wraps the task's loss (weights, label
smoothing, R-Drop), and no model, head or adapter computes a loss of its own, so a change to
how a task learns is made once.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F

from bridgetune.data.batching import IGNORE

# the losses each kind of problem can train with (`train.loss`); the first is the default
LOSSES: dict[str, tuple[str, ...]] = {
    "single": ("cross_entropy",),
    "multi": ("binary_cross_entropy",),
    "token": ("cross_entropy", "crf"),
    "regression": ("mse", "huber"),
    "ranking": ("listwise", "pairwise", "pointwise"),
    "span": ("cross_entropy",),
    "lm": ("cross_entropy",),
    "seq2seq": ("cross_entropy",),
    "mlm": ("cross_entropy",),
    "embedding": ("mnrl", "cosine", "mnrl+cosine"),
}


def task_loss(
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    problem: str,
    weights: torch.Tensor | None = None,
    smoothing: float = 0.0,
    groups: torch.Tensor | None = None,
    kind: str | None = None,
) -> torch.Tensor | None:
    """Mean loss of `logits` against `labels` for a task's `problem` (None without labels,
    as at prediction time); `kind` picks one of LOSSES[problem] (default: the first).

    "regression": mean squared error (or Huber, delta 1) of the outputs and the float targets;
    "multi": binary cross-entropy on sigmoid logits (`weights`: BCE's pos_weight per label);
    "single" and "token": cross-entropy over the last axis (`weights` per class, `smoothing`
    as label smoothing; token positions labelled IGNORE do not count); "token" with kind
    "crf": the CRF's negative log-likelihood per word (its logits carry the transitions);
    "ranking": one score per (query, candidate) row, `labels` its relevance and `groups` its
    query: listwise (softmax cross-entropy of each query's scores against its relevance
    distribution, ListNet), pairwise (RankNet: log-loss of every more-relevant/less-relevant
    pair of a query) or pointwise (binary cross-entropy of relevant or not);
    "span": (batch, tokens, 2) start/end logits against (batch, 2) start/end token indices;
    "lm": next-token cross-entropy of a causal LM (the logits at t predict the label at t + 1;
    IGNORE labels, the prompt and the padding, do not count; logits may cover only the last
    columns, which then meet the last labels);
    "seq2seq": cross-entropy of an encoder-decoder's logits against its target tokens (the
    decoder's input is already shifted: no shift here); "mlm": cross-entropy at the masked
    positions (every other label is IGNORE).
    """
    if labels is None:
        return None
    logits = logits.float()
    kind = kind or LOSSES[problem][0]
    if weights is not None:
        weights = weights.to(logits.device)
    if problem == "regression":
        loss = F.huber_loss if kind == "huber" else F.mse_loss
        return loss(logits, labels.float().view_as(logits))
    if problem == "multi":
        return F.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=weights)
    if problem == "ranking":
        if groups is None:
            raise ValueError("a ranking loss needs the batch's query groups")
        return ranking_loss(logits.view(-1), labels.float().view(-1), groups.view(-1), kind)
    if problem == "lm":
        # logits of only the last columns (transformers' logits_to_keep) meet their labels
        labels = labels[:, labels.shape[1] - logits.shape[1] :]
        return F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]),
            labels[:, 1:].reshape(-1),
            ignore_index=IGNORE,
        )
    if kind == "crf":  # a CRF model's logits carry its transitions (bridgetune.knowledge.crf)
        from bridgetune.knowledge.crf import nll

        return nll(logits, labels, IGNORE)
    if problem == "span":
        start = F.cross_entropy(logits[..., 0], labels[:, 0], ignore_index=IGNORE)
        end = F.cross_entropy(logits[..., 1], labels[:, 1], ignore_index=IGNORE)
        return (start + end) / 2
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        weight=weights,
        ignore_index=IGNORE,
        label_smoothing=smoothing,
    )


def ranking_loss(
    scores: torch.Tensor, relevance: torch.Tensor, groups: torch.Tensor, kind: str
) -> torch.Tensor:
    """See `task_loss` ("ranking"); queries whose candidates are all equally relevant teach
    a listwise or pairwise loss nothing and do not count."""
    if kind == "pointwise":
        return F.binary_cross_entropy_with_logits(scores, (relevance > 0).float())
    same = groups[:, None] == groups[None, :]
    if kind == "pairwise":
        better = same & (relevance[:, None] > relevance[None, :])
        if not better.any():
            return scores.sum() * 0.0
        return F.softplus(scores[None, :] - scores[:, None])[better].mean()
    # listwise: a masked softmax over each query's rows, one query per row of `same`
    first = torch.unique(groups, return_inverse=True)[1]
    queries = torch.zeros(int(first.max()) + 1, scores.numel(), dtype=torch.bool)
    queries = queries.to(scores.device)
    queries[first, torch.arange(scores.numel(), device=scores.device)] = True
    masked = scores[None, :].masked_fill(~queries, float("-inf"))
    log_p = torch.log_softmax(masked, dim=-1).masked_fill(~queries, 0.0)
    target = relevance.clamp_min(0)[None, :] * queries
    total = target.sum(-1, keepdim=True)
    counted = (total.squeeze(-1) > 0) & ((target > 0).sum(-1) < queries.sum(-1))
    if not counted.any():
        return scores.sum() * 0.0
    loss = -(target / total.clamp_min(1e-9) * log_p).sum(-1)
    return loss[counted].mean()


def embedding_loss(
    vectors: torch.Tensor,
    rows: torch.Tensor,
    exclude: torch.Tensor,
    kind: str,
    scale: float,
    memory: torch.Tensor | None = None,
    hidden: torch.Tensor | None = None,
) -> torch.Tensor:
    """A bi-encoder batch's loss (bridgetune.tasks.embedding). `vectors`: the distinct queries'
    embeddings followed by the distinct passages' (as many as `exclude` has columns); `rows`:
    (query, passage, relevance) per scored pair; `exclude`: per row, the passages that are
    neither its target nor a negative (its query's other positives).

    "mnrl": cross-entropy of each relevant row's `scale` x cosines against every passage but
    the excluded, its own passage the target (and, with `memory`, also against those earlier
    passages' embeddings, but the ones `hidden` masks per relevant row); "cosine": mean squared
    error of each row's cosine against its relevance (capped at 1); "mnrl+cosine": their sum."""
    vectors = vectors.float()
    count = vectors.shape[0] - exclude.shape[1]
    queries, passages = vectors[:count], vectors[count:]
    query, passage, relevance = rows[:, 0].long(), rows[:, 1].long(), rows[:, 2].float()
    total = vectors.new_zeros(())
    if "mnrl" in kind:
        relevant = relevance > 0
        scores = scale * queries[query[relevant]] @ passages.T
        scores = scores.masked_fill(exclude[relevant], float("-inf"))
        if memory is not None and hidden is not None:
            past = scale * queries[query[relevant]] @ memory.float().T
            scores = torch.cat([scores, past.masked_fill(hidden, float("-inf"))], dim=1)
        total = total + F.cross_entropy(scores, passage[relevant])
    if "cosine" in kind:
        cosine = F.cosine_similarity(queries[query], passages[passage], dim=-1)
        total = total + F.mse_loss(cosine, relevance.clamp(max=1.0))
    return total


def divergence(
    first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor, problem: str
) -> torch.Tensor:
    """Symmetric KL between two dropout passes' predictions (R-Drop; tokens: labelled positions
    only; regression and ranking: the squared difference of the two outputs)."""
    first, second = first.float(), second.float()
    if problem in ("regression", "ranking"):
        return F.mse_loss(first, second)
    if problem == "multi":
        p, q = torch.sigmoid(first), torch.sigmoid(second)
        p, q = torch.stack([p, 1 - p], -1), torch.stack([q, 1 - q], -1)
        log_p, log_q = p.clamp_min(1e-7).log(), q.clamp_min(1e-7).log()
    else:
        log_p, log_q = F.log_softmax(first, -1), F.log_softmax(second, -1)
        p, q = log_p.exp(), log_q.exp()
    kl = ((p * (log_p - log_q)) + (q * (log_q - log_p))).sum(-1) / 2
    if problem == "token":
        mask = labels != IGNORE
        return (kl * mask).sum() / mask.sum().clamp_min(1)
    return kl.mean()


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    problem: str,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Knowledge distillation (Hinton et al., 2015): the student's logits against a teacher's.

    "single" and "token": KL(teacher || student) of their softmaxes at `temperature`, scaled by
    T^2 so its gradients keep their size as T changes (token: mean over the positions `mask`
    keeps, every real piece); "multi": binary cross-entropy of the student's sigmoid at T
    against the teacher's sigmoid at T, times T^2; "regression": squared error to the
    teacher's outputs (no temperature).
    """
    student, teacher = student.float(), teacher.float()
    if problem == "regression":
        return F.mse_loss(student.view_as(teacher), teacher)
    scale = temperature * temperature
    if problem == "multi":
        soft = torch.sigmoid(teacher / temperature)
        return F.binary_cross_entropy_with_logits(student / temperature, soft) * scale
    if problem not in ("single", "token"):
        raise ValueError(f"no distillation loss for a {problem!r} task")
    log_q = F.log_softmax(teacher / temperature, -1)
    log_p = F.log_softmax(student / temperature, -1)
    kl = (log_q.exp() * (log_q - log_p)).sum(-1)
    if problem == "token":
        if mask is None:
            raise ValueError("a token task's distillation loss needs the attention mask")
        weights = mask[:, : kl.shape[1]].to(kl.dtype)
        return (kl * weights).sum() / weights.sum().clamp_min(1) * scale
    return kl.mean() * scale


def class_weights(
    setting: str | dict[str, float] | None,
    labels: list[str],
    features: list[dict],
    multilabel: bool = False,
) -> torch.Tensor | None:
    """Per-class loss weights from `train.class_weights` and the training features.

    'balanced' is n / (classes x count) as in scikit-learn (multilabel: negatives / positives of
    each label, BCE's pos_weight); a dict gives weights by label name, 1.0 for the others.
    """
    if setting is None:
        return None
    if isinstance(setting, dict):
        unknown = sorted(set(setting) - set(labels))
        if unknown:
            raise ValueError(
                f"train.class_weights names unknown labels {unknown}; labels are: "
                + ", ".join(labels)
            )
        return torch.tensor([float(setting.get(label, 1.0)) for label in labels])
    if multilabel:
        positives = torch.tensor([f["labels"] for f in features], dtype=torch.float).sum(0)
        negatives = len(features) - positives
        return negatives / positives.clamp_min(1)
    counts = Counter(_label_ids(features))
    total = sum(counts.values())
    present = [i for i in range(len(labels)) if counts[i]]
    return torch.tensor(
        [total / (len(present) * counts[i]) if counts[i] else 1.0 for i in range(len(labels))]
    )


def _label_ids(features: list[dict]) -> list[int]:
    ids: list[Any] = []
    for feature in features:
        value = feature["labels"]
        if isinstance(value, list):
            ids.extend(v for v in value if v != IGNORE)
        else:
            ids.append(value)
    return ids
