"""Label sets, label checks and the seeded stratified dev split."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bridgetune.config import DataConfig
from bridgetune.data.fewshot import sample_k_shot
from bridgetune.data.io import Splits, fingerprint, load_examples
from bridgetune.data.readers import example_labels
from bridgetune.data.schema import DataError, Example


def check_labels(examples: list[Example], labels: list[str], role: str) -> None:
    """Fail on the first label that is not in the label set, naming file and line."""
    known = set(labels)
    for example in examples:
        unknown = [label for label in example_labels(example) if label not in known]
        if unknown:
            origin = "train" if role != "train" else "the configured data.labels"
            raise DataError(
                f"{example.source}: label {unknown[0]!r} in {role} does not occur in {origin} "
                f"(labels: {', '.join(labels[:20])}); fix the label, add training examples, "
                "or list it in data.labels"
            )


def stratified_split(
    examples: list[Example], fraction: float, seed: int, reader: Any, source: str
) -> tuple[list[Example], list[Example]]:
    """Seeded split that keeps the proportions of the reader's strata (classes: by first
    label; tags are not stratified)."""
    from sklearn.model_selection import train_test_split

    if len(examples) < 4:
        raise DataError(
            f"{source}: {len(examples)} examples are too few to split off a dev set; give data.dev"
        )
    strata = [reader.stratum(e) for e in examples]
    if None in strata:
        strata = None
    else:
        counts = Counter(strata)
        lonely = [e for e, label in zip(examples, strata) if counts[label] < 2]
        if lonely:
            raise DataError(
                f"{lonely[0].source}: label {strata[examples.index(lonely[0])]!r} has a single "
                "example, so a stratified dev split cannot hold it out; add examples of it, "
                "drop it, or give data.dev"
            )
        n_dev = max(round(len(examples) * fraction), len(counts))
        if n_dev >= len(examples) - len(counts) + 1:
            raise DataError(
                f"{source}: too few examples for a stratified dev split of "
                f"{len(counts)} classes; give data.dev"
            )
        fraction = n_dev
    train, dev = train_test_split(examples, test_size=fraction, random_state=seed, stratify=strata)
    return list(train), list(dev)


def load_splits(cfg: DataConfig, reader: Any) -> Splits:
    """Read train/dev/test with the task's `reader` (bridgetune.data.readers), infer or check
    labels, and split dev off train when needed."""
    train = load_examples(cfg.train, cfg, reader, "train")
    if cfg.dev:
        dev = load_examples(cfg.dev, cfg, reader, "dev")
    else:
        train, dev = stratified_split(train, cfg.dev_fraction, cfg.split_seed, reader, cfg.train)
    test = load_examples(cfg.test, cfg, reader, "test") if cfg.test else None
    if cfg.few_shot_k:
        train = sample_k_shot(train, cfg.few_shot_k, cfg.few_shot_seed)
    labels = list(cfg.labels) if cfg.labels else reader.infer_labels(train, cfg.tag_scheme)
    reader.check_label_set(labels, cfg.train)
    check_labels(train, labels, "train")
    check_labels(dev, labels, "dev")
    if test is not None:
        check_labels(test, labels, "test")
    return Splits(train, dev, test, labels, fingerprint([cfg.train, cfg.dev, cfg.test], cfg))
