"""Check a config before any work: the task, method and augmentations it names are registered,
the options are ones they take, and the task, tokenizer and model it needs are prepared."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from bridgetune.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    build_config,
    load_config,
)
from bridgetune.config.base import validated_options
from bridgetune.data.splits import Splits
from bridgetune.models import check_max_length, load_tokenizer, resolve_model
from bridgetune.tasks import TASKS, Task, build_task, reader_for, reader_of
from bridgetune.training import sharding

ConfigLike = RunConfig | str | Path | dict


def as_config(config: ConfigLike, overrides: list[str] | None = None) -> RunConfig:
    """A validated RunConfig from a RunConfig, a YAML path or a raw dict (+ dotted overrides)."""
    if isinstance(config, RunConfig) and not overrides:
        cfg = config
    elif isinstance(config, (RunConfig, dict)):
        raw = config.model_dump() if isinstance(config, RunConfig) else copy.deepcopy(config)
        cfg = build_config(apply_overrides(raw, overrides or []))
    else:
        cfg = load_config(config, overrides)
    kind = TASKS.get(cfg.task.name) if cfg.task.name in TASKS else None  # else check_registered
    default_method = kind.default_method if kind is not None else None
    if default_method and "name" not in cfg.method.model_fields_set:
        cfg = cfg.model_copy(deep=True)  # the caller's config object stays as it was
        cfg.method.name = default_method  # e.g. LoRA for generative models
    check_registered(cfg)
    return cfg


def check_registered(cfg: RunConfig) -> None:
    """The task, method and augmentations `cfg` names are registered ("did you mean"
    otherwise) and the task takes the options set (its `check_config`).

    Raises:
        ConfigError: what is wrong and what to write instead.
    """
    from bridgetune.data.augment import AUGMENTERS, check_ops
    from bridgetune.methods import METHODS, method_params

    names = [("task", TASKS, cfg.task.name), ("method.name", METHODS, cfg.method.name)]
    names += [("augment.ops", AUGMENTERS, op) for op in cfg.augment.ops]
    for key, registry, name in names:
        try:
            registry.get(name)
        except KeyError as error:
            raise ConfigError(f"{key}: {error.args[0]}") from None
    method_params(cfg.method)  # the method's own options (its Params)
    task_options(cfg)  # the task's own options (its Options)
    kind: Any = TASKS.get(cfg.task.name)
    if cfg.rules and not kind.takes_rules:
        raise ConfigError(f"rules: task {cfg.task.name} does not take rules (ner, classification, "
                          "pair do)")  # fmt: skip
    if cfg.knowledge.gazetteers:
        if not kind.takes_gazetteers:
            raise ConfigError(f"knowledge.gazetteers: task {cfg.task.name} does not take "
                              "gazetteer features (ner, classification, pair do)")  # fmt: skip
        if cfg.method.name != "full":
            raise ConfigError(
                f"knowledge.gazetteers needs method.name: full (not {cfg.method.name}): the "
                "features' weights train beside the whole model"
            )
    losses = kind.losses()
    if cfg.train.loss is not None and cfg.train.loss not in losses:
        raise ConfigError(
            f"train.loss={cfg.train.loss!r} is not a loss of task {cfg.task.name!r}; choose one "
            "of: " + ", ".join(losses)
        )
    if cfg.data.corpus and not kind.embeds:
        raise ConfigError(
            f"data.corpus is the passages an embedding model is evaluated among; task "
            f"{cfg.task.name} ranks none: leave it out"
        )
    try:
        kind.check_config(cfg)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_ops(cfg.augment, reader_for(cfg.task.name).tagged)
    if cfg.model.quantization != "none" and (cfg.method.name != "lora" or not kind.generative):
        raise ConfigError(
            f"model.quantization={cfg.model.quantization} is QLoRA: LoRA on a quantized "
            "causal_lm or seq2seq model; set method.name: lora (or model.quantization: none)"
        )
    if sharding.requested(cfg.train) is not None and cfg.model.quantization != "none":
        raise ConfigError(
            "FSDP shards full-precision weights; QLoRA's quantized ones it cannot: choose "
            "train.fsdp (several GPUs) or model.quantization (one GPU)"
        )


def task_options(cfg: RunConfig) -> dict[str, Any]:
    """The options of task `cfg.task.name` (`task.*`), validated by its `Options` model.

    Raises:
        ConfigError: an option the task does not take (with the tasks that take it), or a bad
            value.
    """
    models = {name: TASKS.get(name).Options for name in TASKS}
    return validated_options("task", cfg.task.name, cfg.task.options(), models).model_dump()


def task_reader(cfg: RunConfig) -> Any:
    """The reader of the run's task with the run's task options (causal_lm's prompt template)."""
    return reader_of(cfg.task.name, task_options(cfg))


def tags_words(task: str) -> bool:
    """Whether task `task` labels every word (its data are token files, it has a tag scheme)."""
    return reader_for(task).tagged


def load_tokenizer_for(model_path: str, task: str, trust_remote_code: bool = False) -> Any:
    tokenizer = load_tokenizer(model_path, trust_remote_code)
    if tags_words(task) and getattr(tokenizer, "add_prefix_space", None) is False:
        # byte-level BPE (RoBERTa, GPT-2) must see a leading space to tokenize pre-split words
        tokenizer = load_tokenizer(model_path, trust_remote_code, add_prefix_space=True)
    return tokenizer


def prepare_task(cfg: RunConfig, splits: Splits) -> tuple[Task, Any, str]:
    """Task, tokenizer and resolved model path, with max_length checked against the model."""
    model_path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer_for(model_path, cfg.task.name, cfg.model.trust_remote_code)
    check_max_length(model_path, tokenizer, cfg.model.max_length)
    pairs = bool(cfg.data.text_pair_column)
    options = task_options(cfg)
    settings: dict[str, Any] = {**options, "max_length": cfg.model.max_length}
    settings.update(TASKS.get(cfg.task.name).learn_settings(splits.train, options))
    settings["pretrain"] = cfg.pretrain.model_dump()  # what a pre-training task masks
    if cfg.rules:
        from bridgetune.knowledge.rules import loaded

        settings["rules"] = loaded([rule.model_dump() for rule in cfg.rules])
    if cfg.knowledge.gazetteers:
        from bridgetune.knowledge.gazetteer import load_gazetteers

        settings["lexicon"] = load_gazetteers(cfg.knowledge.gazetteers, cfg.knowledge.min_chars)
    task = build_task(cfg.task.name, splits.labels, cfg.data.tag_scheme, pairs=pairs, **settings)
    task.prepare_tokenizer(tokenizer)  # the task's own tokens, before the model is built
    return task, tokenizer, model_path


def tag_scheme_of(cfg: RunConfig) -> str | None:
    return cfg.data.tag_scheme if tags_words(cfg.task.name) else None
