"""The model-directory contract, and the only module that knows it: file names, writing and
reading bridgetune.json, its format version and the compatibility of older directories.

A model directory is what plain `transformers` loads (config.json with real labels,
model.safetensors, tokenizer files) plus bridgetune.json: task, labels, tag scheme, task
settings, max_length, base model, method, metrics, data fingerprint, library version and, for a
model built around a head, the "head" entry. Training, export, the Predictor, the service and
retraining all read and write it through these functions. Pure standard library: every layer may
import it.

Format versions: 0 (no "format_version" key: directories written before the key existed) and 1
read alike; a directory written by a newer format is refused with what to do. Task options that
older directories recorded under "data" (prompt_template, as_chat, role_map) are read as task
settings (`saved_task_options`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

META_FILE = "bridgetune.json"
GAZETTEERS_FILE = "gazetteers.json"  # knowledge.gazetteers' names, beside bridgetune.json
FORMAT_VERSION = 1
REQUIRED_META = ("task", "labels")
# task options that directories kept under "data" before they became the task's (task.*)
FORMERLY_DATA = ("prompt_template", "as_chat", "role_map")


class ModelDirectoryError(ValueError):
    """A model directory bridgetune cannot use; the message names the file and what to do."""


def write_meta(directory: Path, meta: dict[str, Any], head: dict[str, Any] | None = None) -> Path:
    """Write bridgetune.json (and the gazetteers' file its settings point to) into `directory`,
    a staging directory the caller renames into place (bridgetune.export.model_dir)."""
    directory = Path(directory)
    payload = {"format_version": FORMAT_VERSION, **meta}
    settings = dict(payload.get("settings") or {})
    if isinstance(settings.get("lexicon"), dict):  # names can run to megabytes: a file
        names = {kind: text.split("\n") for kind, text in settings["lexicon"].items()}
        (directory / GAZETTEERS_FILE).write_text(
            json.dumps(names, ensure_ascii=False, indent=0), encoding="utf-8"
        )
        payload["settings"] = {**settings, "lexicon": GAZETTEERS_FILE}
    if head is not None:
        payload["head"] = head
    path = directory / META_FILE
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return path


def read_meta(directory: Path) -> dict[str, Any]:
    """The bridgetune.json of a model directory, checked.

    Raises:
        FileNotFoundError: `directory` is not a model directory.
        ModelDirectoryError: the file is damaged, lacks a required key, or was written by a
            newer format than this bridgetune reads.
    """
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a bridgetune model directory "
            f"(no {META_FILE}); pass the 'model' folder of a run"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelDirectoryError(
            f"{path} is not valid JSON ({error}); the file is damaged: retrain, or restore it"
        ) from None
    missing = [key for key in REQUIRED_META if key not in meta] if isinstance(meta, dict) else []
    if not isinstance(meta, dict) or missing:
        writer = meta.get("bridgetune_version") if isinstance(meta, dict) else None
        raise ModelDirectoryError(
            f"{path} has no {', '.join(repr(k) for k in missing or REQUIRED_META)} (written by "
            f"{'bridgetune ' + writer if writer else 'an unknown program'}); the file is damaged "
            "or not from a bridgetune run: retrain, or restore the file"
        )
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelDirectoryError(
            f"{path} has format_version {version!r} (written by bridgetune "
            f"{meta.get('bridgetune_version', '?')}); this bridgetune reads up to "
            f"{FORMAT_VERSION}: upgrade bridgetune (pip install -U bridgetune)"
        )
    return meta


def saved_task_options(meta: dict[str, Any]) -> dict[str, Any]:
    """The task settings of bridgetune.json ("settings"), with the options older directories
    kept under "data" (before they became task.* options)."""
    data = meta.get("data") or {}
    older = {key: data[key] for key in FORMERLY_DATA if data.get(key)}
    return {**older, **(meta.get("settings") or {})}


def read_settings(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The task settings of bridgetune.json, with the gazetteers read from their file."""
    settings = saved_task_options(meta)
    if isinstance(settings.get("lexicon"), str):
        path = Path(directory) / settings["lexicon"]
        try:
            names = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelDirectoryError(
                f"{path}: the model's gazetteers cannot be read ({error}); restore the file "
                "from the run, or retrain"
            ) from None
        settings["lexicon"] = {kind: "\n".join(values) for kind, values in names.items()}
    return settings
