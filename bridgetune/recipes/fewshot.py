"""Few-shot classification, composed from the data, head and loop stages.

`fewshot(config)`: contrastive (SetFit-style: `train_embeddings` on pairs, then
`train_classifier` on the embeddings) or prompt-based (PET-style: a masked LM fine-tuned through
a template and a verbalizer), on k examples per label (`data.few_shot_k`). The result is a model
directory that `predict`, `evaluate` and `serve` accept. Zero-shot lives in `zeroshot.py`.
"""

from __future__ import annotations

from typing import Any

import torch

from bridgetune.config import ConfigError, RunConfig
from bridgetune.data.fewshot import contrastive_pairs
from bridgetune.data.schema import Example
from bridgetune.data.splits import load_splits
from bridgetune.heads.embedding import (
    ContrastiveModel,
    EmbeddingClassifier,
    embed_texts,
)
from bridgetune.lifecycle.rundir import RunDirectory
from bridgetune.recipes.check import ConfigLike, as_config, prepare_task, task_reader
from bridgetune.recipes.finish import Fitted, TrainResult, finish_run
from bridgetune.recipes.train import claimed_run
from bridgetune.tasks import TASKS, Task
from bridgetune.tasks.similarity import PairSimilarityTask
from bridgetune.training import sharding

DEV_PAIRS = 256  # dev pairs scored while the body trains: progress to watch, best epoch kept
# SetFit's body-phase settings (setfit.TrainingArguments; weight decay is its l2_weight): the
# `train` keys that a contrastive config leaves unset take these, not the fine-tuning defaults
# (3 epochs at 5e-5 would be 3x the work on pairs that already repeat every text 40 times)
CONTRASTIVE_TRAIN_DEFAULTS = {
    "epochs": 1,
    "lr": 2e-5,
    "batch_size": 16,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
}


def fewshot(
    config: ConfigLike, overrides: list[str] | None = None, *, overwrite: bool = False
) -> TrainResult:
    """Train a few-shot classifier as `config.fewshot` says and save its run directory
    (a finished run of the same name is replaced only with `overwrite`)."""
    cfg = as_config(config, overrides)
    if cfg.fewshot.mode == "contrastive":
        cfg = contrastive_defaults(cfg)
    if not fewshot_capable(TASKS.get(cfg.task.name)):
        capable = [name for name in TASKS if fewshot_capable(TASKS.get(name))]
        raise ConfigError(f"fewshot supports the tasks {capable}, not {cfg.task.name!r}")
    check_fewshot_options(cfg)
    with claimed_run(cfg, overwrite=overwrite) as run:
        return fewshot_run(cfg, run)


def fewshot_run(cfg: RunConfig, run: RunDirectory) -> TrainResult:
    """`fewshot` in the claimed run directory `run`: a model builder (contrastive or prompt)
    between the stages api composes for every run."""
    from accelerate.utils import set_seed

    splits = load_splits(cfg.data, task_reader(cfg))
    task, tokenizer, model_path = prepare_task(cfg, splits)
    set_seed(cfg.train.seed)
    if cfg.fewshot.mode == "contrastive":
        model, history = train_contrastive(
            cfg, task, tokenizer, model_path, splits.train, splits.dev
        )
    else:
        model, history = train_prompt(cfg, task, tokenizer, model_path, splits.train, splits.dev)
    pad_id = tokenizer.pad_token_id
    fitted = Fitted(model, lambda data: predict_split(model, task, pad_id, cfg, data), history)
    return finish_run(run, cfg, fitted, task, tokenizer, splits, method=cfg.fewshot.mode)


def fewshot_capable(task: Any) -> bool:
    """Few-shot modes classify single texts (one label or several), from sentence embeddings."""
    return task.text_classes and not task.takes_pairs


def contrastive_defaults(cfg: RunConfig) -> RunConfig:
    """`cfg` with SetFit's body-phase values for the `train` keys the user did not set."""
    unset = {
        key: value
        for key, value in CONTRASTIVE_TRAIN_DEFAULTS.items()
        if key not in cfg.train.model_fields_set
    }
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=unset)})


