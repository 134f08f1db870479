"""Zero-shot classification: no labelled data, a model directory all the same.

Label descriptions against text embeddings (offline with the default model), an NLI
cross-encoder (entailment of a hypothesis per label), or a masked LM with a template and a
verbalizer. `predict`, `evaluate` and `serve` accept the directory it writes.
"""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any, Literal

import torch

from bridgetune.config import ConfigError, RunConfig
from bridgetune.heads.embedding import EmbeddingClassifier, embed_texts
from bridgetune.models import load_tokenizer, resolve_model
from bridgetune.recipes.fewshot import prompt_model
from bridgetune.tasks import Task, build_task

ZERO_SHOT_SCALE = 20.0  # cosine -> logit scale of zero-shot softmax scores (argmax unaffected)


ZeroShotMethod = Literal["embedding", "nli", "prompt"]


def zeroshot(
    labels: list[str],
    output: str | Path,
    *,
    model: str = "minilm",
    method: ZeroShotMethod = "embedding",
    descriptions: dict[str, str] | None = None,
    multilabel: bool = False,
    hypothesis_template: str = "This text is about {label}.",
    template: str = "{text} It was {mask}.",
    verbalizer: dict[str, list[str]] | None = None,
    max_length: int = 128,
    text_column: str = "text",
    label_column: str = "label",
) -> Path:
    """A classifier with no training data, saved as a model directory; returns its path.

    Args:
        labels: class names, in order.
        output: the model directory to write.
        model: 'minilm', a local directory or a hub id (an NLI model for 'nli', a masked LM
            for 'prompt').
        method: 'embedding' (cosine between the text and each label description), 'nli'
            (entailment of the hypothesis per label) or 'prompt' (verbalizer words at a mask).
        descriptions: label -> description for 'embedding' (default: the label itself).
        multilabel: independent labels (sigmoid); 'nli' only.
        text_column, label_column: columns of the files that `predict` and `evaluate` will read.
    """
    from bridgetune.export.model_dir import check_replaceable, save_model_dir

    check_trained_kept(check_replaceable(Path(output)))
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ConfigError(f"zeroshot needs two or more distinct labels, got {labels}")
    if multilabel and method != "nli":
        raise ConfigError("multi-label zero-shot is done with method 'nli'")
    model_path = resolve_model(model)
    tokenizer = load_tokenizer(model_path)
    task_name = "multilabel" if multilabel else "classification"
    task = build_task(task_name, labels)
    built, head_settings = _zeroshot_model(
        method, task, tokenizer, model_path, descriptions, hypothesis_template, template,
        verbalizer, max_length,
    )  # fmt: skip
    meta = _zeroshot_meta(task, model, method, max_length, head_settings)
    meta["data"] = {"text_column": text_column, "label_column": label_column}
    return save_model_dir(Path(output), built, tokenizer, meta)


def check_trained_kept(output: Path) -> None:
    """A zero-shot model replaces only a zero-shot model: rebuilding one with other
    descriptions is the usual loop, but a trained model at `output` (a run's `model` folder)
    took a training to make.

    Raises:
        FileExistsError: `output` holds a model directory of another method.
    """
    from bridgetune.modeldir import META_FILE, read_meta

    if not (output / META_FILE).is_file():
        return
    try:
        method = str(read_meta(output).get("method", ""))
    except ValueError:  # a damaged bridgetune.json: nothing to tell, refuse all the same
        method = "unknown"
    if not method.startswith("zeroshot-"):
        raise FileExistsError(
            f"{output} holds a model trained with method {method!r}; zeroshot replaces only "
            "zero-shot models. Choose a new folder for the model, or move that one away"
        )


def _zeroshot_model(
    method: str,
    task: Task,
    tokenizer: Any,
    model_path: str,
    descriptions: dict[str, str] | None,
    hypothesis_template: str,
    template: str,
    verbalizer: dict[str, list[str]] | None,
    max_length: int,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    labels = task.labels
    if method == "embedding":
        from transformers import AutoModel

        descriptions = descriptions or {}
        unknown = sorted(set(descriptions) - set(labels))
        if unknown:
            raise ConfigError(f"descriptions for unknown labels {unknown}; labels are {labels}")
        texts = [descriptions.get(label, label) for label in labels]
        encoder = AutoModel.from_pretrained(model_path)
        weight = embed_texts(encoder, tokenizer, texts, max_length)
        return EmbeddingClassifier(encoder, weight, scale=ZERO_SHOT_SCALE), {
            "descriptions": dict(zip(labels, texts))
        }
    if method == "nli":
        from transformers import AutoModelForSequenceClassification

        from bridgetune.heads.nli import NLIClassifier

        nli = AutoModelForSequenceClassification.from_pretrained(model_path)
        multilabel = task.multilabel
        return NLIClassifier(nli, tokenizer, labels, hypothesis_template, multilabel), {}
    if method == "prompt":
        if verbalizer is None:
            raise ConfigError(
                "zero-shot method prompt needs a verbalizer: words per label, e.g. "
                "{positive: [great], negative: [terrible]}"
            )
        cfg = copy.deepcopy(RunConfig.model_validate({"data": {"train": "-"}}))
        cfg.fewshot.template, cfg.fewshot.verbalizer = template, verbalizer
        return prompt_model(cfg, task, tokenizer, model_path), {}
    raise ConfigError(f"zero-shot method {method!r} is not one of embedding, nli, prompt")


def _zeroshot_meta(
    task: Task, model: str, method: str, max_length: int, extra: dict[str, Any]
) -> dict[str, Any]:
    from bridgetune._version import __version__

    share = 1 / len(task.labels)
    return {
        "task": task.name,
        "labels": task.labels,
        "tag_scheme": None,
        "threshold": 0.5 if task.multilabel else None,
        "max_length": max_length,
        "base_model": model,
        "method": f"zeroshot-{method}",
        "metrics": {},
        # no training data: a uniform prior, so drift monitoring has something to compare with
        "label_distribution": {label: share for label in task.labels},
        "data_fingerprint": None,
        "zeroshot": extra,
        "bridgetune_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
