"""Memory preparation of a model to train: QLoRA's needs and k-bit preparation, gradient
(activation) checkpointing."""

from __future__ import annotations

from typing import Any

from bridgetune.config import (
    ConfigError,
    RunConfig,
)
from bridgetune.training import sharding


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
