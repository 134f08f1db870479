"""The Python API and the only place that composes stages: train, evaluate, predict, load."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from bridgetune.atomic import atomic_write_text
from bridgetune.config import (
    ConfigError,
    DataConfig,
    MonitorConfig,
    RunConfig,
    apply_overrides,
    build_config,
    load_config,
)
from bridgetune.data.io import read_file
from bridgetune.data.schema import Example
from bridgetune.data.splits import Splits, check_labels, example_labels, load_splits
from bridgetune.distributed import is_launch_main
from bridgetune.evaluate import headline, write_report
from bridgetune.failpoints import failpoint
from bridgetune.losses import IGNORE, LOSSES
from bridgetune.models import check_max_length, load_tokenizer, resolve_model
from bridgetune.predictor import Predictor, read_meta
from bridgetune.rundir import RunDirectory, check_disk
from bridgetune.tasks import TASKS, Task, build_task, reader_for
from bridgetune.training import sharding

log = logging.getLogger("bridgetune")

ConfigLike = RunConfig | str | Path | dict


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    model_dir: Path
    metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None = None
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False


def as_config(config: ConfigLike, overrides: list[str] | None = None) -> RunConfig:
    """A validated RunConfig from a RunConfig, a YAML path or a raw dict (+ dotted overrides)."""
    if isinstance(config, RunConfig) and not overrides:
        cfg = config
    elif isinstance(config, (RunConfig, dict)):
        raw = config.model_dump() if isinstance(config, RunConfig) else copy.deepcopy(config)
        cfg = build_config(apply_overrides(raw, overrides or []))
    else:
        cfg = load_config(config, overrides)
    kind = TASKS.get(cfg.task) if cfg.task in TASKS else None  # else check_registered says
    default_method = getattr(kind, "default_method", None)
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

    names = [("task", TASKS, cfg.task), ("method.name", METHODS, cfg.method.name)]
    names += [("augment.ops", AUGMENTERS, op) for op in cfg.augment.ops]
    for key, registry, name in names:
        try:
            registry.get(name)
        except KeyError as error:
            raise ConfigError(f"{key}: {error.args[0]}") from None
    method_params(cfg.method)  # the method's own options (its Params)
    kind: Any = TASKS.get(cfg.task)
    if cfg.train.packing and not hasattr(kind, "collate_train"):
        raise ConfigError(f"train.packing: task {cfg.task!r} does not pack; it is for causal_lm")
    if cfg.rules and not getattr(kind, "takes_rules", False):
        raise ConfigError(f"rules: task {cfg.task} does not take rules (ner, classification, "
                          "pair do)")  # fmt: skip
    if cfg.model.crf and kind.problem != "token":
        raise ConfigError(f"model.crf: a CRF tags words: it is for ner, not {cfg.task}")
    if cfg.knowledge.gazetteers:
        if not getattr(kind, "takes_gazetteers", False):
            raise ConfigError(f"knowledge.gazetteers: task {cfg.task} does not take gazetteer "
                              "features (ner, classification, pair do)")  # fmt: skip
        if cfg.method.name != "full":
            raise ConfigError(
                f"knowledge.gazetteers needs method.name: full (not {cfg.method.name}): the "
                "features' weights train beside the whole model"
            )
    losses = LOSSES[kind.problem]
    if cfg.train.loss is not None and cfg.train.loss not in losses:
        raise ConfigError(
            f"train.loss={cfg.train.loss!r} is not a loss of task {cfg.task!r}; choose one of: "
            + ", ".join(losses)
        )
    try:
        kind.check_config(cfg)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_ops(cfg.augment, reader_for(cfg.task).tagged)
    if cfg.model.quantization != "none" and (
        cfg.method.name != "lora" or kind.output != "generation"
    ):
        raise ConfigError(
            f"model.quantization={cfg.model.quantization} is QLoRA: LoRA on a quantized "
            "causal_lm or seq2seq model; set method.name: lora (or model.quantization: none)"
        )
    if sharding.requested(cfg.train) is not None and cfg.model.quantization != "none":
        raise ConfigError(
            "FSDP shards full-precision weights; QLoRA's quantized ones it cannot: choose "
            "train.fsdp (several GPUs) or model.quantization (one GPU)"
        )


def check_quantization(cfg: RunConfig) -> None:
    """QLoRA's needs on this machine: a CUDA GPU and bitsandbytes.

    Raises:
        ConfigError: what is missing, and how to train without quantization instead.
    """
    import importlib.util

    import torch

    if cfg.model.quantization == "none":
        return
    missing = []
    if cfg.train.device == "cpu" or not torch.cuda.is_available():
        missing.append("a CUDA GPU (" + ("train.device is cpu" if cfg.train.device == "cpu"
                                          else "this machine has none") + ")")  # fmt: skip
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("bitsandbytes (pip install bitsandbytes)")
    if missing:
        raise ConfigError(
            f"model.quantization={cfg.model.quantization} (QLoRA) needs {' and '.join(missing)}; "
            "without them train the same LoRA on the unquantized model: model.quantization: none"
        )


def prepare_memory(model: Any, cfg: RunConfig) -> Any:
    """A quantized model made trainable (peft's k-bit preparation) and gradient checkpointing
    switched on when the config asks.

    Raises:
        ConfigError: the model cannot checkpoint its activations.
    """
    if cfg.model.quantization != "none":
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if cfg.train.gradient_checkpointing or sharding.activation_checkpointing():
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ConfigError(
                f"train.gradient_checkpointing: {type(model).__name__} does not support it; "
                "set it to false"
            )
        # non-reentrant: works when the inputs need no gradient (LoRA and other frozen bodies);
        # transformers 5.2x renamed the method (the old name warns)
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def load(model_dir: str | Path, device: str = "auto") -> Predictor:
    """Load a saved model directory for prediction."""
    return Predictor.load(model_dir, device=device)


def predict(
    model_dir: str | Path | Predictor, inputs: Sequence[str | tuple[str, str]]
) -> list[dict[str, Any]]:
    """Predictions for texts (or text pairs) with a saved model."""
    predictor = model_dir if isinstance(model_dir, Predictor) else load(model_dir)
    return predictor.predict(list(inputs))


def generate(
    model_dir: str | Path | Predictor,
    prompts: Sequence[str | list[dict[str, str]]],
    **decoding: Any,
) -> list[dict[str, Any]]:
    """Generations of a causal_lm model for prompts (a string, or a conversation as
    [{role, content}, ...]); `decoding`: max_new_tokens, do_sample, temperature, top_p,
    num_beams, repetition_penalty (greedy by default)."""
    predictor = model_dir if isinstance(model_dir, Predictor) else load(model_dir)
    return predictor.generate(prompts, **decoding)


def rank(
    model_dir: str | Path | Predictor,
    query: str,
    candidates: Sequence[str],
    top_k: int | None = None,
) -> list[dict[str, Any]]:
    """`candidates` sorted by a ranking model's score against `query`, best first:
    [{"index", "text", "score"}, ...] (the first `top_k`)."""
    predictor = model_dir if isinstance(model_dir, Predictor) else load(model_dir)
    return predictor.rank(query, candidates, top_k)


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
    tokenizer = load_tokenizer_for(model_path, cfg.task, cfg.model.trust_remote_code)
    check_max_length(model_path, tokenizer, cfg.model.max_length)
    pairs = bool(cfg.data.text_pair_column)
    settings = {"packing": True, "max_length": cfg.model.max_length} if cfg.train.packing else {}
    if cfg.model.crf:
        settings["crf"] = True
    settings["pretrain"] = cfg.pretrain.model_dump()  # what a pre-training task masks
    if cfg.rules:
        from bridgetune.knowledge.rules import loaded

        settings["rules"] = loaded([rule.model_dump() for rule in cfg.rules])
    if cfg.knowledge.gazetteers:
        from bridgetune.knowledge.gazetteer import load_gazetteers

        settings["lexicon"] = load_gazetteers(cfg.knowledge.gazetteers, cfg.knowledge.min_chars)
    return (
        build_task(cfg.task, splits.labels, cfg.data.tag_scheme, pairs=pairs, **settings),
        tokenizer,
        model_path,
    )


def train(
    config: ConfigLike,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_step: Callable[[Any], None] | None = None,
) -> TrainResult:
    """Fine-tune, evaluate on dev (and test), and save the model directory of a run.

    The run directory is written as one unit (bridgetune.rundir): a finished run there is
    replaced only with `overwrite`, and only once the new run has finished.

    Args:
        config: a RunConfig, a YAML path or a raw dict.
        overrides: dotted overrides such as ``["train.lr=3e-5"]``.
        resume: continue the run's unfinished training from its last checkpoint.
        overwrite: replace a finished run of the same name.
        on_step: called after every optimizer step with the loop state (tests, callbacks).
    """
    cfg = as_config(config, overrides)
    with claimed_run(cfg, resume, overwrite) as run:
        return train_run(cfg, run, resume, on_step)


def train_run(
    cfg: RunConfig,
    run: RunDirectory,
    resume: bool = False,
    on_step: Callable[[Any], None] | None = None,
) -> TrainResult:
    """`train` in the claimed run directory `run`."""
    from accelerate.utils import set_seed

    from bridgetune.methods import apply_method, check_method, head_modules
    from bridgetune.training.checkpoint import filled
    from bridgetune.training.loop import EvalData, Loop
    from bridgetune.training.objective import class_weights

    kind: Any = TASKS.get(cfg.task)
    check_quantization(cfg)
    check_method(
        cfg.method,
        resolve_model(cfg.model.name),
        kind.auto_class,
        kind.problem,
        cfg.model.trust_remote_code,
        num_labels=len(kind.reader.infer_labels([], None)) or 3,  # fixed by the task, or any
    )
    splits = load_splits(cfg.data, reader_for(cfg.task))
    task, tokenizer, model_path = prepare_task(cfg, splits)
    extension = extended_vocabulary(cfg, tokenizer, splits)
    splits = augmented(cfg, splits, tokenizer, model_path)
    length = cfg.model.max_length
    train_features = task.encode(splits.train, tokenizer, length)
    dev = EvalData(task.encode(splits.dev, tokenizer, length), splits.dev)
    report_truncation(
        {"train": (train_features, splits.train), "dev": (dev.features, splits.dev)},
        length,
        cfg.model.truncation,
    )
    set_seed(cfg.train.seed)

    quantized = cfg.model.quantization != "none"  # generative tasks only (check_registered)

    def build(training: bool = True) -> tuple[Any, list[str]]:
        """The model before training and its head's module names (train.head_lr); not for
        training (a copy to save): never quantized, no memory preparation."""
        model = task.build_model(
            model_path,
            dropout=cfg.model.dropout,
            trust_remote_code=cfg.model.trust_remote_code,
            **({"quantization": cfg.model.quantization} if quantized and training else {}),
        )
        if extension is not None:
            extension.resize(model, tokenizer)
        if training:
            model = prepare_memory(model, cfg)
        head = head_modules(model)
        return apply_method(model, cfg.method, task.problem, cfg.model.name), head

    model, head = build()
    report_parameters(cfg.method.name, model)
    if is_launch_main():
        check_disk(run.path.parent, run_bytes(model))
    loop = Loop(
        model,
        task,
        train_features,
        dev,
        cfg.train,
        tokenizer.pad_token_id,
        run.checkpoint,
        bucket_by_length=length_bucketing(cfg, task),
        head=head,
        weights=class_weights(cfg.train.class_weights, task.labels, train_features, task.problem),
        extra_metrics=sampled_generations(cfg, task, tokenizer, splits.dev),
    )
    notes: dict[str, Any] = {}
    if getattr(task, "baseline_eval", False) and not resume:  # dev before training
        notes["before_training"] = headline(task.metrics(loop.predict(dev), dev.examples))
    if resume:
        loop.resume()
    fit = loop.run(on_step)
    fitted = Fitted(loop.unwrapped, loop.predict, fit.state.history, fit.stopped_early)
    if loop.sharded:  # FSDP: every process predicts and generates; the first saves a copy
        fitted.collective, fitted.saved = True, loop.unsharded(lambda: build(training=False)[0])
    elif quantized and getattr(loop.unwrapped, "export", None) == "merged" and is_launch_main():
        # QLoRA: merging into 4-bit weights would round the update away and leave a model
        # only bitsandbytes on a GPU loads; the adapter merges into a full-precision copy
        trained = {n: p.detach().cpu() for n, p in loop.unwrapped.named_parameters()
                   if p.requires_grad}  # fmt: skip
        fitted.saved = filled(build(training=False)[0], trained)
    result = finish_run(
        run,
        cfg,
        fitted,
        task,
        tokenizer,
        splits,
        save=loop.accelerator.is_main_process,
        dev=dev,
        notes={**notes, **({"vocab_extension": extension.summary()} if extension else {})},
    )
    loop.accelerator.wait_for_everyone()
    return result


def pretrain(
    config: ConfigLike,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_step: Callable[[Any], None] | None = None,
) -> TrainResult:
    """Continued masked-LM pre-training on unlabelled text (task mlm, whatever the config's
    task says): `train` with the `pretrain:` section's masking; the model directory is a
    masked-LM model any task config can name as model.name. Dev loss and perplexity before
    training are in bridgetune.json ("before_training") and before_training.json."""
    overrides = [*(overrides or []), "task=mlm"]
    return train(config, overrides, resume=resume, overwrite=overwrite, on_step=on_step)


def extended_vocabulary(cfg: RunConfig, tokenizer: Any, splits: Splits) -> Any:
    """model.extend_vocab applied to `tokenizer` (bridgetune.knowledge.vocab), reported; None
    when the config does not ask for it."""
    if not cfg.model.extend_vocab:
        return None
    from rich.console import Console

    from bridgetune.knowledge.vocab import example_texts, extend_vocabulary

    if cfg.method.name != "full":
        raise ConfigError(
            f"model.extend_vocab needs the new embeddings to train: method.name: full (not "
            f"{cfg.method.name})"
        )
    extension = extend_vocabulary(
        tokenizer,
        example_texts(splits.train),
        cfg.model.extend_vocab,
        cfg.model.extend_vocab_min_count,
        cfg.model.extend_vocab_max_tokens,
    )
    before, after = extension.before, extension.after
    Console(stderr=True).print(
        f"vocabulary: {len(extension.added)} tokens added (e.g. {' '.join(extension.added[:8])}); "
        f"[UNK] share of the training text {before['unk_share']:.1%} -> {after['unk_share']:.1%}, "
        f"pieces per word {before['pieces_per_unit']} -> {after['pieces_per_unit']}"
    )
    return extension


@dataclass
class Fitted:
    """What a model builder hands back to the composing layer: the trained model, how to
    predict an encoded split with it (`predict(EvalData)`), the training history."""

    model: Any
    predict: Callable[[Any], list[dict[str, Any]]]
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    collective: bool = False  # `model` runs only when every process runs it (FSDP)
    saved: Any = None  # the model to save when not `model` (FSDP: an unsharded copy)


def finish_run(
    run: RunDirectory,
    cfg: RunConfig,
    fitted: Fitted,
    task: Task,
    tokenizer: Any,
    splits: Splits,
    method: str | None = None,
    save: bool = True,
    dev: Any = None,
    notes: dict[str, Any] | None = None,
) -> TrainResult:
    """The end of every kind of run (train, few-shot): dev metrics (the task calibrates its
    decision parameters on dev), test metrics, then reports and the model directory (`save`:
    this process writes it). `dev`: the dev split already encoded (EvalData), if it is;
    `notes`: more entries for bridgetune.json (each also written as <key>.json in the run)."""
    from bridgetune.training.loop import EvalData

    length = cfg.model.max_length
    if dev is None:
        dev = EvalData(task.encode(splits.dev, tokenizer, length), splits.dev)
    dev_metrics = final_metrics(task, fitted.predict(dev), dev.examples, calibrate=True)
    generative = task.output == "generation"
    if generative and (save or fitted.collective):
        configure_generation(fitted.model, tokenizer, cfg.generate)
        scores = scored_generations(fitted.model, tokenizer, task, cfg, dev.examples)
        if save:
            dev_metrics.update(scores)
    test_metrics = None
    if splits.test is not None:
        test = EvalData(task.encode(splits.test, tokenizer, length), splits.test)
        test_metrics = final_metrics(task, fitted.predict(test), test.examples, calibrate=False)
    result = TrainResult(
        run.path,
        run.path / "model",
        dev_metrics,
        test_metrics,
        fitted.history,
        fitted.stopped_early,
    )
    if save:
        model = fitted.model if fitted.saved is None else fitted.saved
        if generative:
            configure_generation(model, tokenizer, cfg.generate)
        save_run(run, cfg, result, model, tokenizer, task, splits, method, notes)
    return result


def length_bucketing(cfg: RunConfig, task: Task) -> bool:
    """train.length_bucketing, or the default: on for encoder tasks; off for generative ones
    (sorted batches group alike examples: SFT's dev loss after one short epoch was 0.47 against
    0.35 unsorted, docs/benchmarks.md) and when packing (no padding to save)."""
    if cfg.train.length_bucketing is not None:
        return cfg.train.length_bucketing
    return task.output != "generation" and not cfg.train.packing


def sampled_generations(
    cfg: RunConfig, task: Task, tokenizer: Any, dev: list[Example]
) -> Callable[[Any], dict] | None:
    """With generate.eval_sample, the generation metrics of the first that many dev examples
    for every evaluation (Loop's extra_metrics); else None."""
    if task.output != "generation" or not cfg.generate.eval_sample or not dev:
        return None

    def scores(model: Any) -> dict:
        found = scored_generations(
            model, tokenizer, task, cfg, dev, limit=cfg.generate.eval_sample, samples=0
        )
        return {k: v for k, v in found.items() if k not in ("samples", "generated")}

    return scores


def configure_generation(model: Any, tokenizer: Any, settings: Any) -> None:
    """The run's decoding options (`generate:`) as the model's generation config, saved with
    it: `bridgetune generate`, the service and plain transformers decode alike."""
    model = getattr(model, "peft_model", model)  # an adapter: its base model's configs
    base = getattr(model, "get_base_model", lambda: model)()
    config = base.generation_config
    if not settings.do_sample:  # a base model's sampling defaults (Qwen's, say) go with it
        from transformers import GenerationConfig

        default = GenerationConfig()
        for key in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
            if hasattr(config, key):
                setattr(config, key, getattr(default, key, None))
    for key, value in settings.decoding().items():
        setattr(config, key, value)
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    base.config.use_cache = True  # training turned it off; generation wants it


def scored_generations(
    model: Any,
    tokenizer: Any,
    task: Task,
    cfg: RunConfig,
    examples: list[Example],
    limit: int | None | Literal["config"] = "config",
    samples: int = 10,
) -> dict[str, Any]:
    """Generation metrics of `model` on the first `limit` (default: generate.eval_examples)
    of `examples` (bridgetune.generation.generation_report); {} when there are none.
    `samples`: how many (prompt, reference, generated) rows to keep for the report."""
    from rich.console import Console

    from bridgetune.generation import generation_report

    settings = cfg.generate
    count = settings.eval_examples if limit == "config" else limit
    chosen = examples if count is None else examples[:count]
    if not chosen:
        return {}
    status = (
        Console(stderr=True).status(f"generating for {len(chosen)} dev examples")
        if samples
        else contextlib.nullcontext()
    )
    with status:
        return generation_report(
            model,
            tokenizer,
            chosen,
            chat=bool(getattr(task, "chat", False)),
            max_length=cfg.model.max_length,
            device=next(model.parameters()).device,
            batch_size=settings.batch_size,
            language=settings.language,
            samples=samples,
            **settings.decoding(),
        )


def run_bytes(model: Any) -> int:
    """Disk a run of `model` needs at its peak: the saved model, two checkpoints during a
    checkpoint swap (fp32 trainable weights + AdamW's two moments each) and the best weights."""
    from bridgetune.methods import count_parameters

    trainable, total = count_parameters(model)
    return total * next(model.parameters()).element_size() + 7 * 4 * trainable


@contextlib.contextmanager
def claimed_run(
    cfg: RunConfig, resume: bool = False, overwrite: bool = False
) -> Iterator[RunDirectory]:
    """The run directory of `cfg`, checked and claimed by the main process before any work;
    a run that fails leaves only a checkpoint to resume from (`RunDirectory.abandon`)."""
    from rich.console import Console

    console = Console(stderr=True)
    run = RunDirectory(cfg.run_dir, announce=lambda text: console.print(f"[yellow]{text}[/yellow]"))
    main = is_launch_main()  # the other processes of a launch write nothing into the run
    if main:
        run.prepare(resume=resume, overwrite=overwrite)
    try:
        yield run
    except BaseException:
        if main:
            run.abandon()
        raise


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
        splits.train, cfg.augment, tags_words(cfg.task), tokenizer, model_path, _tag_scheme(cfg)
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
    splits = load_splits(cfg.data, reader_for(cfg.task))
    _, tokenizer, model_path = prepare_task(cfg, splits)
    tagged = tags_words(cfg.task)
    return preview(splits.train, cfg.augment, tagged, tokenizer, model_path, n, _tag_scheme(cfg))


def _tag_scheme(cfg: RunConfig) -> str | None:
    return cfg.data.tag_scheme if tags_words(cfg.task) else None


def report_parameters(method: str, model: Any) -> None:
    from rich.console import Console

    from bridgetune.methods import count_parameters

    if not is_launch_main():  # one line per launch, not per process
        return
    trainable, total = count_parameters(model)
    Console(stderr=True).print(
        f"method {method}: {trainable:,} of {total:,} parameters train "
        f"({100 * trainable / max(total, 1):.2f}%)"
    )


def final_metrics(
    task: Task, predictions: list[dict[str, Any]], examples: list[Example], calibrate: bool
) -> dict[str, Any]:
    """Full metrics of a trained model's `predictions` on `examples`; on dev (`calibrate`) the
    task first fits its decision parameters (the multi-label threshold)."""
    if calibrate:
        predictions = task.calibrate(predictions, examples)
    return task.metrics(predictions, examples)


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


def model_meta(
    cfg: RunConfig, task: Task, splits: Splits, metrics: dict[str, Any], method: str | None = None
) -> dict:
    from bridgetune import __version__

    counts = Counter(label for e in splits.train for label in example_labels(e))
    total = sum(counts.values()) or 1
    return {
        "task": cfg.task,
        "labels": task.labels,
        "tag_scheme": _tag_scheme(cfg),
        "threshold": getattr(task, "threshold", None),
        "settings": task.settings() if hasattr(task, "settings") else {},
        "max_length": cfg.model.max_length,
        "base_model": cfg.model.name,
        "method": method or cfg.method.name,
        "seed": cfg.train.seed,
        "metrics": metrics,
        "label_distribution": {label: counts[label] / total for label in task.labels},
        "data_fingerprint": splits.fingerprint,
        "data": cfg.data.model_dump(
            include={
                "format",
                "text_column",
                "text_pair_column",
                "label_column",
                "column_map",
                "label_separator",
                "group_column",
                "role_map",
                "tag_scheme",
                "columns",
                "languages",
                "prompt_template",
                "as_chat",
            }
        ),
        "bridgetune_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def save_run(
    run: RunDirectory,
    cfg: RunConfig,
    result: TrainResult,
    model: Any,
    tokenizer: Any,
    task: Task,
    splits: Splits,
    method: str | None = None,
    notes: dict[str, Any] | None = None,
) -> None:
    """Reports, plots, the resolved config and the model directory of a finished run, made
    visible together (`run.publish`)."""
    from bridgetune.export import save_model_dir

    def write(staging: Path) -> None:
        write_report(staging, "dev", result.metrics, result.history, title=f"{cfg.name}: dev")
        scores = {"dev": headline(result.metrics)}
        if result.test_metrics is not None:
            write_report(staging, "test", result.test_metrics, title=f"{cfg.name}: test")
            scores["test"] = headline(result.test_metrics)
        (staging / "config.yaml").write_text(
            yaml.safe_dump(cfg.model_dump(), sort_keys=False), encoding="utf-8"
        )
        (staging / "history.json").write_text(
            json.dumps(result.history, indent=1), encoding="utf-8"
        )
        failpoint("reports")
        meta = model_meta(cfg, task, splits, scores, method)
        for key, value in (notes or {}).items():
            meta[key] = value
            (staging / f"{key}.json").write_text(json.dumps(value, indent=1, ensure_ascii=False),
                                                 encoding="utf-8")  # fmt: skip
        save_model_dir(staging / "model", model, tokenizer, meta)

    run.publish(write)


def saved_data_config(meta: dict[str, Any], path: str) -> DataConfig:
    return DataConfig(
        train=path, **{k: v for k, v in meta.get("data", {}).items() if v is not None}
    )


def evaluate(
    model_dir: str | Path, data: str | Path, output: str | Path | None = None, split: str = "eval"
) -> dict[str, Any]:
    """Metrics of a saved model on a labelled file (same columns as training); writes a report
    (JSON, Markdown, confusion matrix; generative models: sample generations) into `output`
    when given. A generative model is scored by loss and perplexity and by its generations
    (ROUGE, BLEU, chrF, exact match, EOS share; decoding from its generation config)."""
    predictor = load(model_dir)
    meta = predictor.meta
    cfg = saved_data_config(meta, str(data))
    examples = read_file(Path(data), cfg, reader_for(meta["task"]))
    check_labels(examples, predictor.task.labels, split)
    if predictor.task.output == "generation":
        metrics = evaluate_generation(predictor, examples)
    else:
        metrics = predictor.task.metrics(predictor.predict(examples), examples)
    if output is not None:
        write_report(Path(output), split, metrics, title=f"{Path(model_dir).name}: {data}")
    return metrics


def evaluate_generation(predictor: Predictor, examples: list[Example]) -> dict[str, Any]:
    """Loss and perplexity of a generative model on labelled `examples`, and the scores of
    what it generates for them (bridgetune.generation.generation_report)."""
    from rich.console import Console

    from bridgetune.generation import generation_report
    from bridgetune.predictor import infer

    task, tokenizer = predictor.task, predictor.tokenizer
    features = task.encode(examples, tokenizer, predictor.max_length)
    scored = infer(predictor.model, task, features, examples, tokenizer.pad_token_id,
                   predictor.device, batch_size=8)  # fmt: skip
    metrics = task.metrics(scored, examples)
    with Console(stderr=True).status(f"generating for {len(examples)} examples"):
        metrics.update(
            generation_report(
                predictor.model,
                tokenizer,
                examples,
                chat=bool(getattr(task, "chat", False)),
                max_length=predictor.max_length,
                device=predictor.device,
            )
        )
    return metrics


def read_inputs(model_dir: str | Path, path: Path, fmt: str = "auto") -> list[Example]:
    """Unlabelled inputs from TXT (a text per line), CSV/TSV/JSONL (the model's text columns)
    or, with fmt='conll', a token file (NER: predictions keep its words)."""
    from bridgetune.data.io import read_text

    meta = read_meta(Path(model_dir))
    if fmt == "txt" or (fmt == "auto" and path.suffix.lower() in (".txt", ".text")):
        return [
            Example(text=line.rstrip("\r")) for line in read_text(path).split("\n") if line.strip()
        ]
    cfg = saved_data_config(meta, str(path))
    cfg.format = fmt if fmt != "auto" else cfg.format
    return read_file(path, cfg, reader_for(meta["task"]), labelled=False)


def validate_data(config: ConfigLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Check and describe the configured data before training (reads, validates, tokenizes)."""
    from bridgetune.data.stats import describe_splits

    cfg = as_config(config, overrides)
    splits = load_splits(cfg.data, reader_for(cfg.task))
    task, tokenizer, _ = prepare_task(cfg, splits)

    def lengths(examples: list[Example]) -> list[int]:
        if task.output == "generation":  # as encoded: template, prompt, answer and EOS
            return [len(f["input_ids"]) for f in task.encode(examples, tokenizer, 2**31 - 1)]
        if tags_words(cfg.task):
            encoded = tokenizer([e.tokens for e in examples], is_split_into_words=True)
        else:
            pairs = [e.text_pair for e in examples] if examples[0].text_pair is not None else None
            encoded = tokenizer([e.text for e in examples], pairs)
        return [len(ids) for ids in encoded["input_ids"]]

    return describe_splits(splits, lengths, cfg.model.max_length, tags_words(cfg.task))


def monitor(
    model_dir: str | Path,
    input_path: str | Path,
    output_dir: str | Path,
    window: str = "1h",
    cfg: MonitorConfig | None = None,
) -> dict[str, Any]:
    """Drift monitoring in batch: a timestamped stream's label shares per time window.

    Predicts every text of `input_path` (JSONL: text, timestamp, optional text_pair), cuts time
    into fixed windows, compares each window with the training distribution, logs the alerts
    (and POSTs them to cfg.webhook_url), and writes monitor_report.json, monitor_report.md and
    label_shares.png into `output_dir`.

    Args:
        model_dir: a saved model directory.
        input_path: the stream.
        output_dir: where the report goes.
        window: window length such as "90s", "30m", "1h", "1d".
        cfg: thresholds (default: MonitorConfig()); cfg.window (a count) is the service's.

    Returns:
        The report: settings, expected shares, and per window start, end, count, shares,
        mean_confidence, flagged and alerts.
    """
    from bridgetune.monitor import WEBHOOK_TIMEOUT_S, check_labels, notify
    from bridgetune.monitor_report import (
        group_by_window,
        parse_window,
        read_stream,
        summarize_window,
        write_monitor_report,
    )

    cfg = cfg or MonitorConfig()
    width = parse_window(window)
    meta = read_meta(Path(model_dir))
    check_labels(cfg, meta["labels"])
    predictor = load(model_dir)
    pair = predictor.task.takes_pairs
    records = read_stream(Path(input_path), pair=pair)
    inputs = [Example(text=r.text, text_pair=r.text_pair if pair else None) for r in records]
    observations = [predictor.task.monitor_signal(p) for p in predictor.predict(inputs)]
    expected = meta.get("label_distribution") or {}
    windows, alerts = [], []
    for start, indices in group_by_window(records, width):
        entry, raised = summarize_window(
            start, start + width, [observations[i] for i in indices], meta["labels"], expected, cfg
        )
        windows.append(entry)
        alerts += raised
    threads = notify(alerts, cfg, str(model_dir))
    report = monitor_report_header(model_dir, input_path, window, meta, cfg)
    report.update(
        predictions=len(records),
        flagged_windows=sum(w["flagged"] for w in windows),
        windows=windows,
    )
    write_monitor_report(Path(output_dir), report)
    for thread in threads:  # this process may exit next: let the webhooks finish
        thread.join(WEBHOOK_TIMEOUT_S + 1)
    return report


def monitor_report_header(
    model_dir: str | Path, input_path: str | Path, window: str, meta: dict, cfg: MonitorConfig
) -> dict[str, Any]:
    """The settings part of a monitoring report (the webhook URL redacted: it may be secret)."""
    settings = cfg.model_dump()
    if settings["webhook_url"]:
        settings["webhook_url"] = "(set)"
    return {
        "model": str(model_dir),
        "input": str(input_path),
        "task": meta["task"],
        "window": window,
        "expected": meta.get("label_distribution") or {},
        "config": settings,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def export_feedback(
    database: str | Path,
    output: str | Path,
    since: str | None = None,
    model_version: str | None = None,
) -> int:
    """Write the feedback store's corrections as a training file; returns the rows written.

    The format follows the extension of `output`: .csv/.jsonl for classification tasks,
    .conll (IOB2 words) for NER, .jsonl (messages or prompt/completion) for generative models.
    Rows of several tasks cannot share one file.
    """
    from bridgetune.serve.store import GENERATIVE, FeedbackStore, export_rows, sft_records

    database, output = Path(database), Path(output)
    if not database.is_file():
        raise FileNotFoundError(f"{database}: no feedback database there")
    rows = [
        row
        for row in FeedbackStore(database).rows(since)
        if model_version is None or row.model_version == model_version
    ]
    tasks = sorted({row.task for row in rows})
    if len(tasks) > 1:
        raise ValueError(
            f"{database} holds feedback of several tasks {tasks}; pick one model with "
            "--model-version"
        )
    fmt = {".csv": "csv", ".jsonl": "jsonl", ".conll": "conll", ".txt": "conll"}.get(
        output.suffix.lower()
    )
    if fmt is None:
        raise ValueError(f"{output}: use a .csv, .jsonl or .conll file name")
    if tasks and tasks[0] in GENERATIVE:
        if fmt != "jsonl":
            raise ValueError(
                "generation feedback exports as JSONL (messages or prompt/completion, as "
                "`bridgetune train` reads): name the output *.jsonl"
            )
        skipped = len(rows) - len(sft_records(rows))
        if skipped:
            log.warning("%d rated-down generations without a corrected answer are not training "
                     "data: left out", skipped)  # fmt: skip
        atomic_write_text(output, export_rows(rows, fmt))
        return len(rows) - skipped
    token_level = bool(tasks) and tags_words(tasks[0])
    if token_level and fmt != "conll":
        raise ValueError("NER feedback exports as CoNLL: name the output *.conll")
    if tasks and not token_level and fmt == "conll":
        raise ValueError("classification feedback exports as .csv or .jsonl, not CoNLL")
    atomic_write_text(output, export_rows(rows, fmt))
    return len(rows)
