"""Training checkpoints: weights (safetensors), optimizer/scheduler/RNG state, loop state.

A checkpoint is written to a temporary directory and renamed into place, so an interrupted save
never replaces a good checkpoint with a broken one.

When part of the model is frozen (LoRA and the other PEFT methods, BitFit, head-only, frozen
layers), the weight files hold only what trains (plus buffers): the frozen weights cannot change
during a run, and a LoRA run on a big model would otherwise write the whole base model at every
checkpoint and every new best. The file records a checksum of each frozen tensor; loading it
into a model whose frozen weights differ (another base model, another method) is an error.

A model sharded by FSDP (bridgetune.training.sharding) is saved in the same format: every
process calls the save and load functions (they gather and scatter), the first one writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from bridgetune.lifecycle.atomic import atomic_directory, writing
from bridgetune.lifecycle.failpoints import failpoint
from bridgetune.runtime.processes import is_sharded, is_sharded_tensor, processes
from bridgetune.training import sharding

STATE_FILE = "loop_state.json"
TRAINABLE_FORMAT = "bridgetune-trainable"  # safetensors metadata "format" of a partial file


class CheckpointMismatch(ValueError):
    """A checkpoint's weights do not fit the model the run built."""


@dataclass
class LoopState:
    """Where the loop is: enough to continue exactly where it stopped."""

    epoch: int = 0
    batches_done: int = 0  # batches of `epoch` already consumed
    global_step: int = 0  # optimizer steps
    best_metric: float | None = None
    best_step: int = 0
    bad_evals: int = 0
    history: list[dict] = field(default_factory=list)


def rng_state() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    state: LoopState,
    rng: dict[str, Any],
) -> None:
    """Write the checkpoint atomically; `rng` is the RNG state at the optimizer-step boundary.
    A sharded model: every process calls it, the first writes."""
    directory = Path(directory)
    best = directory / "best.safetensors"
    sharded = is_sharded(model)
    if sharded:  # gathered by all processes before the first one writes
        weights = sharding.saved_tensors(model), _metadata(model)
        optimizer_state = sharding.optimizer_state(model, optimizer)
        if not _writes():
            return
    else:
        optimizer_state = optimizer.state_dict()
    with writing(directory), atomic_directory(directory) as staging:  # a full disk: one line
        if sharded:
            save_file(weights[0], str(staging / "model.safetensors"), metadata=weights[1])
        else:
            save_weights(model, staging / "model.safetensors")
        saved = {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "rng": rng}
        torch.save({**saved, "sharded": sharded}, staging / "training_state.pt")
        (staging / STATE_FILE).write_text(json.dumps(asdict(state)), encoding="utf-8")
        if best.exists():
            os.link(best, staging / best.name)  # keep the best weights across checkpoints
        failpoint("checkpoint")


def save_best(directory: Path, model: torch.nn.Module) -> None:
    """The best weights so far (a sharded model: every process calls it, the first writes)."""
    with writing(Path(directory)):
        Path(directory).mkdir(parents=True, exist_ok=True)
        temporary = Path(directory) / "best.safetensors.tmp"
        save_weights(model, temporary)
        if not _writes():
            return
        failpoint("best")
        temporary.replace(Path(directory) / "best.safetensors")


def load_best(directory: Path, model: torch.nn.Module) -> bool:
    path = Path(directory) / "best.safetensors"
    if not path.is_file():
        return False
    load_weights(model, path)
    return True


def has_checkpoint(directory: Path) -> bool:
    return (Path(directory) / STATE_FILE).is_file()


def load_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any
) -> LoopState:
    """Restore weights, optimizer, scheduler and RNG state; return the loop state.

    Raises:
        CheckpointMismatch: the checkpoint does not fit the model, or one of its files is
            damaged (truncated by a full disk, edited, or written by another program).
    """
    directory = Path(directory)
    with readable(directory / "model.safetensors"):
        load_weights(model, directory / "model.safetensors")
    with readable(directory / "training_state.pt"):
        saved = torch.load(directory / "training_state.pt", weights_only=True, map_location="cpu")
        return _restore(directory, saved, model, optimizer, scheduler)


def _restore(
    directory: Path, saved: dict[str, Any], model: torch.nn.Module, optimizer: Any, scheduler: Any
) -> LoopState:
    sharded = is_sharded(model)
    if saved.get("sharded", False) != sharded:
        then, now = ("with" if on else "without" for on in (saved.get("sharded"), sharded))
        raise CheckpointMismatch(
            f"{directory}: the checkpoint was written {then} FSDP and this run trains {now} it; "
            "resume the way the run started, or start again without --resume."
        )
    if sharded:
        sharding.load_optimizer_state(model, optimizer, saved["optimizer"])
    else:
        optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    with readable(directory / STATE_FILE):
        return LoopState(**json.loads((directory / STATE_FILE).read_text(encoding="utf-8")))


