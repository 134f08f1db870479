"""Classifiers built around a pretrained model other than a fine-tuned classification head.

Each head module wraps a transformers model and answers `forward(input_ids, attention_mask,
token_type_ids=None, labels=None)` with `.logits` of shape (texts, labels) and `.loss` when labels
are given, so the loop, `infer`, the tasks' decoding and the service use them unchanged:

- embedding: mean-pooled sentence embedding -> linear layer (contrastive few-shot, and zero-shot
  from label descriptions, where the rows are the descriptions' embeddings);
- prompt: a masked-LM scores verbalizer words at the mask slot of a template (PET-style);
- nli: an NLI cross-encoder scores "text entails hypothesis(label)" for every label;
- adapter: a peft adapter saved unmerged (bridgetune.methods.peft), put back on its base model;
- prefix: a key/value prefix per layer and the head (bridgetune.methods.prefix), likewise.

A model directory of a head keeps the wrapped model in transformers format (plain `transformers`
loads it) and `bridgetune.json` describes the head under the key "head".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bridgetune.tasks.base import TASKS


@dataclass
class HeadOutput:
    """What the loop and `infer` read from a model call."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor | None, multilabel: bool
) -> torch.Tensor | None:
    """Cross-entropy (single-label) or binary cross-entropy on sigmoid logits (multilabel)."""
    if labels is None:
        return None
    if multilabel:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    return torch.nn.functional.cross_entropy(logits, labels)


def load_head_model(directory: Path, meta: dict[str, Any]) -> torch.nn.Module | None:
    """The head model saved in `directory`, or None for a plain transformers classifier."""
    head = meta.get("head")
    if not head:
        return None
    labels = list(meta["labels"])
    multilabel = TASKS.get(meta["task"]).problem == "multi"
    kind = head["type"]
    if kind == "embedding":
        from bridgetune.heads.embedding import EmbeddingClassifier

        return EmbeddingClassifier.load(directory, head, labels, multilabel)
    if kind == "prompt":
        from bridgetune.heads.prompt import PromptClassifier

        return PromptClassifier.load(directory, head, labels, multilabel)
    if kind == "nli":
        from bridgetune.heads.nli import NLIClassifier

        return NLIClassifier.load(directory, head, labels, multilabel)
    if kind == "adapter":
        from bridgetune.methods.peft import AdapterModel

        return AdapterModel.from_saved(load_base_model(head, labels), directory, head)
    if kind == "prefix":
        from bridgetune.methods.prefix import PrefixModel

        return PrefixModel.from_saved(load_base_model(head, labels), directory, head)
    raise ValueError(f"{directory}: unknown head type {kind!r} in bridgetune.json")


def load_base_model(head: dict[str, Any], labels: list[str]) -> torch.nn.Module:
    """The pretrained base model an adapter or prefix goes back on, built with `labels`."""
    import transformers

    from bridgetune.models import resolve_model
    from bridgetune.tasks.base import load_pretrained

    kind = "Token" if head["problem"] == "token" else "Sequence"
    auto = getattr(transformers, f"AutoModelFor{kind}Classification")
    extra = {"problem_type": "multi_label_classification"} if head["problem"] == "multi" else {}
    return load_pretrained(auto, resolve_model(head["base_model"]), labels, **extra)
