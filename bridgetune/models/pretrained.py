"""Pretrained models loaded for training: a body with a fresh head whose config carries the real
labels, a generative model (no cache, the run's dropout, quantized for QLoRA)."""

from __future__ import annotations

from typing import Any

import torch

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
    model_kwargs: dict[str, Any] | None = None,
    **config_kwargs: Any,
) -> torch.nn.Module:
    """A pretrained body with a fresh head whose config.json carries the real label names
    (`model_kwargs`: arguments of the model class itself, such as BERT's add_pooling_layer)."""
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
    return auto_class.from_pretrained(
        name_or_path, config=config, trust_remote_code=trust, **(model_kwargs or {})
    )


def grow_embeddings(model: torch.nn.Module, tokenizer: Any) -> None:
    """Give `model` an embedding row for every token of `tokenizer` (tokens a task added, such
    as entity markers); new rows start at the mean of the old ones (transformers' mean
    resizing), so a new token starts where the model's known tokens are."""
    if not hasattr(model, "get_input_embeddings"):
        return
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