@contextlib.contextmanager
def readable(path: Path) -> Iterator[None]:
    """Turn a failure to read the checkpoint file `path` into a CheckpointMismatch naming it."""
    try:
        yield
    except CheckpointMismatch:
        raise
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, EOFError,
            pickle.UnpicklingError, SafetensorError) as error:  # fmt: skip
        text = str(error).strip()
        reason = text.splitlines()[0][:200] if text else type(error).__name__
        raise CheckpointMismatch(
            f"{path} cannot be read ({reason}): the checkpoint is damaged or does not fit this "
            "run. Start again without --resume (the run restarts from its first step)"
        ) from None


def _frozen(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if not p.requires_grad}


def _writes() -> bool:
    """Whether this process writes files (the first of a distributed run, or the only one)."""
    return processes()[0] == 0


def _metadata(model: torch.nn.Module) -> dict[str, str]:
    """safetensors metadata of a partial file: its format and the frozen tensors' checksums."""
    frozen = _frozen(model)
    return {"format": TRAINABLE_FORMAT, "frozen": json.dumps(dict(zip(frozen, _checksums(frozen))))}


def _checksums(frozen: dict[str, torch.Tensor]) -> list[float]:
    """One float64 sum per frozen tensor (one host sync for all of them)."""
    if not frozen:
        return []
    if is_sharded_tensor(next(iter(frozen.values()))):
        return sharding.sums(list(frozen.values()))
    sums = [p.detach().sum(dtype=torch.float64) for p in frozen.values()]
    device = sums[0].device
    return [float(x) for x in torch.stack([s.to(device) for s in sums]).tolist()]


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The whole model, or, when some parameters are frozen, the rest (see the module doc).
    A sharded model: every process calls it, the first writes the gathered tensors."""
    if is_sharded(model):
        tensors, metadata = sharding.saved_tensors(model), _metadata(model)
        if _writes():
            save_file(tensors, str(path), metadata=metadata)
        return
    frozen = _frozen(model)
    if not frozen:
        save_model(model, str(path))
        return
    frozen_storage = {p.data_ptr() for p in frozen.values()}
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        pointer = tensor.data_ptr()
        if pointer in frozen_storage or pointer in seen:  # frozen, or tied to a saved one
            continue
        seen.add(pointer)
        tensors[name] = tensor.detach().contiguous()
    save_file(tensors, str(path), metadata=_metadata(model))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load what `save_weights` wrote; a partial file must fit the model's frozen weights."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    sharded = is_sharded(model)
    if metadata.get("format") != TRAINABLE_FORMAT:
        if sharded:
            sharding.load(model, load_file(str(path)))
        else:
            load_model(model, str(path))
        return
    recorded: dict[str, float] = json.loads(metadata["frozen"])
    frozen = _frozen(model)
    if set(recorded) != set(frozen):
        raise CheckpointMismatch(
            f"{path}: the checkpoint was written with {len(recorded)} frozen tensors, this run "
            f"freezes {len(frozen)} (did the method or the model change?). Resume with the "
            "config the run started with, or start again without --resume."
        )
    changed = [
        name
        for name, now in zip(frozen, _checksums(frozen))
        if not math.isclose(now, recorded[name], rel_tol=1e-5, abs_tol=1e-4)
    ]
    if changed:
        raise CheckpointMismatch(
            f"{path}: {len(changed)} frozen weights differ from those the checkpoint was "
            f"trained on (first: {changed[0]}); the base model changed since. Resume with "
            "the same model, or start again without --resume."
        )
    if sharded:  # every process reads the file and keeps its shards
        sharding.load(model, load_file(str(path)))
        return
    device = next(model.parameters()).device
    state = load_file(str(path), device=str(device))
    missing, unexpected = model.load_state_dict(state, strict=False)
    current = model.state_dict()
    covered = {p.data_ptr() for p in frozen.values()}  # names of frozen or tied tensors
    covered |= {current[n].data_ptr() for n in state if n in current}
    untrained = [n for n in missing if current[n].data_ptr() not in covered]
    if unexpected or untrained:
        raise CheckpointMismatch(
            f"{path} does not fit this model: unexpected {unexpected[:3]}, missing "
            f"{untrained[:3]}. Start again without --resume."
        )


def filled(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    """`model` (built apart, e.g. unsharded or unquantized) with trained `tensors` loaded over
    its own parameters by name.

    Raises:
        CheckpointMismatch: a trained tensor has no place in `model`.
    """
    unexpected = model.load_state_dict(tensors, strict=False).unexpected_keys
    if unexpected:
        raise CheckpointMismatch(f"the model to save lacks trained tensors {unexpected[:3]}")
    return model
