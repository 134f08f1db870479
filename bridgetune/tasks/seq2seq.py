"""Encoder-decoder fine-tuning (T5, BART, Marian): summarization, translation, rewriting.

Data as for causal_lm's plain forms (GenerationReader): a prompt (the source) and its
completion (the target), or alpaca rows, or line-aligned parallel files (`data.format:
parallel`); several references per source score generations, the first trains. The encoder
reads the source (cut at max_length); the decoder is trained on the whole target, which always
ends with EOS (appended where the tokenizer does not). Teacher forcing is built here, not by the
model: the decoder's input is the target shifted right behind the model's decoder start token,
so the loop computes the loss from the logits as for every task. A T5 task prefix ("summarize:
") goes into `task.prompt_template`.

Dev is scored by loss and perplexity during training and by ROUGE/BLEU/chrF of greedy
generations at the end (bridgetune.inference.generation), like causal_lm.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from bridgetune.data.bounds import clip_content, clip_text
from bridgetune.data.schema import Example
from bridgetune.models.pretrained import load_generator
from bridgetune.tasks.base import TASKS, Feature, pad_batch
from bridgetune.tasks.causal_lm import CausalLMTask, PromptOptions
from bridgetune.tasks.losses import IGNORE
from bridgetune.tasks.prompts import prompt_encodings


@TASKS.register("seq2seq")
class Seq2SeqTask(CausalLMTask):
    """A generative encoder-decoder fine-tuned on (source, target) pairs; no labels."""

    name = "seq2seq"
    auto_class = "AutoModelForSeq2SeqLM"
    problem = "seq2seq"
    packs = False
    Options = PromptOptions  # no packing, no chat turns: it reads (source, target) rows

    def __init__(
        self,
        labels: list[str],
        decoder_start: int | None = None,
        prompts: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(labels, chat=False, prompts=prompts)
        self.decoder_start = decoder_start  # the model's decoder_start_token_id

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> Seq2SeqTask:
        return cls(labels, settings.get("decoder_start"), cls.prompt_options(settings))

    def output_layer(self, model: torch.nn.Module) -> torch.nn.Module | None:
        return None  # the decoder's logits are all scored: no positions to skip

    def settings(self) -> dict[str, Any]:
        return {"decoder_start": self.decoder_start, **self.prompts}

    def build_model(self, name_or_path: str, **kwargs: Any) -> torch.nn.Module:
        from transformers import AutoModelForSeq2SeqLM

        model = load_generator(AutoModelForSeq2SeqLM, name_or_path, **kwargs)
        start = model.config.decoder_start_token_id
        if start is None:
            raise ValueError(
                f"{name_or_path}: the model config has no decoder_start_token_id; set it in "
                "its config.json (T5: the pad id, BART: the EOS id)"
            )
        self.decoder_start = int(start)
        return model

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        """Source ids cut at max_length; target ids (+ EOS) cut at max_length as labels."""
        eos = tokenizer.eos_token_id
        self.warn_control_tokens(examples, tokenizer)
        # sources and targets are content: the tokenizer's control tokens in them are text
        texts = [clip_text(e.text, max_length) for e in examples]  # bounded memory
        sources = [s.ids for s in prompt_encodings(tokenizer, texts, self.prompt_template)]
        targets = [
            clip_content(e.label.get("completion"), max_length)
            if isinstance(e.label, dict) else None
            for e in examples
        ]  # fmt: skip
        labelled = [t for t in targets if t is not None]
        encoded = iter(e.ids for e in prompt_encodings(tokenizer, labelled, target=True))
        features = []
        for ids, target in zip(sources, targets):
            labels = None
            truncated = len(ids) > max_length
            if truncated:  # a cut source keeps its closing EOS, as the tokenizer would
                ids = ids[: max_length - 1] + ids[-1:] if ids[-1] == eos else ids[:max_length]
            if target is not None:
                labels = list(next(encoded))
                if not labels or labels[-1] != eos:
                    labels.append(eos)
                truncated = truncated or len(labels) > max_length
                labels = labels[:max_length]
            features.append({"input_ids": ids, "labels": labels, "truncated": truncated})
        return features

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        """Sources padded; with targets, labels (IGNORE-padded) and the decoder's input: the
        targets shifted right behind the decoder start token."""
        batch = pad_batch([{"input_ids": f["input_ids"]} for f in features], pad_id)
        start = pad_id if self.decoder_start is None else self.decoder_start
        if features[0].get("labels") is None:  # nothing to score: the decoder's first step
            batch["decoder_input_ids"] = torch.full((len(features), 1), start, dtype=torch.long)
            return batch
        longest = max(len(f["labels"]) for f in features)
        labels = torch.full((len(features), longest), IGNORE, dtype=torch.long)
        decoder = torch.full((len(features), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for row, feature in enumerate(features):
            target = feature["labels"]
            labels[row, : len(target)] = torch.tensor(target)
            decoder[row, : len(target)] = torch.tensor([start, *target[:-1]])
            mask[row, : len(target)] = 1
        batch.update(labels=labels, decoder_input_ids=decoder, decoder_attention_mask=mask)
        return batch

    def collate_train(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        return self.collate(features, pad_id)

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]:
        """Each example's summed loss over its target tokens (dev loss)."""
        predictions = []
        for row, feature in enumerate(features):
            target = torch.tensor(feature["labels"] or [], dtype=torch.long)
            n = len(target)
            nll = 0.0
            if n:
                nll = F.cross_entropy(
                    logits[row, :n].float(), target.to(logits.device), reduction="sum"
                ).item()
            predictions.append({"nll": nll, "tokens": n, "truncated": feature["truncated"]})
        return predictions
