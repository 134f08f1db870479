"""A transformer's stack of layers, found and cut: a distillation student made of some of its
teacher's layers (`distill.student_layers`), chosen by position or by their importance on dev
data (whole-layer pruning: `greedy_layers`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch


def layer_stack(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The model's list of transformer layers (BERT's `encoder.layer`, XLM-R's, a head model's
    wrapped encoder's): the ModuleList as long as the config's `num_hidden_layers`.

    Raises:
        ValueError: the model has no such list (or several).
    """
    counts = {getattr(m.config, "num_hidden_layers", None) for m in configured(model)}
    counts.discard(None)
    stacks = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) in counts
    ]
    if len(stacks) != 1:
        found = ", ".join(name for name, _ in stacks) or "none"
        raise ValueError(
            f"cannot find the transformer layers of {type(model).__name__} (config "
            f"num_hidden_layers {sorted(counts)}; layer lists found: {found})"
        )
    return stacks[0]


def configured(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of `model` that carry a transformers config (the model, wrapped models)."""
    return [m for m in model.modules() if hasattr(getattr(m, "config", None), "num_hidden_layers")]


def chosen_layers(total: int, keep: int, how: Literal["every", "first"] = "every") -> list[int]:
    """Which of `total` layers a `keep`-layer student takes: "first" the bottom `keep`;
    "every" the last of each of `keep` equal blocks (6 -> 3: layers 1, 3, 5), so the top layer,
    whose output the head was trained on, stays.

    Raises:
        ValueError: `keep` is not between 1 and total - 1.
    """
    if not 1 <= keep < total:
        raise ValueError(
            f"distill.student_layers={keep}: the teacher has {total} layers; keep 1 to {total - 1}"
        )
    if how == "first":
        return list(range(keep))
    return [round((i + 1) * total / keep) - 1 for i in range(keep)]


def keep_layers(model: torch.nn.Module, indices: list[int]) -> None:
    """Cut `model`'s transformer stack to the layers `indices` (in place; the configs follow, so
    the saved model loads as a smaller one)."""
    name, stack = layer_stack(model)
    kept = [stack[i] for i in indices]
    for position, layer in enumerate(kept):
        attention = getattr(layer, "attention", None)
        inner = getattr(attention, "self", attention)
        if hasattr(inner, "layer_idx"):  # caches index layers by their position
            inner.layer_idx = position
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, torch.nn.ModuleList(kept))
    for module in configured(model):
        module.config.num_hidden_layers = len(kept)


@contextlib.contextmanager
def with_layers(model: torch.nn.Module, indices: list[int]) -> Iterator[torch.nn.Module]:
    """`model` with only the layers `indices` while the block runs (scoring a candidate cut),
    restored afterwards."""
    name, stack = layer_stack(model)
    counts = [(m, m.config.num_hidden_layers) for m in configured(model)]
    positions = [(inner, inner.layer_idx) for inner in (
        getattr(getattr(layer, "attention", None), "self", getattr(layer, "attention", None))
        for layer in stack) if hasattr(inner, "layer_idx")]  # fmt: skip
    keep_layers(model, indices)
    try:
        yield model
    finally:
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attribute, stack)
        for module, count in counts:
            module.config.num_hidden_layers = count
        for inner, index in positions:
            inner.layer_idx = index


def greedy_layers(
    total: int, keep: int, score: Callable[[list[int]], float], lower_is_better: bool = False
) -> tuple[list[int], list[dict[str, Any]]]:
    """The `keep` layers left by removing, one at a time, the layer whose removal costs the
    least `score` (dev metric of the model without it; no training in between), and the path:
    each step's removed layer, the layers left and their score.

    Raises:
        ValueError: `keep` is not between 1 and total - 1.
    """
    chosen_layers(total, keep)  # the same bounds
    current = list(range(total))
    path: list[dict[str, Any]] = []
    while len(current) > keep:
        trials = {layer: score([i for i in current if i != layer]) for layer in current}
        # ties: the higher layer goes first
        if lower_is_better:
            removed = min(trials, key=lambda layer: (trials[layer], -layer))
        else:
            removed = max(trials, key=lambda layer: (trials[layer], layer))
        current = [i for i in current if i != removed]
        path.append({"removed": removed, "layers": list(current), "score": trials[removed]})
    return current, path
