"""The Task protocol, its registry, and the padding collate every task shares."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from pydantic import BaseModel

from bridgetune.data.batching import padded
from bridgetune.data.schema import Example
from bridgetune.registry import Registry

Feature = dict[str, Any]


class Task(Protocol):
    """What the loop, the methods, the predictor, the service and the monitor need from a task;
    they ask the task instead of comparing task names.

    `labels` are class names (or tags); `auto_class` names the transformers Auto class that
    loads a saved model of the task; `problem` is the kind of loss its head trains with
    ("single": softmax cross-entropy, "multi": sigmoid binary cross-entropy, "token": per-token
    cross-entropy, "regression": mean squared error), which methods and the objective build
    on; `default_metric` is the dev metric that picks the best checkpoint, and
    `lower_is_better` the metrics that improve downwards (MAE); `takes_pairs`: every input is a
    (text, text_pair) pair; `output` is what a prediction carries ("label", "labels",
    "entities", "value", "answer", "ranking"; the playground renders by it) and `prediction`
    the pydantic model of its fields (bridgetune.tasks.predictions: what `decode` returns, what
    predict writes and the service documents); `reader` reads, validates and labels its data
    (bridgetune.data.readers). Class attributes, so they can be read from `TASKS.get(name)`
    before a task object exists.
    """

    name: str
    labels: list[str]
    auto_class: str
    problem: str
    default_metric: str
    takes_pairs: bool
    reader: Any
    output: str
    prediction: type[BaseModel]
    lower_is_better: frozenset[str]

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> Task:
        """The task for a label set; `settings` (tag_scheme, threshold, ...) as it needs."""
        ...

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Raise ValueError for options of a RunConfig this task cannot take."""
        ...

    def build_model(self, name_or_path: str, **kwargs: Any) -> torch.nn.Module: ...

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]: ...

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]: ...

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]: ...

    def calibrate(
        self, predictions: list[dict[str, Any]], examples: list[Example]
    ) -> list[dict[str, Any]]: ...

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict: ...

    def monitor_signal(self, prediction: dict[str, Any]) -> tuple[list[str], float | None]: ...

    def counted_labels(self, prediction: dict[str, Any]) -> list[str]: ...

    def feedback_label(self, label: Any, entities: list[dict] | None, text: str) -> Any: ...


TASKS: Registry[type] = Registry("task")


def pad_batch(
    features: list[Feature],
    pad_id: int,
    label_pad: int | None = None,
    label_dtype: torch.dtype = torch.long,
) -> dict[str, torch.Tensor]:
    """Pad input ids (and per-token labels) to the batch's longest, rounded up to 8."""
    longest = max(len(f["input_ids"]) for f in features)
    width = padded(longest)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    types = torch.zeros((len(features), width), dtype=torch.long)
    for row, feature in enumerate(features):
        n = len(feature["input_ids"])
        ids[row, :n] = torch.tensor(feature["input_ids"])
        mask[row, :n] = 1
        if "token_type_ids" in feature:
            types[row, :n] = torch.tensor(feature["token_type_ids"])
    batch = {"input_ids": ids, "attention_mask": mask}
    if any("token_type_ids" in f for f in features):
        batch["token_type_ids"] = types
    if features[0].get("labels") is not None:
        if label_pad is None:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=label_dtype)
        else:
            labels = torch.full((len(features), width), label_pad, dtype=label_dtype)
            for row, feature in enumerate(features):
                labels[row, : len(feature["labels"])] = torch.tensor(feature["labels"])
            batch["labels"] = labels
    return batch


DROPOUT_KEYS = ("hidden_dropout_prob", "dropout", "resid_pdrop", "hidden_dropout")


def load_generator(auto_class: Any, name_or_path: str, **kwargs: Any) -> torch.nn.Module:
    """A pretrained generative model (causal or seq2seq) for training: no cache, the dropout of
    `kwargs["dropout"]` when given, quantized for QLoRA when `kwargs["quantization"]` says."""
    from transformers import AutoConfig

    trust = kwargs.get("trust_remote_code", False)
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust)
    config.use_cache = False  # training; a cache would also hide packed sequences
    if kwargs.get("dropout") is not None:
        for key in (*DROPOUT_KEYS, "dropout_rate", "attention_dropout"):
            if hasattr(config, key):
                setattr(config, key, kwargs["dropout"])
    return auto_class.from_pretrained(
        name_or_path,
        config=config,
        trust_remote_code=trust,
        **quantized(kwargs.get("quantization")),
    )


def quantized(quantization: str | None) -> dict[str, Any]:
    """from_pretrained arguments that load a model quantized by bitsandbytes on this process's
    GPU (QLoRA: 4-bit NF4 with double quantization and bf16 compute); {} for "none"."""
    if quantization in (None, "none"):
        return {}
    import os

    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    return {
        "quantization_config": config,
        "device_map": {"": int(os.environ.get("LOCAL_RANK", 0))},
    }


def load_pretrained(
    auto_class: Any,
    name_or_path: str,
    labels: list[str],
    dropout: float | None = None,
    **config_kwargs: Any,
) -> torch.nn.Module:
    """A pretrained body with a fresh head whose config.json carries the real label names."""
    from transformers import AutoConfig

    trust = config_kwargs.pop("trust_remote_code", False)
    config = AutoConfig.from_pretrained(
        name_or_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        trust_remote_code=trust,
        **config_kwargs,
    )
    if dropout is not None:
        for key in DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, dropout)
    return auto_class.from_pretrained(name_or_path, config=config, trust_remote_code=trust)
