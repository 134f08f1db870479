"""`validate-data`: counts, label distribution, duplicates, train/dev overlap, length statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from bridgetune.data.batching import IGNORE
from bridgetune.data.io import Splits
from bridgetune.data.schema import Example
from bridgetune.data.splits import example_labels


def _key(example: Example) -> str:
    return example.text if example.text_pair is None else f"{example.text}\t{example.text_pair}"


def _percentile(values: list[int], share: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0


def split_stats(
    examples: list[Example], lengths: list[int], max_length: int, token_task: bool
) -> dict[str, Any]:
    counts = Counter(label for e in examples for label in example_labels(e))
    if token_task:  # entity counts (B-/S- starts), not tag counts, are what users reason about
        counts = Counter({tag[2:]: n for tag, n in counts.items() if tag[:1] in ("B", "S")})
    keys = Counter(_key(e) for e in examples)
    return {
        "examples": len(examples),
        "labels": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "duplicates": sum(n - 1 for n in keys.values() if n > 1),
        "tokens": {
            "min": min(lengths, default=0),
            "mean": sum(lengths) / max(len(lengths), 1),
            "p95": _percentile(lengths, 0.95),
            "max": max(lengths, default=0),
        },
        "truncated": sum(length > max_length for length in lengths),
    }


def describe_splits(
    splits: Splits,
    token_lengths: Callable[[list[Example]], list[int]],
    max_length: int,
    token_task: bool,
) -> dict[str, Any]:
    """Statistics of every split; `token_lengths` gives each example's length in model tokens."""
    report: dict[str, Any] = {"labels": splits.labels, "max_length": max_length, "splits": {}}
    named = {"train": splits.train, "dev": splits.dev, "test": splits.test}
    for name, examples in named.items():
        if examples:
            report["splits"][name] = split_stats(
                examples, token_lengths(examples), max_length, token_task
            )
    train_keys = {_key(e) for e in splits.train}
    report["dev_in_train"] = sum(_key(e) in train_keys for e in splits.dev)
    if splits.test:
        report["test_in_train"] = sum(_key(e) in train_keys for e in splits.test)
    return report


def report_truncation(
    splits: dict[str, tuple[list[dict], list[Example]]], max_length: int, policy: str = "cut"
) -> None:
    """Say how many examples of each split were cut to max_length, and how many lost every
    token they train on (a prompt that leaves no room for its answer: they teach nothing).

    Raises:
        DataError: `policy` is "error" and an example is longer than max_length.
    """
    from rich.console import Console

    from bridgetune.data.schema import DataError

    for split, (rows, examples) in splits.items():
        cut = [i for i, f in enumerate(rows) if f.get("truncated")]
        if cut and policy == "error":
            raise DataError(
                f"{examples[cut[0]].source}: longer than model.max_length={max_length} "
                f"({len(cut)} {split} examples are); raise model.max_length, shorten them, or "
                "set model.truncation: cut"
            )
        empty = sum(
            1
            for i in cut
            if isinstance(rows[i].get("labels"), list)
            and rows[i]["labels"]
            and all(label == IGNORE for label in rows[i]["labels"])
        )
        if cut:
            Console(stderr=True).print(
                f"[yellow]{len(cut)} of {len(rows)} {split} examples are longer than "
                f"model.max_length={max_length} and were truncated"
                + (f"; {empty} of them kept no answer token and teach nothing" if empty else "")
                + "[/yellow]"
            )
