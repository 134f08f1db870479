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

`check_files` checks the files of the contract before anything is loaded: tokenizer files,
config.json, safetensors weights that are whole (header and size; pickles are never loaded, so
a directory with only pytorch_model.bin is refused). What needs the loaded model (labels against
the output layer, the vocabulary against the embeddings) is checked by the loader
(bridgetune.models.saved).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

META_FILE = "bridgetune.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"  # sharded weights: the index names the shards
# pickled weights (transformers' older formats): never loaded, only named in the error
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")
# any one of them makes a saved tokenizer (tokenizer.json: every fast tokenizer writes it)
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
MAX_HEADER_BYTES = 100_000_000  # safetensors refuses larger headers too
RESTORE = "restore the model directory from its run (or a backup), or retrain"
GAZETTEERS_FILE = "gazetteers.json"  # knowledge.gazetteers' names, beside bridgetune.json
FORMAT_VERSION = 1
# an exported directory (bridgetune export): the graph a runtime runs instead of the weights, and
# the parity check that let it be written; bridgetune.json's "runtime" names both
RUNTIME_FILES = {"onnx": "model.onnx", "openvino": "model.xml"}
# files a runtime's graph needs beside it (OpenVINO's IR keeps its weights in model.bin)
RUNTIME_COMPANIONS = {"openvino": ("model.bin",)}
PARITY_FILE = "parity.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt", ".pth")
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
    if not isinstance(meta["task"], str) or not isinstance(meta["labels"], list):
        raise ModelDirectoryError(
            f"{path}: 'task' must be a task name and 'labels' a list (found "
            f"{type(meta['task']).__name__} and {type(meta['labels']).__name__}); the file is "
            "damaged: retrain, or restore the file"
        )
    _check_numbers(meta, path)
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelDirectoryError(
            f"{path} has format_version {version!r} (written by bridgetune "
            f"{meta.get('bridgetune_version', '?')}); this bridgetune reads up to "
            f"{FORMAT_VERSION}: upgrade bridgetune (pip install -U bridgetune)"
        )
    return meta


def _check_numbers(meta: dict[str, Any], path: Path) -> None:
    """max_length (a positive whole number) and threshold (a finite number: a probability, or
    QA's no-answer margin), read at every prediction: a damaged value fails here, in one line,
    not as an OverflowError inside the tokenizer."""
    length, threshold = meta.get("max_length"), meta.get("threshold")
    problem = None
    if length is not None and (type(length) is not int or length < 1):
        problem = f"'max_length' is {length!r}, not a positive whole number of tokens"
    elif threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not math.isfinite(threshold)
    ):
        problem = f"'threshold' is {threshold!r}, not a number"
    if problem:
        raise ModelDirectoryError(f"{path}: {problem}; the file is damaged: retrain, or restore it")


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


def check_files(directory: Path, meta: dict[str, Any]) -> None:
    """Check the files a model directory needs before anything is loaded from it.

    A plain transformers model needs config.json and model.safetensors (or its shards); a model
    built around a head (meta "head") keeps the files its head type names, so only its
    safetensors files are checked here. Every directory needs its tokenizer files.

    Raises:
        ModelDirectoryError: the first missing or damaged file, named, with what to do.
    """
    directory = Path(directory)
    _check_tokenizer_files(directory, meta)
    if meta.get("runtime"):
        _check_runtime(directory, meta["runtime"])
        return
    weights = sorted(directory.glob("*.safetensors"))
    if not weights:
        _refuse_pickles(directory)
    for path in weights:
        check_safetensors(path)
    if not meta.get("head"):
        _check_config(directory, meta)
        _check_weights(directory)


def _check_runtime(directory: Path, runtime: Any) -> None:
    name = runtime.get("name") if isinstance(runtime, dict) else None
    if name not in RUNTIME_FILES:
        raise ModelDirectoryError(
            f"{directory / META_FILE}: runtime {name!r} is not one this bridgetune runs "
            f"({', '.join(RUNTIME_FILES)}); export the model again, or upgrade bridgetune"
        )
    for file in (RUNTIME_FILES[name], *RUNTIME_COMPANIONS.get(name, ())):
        path = directory / file
        if not path.is_file() or path.stat().st_size == 0:
            raise ModelDirectoryError(
                f"{path} is missing or empty (the exported graph the {name} runtime runs); "
                "export the model again with `bridgetune export`"
            )


def copy_for_runtime(source: Path, staging: Path, runtime: dict[str, Any]) -> None:
    """An exported directory's files from the model directory `source`: everything but the
    weights (tokenizer, config.json, gazetteers, ...), and bridgetune.json with `runtime`."""
    import shutil

    for path in sorted(Path(source).iterdir()):
        skipped = path.suffix in WEIGHT_SUFFIXES or path.name in (META_FILE, WEIGHTS_INDEX)
        if path.is_file() and not skipped:
            shutil.copy2(path, Path(staging) / path.name)
    payload = json.loads((Path(source) / META_FILE).read_text(encoding="utf-8"))
    payload["runtime"] = runtime
    (Path(staging) / META_FILE).write_text(json.dumps(payload, indent=2), encoding="utf-8")


