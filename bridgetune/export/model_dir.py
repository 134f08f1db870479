"""The model-directory writer: HF format (config.json with real labels, safetensors, tokenizer
files) plus bridgetune.json (bridgetune.modeldir), written to a temporary directory and renamed
into place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bridgetune.lifecycle.atomic import atomic_directory
from bridgetune.modeldir import META_FILE, write_meta


def save_model_dir(
    directory: Path, model: torch.nn.Module, tokenizer: Any, meta: dict[str, Any]
) -> Path:
    """Write `model` + `tokenizer` + bridgetune.json atomically to `directory`.

    Raises:
        FileExistsError: `directory` holds something other than a bridgetune model directory
            (only a model directory is ever replaced: `--output .` must not delete a folder).
    """
    directory = check_replaceable(Path(directory))
    with atomic_directory(directory) as staging:
        head = None
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(staging)
        else:  # a head model (bridgetune.heads): its wrapped model + what describes the head
            head = model.save(staging)
        tokenizer.save_pretrained(staging)
        write_meta(staging, meta, head)
    return Path(directory)


def check_replaceable(directory: Path) -> Path:
    """`directory` when a model directory may be written there: new, empty, or a bridgetune
    model directory (which is replaced); call it before the work that builds the model.

    Raises:
        FileExistsError: it holds something else (`--output .` must not delete a folder).
    """
    directory = Path(directory)
    if directory.is_dir() and any(directory.iterdir()) and not (directory / META_FILE).is_file():
        raise FileExistsError(
            f"{directory} exists and is not a bridgetune model directory (no {META_FILE}); "
            "bridgetune replaces only its own model directories. Choose a new folder for the "
            "model, or move that one away"
        )
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} is a file; choose a folder for the model directory")
    return directory
