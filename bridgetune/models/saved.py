"""A saved model directory loaded strictly, so a damaged one fails instead of predicting garbage.

transformers is lenient where a served model must not be: weights missing from the file are
initialized at random, a tokenizer without its files loads with an empty vocabulary, and a
bridgetune.json copied from another model is believed. Here the weights come from safetensors
only and must all be there, the class transformers builds must be the one config.json was saved
from (the task of bridgetune.json against the weights), the labels must match the output layer
and the tokenizer the embeddings. Every failure is a ModelError naming the file and what to do.
The files themselves are checked before, by bridgetune.modeldir.check_files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bridgetune.modeldir import CONFIG_FILE, META_FILE, RESTORE, TOKENIZER_FILES, WEIGHTS_FILE
from bridgetune.models import ModelError

# the heads with one output per label (config.json's id2label); language models have none
LABELLED_HEADS = (
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
    "AutoModelForQuestionAnswering",
)
# a tokenizer this much smaller than the embeddings belongs to another model (embeddings are
# often padded past the vocabulary, to a multiple of 64 say, but never to twice its size)
SMALLEST_VOCABULARY_SHARE = 0.5


def load_saved_model(
    auto_class: Any, directory: Path, task: str, labels: list[str], **model_kwargs: Any
) -> torch.nn.Module:
    """The model of a plain transformers model directory, every weight from its safetensors
    (`model_kwargs`: arguments of the model class, such as BERT's add_pooling_layer).

    Raises:
        ModelError: the weights do not load, do not fit config.json, are of another kind of
            model than the task of bridgetune.json (`task`) needs, or have another output
            layer than its `labels`.
    """
    try:
        model, info = auto_class.from_pretrained(
            directory, use_safetensors=True, output_loading_info=True, **model_kwargs
        )
    except Exception as error:  # noqa: BLE001 - transformers, safetensors and torch raise many kinds
        raise ModelError(
            f"{directory / WEIGHTS_FILE} does not load with {directory / CONFIG_FILE} "
            f"({first_line(error)}); {RESTORE}"
        ) from None
    _check_architecture(model, directory, task)
    missing = sorted(info.get("missing_keys") or []) + sorted(info.get("mismatched_keys") or [])
    if missing:
        raise ModelError(
            f"{directory / WEIGHTS_FILE} lacks {len(missing)} weights of the "
            f"{type(model).__name__} that task {task!r} needs (e.g. {missing[0]}): the weights "
            f"belong to another model; {RESTORE}"
        )
    unused = sorted(info.get("unexpected_keys") or [])
    if unused:  # config.json describes a smaller model (fewer layers): those weights drop out
        raise ModelError(
            f"{directory / WEIGHTS_FILE} holds {len(unused)} weights that the "
            f"{type(model).__name__} of {directory / CONFIG_FILE} has no place for (e.g. "
            f"{unused[0]}): config.json does not belong to these weights; {RESTORE}"
        )
    check_values(model, directory)
    if getattr(auto_class, "__name__", "") in LABELLED_HEADS:
        check_labels(model, labels, directory)
    return model


def check_values(model: torch.nn.Module, directory: Path) -> None:
    """Every floating-point weight as saved: finite (NaN weights predict NaN scores) and stored
    as floating point (integer tensors are cast on loading, silently, into garbage).

    Raises:
        ModelError: naming the first weight that is not.
    """
    stored = _stored_dtypes(directory)
    for name, value in model.state_dict().items():
        if not value.is_floating_point():
            continue
        kind = stored.get(name, "F")
        if not kind.startswith(("F", "BF")):
            problem = f"is stored as {kind}, not as floating point"
        elif not bool(torch.isfinite(value).all()):
            problem = "holds NaN or infinite values"
        else:
            continue
        raise ModelError(f"{directory / WEIGHTS_FILE}: weight {name} {problem}; {RESTORE}")


def _stored_dtypes(directory: Path) -> dict[str, str]:
    """The dtype (F32, I8, ...) of each tensor in the directory's safetensors files."""
    from safetensors import safe_open

    dtypes: dict[str, str] = {}
    for path in sorted(directory.glob("model*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 - safe_open has no __iter__
                dtypes[name] = weights.get_slice(name).get_dtype()
    return dtypes


def _check_architecture(model: torch.nn.Module, directory: Path, task: str) -> None:
    """The class built for the task must be the one config.json was saved from."""
    saved = list(getattr(model.config, "architectures", None) or [])
    built = type(model).__name__
    if saved and built not in saved:
        raise ModelError(
            f"{directory / META_FILE} names task {task!r}, whose model is a {built}, but "
            f"{directory / CONFIG_FILE} was saved from a {saved[0]}: bridgetune.json does not "
            f"belong to these weights; {RESTORE}"
        )


def check_labels(model: torch.nn.Module, labels: list[str], directory: Path) -> None:
    """bridgetune.json's labels against the output layer of a plain transformers model (its
    config's id2label: size, and names where the config has real ones).

    Raises:
        ModelError: the labels do not match the layer.
    """
    config = getattr(model, "config", None)
    if config is None or not getattr(config, "id2label", None):
        return
    names = [config.id2label[i] for i in sorted(config.id2label)]
    default = [f"LABEL_{i}" for i in range(len(names))]
    if len(names) != len(labels) or (names != default and names != list(labels)):
        raise ModelError(
            f"{directory / META_FILE} lists {len(labels)} labels {list(labels)[:8]} but the "
            f"model's output layer ({directory / CONFIG_FILE}) has {len(names)} {names[:8]}: "
            f"bridgetune.json does not belong to these weights; {RESTORE}"
        )


def load_saved_tokenizer(directory: Path) -> Any:
    """The tokenizer saved in a model directory.

    Raises:
        ModelError: its files do not load.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory)
    except Exception as error:  # noqa: BLE001 - tokenizers raise many kinds for damaged files
        raise ModelError(
            f"the tokenizer files of {directory} ({TOKENIZER_FILES[0]}, tokenizer_config.json) "
            f"do not load ({first_line(error)}); {RESTORE}"
        ) from None


def check_vocabulary(model: torch.nn.Module, tokenizer: Any, directory: Path) -> None:
    """The tokenizer's vocabulary against the model's input embeddings: an id past the last
    row cannot be embedded, and a much smaller vocabulary is another model's tokenizer.

    Raises:
        ModelError: they do not belong together.
    """
    embeddings = getattr(model, "get_input_embeddings", None)
    layer = embeddings() if callable(embeddings) else None
    weight = getattr(layer, "weight", None)
    if weight is None:
        return  # a head model that keeps its embeddings inside
    rows, size = int(weight.shape[0]), len(tokenizer)
    if size > rows or size < rows * SMALLEST_VOCABULARY_SHARE:
        raise ModelError(
            f"the tokenizer of {directory} has {size} tokens but the model's embeddings have "
            f"{rows} rows: the tokenizer files ({TOKENIZER_FILES[0]}) belong to another "
            f"model; {RESTORE}"
        )


def first_line(error: BaseException) -> str:
    """The first line of an error's message (loaders write pages), or its type's name."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
