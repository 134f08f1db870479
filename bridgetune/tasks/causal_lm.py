"""Supervised fine-tuning of decoder-only language models (instructions, dialogues).

Data (GenerationReader, below): a prompt and its completion, or a chat
conversation. The loss counts the completion, or every assistant turn, and nothing else; which
tokens those are is computed here from the rendered text (character spans of the assistant
turns in the chat template's output, then the tokens over them), not from `{% generation %}`
markers, which most templates lack. The end of an answer is always trained: the chat
template's end-of-turn token, or EOS appended to a plain completion (also when the pad token
is EOS: padding is masked by length, never by token id). A conversation trains with the
model's chat template, or ChatML when it has none; the template used is saved with the
tokenizer, so generation formats prompts as training did. Contents are text: a control token
typed in a row (`<|im_end|>`, `</s>`) is encoded as text, as the service encodes it
(bridgetune.tasks.prompts), and `encode` warns once where a dataset holds any.

During training, dev is scored by loss and perplexity (`decode` returns each example's summed
loss); `Predictor.generate` writes text (greedy by default, left-padded batches).

One module (about 500 lines) because reading the rows, their prompt options, the chat template
and packing all define what one training example is; split, each half would need the other.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridgetune.config import DataConfig, RunConfig
from bridgetune.data.batching import padded
from bridgetune.data.bounds import clip_content
from bridgetune.data.readers import row_examples
from bridgetune.data.schema import DataError, Example
from bridgetune.models.pretrained import load_generator
from bridgetune.tasks.base import TASKS, Feature, Task, pad_batch
from bridgetune.tasks.losses import IGNORE
from bridgetune.tasks.metrics import loss_metrics
from bridgetune.tasks.predictions import LossPrediction
from bridgetune.tasks.prompts import (
    encode_marked,
    fill_template,
    marked_messages,
    prompt_encodings,
    render,
    template_content,
    unmarked_text,
    warn_control_tokens,
)

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class GenerationReader:
    """Rows for supervised fine-tuning of a generative model (JSONL, or CSV/TSV for the plain
    forms), one of:

    - `messages`: a conversation, a list of {role, content} (role: system, user, assistant;
      other speaker names through `task.role_map`; dialogue corpora's {speaker, text} turns are
      read too), multi-turn, optional system turn;
    - `prompt` and `completion`: a plain prompt and the text that follows it;
    - `instruction`, optional `input`, `output` (alpaca): the prompt is the instruction, and the
      input after a blank line;
    - with `data.format: parallel`, line-aligned source and target text files (translation).

    A prompt given as a list of strings (sentences) is joined with spaces; a completion given
    as a list holds several references: the first is trained, all of them score generations.
    `prompt_template` wraps each prompt ("Summarize: {prompt}"); `as_chat` makes a
    prompt/completion row a user turn and an assistant turn (trained through the chat
    template); `role_map` names speakers. They are the task's options (`task.prompt_template`,
    `task.as_chat`, `task.role_map`), given to the reader by `Task.configured_reader`.

    `data.column_map` renames other layouts onto these. An example keeps the prompt in `text`
    and the target in `label` ({"completion": ...} or {"messages": [...]}). Unknown roles, a
    conversation without an assistant turn (nothing to learn), and empty completions are
    errors naming the file and line.
    """

    prompt_template: str | None = None
    as_chat: bool = False
    role_map: dict[str, str] = field(default_factory=dict, hash=False)
    tagged = False

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        return row_examples(
            self._example, path, cfg, labelled, "generation reads JSONL rows", parallel=True
        )

    def read_row(self, row: dict[str, Any], cfg: DataConfig, where: tuple[Path, int]) -> Example:
        return self._example(row, cfg, where, labelled=True)

    def _example(
        self, raw: dict[str, Any], cfg: DataConfig, where: tuple[Path, int], labelled: bool
    ) -> Example:
        path, number = where
        at = f"{path}:{number}"
        row = {cfg.column_map.get(k, k): v for k, v in raw.items()}
        if "messages" in row:
            messages = self._messages(row["messages"], at)
            if labelled and not any(m["role"] == "assistant" for m in messages):
                raise DataError(
                    f"{at}: the conversation has no assistant turn, so there is nothing to "
                    "learn; add the reply, or map its speaker to 'assistant' in task.role_map"
                )
            prompt = next((m["content"] for m in messages if m["role"] == "user"), "")
            return Example(text=prompt, label={"messages": messages}, source=at)
        if "prompt" in row:
            prompt, completion = row["prompt"], row.get("completion")
        elif "instruction" in row:
            prompt = _text(row["instruction"], "instruction", at)
            extra = row.get("input")
            if isinstance(extra, str) and extra.strip():
                prompt = f"{prompt}\n\n{extra}"
            completion = row.get("output")
        else:
            raise DataError(
                f"{at}: no generation columns; give 'messages', 'prompt' + 'completion', or "
                f"'instruction' + 'output' (columns: {', '.join(map(str, row))}); rename with "
                "data.column_map"
            )
        prompt = fill_template(self.prompt_template, _text(_joined(prompt), "prompt", at))
        if not labelled:
            return Example(text=prompt, source=at)
        if isinstance(completion, list) and completion:  # several references: train the first
            references = [_text(c, f"completion[{i}]", at) for i, c in enumerate(completion)]
            target: dict[str, Any] = {"completion": references[0], "references": references}
        else:
            target = {"completion": _text(completion, "completion", at)}
        if self.as_chat:
            turns = [{"role": "user", "content": prompt},
                     {"role": "assistant", "content": target["completion"]}]  # fmt: skip
            return Example(text=prompt, label={**target, "messages": turns}, source=at)
        return Example(text=prompt, label=target, source=at)

    def _messages(self, value: Any, at: str) -> list[dict[str, str]]:
        if not isinstance(value, list) or not value:
            raise DataError(f"{at}: 'messages' must be a non-empty list of {{role, content}}")
        messages = []
        for index, turn in enumerate(value):
            if not isinstance(turn, dict) or not ("content" in turn or "text" in turn):
                raise DataError(f"{at}: messages[{index}] is not a {{role, content}} object")
            content = turn.get("content", turn.get("text"))
            speaker = str(turn.get("role", turn.get("speaker", "")))
            role = self.role_map.get(speaker, speaker)
            if role not in ROLES:
                raise DataError(
                    f"{at}: messages[{index}] has the role {speaker!r}; roles are system, user "
                    f"and assistant: map it with task.role_map, e.g. {{{speaker}: user}}"
                )
            messages.append(
                {"role": role, "content": _text(content, f"messages[{index}] content", at)}
            )
        return messages

    def infer_labels(self, train: list[Example], scheme: str | None) -> list[str]:
        return []  # a generative model has no classes

    def check_label_set(self, labels: list[str], source: str) -> None:
        if labels:
            raise DataError(f"{source}: a generative task has no labels; drop data.labels")

    def stratum(self, example: Example) -> str | None:
        return None


def _joined(value: Any) -> Any:
    """A prompt given as a list of strings (an abstract's sentences) as one text."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return " ".join(v.strip() for v in value)
    return value


def _text(value: Any, name: str, at: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{at}: empty or missing {name}; fill it or remove the row")
    return value


# ChatML (as SmolLM2 and Qwen use it), for models that come without a chat template
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class PromptOptions(BaseModel):
    """`task.*` options of seq2seq (and causal_lm): how a row's prompt is formatted."""

    model_config = ConfigDict(extra="forbid")

    prompt_template: str | None = Field(
        None,
        description="The prompt made from each row's prompt text, e.g. 'Translate English to "
        "German: {prompt}' ({prompt} is the row's prompt); `bridgetune generate` and the "
        "service apply it to prompts too.",
    )

    @field_validator("prompt_template")
    @classmethod
    def _has_slot(cls, value: str | None) -> str | None:
        if value is not None and "{prompt}" not in value:
            raise ValueError("must contain {prompt} (where the row's prompt goes)")
        return value


class GenerationOptions(PromptOptions):
    """`task.*` options of causal_lm."""

    as_chat: bool = Field(
        False,
        description="Train prompt/completion rows as a user turn and an assistant turn in the "
        "model's chat template (instruction-tuned models answer best so).",
    )
    role_map: dict[str, str] = Field(
        default_factory=dict,
        description="Speaker names of `messages` mapped to system/user/assistant, e.g. "
        "{customer: user, agent: assistant}.",
    )
    packing: bool = Field(
        False,
        description="Pack the examples of a batch into rows of up to max_length "
        "tokens (positions restart per example, no attention across examples).",
    )


@TASKS.register("causal_lm")
class CausalLMTask(Task):
    """A generative model fine-tuned on completions or conversations; no labels."""

    name = "causal_lm"
    auto_class = "AutoModelForCausalLM"
    problem = "lm"
    default_metric = "loss"
    lower_is_better = frozenset({"loss", "perplexity"})
    default_method = "lora"  # used when a config names no method
    takes_pairs = False
    output = "generation"
    generative = True
    packs = True  # task.packing: several examples per training row
    Options = GenerationOptions
    prediction = LossPrediction
    reader = GenerationReader()

    def __init__(
        self,
        labels: list[str],
        chat: bool | None = None,
        pack_length: int | None = None,
        prompts: dict[str, Any] | None = None,
    ) -> None:
        self.labels = labels
        self.chat = chat  # trained on conversations (prompts go through the chat template)
        self.pack_length = pack_length  # task.packing: rows of up to this many tokens
        self.keep_logits = False  # the model takes `logits_to_keep` (set by build_model)
        self.prompts = {k: v for k, v in (prompts or {}).items() if v}  # the reader's options

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> CausalLMTask:
        pack = settings.get("max_length") if settings.get("packing") else None
        return cls(labels, settings.get("chat"), pack, cls.prompt_options(settings))

    @classmethod
    def prompt_options(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """The options of `settings` that format prompts (the reader's fields)."""
        keys = set(cls.Options.model_fields) & set(GenerationReader.__dataclass_fields__)
        return {key: settings[key] for key in keys if settings.get(key) is not None}

    @classmethod
    def configured_reader(cls, options: dict[str, Any]) -> GenerationReader:
        """The reader with the run's prompt options (template, chat turns, role names)."""
        return dataclasses.replace(cls.reader, **cls.prompt_options(options))

    def settings(self) -> dict[str, Any]:
        """What bridgetune.json keeps for `create` (how prompts are formatted)."""
        return {"chat": bool(self.chat), **self.prompts}

    @property
    def prompt_template(self) -> str | None:
        """`task.prompt_template`: its own text is a plain prompt's structure, the rest
        content (bridgetune.tasks.prompts)."""
        return self.prompts.get("prompt_template")

    def warn_control_tokens(self, examples: list[Example], tokenizer: Any) -> int:
        """One warning line when examples hold the tokenizer's control tokens in their text
        (they are encoded as text); how many do."""
        rows = []
        for example in examples:
            target = example.label if isinstance(example.label, dict) else {}
            if "messages" in target:
                contents = [m["content"] for m in target["messages"]]
            else:
                filled = template_content(self.prompt_template, example.text)
                prompt = example.text if filled is None else filled
                contents = [prompt, target.get("completion") or ""]
            rows.append((example.source, contents))
        return warn_control_tokens(tokenizer, rows)

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Options for classes or encoders that a language model cannot take."""
        used = [
            key
            for key, value in (
                ("train.class_weights", cfg.train.class_weights is not None),
                ("train.label_smoothing", cfg.train.label_smoothing > 0),
                ("train.rdrop", cfg.train.rdrop > 0),
                ("augment.ops", bool(cfg.augment.ops)),
            )
            if value
        ]
        if used:
            raise ValueError(f"{', '.join(used)}: not for {cls.name}; remove them")
        if cfg.method.name in ("prompt", "ptuning", "prefix", "head_only"):
            raise ValueError(
                f"method.name={cfg.method.name!r} is for encoders with a task head; for "
                f"{cls.name} use lora (the default), ia3, bitfit (models with biases) or full"
            )

    def build_model(self, name_or_path: str, **kwargs: Any) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        model = load_generator(AutoModelForCausalLM, name_or_path, **kwargs)
        # with pad == eos (SmolLM2, many chat models) the embedding's padding_idx is the EOS
        # row, which then never gets a gradient: full fine-tuning could not learn to end (and
        # with tied embeddings, nor to predict EOS). Padding is masked by length and labels.
        embeddings = model.get_input_embeddings()
        if getattr(embeddings, "padding_idx", None) is not None:
            embeddings.padding_idx = None
        self.keep_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        return model

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        """Token ids and labels (IGNORE outside the trained text), cut at max_length."""
        if self.chat is None:
            self.chat = any(isinstance(e.label, dict) and "messages" in e.label for e in examples)
        if self.chat and not tokenizer.chat_template:
            tokenizer.chat_template = CHATML  # saved with the tokenizer, used by generate
        self.warn_control_tokens(examples, tokenizer)
        features = []
        clip = functools.partial(clip_content, max_length=max_length)  # bounded memory
        for example in examples:
            target = example.label if isinstance(example.label, dict) else {}
            if "messages" in target:
                messages = [{**m, "content": clip(m.get("content"))} for m in target["messages"]]
                ids, labels = conversation_tokens(tokenizer, messages)
            else:
                ids, labels = completion_tokens(
                    tokenizer, clip(example.text), clip(target.get("completion")),
                    self.prompt_template,
                )  # fmt: skip
            truncated = len(ids) > max_length
            features.append(
                {
                    "input_ids": ids[:max_length],
                    "labels": labels[:max_length] if example.label is not None else None,
                    "truncated": truncated,
                }
            )
        return features

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        """Right-padded rows; with labels, `logits_to_keep` when the model takes it (see
        `kept_logits`)."""
        return self.kept(pad_batch(features, pad_id, label_pad=IGNORE))

    def output_layer(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The output layer: the loss runs it on scored positions only (Objective)."""
        return model.get_output_embeddings()

    def collate_train(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        """Training batches: with task.packing, the batch's examples packed (first fit, in
        order) into rows of up to max_length tokens; see `pack`."""
        if not self.pack_length:
            return self.collate(features, pad_id)
        return self.kept(pack(features, pad_id, self.pack_length))

    def kept(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.keep_logits and "labels" in batch:
            columns = kept_logits(batch["labels"])
            if columns is not None:
                batch["logits_to_keep"] = columns
        return batch

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]:
        """Each example's summed next-token loss over its target tokens (dev loss). The logits
        may cover only the batch's last columns (`kept_logits`): column k is position
        `offset + k`, and no position before `offset` predicts a target."""
        offset = padded(max(len(f["input_ids"]) for f in features)) - logits.shape[1]
        predictions = []
        for row, feature in enumerate(features):
            labels = torch.tensor(feature["labels"] or [], dtype=torch.long)
            n = len(labels)
            scored = labels[1:] != IGNORE
            nll = 0.0
            if n - 1 > offset and scored.any():
                nll = F.cross_entropy(
                    logits[row, : n - 1 - offset].float(), labels[offset + 1 :].to(logits.device),
                    reduction="sum", ignore_index=IGNORE,
                ).item()  # fmt: skip
            predictions.append(
                {"nll": nll, "tokens": int(scored.sum()), "truncated": feature["truncated"]}
            )
        return predictions

    def calibrate(
        self, predictions: list[dict[str, Any]], examples: list[Example]
    ) -> list[dict[str, Any]]:
        return predictions

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict:
        return loss_metrics(predictions)

    def monitor_signal(self, prediction: dict[str, Any]) -> tuple[list[str], float | None]:
        return [], None

    def counted_labels(self, prediction: dict[str, Any]) -> list[str]:
        return []

    def feedback_label(self, label: Any, entities: list[dict] | None, text: str) -> Any:
        """The corrected answer text."""
        if not isinstance(label, str) or not label.strip():
            raise ValueError("give 'label': the answer the model should have given")
        return label


def kept_logits(labels: torch.Tensor) -> torch.Tensor | None:
    """The columns whose logits the loss reads: from the one before the batch's first target
    token to the end (transformers' `logits_to_keep` as indices), or None when that is every
    column. The output layer and the softmax over the vocabulary then skip the prompts: in a
    batch of long prompts with short answers, most of a step's work on a small model."""
    scored = labels != IGNORE
    rows = scored.any(dim=1)
    if not rows.any():
        return None
    start = int(scored.int().argmax(dim=1)[rows].min()) - 1
    return torch.arange(start, labels.shape[1]) if start > 0 else None


def pack(features: list[Feature], pad_id: int, length: int) -> dict[str, torch.Tensor]:
    """Examples packed into rows of at most `length` tokens: `position_ids` restart at 0 for
    every example and no `attention_mask` is given, which transformers reads as packed
    sequences (a block-diagonal causal mask: no attention across examples). The first token of
    every example is never a target, so no example learns from the one before it; the padding
    at a row's end is a sequence of its own and is not trained.

    Rows are balanced: as few rows as the tokens need, each example (longest first) into the
    emptiest row it fits, so all rows end near the same length and little is padding (first
    fit would fill rows to `length` and pad the last one to it)."""
    total = sum(len(f["input_ids"]) for f in features)
    rows: list[list[Feature]] = [[] for _ in range(max(1, -(-total // length)))]
    sizes = [0] * len(rows)
    for feature in sorted(features, key=lambda f: -len(f["input_ids"])):
        n = len(feature["input_ids"])
        fits = [i for i, size in enumerate(sizes) if size + n <= length]
        if fits:
            row = min(fits, key=sizes.__getitem__)
        else:
            rows.append([])
            sizes.append(0)
            row = len(rows) - 1
        rows[row].append(feature)
        sizes[row] += n
    rows = [row for row in rows if row]
    sizes = [size for size in sizes if size]
    width = padded(max(sizes))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for feature in row:
            n = len(feature["input_ids"])
            ids[r, at : at + n] = torch.tensor(feature["input_ids"])
            target = torch.tensor(feature["labels"])
            target[0] = IGNORE
            labels[r, at : at + n] = target
            positions[r, at : at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(width - at)
    return {"input_ids": ids, "position_ids": positions, "labels": labels}


def completion_tokens(
    tokenizer: Any, prompt: str, completion: str | None, template: str | None = None
) -> tuple[list[int], list[int]]:
    """Prompt ids (not trained) + completion ids + EOS (trained). Prompt and completion are
    tokenized apart, as generation sees them (the prompt alone, then new tokens); both are
    content, encoded as text (only `template`'s own text is structure)."""
    ids = prompt_encodings(tokenizer, [prompt], template)[0].ids
    labels = [IGNORE] * len(ids)
    if completion is None:
        return ids, labels
    tail = prompt_encodings(tokenizer, [completion], add_special_tokens=False)[0].ids
    tail = [*tail, tokenizer.eos_token_id]
    return ids + tail, labels + tail


def conversation_tokens(tokenizer: Any, messages: list[dict]) -> tuple[list[int], list[int]]:
    """The rendered conversation's ids, and labels on the assistant turns only.

    Each assistant turn's characters are those between the conversation rendered up to it
    (with the generation prompt) and rendered through it; the tokens over those characters are
    trained, the turn's end-of-turn marker included. A turn whose rendering lacks EOS gets EOS
    appended after it (trained). Contents are encoded as text: only the template writes
    control tokens, EOS included (bridgetune.tasks.prompts).
    """
    turns = marked_messages(tokenizer, messages)
    marked = render(tokenizer, turns)
    text = unmarked_text(marked)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = unmarked_text(render(tokenizer, turns[:index], True)) if index else ""
        through = unmarked_text(render(tokenizer, turns[: index + 1]))
        if not (text.startswith(through) and through.startswith(before)):
            raise ValueError(
                "the chat template renders a conversation's beginning differently from the "
                "whole conversation, so assistant turns cannot be located; use a template whose "
                "output grows turn by turn"
            )
        spans.append((len(before), len(through)))
    encoded = encode_marked(tokenizer, [marked], add_special_tokens=False)[0]
    ids, offsets = encoded.ids, encoded.offsets
    labels = [
        token if any(start < b and a < end for start, end in spans) else IGNORE
        for token, (a, b) in zip(ids, offsets)
    ]
    eos = tokenizer.eos_token_id
    for start, end in reversed(spans):
        inside = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
        if any(ids[i] == eos for i in inside):  # the template ends its turns with EOS
            continue
        last = max(inside, default=None)
        if last is not None:
            ids.insert(last + 1, tokenizer.eos_token_id)
            labels.insert(last + 1, tokenizer.eos_token_id)
    return ids, labels
