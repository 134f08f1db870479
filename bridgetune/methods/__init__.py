"""Tuning methods: which parameters of a model train, and how the result is saved.

`apply_method` is the one entry point; each method is a function registered in METHODS
(freeze.py: full, head_only, bitfit; peft.py: lora, ia3, prompt, ptuning; prefix.py: prefix).
"""

from __future__ import annotations

import torch

from bridgetune.config import ConfigError, MethodConfig, schema_lines
from bridgetune.config.base import validated_options
from bridgetune.methods import freeze as _freeze  # noqa: F401  (registers)
from bridgetune.methods import peft as _peft  # noqa: F401  (registers)
from bridgetune.methods import prefix as _prefix  # noqa: F401  (registers)
from bridgetune.methods.base import METHODS, Params, count_parameters, head_modules, is_head
from bridgetune.methods.peft import AdapterModel
from bridgetune.methods.prefix import PrefixModel


def apply_method(
    model: torch.nn.Module, cfg: MethodConfig, problem: str, base_model: str
) -> torch.nn.Module:
    """`model` prepared for training with method `cfg.name` (its head trains).

    `problem` is the task's kind of loss (`Task.problem`: single, multi or token; methods never
    import tasks); `base_model` is the configured model name (kept by adapters to find their
    base again).
    """
    # a language model's output layer is its (tied) vocabulary, not a task head to retrain
    head = [] if problem in ("lm", "seq2seq") else head_modules(model)
    prepared = METHODS.get(cfg.name)(model, method_params(cfg), head, problem)
    if not count_parameters(prepared)[0]:
        raise ConfigError(
            f"method.name={cfg.name!r} leaves nothing to train in this "
            f"{type(model).__name__} (bitfit: a model without biases); choose another method"
        )
    if isinstance(prepared, (AdapterModel, PrefixModel)):
        prepared.base_model = base_model  # a name resolve_model finds again, not a local path
    return prepared


def method_params(cfg: MethodConfig) -> Params:
    """The options of method `cfg.name`, validated by its `Params` model.

    Raises:
        ConfigError: an option the method does not take (with what it takes), or a bad value.
    """
    models = {name: METHODS.get(name).Params for name in METHODS}
    return validated_options("method", cfg.name, cfg.options(), models)  # type: ignore[return-value]


def params_schema_lines() -> list[tuple[str, str, str]]:
    """(method.<option>, default, "method: description") for every registered method."""
    rows = []
    for name in METHODS:
        for key, default, text in schema_lines(METHODS.get(name).Params):
            rows.append((f"method.{key}", default, f"{name}: {text}"))
    return rows


def check_method(
    cfg: MethodConfig,
    model_path: str,
    auto_class: str,
    problem: str,
    trust_remote_code: bool,
    num_labels: int = 3,
) -> None:
    """Apply the method to a two-layer copy of the model's architecture and run a forward pass,
    so a method the architecture cannot take fails with a clear message before any data is read.
    `num_labels`: the head's outputs where the task fixes them (a span model's start and end).

    Raises:
        ConfigError: the method (or its target modules) does not fit the model.
    """
    import transformers

    config = transformers.AutoConfig.from_pretrained(
        model_path, num_labels=num_labels, trust_remote_code=trust_remote_code
    )
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(config, key):
            setattr(config, key, 2)  # two: a stack of layers is found as a repeated block
    model = getattr(transformers, auto_class).from_config(
        config, trust_remote_code=trust_remote_code
    )
    try:
        prepared = apply_method(model, cfg, problem, model_path)
        ids = torch.ones((1, 8), dtype=torch.long)
        decoder = {"decoder_input_ids": ids} if config.is_encoder_decoder else {}
        with torch.no_grad():
            prepared(input_ids=ids, attention_mask=torch.ones_like(ids), **decoder)
    except Exception as error:  # peft and transformers raise many types for a misfit
        raise ConfigError(method_error(cfg, model, config.model_type, error)) from error


def method_error(
    cfg: MethodConfig, model: torch.nn.Module, model_type: str, error: Exception
) -> str:
    """What went wrong applying `cfg` to a `model_type` model, and what to do instead."""
    message = f"method.name={cfg.name!r} does not work with this {model_type} model: {error}"
    target_modules = getattr(method_params(cfg), "target_modules", None)
    if target_modules is not None:
        linear = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, module in model.named_modules()
                if isinstance(module, torch.nn.Linear)
            }
        )
        message = (
            f"method.target_modules={target_modules} matches no module of this "
            f"{model_type} model that {cfg.name} can adapt; its linear modules are: "
            + ", ".join(linear)
        )
    elif cfg.name in ("prefix", "prompt", "ptuning") and "method.name=" not in message:
        message += "; use method.name=lora (works with any model that has linear layers)"
    return message


__all__ = [
    "METHODS",
    "Params",
    "apply_method",
    "check_method",
    "count_parameters",
    "head_modules",
    "is_head",
    "method_params",
    "params_schema_lines",
]
