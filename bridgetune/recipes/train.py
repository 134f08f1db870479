"""train and pretrain: one run of the loop in its claimed run directory, from data to a published
model directory (bridgetune.recipes.finish)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from bridgetune.config import RunConfig
from bridgetune.data.splits import load_splits
from bridgetune.data.stats import report_truncation
from bridgetune.inference.generation import sampled_generations
from bridgetune.knowledge.prune import pruned_vocabulary
from bridgetune.knowledge.vocab import extended_vocabulary
from bridgetune.lifecycle.reports import headline
from bridgetune.lifecycle.rundir import RunDirectory, check_disk, folder_bytes
from bridgetune.models import resolve_model
from bridgetune.models.pretrained import grow_embeddings
from bridgetune.recipes.augment import augmented
from bridgetune.recipes.check import ConfigLike, as_config, prepare_task, task_reader
from bridgetune.recipes.finish import Fitted, TrainResult, finish_run
from bridgetune.runtime.processes import is_launch_main
from bridgetune.tasks import TASKS, Task
from bridgetune.training.memory import check_quantization, prepare_memory


def train(
    config: ConfigLike,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_step: Callable[[Any], None] | None = None,
) -> TrainResult:
    """Fine-tune, evaluate on dev (and test), and save the model directory of a run.

    The run directory is written as one unit (bridgetune.lifecycle.rundir): a finished run there is
    replaced only with `overwrite`, and only once the new run has finished.

    Args:
        config: a RunConfig, a YAML path or a raw dict.
        overrides: dotted overrides such as ``["train.lr=3e-5"]``.
        resume: continue the run's unfinished training from its last checkpoint.
        overwrite: replace a finished run of the same name.
        on_step: called after every optimizer step with the loop state (tests, callbacks).
    """
    cfg = as_config(config, overrides)
    if cfg.distill.teacher:
        raise ValueError(
            f"this config distills {cfg.distill.teacher} (distill.teacher): run it with "
            "`bridgetune distill` (bridgetune.distill), or remove the distill section to train"
        )
    with claimed_run(cfg, resume, overwrite) as run:
        return train_run(cfg, run, resume, on_step)


def train_run(
    cfg: RunConfig,
    run: RunDirectory,
    resume: bool = False,
    on_step: Callable[[Any], None] | None = None,
    distiller: Any = None,
) -> TrainResult:
    """`train` in the claimed run directory `run`; `distiller` (bridgetune.recipes.distill):
    the student's run of a distillation, taught by its teacher."""
    from accelerate.utils import set_seed

    from bridgetune.methods import apply_method, check_method, head_modules
    from bridgetune.training.checkpoint import filled
    from bridgetune.training.loop import EvalData, Loop

    kind: Any = TASKS.get(cfg.task.name)
    check_quantization(cfg)
    check_method(
        cfg.method,
        resolve_model(cfg.model.name),
        kind.auto_class,
        kind.problem,
        cfg.model.trust_remote_code,
        num_labels=len(kind.reader.infer_labels([], None)) or 3,  # fixed by the task, or any
    )
    splits = load_splits(cfg.data, task_reader(cfg))
    task, tokenizer, model_path = prepare_task(cfg, splits)
    if distiller is not None:
        distiller.check_task(task)
        splits = distiller.prepare(splits)
    splits = task.evaluation_splits(splits, cfg.data)
    if is_launch_main():  # before any model is built: a changed label set cannot resume
        settings = run_settings(cfg, splits.labels, splits.fingerprint)
        (run.check_settings if resume else run.record_settings)(settings)
    extension = extended_vocabulary(cfg, tokenizer, splits)
    splits = augmented(cfg, splits, tokenizer, model_path)
    # pruned after augmenting (its text counts; the augmenters read the whole vocabulary) and
    # after extending (the new tokens are kept); the model is built, grown and extended in the
    # full tokenizer's ids, then sliced to the pruned one's
    full_tokenizer, pruning = (
        tokenizer,
        pruned_vocabulary(cfg, tokenizer, splits, task.added_texts()),
    )
    if pruning is not None:
        tokenizer = pruning.tokenizer
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
        if distiller is not None and distiller.layers is not None:
            model = distiller.student()  # the teacher's own weights, fewer layers
        else:
            model = task.build_model(
                model_path,
                dropout=cfg.model.dropout,
                trust_remote_code=cfg.model.trust_remote_code,
                **({"quantization": cfg.model.quantization} if quantized and training else {}),
            )
        grow_embeddings(model, full_tokenizer)  # the task's own tokens (prepare_tokenizer)
        if extension is not None:
            extension.resize(model, full_tokenizer)
        if pruning is not None:
            pruning.slice(model)
        if training:
            model = prepare_memory(model, cfg)
        head = head_modules(model)
        return apply_method(model, cfg.method, task.problem, cfg.model.name), head

    model, head = build()
    if pruning is not None:
        pruning.report()
    report_parameters(cfg.method.name, model)
    if is_launch_main():  # a resumed run replaces the checkpoint it has on disk
        check_disk(run.path.parent, run_bytes(model), folder_bytes(run.staging) if resume else 0)
    notes: dict[str, Any] = {"vocab_pruning": pruning.summary()} if pruning else {}
    distilling = None
    if distiller is not None:
        from bridgetune.training.loop import resolve_precision

        targets = distiller.soft_targets(
            splits.train, train_features, resolve_precision(cfg.train)[1]
        )
        distilling = (cfg.distill, targets)
        notes["distillation"] = distiller.summary(targets, distiller.teacher_dev(splits.dev))
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
        weights=task.class_weights(cfg.train.class_weights, train_features),
        extra_metrics=sampled_generations(cfg, task, tokenizer, splits.dev),
        distill=distilling,
    )
    if task.baseline_eval and not resume:  # dev before training
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


# Settings a resumed run may change: they decide how it reports and how often it saves, not what
# it learns (docs/reliability.md). Every other key of the config must match the checkpoint's.
MAY_CHANGE_ON_RESUME = frozenset(
    {"train.log_every", "train.eval_batch_size", "train.checkpoint_steps", "generate.batch_size"}
)
WHERE_IT_RUNS = ("name", "output_dir")  # a moved output_dir resumes; `name` is the run itself


def run_settings(cfg: RunConfig, labels: list[str], data_fingerprint: str) -> dict[str, Any]:
    """The settings that shape a training run, flat (`train.lr`), with its labels and the
    fingerprint of its data files: what `--resume` compares with the checkpoint's."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}{key}.", item)
        else:
            flat[prefix.rstrip(".")] = value

    walk("", cfg.model_dump())
    shaping = {
        key: value
        for key, value in flat.items()
        if key not in MAY_CHANGE_ON_RESUME
        and key not in WHERE_IT_RUNS
        and not key.startswith("fewshot.")  # the few-shot command's keys
    }
    return {**shaping, "labels": list(labels), "data files (sha256)": data_fingerprint}


def length_bucketing(cfg: RunConfig, task: Task) -> bool:
    """train.length_bucketing, or the default: on for encoder tasks; off for generative ones
    (sorted batches group alike examples: SFT's dev loss after one short epoch was 0.47 against
    0.35 unsorted, docs/benchmarks.md) and when packing (no padding to save)."""
    if cfg.train.length_bucketing is not None:
        return cfg.train.length_bucketing
    return not task.generative and not cfg.task.options().get("packing")


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