def check_fewshot_options(cfg: RunConfig) -> None:
    """Refuse the `train`/`method` options that only `bridgetune train` applies.

    The few-shot modes train their own objective (cosine pairs, a fitted head, a verbalizer);
    silently ignoring a LoRA method or FGM would report a run that did not do what it says.
    """
    set_options = {
        "method.name": cfg.method.name != "full",
        "train.class_weights": cfg.train.class_weights is not None,
        "train.label_smoothing": cfg.train.label_smoothing > 0,
        "train.rdrop": cfg.train.rdrop > 0,
        "train.adversarial": cfg.train.adversarial != "none",
        "augment.ops": bool(cfg.augment.ops),
        "train.fsdp (or accelerate's --use_fsdp)": sharding.requested(cfg.train) is not None,
    }
    used = [key for key, value in set_options.items() if value]
    if used:
        raise ConfigError(
            f"bridgetune fewshot does not apply {', '.join(used)} (its modes train their own "
            "objective); remove them, or use bridgetune train with data.few_shot_k"
        )
    if cfg.fewshot.mode == "prompt" and cfg.fewshot.verbalizer is None:
        raise ConfigError(
            "fewshot.mode=prompt needs fewshot.verbalizer: words per label, e.g. "
            "{positive: [great], negative: [terrible]}"
        )


def predict_split(
    model: torch.nn.Module, task: Task, pad_id: int, cfg: RunConfig, data: Any
) -> list[dict]:
    """Predictions of a trained few-shot model on an encoded split (fp32, its own device)."""
    from bridgetune.inference.predictor import infer

    device = next(model.parameters()).device
    batch = cfg.train.eval_batch_size
    return infer(model, task, data.features, data.examples, pad_id, device, batch, precision="fp32")


def train_contrastive(
    cfg: RunConfig,
    task: Task,
    tokenizer: Any,
    model_path: str,
    train: list[Example],
    dev: list[Example],
) -> tuple[EmbeddingClassifier, list[dict]]:
    """SetFit's two steps on our loop: the embedding body on pairs, then the head."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(model_path)
    history = train_embeddings(cfg, encoder, tokenizer, train, dev)
    if cfg.fewshot.head == "logistic":
        return train_classifier(cfg, task, encoder, tokenizer, train), history
    return train_linear_head(cfg, task, encoder, tokenizer, train, dev), history


def _pair_features(
    examples: list[Example], pairs: list[tuple[int, int, float]], tokenizer: Any, max_length: int
) -> list[dict]:
    encoded = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)
    has_types = "token_type_ids" in encoded
    features = []
    for i, j, target in pairs:
        feature = {
            "text_ids": (i, j),
            "input_ids": encoded["input_ids"][i],
            "pair_input_ids": encoded["input_ids"][j],
        }
        if has_types:
            feature["token_type_ids"] = encoded["token_type_ids"][i]
            feature["pair_token_type_ids"] = encoded["token_type_ids"][j]
        feature["labels"] = target
        features.append(feature)
    return features


def train_embeddings(
    cfg: RunConfig,
    encoder: torch.nn.Module,
    tokenizer: Any,
    train: list[Example],
    dev: list[Example],
) -> list[dict]:
    """Fine-tune `encoder` in place so that texts of a label embed close together; history."""
    from bridgetune.training.loop import EvalData, Loop

    length = cfg.model.max_length
    pairs = contrastive_pairs(train, cfg.fewshot.iterations, cfg.train.seed)
    # dev pairs pick the best of several evaluations; a single one has nothing to pick
    several = cfg.train.epochs > 1 or cfg.train.eval_steps is not None
    dev_pairs = contrastive_pairs(dev, 1, cfg.train.seed)[:DEV_PAIRS] if several else []
    features = _pair_features(train, pairs, tokenizer, length)
    dev_features = _pair_features(dev, dev_pairs, tokenizer, length)
    dev_examples = [
        Example(text=dev[i].text, text_pair=dev[j].text, label=[target])
        for i, j, target in dev_pairs
    ]
    train_cfg = cfg.train.model_copy(update={"metric": "pair_accuracy"})
    loop = Loop(
        ContrastiveModel(encoder),
        PairSimilarityTask(),
        features,
        EvalData(dev_features, dev_examples),
        train_cfg,
        tokenizer.pad_token_id,
        RunDirectory(cfg.run_dir).staging / "checkpoint-body",
        # plain shuffled batches, as SetFit's: length buckets were ~15% faster, but a few seeds
        # could not show that they cost no accuracy (dropout noise alone moves it ~0.015)
        bucket_by_length=False,
        resumable=False,  # `fewshot` has no --resume: no 270 MB checkpoint per epoch
    )
    return loop.run().state.history


def train_classifier(
    cfg: RunConfig, task: Task, encoder: torch.nn.Module, tokenizer: Any, train: list[Example]
) -> EmbeddingClassifier:
    """Logistic regression on the embeddings, turned into the classifier's linear layer."""
    from sklearn.linear_model import LogisticRegression

    features = embed_texts(encoder, tokenizer, [e.text for e in train], cfg.model.max_length)
    x = features.numpy()
    labels = task.labels
    if task.multilabel:
        rows = []
        for label in labels:
            y = [int(label in e.label) for e in train]
            rows.append(_binary_row(LogisticRegression(max_iter=1000), x, y))
        weight = torch.stack([w for w, _ in rows])
        bias = torch.stack([b for _, b in rows])
        return EmbeddingClassifier(encoder, weight, bias, multilabel=True)
    y = [labels.index(e.label) for e in train]
    fitted = LogisticRegression(max_iter=1000, random_state=cfg.train.seed).fit(x, y)
    weight = torch.zeros(len(labels), x.shape[1])
    bias = torch.zeros(len(labels))
    coef = torch.tensor(fitted.coef_, dtype=torch.float)
    intercept = torch.tensor(fitted.intercept_, dtype=torch.float)
    if len(fitted.classes_) == 2:  # sklearn keeps one row: logit of class 1 against class 0
        weight[fitted.classes_[1]], bias[fitted.classes_[1]] = coef[0], intercept[0]
    else:
        for row, label_index in enumerate(fitted.classes_):
            weight[label_index], bias[label_index] = coef[row], intercept[row]
    return EmbeddingClassifier(encoder, weight, bias)


