"""FSDP: parameters, gradients and optimizer state sharded over the processes of a launch.

`accelerate launch --use_fsdp` (or an accelerate config with `distributed_type: FSDP`) starts the
processes and carries the settings; `train.fsdp: true` asks for the same under a plain launch.
bridgetune shards the model itself with torch's FSDP2 (`fully_shard`, as accelerate's FSDP2 path
does) so that one code path runs on GPUs (NCCL) and on CPU processes (gloo), which accelerate's
own FSDP path refuses. Whatever needs whole tensors gathers them: checkpoints and the best weights
(what trains, written by the first process), the saved model (an unsharded copy the first process
builds from them), evaluation (every process runs every batch) and generation (every process
decodes together, transformers' `synced_gpus`).
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridgetune.config import ConfigError, TrainConfig

if TYPE_CHECKING:  # torch loads when a model is sharded, not when a config is checked
    import torch

LAUNCH = "accelerate launch --use_fsdp --fsdp_version 2 --num_processes N -m bridgetune train C"


@dataclass(frozen=True)
class Sharding:
    """How the model is sharded: `blocks` are the module class names sharded one by one
    (unset: the model's `_no_split_modules`, its transformer layers); `reshard_after_forward`
    frees each block's gathered weights after its forward (less memory, one more all-gather
    in the backward pass)."""

    blocks: tuple[str, ...] = ()
    reshard_after_forward: bool = True


def _flag(name: str, default: str = "false") -> bool:
    return os.environ.get(name, default).strip().lower() in ("true", "1", "yes")


def requested(cfg: TrainConfig) -> Sharding | None:
    """The sharding `train.fsdp` or accelerate's FSDP settings ask for; None without either.

    Raises:
        ConfigError: a setting FSDP here cannot honour, and what to use instead.
    """
    if not (cfg.fsdp or _flag("ACCELERATE_USE_FSDP")):
        return None
    if _flag("FSDP_OFFLOAD_PARAMS"):
        raise ConfigError(
            "FSDP with parameters offloaded to the CPU is not supported: shard over more GPUs, "
            "or add train.gradient_checkpointing: true (set fsdp_offload_params: false)"
        )
    if cfg.precision == "fp16":
        raise ConfigError("train.fsdp trains in bf16 or fp32, not fp16: set train.precision: bf16")
    if cfg.adversarial != "none":
        raise ConfigError(
            f"train.adversarial={cfg.adversarial} perturbs whole embedding matrices, which FSDP "
            "shards: set train.adversarial: none to train with FSDP"
        )
    blocks = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    strategy = os.environ.get("FSDP_SHARDING_STRATEGY", "").upper()
    reshard = _flag("FSDP_RESHARD_AFTER_FORWARD", "true") and strategy not in (
        "SHARD_GRAD_OP",
        "2",
        "NO_RESHARD",
    )
    return Sharding(tuple(b.strip() for b in blocks.split(",") if b.strip()), reshard)


def activation_checkpointing() -> bool:
    """accelerate's FSDP switch for what `train.gradient_checkpointing` does."""
    return _flag("ACCELERATE_USE_FSDP") and _flag("FSDP_ACTIVATION_CHECKPOINTING")


@contextlib.contextmanager
def accelerate_fsdp_hidden() -> Iterator[None]:
    """accelerate's own FSDP switch off while the Accelerator is made: it would wrap the model
    a second time (and refuses CPU processes); the loop shards instead."""
    saved = os.environ.pop("ACCELERATE_USE_FSDP", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["ACCELERATE_USE_FSDP"] = saved


def shard(
    model: torch.nn.Module, sharding: Sharding, device: torch.device, precision: str
) -> torch.nn.Module:
    """`model` sharded in place: each block, then the rest; parameters move to `device`.
    bf16 computes in bf16 and reduces gradients in fp32 (the outputs come back in fp32).

    Raises:
        ConfigError: not launched with several processes, or no block class found.
    """
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        raise ConfigError(f"FSDP shards the model over several processes: launch with {LAUNCH}")
    names = set(sharding.blocks or _no_split_modules(model))
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ConfigError(
            f"FSDP: no module of {type(model).__name__} is a {', '.join(sorted(names)) or 'block'}"
            "; name the transformer layer class with --fsdp_transformer_layer_cls_to_wrap"
        )
    # counted before fully_shard renames the classes (FSDP<name>)
    kinds = ", ".join(
        f"{n} {name}" for name, n in Counter(type(b).__name__ for b in blocks).items()
    )
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    block_policy = root_policy = MixedPrecisionPolicy()
    if precision == "bf16":  # blocks hand bf16 on to the next; the model's outputs are fp32
        block_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        root_policy = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32, output_dtype=torch.float32
        )
    for block in blocks:
        fully_shard(
            block,
            mesh=mesh,
            reshard_after_forward=sharding.reshard_after_forward,
            mp_policy=block_policy,
        )
    fully_shard(model, mesh=mesh, reshard_after_forward=False, mp_policy=root_policy)
    if dist.get_rank() == 0:
        from rich.console import Console

        Console(stderr=True).print(
            f"FSDP: {kinds} and the rest of the model sharded over "
            f"{dist.get_world_size()} processes ({precision})"
        )
    return model


def _no_split_modules(model: torch.nn.Module) -> list[str]:
    """transformers' names of the blocks a model may not be split inside (its layers)."""
    found: list[str] = []
    for module in model.modules():
        found += [n for n in getattr(module, "_no_split_modules", None) or [] if n not in found]
    return found


@contextlib.contextmanager
def no_gradient_sync(model: torch.nn.Module) -> Iterator[None]:
    """Gradients accumulate in each process without being reduced (all but the last batch of
    an accumulated step)."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def saved_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole of every trainable parameter and persistent buffer of a sharded model, on the
    CPU of the first process ({} on the others). Every process must call it."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    first = dist.get_rank() == 0
    keys = set(model.state_dict())
    tensors: dict[str, torch.Tensor] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        whole = parameter.detach()
        if isinstance(whole, DTensor):
            whole = whole.full_tensor()  # a collective: every process, same order
        if first:
            tensors[name] = whole.cpu().contiguous()
    if first:
        for name, buffer in model.named_buffers():
            if name in keys:
                tensors[name] = buffer.detach().cpu().contiguous()
    return tensors


def sums(tensors: list[torch.Tensor]) -> list[float]:
    """float64 sum of each (sharded) tensor over all its shards. Every process must call it."""
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    if not tensors:
        return []
    local = [t.to_local() if isinstance(t, DTensor) else t for t in tensors]
    device = local[0].device
    totals = torch.stack([t.detach().sum(dtype=torch.float64).to(device) for t in local])
    dist.all_reduce(totals)
    return [float(x) for x in totals.tolist()]


def load(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Whole tensors (every process holds them) into the shards of a sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))


def optimizer_state(model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """The optimizer's whole state (on the first process's CPU). Every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        model,
        getattr(optimizer, "optimizer", optimizer),  # accelerate's wrapper: the torch optimizer
        options=StateDictOptions(full_state_dict=True, cpu_offload=True),
    )


def load_optimizer_state(model: torch.nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(
        model,
        getattr(optimizer, "optimizer", optimizer),
        optim_state_dict=state,
        options=StateDictOptions(full_state_dict=True),
    )
