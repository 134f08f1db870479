"""The model directory: HF format (config.json with real labels, safetensors, tokenizer files)
plus bridgetune.json, written to a temporary directory and renamed into place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bridgetune.atomic import atomic_directory
from bridgetune.predictor import GAZETTEERS_FILE, META_FILE

FORMAT_VERSION = 1


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
        payload = {"format_version": FORMAT_VERSION, **meta}
        settings = dict(payload.get("settings") or {})
        if isinstance(settings.get("lexicon"), dict):  # names can run to megabytes: a file
            names = {kind: text.split("\n") for kind, text in settings["lexicon"].items()}
            (staging / GAZETTEERS_FILE).write_text(
                json.dumps(names, ensure_ascii=False, indent=0), encoding="utf-8"
            )
            payload["settings"] = {**settings, "lexicon": GAZETTEERS_FILE}
        if head is not None:
            payload["head"] = head
        (staging / META_FILE).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return Path(directory)