def _check_tokenizer_files(directory: Path, meta: dict[str, Any]) -> None:
    if any((directory / name).is_file() for name in TOKENIZER_FILES):
        return
    base = meta.get("base_model")
    source = f"the base model's ({base})" if base else "the base model's"
    raise ModelDirectoryError(
        f"{directory} has no tokenizer files ({TOKENIZER_FILES[0]}): without them every text "
        f"would be read as unknown tokens; copy them from the run's model directory or "
        f"{source}, or retrain"
    )


def _check_config(directory: Path, meta: dict[str, Any]) -> None:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ModelDirectoryError(
            f"{path} is missing (the transformers configuration of the weights); {RESTORE}"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelDirectoryError(f"{path} is not valid JSON ({error}); {RESTORE}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelDirectoryError(
            f"{path} names no model_type (it is not a transformers config); {RESTORE}"
        )
    positions, length = config.get("max_position_embeddings"), meta.get("max_length")
    if isinstance(positions, int) and isinstance(length, int) and length > positions:
        # a longer text would index past the position embeddings (an error or garbage)
        raise ModelDirectoryError(
            f"{directory / META_FILE}: max_length {length} is more than the model's "
            f"{positions} positions ({path}); the file is damaged: set max_length to at most "
            f"{positions}, or retrain"
        )


def _check_weights(directory: Path) -> None:
    if (directory / WEIGHTS_FILE).is_file():
        return
    index = directory / WEIGHTS_INDEX
    if not index.is_file():
        _refuse_pickles(directory)
        raise ModelDirectoryError(f"{directory} has no {WEIGHTS_FILE} (the weights); {RESTORE}")
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelDirectoryError(f"{index} is damaged ({error!r}); {RESTORE}") from None
    missing = sorted(name for name in shards if not (directory / str(name)).is_file())
    if missing:
        raise ModelDirectoryError(f"{index} names {missing[0]}, which is missing; {RESTORE}")


def _refuse_pickles(directory: Path) -> None:
    """A directory whose weights are pickles only: pickles run code when loaded, so never."""
    for name in PICKLED_WEIGHTS:
        if (directory / name).is_file():
            raise ModelDirectoryError(
                f"{directory / name}: bridgetune loads safetensors weights only, never pickles "
                "(loading one can run code); convert a copy you trust with transformers "
                "(model.save_pretrained(directory) writes model.safetensors), or retrain"
            )


def check_safetensors(path: Path) -> None:
    """Check that `path` is a whole safetensors file: its header parses and its tensors end
    exactly at the end of the file (a truncated copy does not).

    Raises:
        ModelDirectoryError: the file is empty, truncated, a pickle or not safetensors at all.
    """
    size = path.stat().st_size
    if size == 0:
        raise ModelDirectoryError(f"{path} is empty (an interrupted copy?); {RESTORE}")
    with path.open("rb") as stream:
        start = stream.read(8)
        header_size = struct.unpack("<Q", start)[0] if len(start) == 8 else MAX_HEADER_BYTES + 1
        raw = stream.read(header_size) if header_size <= MAX_HEADER_BYTES else b""
    header = _header(raw) if len(raw) == header_size else None
    if header is None:
        _refuse_pickle(path, start)
        if raw.startswith(b"{") and len(raw) < header_size:  # cut inside the header
            needed = f"its header alone needs {8 + header_size} bytes, the file has {size}"
            raise ModelDirectoryError(f"{path} is truncated: {needed}; {RESTORE}")
        raise ModelDirectoryError(f"{path} is not a safetensors file ({size} bytes); {RESTORE}")
    ends = [_end(entry) for key, entry in header.items() if key != "__metadata__"]
    if None in ends:
        raise ModelDirectoryError(f"{path} has a damaged safetensors header; {RESTORE}")
    needed = 8 + header_size + max([end for end in ends if end is not None], default=0)
    if needed != size:
        raise ModelDirectoryError(
            f"{path} is truncated or damaged: its tensors need {needed} bytes, the file has "
            f"{size}; {RESTORE}"
        )


def _refuse_pickle(path: Path, start: bytes) -> None:
    """Name a pickle as one (torch.save writes a zip, or a raw pickle in older versions)."""
    if start[:2] == b"PK" or start[:1] == b"\x80":
        raise ModelDirectoryError(
            f"{path} is a pickle (PyTorch torch.save), not safetensors: bridgetune never loads "
            "pickles (loading one can run code); save the weights with safetensors "
            "(transformers: model.save_pretrained), or retrain"
        )


def _header(raw: bytes) -> dict[str, Any] | None:
    """The parsed safetensors header, or None when it is not a JSON object."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return header if isinstance(header, dict) else None


def _end(entry: Any) -> int | None:
    """Where a tensor's bytes end (counted after the header); None for a damaged entry."""
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if not isinstance(offsets, list) or len(offsets) != 2:
        return None
    return offsets[1] if all(type(o) is int and o >= 0 for o in offsets) else None
