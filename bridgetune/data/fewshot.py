"""Few-shot data: k examples per label (stratified, seeded) and contrastive pairs (SetFit-style)."""

from __future__ import annotations

import random
from collections import defaultdict

from bridgetune.data.schema import DataError, Example


def _label_set(example: Example) -> frozenset[str]:
    """The labels an example stands for: its class(es), or its entity types (NER)."""
    if example.tags is not None:
        return frozenset(tag[2:] for tag in example.tags if tag != "O")
    if isinstance(example.label, list):
        return frozenset(example.label)
    return frozenset([] if example.label is None else [example.label])


def sample_k_shot(examples: list[Example], k: int, seed: int) -> list[Example]:
    """k examples per label, drawn with `seed`, in their original order.

    Single-label data gets exactly k per class. Where an example carries several labels
    (multilabel classes, NER entity types) examples are drawn for the rarest label first and
    count for every label they carry, so each label has at least k.

    Raises:
        DataError: a label has fewer than k examples.
    """
    sets = [_label_set(e) for e in examples]
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, labels in enumerate(sets):
        for label in labels:
            by_label[label].append(index)
    short = {label: len(rows) for label, rows in by_label.items() if len(rows) < k}
    if short:
        label, count = min(short.items(), key=lambda item: item[1])
        raise DataError(
            f"data.few_shot_k={k}: label {label!r} has only {count} training example(s) "
            f"({len(short)} label(s) have fewer than {k}); lower few_shot_k or add examples"
        )
    rng = random.Random(seed)
    chosen: set[int] = set()
    counts: dict[str, int] = defaultdict(int)
    for label in sorted(by_label, key=lambda name: (len(by_label[name]), name)):
        candidates = [i for i in by_label[label] if i not in chosen]
        rng.shuffle(candidates)
        for index in candidates:
            if counts[label] >= k:
                break
            chosen.add(index)
            for carried in sets[index]:
                counts[carried] += 1
    return [examples[i] for i in sorted(chosen)]


def contrastive_pairs(
    examples: list[Example], iterations: int, seed: int
) -> list[tuple[int, int, float]]:
    """(i, j, target similarity) pairs: per round, each example gets a positive and a negative.

    Single-label: a positive shares the class (target 1.0), a negative does not (0.0), as in
    SetFit. Multilabel: a positive shares at least one label and a negative none; the target is
    the Jaccard similarity of the two label sets, so partly overlapping texts are pulled
    together only partly.

    Raises:
        DataError: fewer than two different label sets (nothing to contrast).
    """
    sets = [_label_set(e) for e in examples]
    if len(set(sets)) < 2:
        raise DataError("contrastive few-shot needs examples of at least two different labels")
    rng = random.Random(seed)
    pairs: list[tuple[int, int, float]] = []
    everyone = range(len(examples))
    positives = [[j for j in everyone if j != i and sets[i] & sets[j]] for i in everyone]
    negatives = [[j for j in everyone if not sets[i] & sets[j]] for i in everyone]
    for _ in range(iterations):
        for i in everyone:
            for pool in (positives[i], negatives[i]):
                if pool:
                    j = rng.choice(pool)
                    pairs.append((i, j, jaccard(sets[i], sets[j])))
    rng.shuffle(pairs)
    return pairs


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 1.0
