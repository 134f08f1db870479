"""Label sets, label checks and the seeded stratified dev split."""

from __future__ import annotations

from collections import Counter

from bridgetune.config import DataConfig
from bridgetune.data.fewshot import sample_k_shot
from bridgetune.data.io import TOKEN_TASKS, Splits, fingerprint, load_examples
from bridgetune.data.schema import DataError, Example
from bridgetune.data.tags import SCHEME_PREFIXES


def example_labels(example: Example) -> list[str]:
    """Every label an example carries: its class, its classes (multilabel) or its tags."""
    if example.tags is not None:
        return example.tags
    if isinstance(example.label, list):
        return example.label
    return [] if example.label is None else [example.label]


def infer_labels(train: list[Example], task: str, scheme: str | None = None) -> list[str]:
    """Sorted label set of train; numeric labels sort numerically, 'O' comes first for tags.

    With a tag `scheme`, every entity type gets all of the scheme's tags (B-X and I-X for IOB2),
    so the model can express any valid sequence even when train happens to lack one, e.g. only
    single-token entities of a type.
    """
    found = {label for example in train for label in example_labels(example)}
    if task in TOKEN_TASKS:
        if scheme:
            found |= {f"{p}{t[1]}{t[2:]}" for t in found - {"O"} for p in SCHEME_PREFIXES[scheme]}
            found.add("O")
        rest = sorted(found - {"O"}, key=lambda t: (t[2:], t[:1]))
        return (["O"] if "O" in found else []) + rest
    try:
        return sorted(found, key=int)
    except ValueError:
        return sorted(found)


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
    examples: list[Example], fraction: float, seed: int, task: str, source: str
) -> tuple[list[Example], list[Example]]:
    """Seeded split that keeps class proportions (by first label; tags are not stratified)."""
    from sklearn.model_selection import train_test_split

    if len(examples) < 4:
        raise DataError(
            f"{source}: {len(examples)} examples are too few to split off a dev set; give data.dev"
        )
    strata = None
    if task not in TOKEN_TASKS:
        strata = [example_labels(e)[0] for e in examples]
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


def load_splits(cfg: DataConfig, task: str) -> Splits:
    """Read train/dev/test, infer or check labels, and split dev off train when needed."""
    train = load_examples(cfg.train, cfg, task, "train")
    if cfg.dev:
        dev = load_examples(cfg.dev, cfg, task, "dev")
    else:
        train, dev = stratified_split(train, cfg.dev_fraction, cfg.split_seed, task, cfg.train)
    test = load_examples(cfg.test, cfg, task, "test") if cfg.test else None
    if cfg.few_shot_k:
        train = sample_k_shot(train, cfg.few_shot_k, cfg.few_shot_seed)
    labels = list(cfg.labels) if cfg.labels else infer_labels(train, task, cfg.tag_scheme)
    if task not in TOKEN_TASKS and len(labels) < 2 and task != "multilabel":
        raise DataError(
            f"{cfg.train}: found only the label {labels}; classification needs at least two classes"
        )
    check_labels(train, labels, "train")
    check_labels(dev, labels, "dev")
    if test is not None:
        check_labels(test, labels, "test")
    return Splits(train, dev, test, labels, fingerprint([cfg.train, cfg.dev, cfg.test]))
