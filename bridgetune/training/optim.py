"""AdamW with no decay on biases and normalization weights, and warmup-then-decay schedules."""

from __future__ import annotations

import torch

from bridgetune.config import TrainConfig

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "ln_")


def parameter_groups(
    model: torch.nn.Module, cfg: TrainConfig, head: list[str] | None = None
) -> list[dict]:
    """Groups by (learning rate, weight decay): biases and normalization weights never decay;
    the head trains at train.head_lr; with train.layer_lr_decay, layer k of L (0 = lowest)
    trains at lr x decay^(L-k) and the embeddings at lr x decay^(L+1)."""
    from bridgetune.methods.base import is_head, layer_of_parameters, transformer_layers

    depth = layer_of_parameters(model) if cfg.layer_lr_decay else {}
    layers = len(transformer_layers(model) or []) if cfg.layer_lr_decay else 0
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        exempt = parameter.ndim < 2 or any(key in name for key in NO_DECAY)
        if head and is_head(name, head):
            lr = cfg.head_lr or cfg.lr
        elif id(parameter) in depth:
            level = depth[id(parameter)]
            lr = cfg.lr * cfg.layer_lr_decay ** (layers - level if level >= 0 else layers + 1)
        else:
            lr = cfg.lr
        groups.setdefault((lr, 0.0 if exempt else cfg.weight_decay), []).append(parameter)
    return [
        {"params": params, "lr": lr, "weight_decay": decay}
        for (lr, decay), params in sorted(groups.items(), key=lambda item: item[0])
    ]


def build_optimizer(
    model: torch.nn.Module,
    cfg: TrainConfig,
    device: torch.device,
    head: list[str] | None = None,
) -> torch.optim.Optimizer:
    """AdamW; the fused kernel on GPUs (one launch for all parameters) and CPUs (4x faster
    than the per-tensor loop on MiniLM's 23M parameters: 15 ms a step instead of 60 on two
    cores); the plain one for parameters sharded by FSDP."""
    from bridgetune.runtime.processes import is_sharded

    groups = parameter_groups(model, cfg, head)
    if not groups:
        raise ValueError("no parameter of the model trains: check method.name and its options")
    fused = device.type in ("cuda", "cpu") and not is_sharded(model)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """Linear warmup over warmup_ratio of the steps, then linear/cosine decay or constant."""
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warmup = int(cfg.warmup_ratio * total_steps)
    if cfg.scheduler == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    build = (
        get_cosine_schedule_with_warmup
        if cfg.scheduler == "cosine"
        else (get_linear_schedule_with_warmup)
    )
    return build(optimizer, warmup, total_steps)
