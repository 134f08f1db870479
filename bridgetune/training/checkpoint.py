"""Training checkpoints: weights (safetensors), optimizer/scheduler/RNG state, loop state.

A checkpoint is written to a temporary directory and renamed into place, so an interrupted save
never replaces a good checkpoint with a broken one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from bridgetune.atomic import atomic_directory

STATE_FILE = "loop_state.json"


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
    """Write the checkpoint atomically; `rng` is the RNG state at the optimizer-step boundary."""
    best = Path(directory) / "best.safetensors"
    with atomic_directory(Path(directory)) as staging:
        save_model(model, str(staging / "model.safetensors"))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
            staging / "training_state.pt",
        )
        (staging / STATE_FILE).write_text(json.dumps(asdict(state)), encoding="utf-8")
        if best.exists():
            os.link(best, staging / best.name)  # keep the best weights across checkpoints


def save_best(directory: Path, model: torch.nn.Module) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    temporary = Path(directory) / "best.safetensors.tmp"
    save_model(model, str(temporary))
    temporary.replace(Path(directory) / "best.safetensors")


def load_best(directory: Path, model: torch.nn.Module) -> bool:
    path = Path(directory) / "best.safetensors"
    if not path.is_file():
        return False
    load_model(model, str(path))
    return True


def has_checkpoint(directory: Path) -> bool:
    return (Path(directory) / STATE_FILE).is_file()


def load_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any
) -> LoopState:
    """Restore weights, optimizer, scheduler and RNG state; return the loop state."""
    directory = Path(directory)
    load_model(model, str(directory / "model.safetensors"))
    saved = torch.load(directory / "training_state.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    return LoopState(**json.loads((directory / STATE_FILE).read_text(encoding="utf-8")))