def _binary_row(model: Any, x: Any, y: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of one label's sigmoid; a label on all or none of the texts is constant."""
    if len(set(y)) < 2:
        return torch.zeros(x.shape[1]), torch.tensor(8.0 if y[0] else -8.0)
    model.fit(x, y)
    return torch.tensor(model.coef_[0], dtype=torch.float), torch.tensor(float(model.intercept_[0]))


def train_linear_head(
    cfg: RunConfig,
    task: Task,
    encoder: torch.nn.Module,
    tokenizer: Any,
    train: list[Example],
    dev: list[Example],
) -> EmbeddingClassifier:
    """A differentiable head trained with the loop while the body stays frozen."""
    from bridgetune.training.loop import EvalData, Loop

    hidden = encoder.config.hidden_size
    model = EmbeddingClassifier(
        encoder, torch.zeros(len(task.labels), hidden), multilabel=task.multilabel
    )
    for parameter in model.embed.parameters():
        parameter.requires_grad_(False)
    length = cfg.model.max_length
    head_cfg = cfg.train.model_copy(
        update={"epochs": cfg.fewshot.head_epochs, "lr": cfg.fewshot.head_lr, "warmup_ratio": 0.0}
    )
    dev_data = EvalData(task.encode(dev, tokenizer, length), dev)
    loop = Loop(
        model,
        task,
        task.encode(train, tokenizer, length),
        dev_data,
        head_cfg,
        tokenizer.pad_token_id,
        RunDirectory(cfg.run_dir).staging / "checkpoint-head",
        resumable=False,
    )
    loop.run()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return loop.unwrapped


def train_prompt(
    cfg: RunConfig,
    task: Task,
    tokenizer: Any,
    model_path: str,
    train: list[Example],
    dev: list[Example],
) -> tuple[torch.nn.Module, list[dict]]:
    """PET: fine-tune a masked LM through the template; the verbalizer words are the labels."""
    from bridgetune.training.loop import EvalData, Loop

    model = prompt_model(cfg, task, tokenizer, model_path)
    length = cfg.model.max_length
    loop = Loop(
        model,
        task,
        task.encode(train, tokenizer, length),
        EvalData(task.encode(dev, tokenizer, length), dev),
        cfg.train,
        tokenizer.pad_token_id,
        RunDirectory(cfg.run_dir).staging / "checkpoint",
        resumable=False,
    )
    history = loop.run().state.history
    return loop.unwrapped, history


def prompt_model(cfg: RunConfig, task: Task, tokenizer: Any, model_path: str) -> torch.nn.Module:
    from bridgetune.heads.prompt import PromptClassifier, load_masked_lm

    mlm = load_masked_lm(model_path, cfg.model.trust_remote_code)
    return PromptClassifier(
        mlm,
        tokenizer,
        cfg.fewshot.template,
        cfg.fewshot.verbalizer,
        task.labels,
        task.multilabel,
    )
