"""Zero-shot classification through an NLI cross-encoder.

Every label becomes a hypothesis ("This text is about {label}.") and its logit is how strongly the
text entails it, as in the transformers zero-shot pipeline: single-label takes the entailment
logit (the task's softmax then runs over the labels); multilabel takes entailment against
contradiction for each label on its own, so the task's sigmoid gives that pair's softmax.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bridgetune.heads import HEADS, HeadOutput
from bridgetune.heads.prompt import SpecialTokens, pad_rows, position_limit

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel


@HEADS.register("nli")
class NLIClassifier(torch.nn.Module):
    """Zero-shot through an NLI cross-encoder: the entailment logit of (text, hypothesis(label))."""

    def __init__(
        self,
        nli: PreTrainedModel,
        tokenizer: Any,
        labels: list[str],
        hypothesis_template: str = "This text is about {label}.",
        multilabel: bool = False,
    ) -> None:
        """Prepare one hypothesis per label.

        Args:
            nli: a sequence classifier trained on NLI whose config names an entailment label.
            tokenizer: its tokenizer.
            labels: the task's labels, in logit order; each fills the template's {label}.
            hypothesis_template: the hypothesis a text must entail to get a label.
            multilabel: score each label on its own (entailment vs contradiction).

        Raises:
            ValueError: the model has no entailment label, or the template no {label}.
        """
        super().__init__()
        if "{label}" not in hypothesis_template:
            raise ValueError(
                f"hypothesis template {hypothesis_template!r} has no {{label}} slot, "
                "e.g. 'This text is about {label}.'"
            )
        self.nli = nli
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.hypothesis_template = hypothesis_template
        self.multilabel = multilabel
        self.entailment_index = entailment_index(nli.config)
        contrast = contrast_indices(nli.config, self.entailment_index)
        self.register_buffer("contrast", torch.tensor(contrast), persistent=False)
        hypotheses = [hypothesis_template.format(label=label) for label in self.labels]
        self.hypotheses = tokenizer(hypotheses, add_special_tokens=False)["input_ids"]
        self.layout = SpecialTokens(tokenizer)
        room = position_limit(nli, tokenizer) - self.layout.count(2)
        self.budgets = [room - len(hypothesis) for hypothesis in self.hypotheses]
        if min(self.budgets) < 1:
            raise ValueError(
                f"hypothesis template {hypothesis_template!r} leaves no room for the text "
                "with the longest label; shorten it"
            )

    def build_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """(text, hypothesis) pair inputs, texts x labels rows, text-major.

        Only the text is truncated, so every hypothesis is seen whole.
        """
        rows = [
            self.layout.wrap(text[:budget], hypothesis)
            for text in self.layout.texts(input_ids, attention_mask)
            for hypothesis, budget in zip(self.hypotheses, self.budgets)
        ]
        pad_id = self.tokenizer.pad_token_id or 0
        token_types = "token_type_ids" in self.tokenizer.model_input_names
        return pad_rows(rows, pad_id, input_ids.device, token_types)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> HeadOutput:
        """Label logits (texts, labels) for the task's encodings of the texts alone."""
        pair_logits = self.nli(**self.build_inputs(input_ids, attention_mask)).logits.float()
        pair_logits = pair_logits.view(input_ids.shape[0], len(self.labels), -1)
        logits = pair_logits[..., self.entailment_index]
        if self.multilabel:
            # sigmoid(e - logsumexp(contrast)) is the softmax of entailment against the contrast.
            logits = logits - torch.logsumexp(pair_logits[..., self.contrast], dim=-1)
        return HeadOutput(logits)

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the cross-encoder (safetensors) and return the head's entry for bridgetune.json."""
        self.nli.save_pretrained(directory)
        return {
            "type": "nli",
            "hypothesis_template": self.hypothesis_template,
            "entailment_index": self.entailment_index,
        }

    @classmethod
    def load(
        cls, directory: Path, head: dict[str, Any], labels: list[str], multilabel: bool
    ) -> NLIClassifier:
        """The classifier saved in `directory` with `head` from its meta."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        nli = AutoModelForSequenceClassification.from_pretrained(directory, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        return cls(nli, tokenizer, labels, head["hypothesis_template"], multilabel)


def _label_names(config: PretrainedConfig) -> dict[int, str]:
    return {int(index): str(name) for index, name in config.id2label.items()}


def entailment_index(config: PretrainedConfig) -> int:
    """The class of `config` named entailment (as the transformers pipeline finds it)."""
    names = _label_names(config)
    found = [i for i, name in names.items() if name.lower().startswith("entail")]
    if not found:
        raise ValueError(
            f"the model's labels {list(names.values())} have no 'entailment'; zero-shot "
            "classification needs an NLI cross-encoder (e.g. trained on MNLI) whose config.json "
            "id2label names its entailment class"
        )
    return found[0]


def contrast_indices(config: PretrainedConfig, entailment: int) -> list[int]:
    """The classes entailment is weighed against per label: contradiction, else all the rest."""
    names = _label_names(config)
    contradiction = [i for i, name in names.items() if name.lower().startswith("contradict")]
    return contradiction or [i for i in names if i != entailment]
