"""The model-directory writer: HF format (config.json with real labels, safetensors, tokenizer
files) plus bridgetune.json (bridgetune.modeldir), written to a temporary directory and renamed
into place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bridgetune.lifecycle.atomic import atomic_directory
from bridgetune.modeldir import write_meta


def save_model_dir(
    directory: Path, model: torch.nn.Module, tokenizer: Any, meta: dict[str, Any]
) -> Path:
    """Write `model` + `tokenizer` + bridgetune.json atomically to `directory`."""
    with atomic_directory(Path(directory)) as staging:
        head = None
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(staging)
        else:  # a head model (bridgetune.heads): its wrapped model + what describes the head
            head = model.save(staging)
        tokenizer.save_pretrained(staging)
        write_meta(staging, meta, head)
    return Path(directory)
