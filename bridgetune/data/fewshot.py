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
    """(i, j, target similarity) pairs: `iterations` x len(examples) positives and as many
    negatives.

    A positive shares a label with its partner, a negative shares none. The distinct pairs of
    each kind are shuffled with `seed` and used in turn, so every pair is seen once before any
    is seen twice (SetFit walks its pairs the same way; sampling partners at random instead
    repeats some pairs and misses others). Single-label targets are 1.0 and 0.0; multilabel
    targets are the Jaccard similarity of the two label sets, so partly overlapping texts are
    pulled together only partly. Above MAX_ENUMERATED distinct pairs, partners are drawn at
    random instead.

    Raises:
        DataError: fewer than two different label sets (nothing to contrast).
    """
    sets = [_label_set(e) for e in examples]
    if len(set(sets)) < 2:
        raise DataError("contrastive few-shot needs examples of at least two different labels")
    rng = random.Random(seed)
    wanted = iterations * len(examples)
    n = len(examples)
    if n * (n - 1) // 2 <= MAX_ENUMERATED:
        positives = [(i, j) for i in range(n) for j in range(i + 1, n) if sets[i] & sets[j]]
        negatives = [(i, j) for i in range(n) for j in range(i + 1, n) if not sets[i] & sets[j]]
        chosen = _cycle(positives, wanted, rng) + _cycle(negatives, wanted, rng)
    else:
        chosen = _sampled(sets, iterations, rng)
    pairs = [(i, j, jaccard(sets[i], sets[j])) for i, j in chosen]
    rng.shuffle(pairs)
    return pairs


MAX_ENUMERATED = 2_000_000


def _cycle(pairs: list[tuple[int, int]], wanted: int, rng: random.Random) -> list[tuple[int, int]]:
    """`wanted` pairs: all of them in a shuffled order, again reshuffled, until enough."""
    chosen: list[tuple[int, int]] = []
    while pairs and len(chosen) < wanted:
        order = pairs[:]
        rng.shuffle(order)
        chosen += order[: wanted - len(chosen)]
    return chosen


def _sampled(
    sets: list[frozenset[str]], iterations: int, rng: random.Random
) -> list[tuple[int, int]]:
    """Per round, each example with a random positive and a random negative partner."""
    everyone = range(len(sets))
    chosen = []
    for _ in range(iterations):
        for i in everyone:
            for wanted_overlap in (True, False):
                for _attempt in range(50):
                    j = rng.randrange(len(sets))
                    if j != i and bool(sets[i] & sets[j]) == wanted_overlap:
                        chosen.append((i, j))
                        break
    return chosen


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 1.0
