"""Classifiers built around a pretrained model other than a fine-tuned classification head.

Each head module wraps a transformers model and answers `forward(input_ids, attention_mask,
token_type_ids=None)` with `.logits` of shape (texts, labels); the loss is the task's, computed
from the logits by the objective. The loop, `infer`, the tasks' decoding and the service use them
unchanged:

- embedding: mean-pooled sentence embedding -> linear layer (contrastive few-shot, and zero-shot
  from label descriptions, where the rows are the descriptions' embeddings);
- prompt: a masked-LM scores verbalizer words at the mask slot of a template (PET-style);
- nli: an NLI cross-encoder scores "text entails hypothesis(label)" for every label;
- adapter: a peft adapter saved unmerged (bridgetune.methods.peft), put back on its base model;
- prefix: a key/value prefix per layer and the head (bridgetune.methods.prefix), likewise;
- crf: a token classifier with a CRF over its tags (bridgetune.knowledge.crf);
- lexicon: gazetteer features added to a classifier's input (bridgetune.knowledge.gazetteer),
  around a plain classifier or a crf head.

Each is a `HeadModel` registered in `HEADS` under the "type" its `save` writes.

A model directory of a head keeps the wrapped model in transformers format (plain `transformers`
loads it) and `bridgetune.json` describes the head under the key "head".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from bridgetune.registry import Registry


@dataclass
class HeadOutput:
    """What the loop and `infer` read from a model call."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


class HeadModel(Protocol):
    """A model saved with a "head" entry in bridgetune.json: `save` writes it and returns that
    entry (with its "type"), `load` rebuilds it from the directory, the entry and the labels."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> HeadOutput: ...

    def save(self, directory: Path) -> dict[str, Any] | None: ...

    @classmethod
    def load(
        cls, directory: Path, head: dict[str, Any], labels: list[str], multilabel: bool
    ) -> torch.nn.Module: ...


def output_logits(output: Any) -> torch.Tensor:
    """A model output's logits; question-answering models' start and end logits are stacked
    on a last axis of two, (batch, tokens, 2), so every task's logits are one tensor."""
    logits = getattr(output, "logits", None)
    if logits is not None:
        return logits
    return torch.stack([output.start_logits, output.end_logits], dim=-1)


# head type -> its HeadModel class. Each class registers itself in its own module (`@HEADS.
# register("crf")`); bridgetune.inference.head_types imports every module that defines one, so
# the Predictor loads a directory of any type (a package of its own registers its heads alike).
HEADS: Registry[type] = Registry("head type")


def load_head_model(
    directory: Path, meta: dict[str, Any], multilabel: bool = False
) -> torch.nn.Module | None:
    """The head model saved in `directory`, or None for a plain transformers classifier.

    Raises:
        ValueError: bridgetune.json names a head type no installed code registers.
    """
    head = meta.get("head")
    if not head:
        return None
    try:
        return load_head(directory, head, list(meta["labels"]), multilabel)
    except KeyError as error:
        raise ValueError(f"{directory}/bridgetune.json: {error.args[0]}") from None


def load_head(
    directory: Path, head: dict[str, Any], labels: list[str], multilabel: bool
) -> torch.nn.Module:
    """The head model of the "head" entry `head` (a head may wrap another: lexicon over crf).

    Raises:
        KeyError: the entry names a head type no installed code registers.
    """
    head_class: Any = HEADS.get(head["type"])
    return head_class.load(directory, head, labels, multilabel)


AUTO_CLASSES = {  # the transformers class of a base model, by the problem its head learns
    "single": "AutoModelForSequenceClassification",
    "token": "AutoModelForTokenClassification",
    "span": "AutoModelForQuestionAnswering",
    "lm": "AutoModelForCausalLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
}


def load_base_model(head: dict[str, Any], labels: list[str]) -> torch.nn.Module:
    """The pretrained base model an adapter or prefix goes back on, built with `labels`."""
    import transformers

    from bridgetune.models import resolve_model
    from bridgetune.models.pretrained import load_pretrained

    auto = getattr(transformers, AUTO_CLASSES.get(head["problem"], AUTO_CLASSES["single"]))
    if head["problem"] in ("lm", "seq2seq"):  # a language model's head is its vocabulary
        return auto.from_pretrained(resolve_model(head["base_model"]))
    extra = {"problem_type": "multi_label_classification"} if head["problem"] == "multi" else {}
    return load_pretrained(auto, resolve_model(head["base_model"]), labels, **extra)
