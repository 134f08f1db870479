"""What a tuning method needs to know about a model: its head, its layers, its embeddings.

Methods receive the head's module names from the caller (DESIGN.md: methods never import tasks);
`head_modules` finds them the same way for every transformers model: the top-level modules that
are not the pretrained body (`base_model_prefix`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import torch
from pydantic import BaseModel, ConfigDict

from bridgetune.registry import Registry


class Params(BaseModel):
    """A method's options (`method.<option>` in a config); a method without options takes
    this empty model. Unknown options are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Method(Protocol):
    """Marks which parameters train (and may wrap the model, as peft methods do).

    `params` are the method's validated options (an instance of its `Params`); `problem` is
    the kind of loss the head is trained with (`Task.problem`: single, multi, token,
    regression, ranking, span).
    """

    Params: ClassVar[type[Params]]

    def __call__(
        self, model: torch.nn.Module, params: Any, head: list[str], problem: str
    ) -> torch.nn.Module: ...


METHODS: Registry[Method] = Registry("method")


def method(name: str, params: type[Params] = Params) -> Callable[[Any], Method]:
    """Register a method function under `name` with its options model `params`."""

    def decorate(function: Any) -> Method:
        function.Params = params
        return METHODS.register(name)(function)

    return decorate


def head_modules(model: torch.nn.Module) -> list[str]:
    """Names of the task head: the model's top-level modules with parameters, other than its
    pretrained body (dropout and activation modules have nothing to train or save), and the
    body's pooler where the classifier reads it (BERT-style; RoBERTa has it in its classifier),
    so every method adapts the same head on every architecture. A wrapper around a model (the
    CRF tagger) names its own head through a `head_modules()` method."""
    own = getattr(model, "head_modules", None)
    if callable(own):
        return own()
    body = getattr(model, "base_model_prefix", "")
    names = [
        name
        for name, module in model.named_children()
        if name != body and any(True for _ in module.parameters())
    ]
    pooler = getattr(getattr(model, body, None), "pooler", None)
    if pooler is not None:  # BERT's classifier reads the pooler: part of the head
        names += [  # its layers, not the block: peft's IA3 cannot unload a wrapped block
            f"{body}.pooler.{name}"
            for name, module in pooler.named_children()
            if any(True for _ in module.parameters())
        ]
    if not names:
        raise ValueError(f"{type(model).__name__}: no task head next to the body {body!r}")
    return names


def is_head(name: str, head: list[str]) -> bool:
    """Whether parameter `name` belongs to one of the head modules (also inside peft wrappers)."""
    dotted = f".{name}"
    return any(f".{module}." in dotted for module in head)


def transformer_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The stack of transformer blocks: the longest ModuleList holding equal blocks."""
    best = None
    for module in model.modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) < 2:
            continue
        uniform = len({type(block) for block in module}) == 1
        if uniform and (best is None or len(module) > len(best)):
            best = module
    return best


def embedding_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The body's embedding block (word, position, type embeddings and their norm)."""
    body = getattr(model, "base_model", model)
    block = getattr(body, "embeddings", None)
    if block is not None:
        return [block]
    found = [model.get_input_embeddings()]
    for name in ("wpe", "embed_positions"):
        if hasattr(body, name):
            found.append(getattr(body, name))
    return found


def layer_of_parameters(model: torch.nn.Module) -> dict[int, int]:
    """id(parameter) -> depth: -1 for the embeddings, k for the k-th transformer block."""
    depth: dict[int, int] = {}
    for block in embedding_modules(model):
        for parameter in block.parameters():
            depth[id(parameter)] = -1
    layers = transformer_layers(model)
    for index, block in enumerate(layers or []):
        for parameter in block.parameters():
            depth[id(parameter)] = index
    return depth


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tensors shared by several names count once."""
    seen: set[int] = set()
    trainable = total = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return trainable, total
