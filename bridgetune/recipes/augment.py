"""Augmentation of a run's training split, and its preview (`bridgetune augment-preview`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from bridgetune.config import RunConfig
from bridgetune.data.schema import Example
from bridgetune.data.splits import Splits, load_splits
from bridgetune.recipes.check import (
    ConfigLike,
    as_config,
    prepare_task,
    tag_scheme_of,
    tags_words,
    task_reader,
)


def augmented(cfg: RunConfig, splits: Splits, tokenizer: Any, model_path: str) -> Splits:
    """`splits` with the training split augmented as `cfg.augment` says (dev/test untouched)."""
    if not cfg.augment.ops:
        return splits
    from bridgetune.data.augment import augment_split

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under accelerate launch / torchrun
        from accelerate import PartialState

        from bridgetune.training.loop import resolve_precision

        PartialState(cpu=resolve_precision(cfg.train)[0])  # the processes share the work

    train = augment_split(
        splits.train,
        cfg.augment,
        tags_words(cfg.task.name),
        tokenizer,
        model_path,
        tag_scheme_of(cfg),
    )
    return dataclasses.replace(splits, train=train)


def augment_preview(
    config: ConfigLike, overrides: list[str] | None = None, n: int = 10
) -> list[tuple[Example, Example, str]]:
    """(original, augmented, op) of the first `n` copies `cfg.augment` adds to the training split.

    Raises:
        ConfigError: the config has no augment ops, or an op cannot run as configured.
    """
    from bridgetune.config import ConfigError
    from bridgetune.data.augment import preview

    cfg = as_config(config, overrides)
    if not cfg.augment.ops:
        raise ConfigError("the config has no augment.ops; e.g. augment.ops=[swap,synonym]")
    splits = load_splits(cfg.data, task_reader(cfg))
    _, tokenizer, model_path = prepare_task(cfg, splits)
    tagged = tags_words(cfg.task.name)
    return preview(splits.train, cfg.augment, tagged, tokenizer, model_path, n, tag_scheme_of(cfg))
