"""Build the support-message relatedness pairs from the annotated messages of ../support.

Each pair of messages gets a relatedness score from 0 to 5 out of their annotations:
2.5 for the same intent, up to 2.0 for shared topics (Jaccard overlap), 0.5 for the same
sentiment, rounded to halves. Half of the pairs share their intent, so the scores spread.
Deterministic: `python make_pairs.py` rewrites train.csv and dev.csv identically.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "support"


def score(a: dict[str, str], b: dict[str, str]) -> float:
    topics_a, topics_b = set(a["topics"].split("|")), set(b["topics"].split("|"))
    overlap = len(topics_a & topics_b) / len(topics_a | topics_b)
    raw = (
        2.5 * (a["intent"] == b["intent"])
        + 2.0 * overlap
        + 0.5 * (a["sentiment"] == b["sentiment"])
    )
    return round(raw * 2) / 2


def pairs(rows: list[dict[str, str]], count: int, seed: int) -> list[tuple[str, str, float]]:
    rng = random.Random(seed)
    by_intent: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_intent.setdefault(row["intent"], []).append(row)
    chosen, seen = [], set()
    while len(chosen) < count:
        a = rng.choice(rows)
        group = by_intent[a["intent"]] if rng.random() < 0.5 else rows
        b = rng.choice(group)
        key = tuple(sorted((a["text"], b["text"])))
        if a is b or key in seen:
            continue
        seen.add(key)
        chosen.append((a["text"], b["text"], score(a, b)))
    return chosen


def main() -> None:
    for split, count, seed in (("train", 600, 0), ("dev", 150, 1)):
        with open(SOURCE / f"{split}.csv", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        with open(HERE / f"{split}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text_a", "text_b", "relatedness"])
            writer.writerows(pairs(rows, count, seed))


if __name__ == "__main__":
    main()
