"""Methods that train a subset of the model's own parameters: full (optionally with a frozen
embedding block or bottom layers), head-only (linear probe) and BitFit (biases + head)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field

from bridgetune.methods.base import Params, embedding_modules, is_head, method, transformer_layers


class FullParams(Params):
    freeze_embeddings: bool = Field(False, description="Keep the embedding layer frozen.")
    freeze_layers: int = Field(0, ge=0, description="Keep the bottom N transformer layers frozen.")


@method("full", FullParams)
def full(model: torch.nn.Module, cfg: FullParams, head: list[str], problem: str) -> torch.nn.Module:
    """Everything trains, except the embeddings and the bottom layers when asked."""
    model.requires_grad_(True)
    if cfg.freeze_embeddings:
        for block in embedding_modules(model):
            block.requires_grad_(False)
    if cfg.freeze_layers:
        layers = transformer_layers(model)
        if layers is None or cfg.freeze_layers > len(layers):
            have = 0 if layers is None else len(layers)
            raise ValueError(
                f"method.freeze_layers={cfg.freeze_layers}: the model has {have} layers"
            )
        for block in list(layers)[: cfg.freeze_layers]:
            block.requires_grad_(False)
    return model


@method("head_only")
def head_only(
    model: torch.nn.Module, cfg: Params, head: list[str], problem: str
) -> torch.nn.Module:
    """Linear probe: the body is frozen, the head trains."""
    return _train_only(model, lambda name: is_head(name, head))


@method("bitfit")
def bitfit(model: torch.nn.Module, cfg: Params, head: list[str], problem: str) -> torch.nn.Module:
    """BitFit (Ben Zaken et al., 2022): only the bias terms of the body, plus the head."""
    return _train_only(model, lambda name: is_head(name, head) or name.endswith(".bias"))


def _train_only(model: torch.nn.Module, trains: Callable[[str], bool]) -> torch.nn.Module:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(trains(name))
    return model
