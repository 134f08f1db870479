"""Prompt-based classification with a masked LM (PET-style).

A template such as "{text} It was {mask}." wraps every text, and a verbalizer maps each label to
words ("positive": ["great"]); a label's logit is the mean of its words' MLM logits at the mask.
Zero-shot uses the pretrained MLM as it is; few-shot fine-tunes it through the template, so the
classifier starts from what pretraining learned instead of from a random head.

The helpers that rebuild model inputs from a task's encoding of the text alone (`SpecialTokens`,
`position_limit`, `pad_rows`) are shared with the NLI head.
"""

from __future__ import annotations

from pathlib import Path
from string import Formatter
from typing import TYPE_CHECKING, Any

import torch

from bridgetune.data.batching import padded
from bridgetune.heads import HEADS, HeadOutput

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ADVICE = (
    "prompt-based learning needs a model trained with MLM such as bert-base-uncased or "
    "roberta-base. For this model use the contrastive few-shot mode or zero-shot from label "
    "descriptions"
)


class PromptError(ValueError):
    """A template, verbalizer or model that prompt-based learning cannot use; says what to do."""


class SpecialTokens:
    """Where a tokenizer puts special tokens and token types around one text or a text pair.

    Transformers 5 tokenizers no longer offer `build_inputs_with_special_tokens`, so the layout is
    read once from the encoding of dummy texts: a list of (special token id, or None for the next
    sequence; token type).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.single = _read_layout(tokenizer, ["a"])
        self.pair = _read_layout(tokenizer, ["a", "b"])
        slot = [token for token, _ in self.single].index(None)
        self.lead, self.trail = slot, len(self.single) - slot - 1

    def count(self, sequences: int) -> int:
        """How many special tokens wrap `sequences` (1 or 2) sequences."""
        layout = self.single if sequences == 1 else self.pair
        return sum(token is not None for token, _ in layout)

    def texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
        """The text ids of a right-padded batch of single-text encodings, specials removed."""
        lengths = attention_mask.sum(dim=1).tolist()
        return [row[self.lead : n - self.trail] for row, n in zip(input_ids.tolist(), lengths)]

    def wrap(self, *sequences: list[int]) -> tuple[list[int], list[int]]:
        """Input ids and token type ids of one or two sequences with the special tokens added."""
        remaining = iter(sequences)
        ids: list[int] = []
        types: list[int] = []
        for token, type_id in self.single if len(sequences) == 1 else self.pair:
            part = [token] if token is not None else next(remaining)
            ids += part
            types += [type_id] * len(part)
        return ids, types


def _read_layout(tokenizer: Any, texts: list[str]) -> list[tuple[int | None, int]]:
    lengths = iter(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    encoded = tokenizer(*texts, return_special_tokens_mask=True, return_token_type_ids=True)
    ids, types = encoded["input_ids"], encoded["token_type_ids"]
    special = encoded["special_tokens_mask"]
    layout: list[tuple[int | None, int]] = []
    i = 0
    while i < len(ids):
        if special[i]:
            layout.append((ids[i], types[i]))
            i += 1
        else:
            layout.append((None, types[i]))
            i += next(lengths)
    return layout


def position_limit(model: PreTrainedModel, tokenizer: Any) -> int:
    """The longest input `model` takes.

    RoBERTa-style embeddings number positions from padding_idx + 1, so their first slots of the
    position table are never usable.
    """
    limit = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    offset = getattr(getattr(model.base_model, "embeddings", None), "padding_idx", None)
    if offset is not None:
        limit -= offset + 1
    return min(limit, tokenizer.model_max_length)


def pad_rows(
    rows: list[tuple[list[int], list[int]]],
    pad_id: int,
    device: torch.device,
    token_types: bool,
) -> dict[str, torch.Tensor]:
    """Model inputs for (ids, token types) rows, right-padded to the longest rounded up to 8."""
    width = padded(max(len(ids) for ids, _ in rows))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    type_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, types) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        type_ids[i, : len(types)] = torch.tensor(types)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_types:
        batch["token_type_ids"] = type_ids
    return {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}


@HEADS.register("prompt")
class PromptClassifier(torch.nn.Module):
    """A masked LM scoring verbalizer words at the template's mask slot (PET)."""

    def __init__(
        self,
        mlm: PreTrainedModel,
        tokenizer: Any,
        template: str,
        verbalizer: dict[str, list[str]],
        labels: list[str],
        multilabel: bool = False,
    ) -> None:
        """Check the template and verbalizer against the tokenizer.

        Args:
            mlm: a masked LM with a trained head (see `load_masked_lm`).
            tokenizer: its tokenizer; must have a mask token.
            template: "{text}" and "{mask}" once each, e.g. "{text} It was {mask}.".
            verbalizer: label -> words; every word must be one token after a space.
            labels: the task's labels, in logit order.
            multilabel: sigmoid/BCE per label instead of softmax/cross-entropy.

        Raises:
            PromptError: a bad template, a label without words, an unknown label, or a word
                that is not a single token.
        """
        super().__init__()
        self.mlm = mlm
        self.tokenizer = tokenizer
        self.template = template
        self.labels = list(labels)
        self.multilabel = multilabel
        self.verbalizer = check_verbalizer(verbalizer, self.labels)
        self.prefix, self.suffix = encode_template(template, tokenizer)
        self.layout = SpecialTokens(tokenizer)
        self.budget = (
            position_limit(mlm, tokenizer)
            - self.layout.count(1)
            - len(self.prefix)
            - len(self.suffix)
        )
        if self.budget < 1:
            raise PromptError(f"template {template!r} leaves no room for the text; shorten it")
        word_ids, weights = verbalizer_weights(self.verbalizer, tokenizer)
        self.register_buffer("word_ids", word_ids, persistent=False)
        self.register_buffer("word_weights", weights, persistent=False)

    def build_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Template-wrapped model inputs for a batch of text encodings, and the mask positions.

        Only the text is truncated, so the template and its mask always fit.
        """
        rows, positions = [], []
        for text in self.layout.texts(input_ids, attention_mask):
            text = text[: self.budget]
            rows.append(self.layout.wrap(self.prefix + text + self.suffix))
            positions.append(self.layout.lead + self._mask_offset(len(text)))
        pad_id = self.tokenizer.pad_token_id or 0
        token_types = "token_type_ids" in self.tokenizer.model_input_names
        return pad_rows(rows, pad_id, input_ids.device, token_types), positions

    def _mask_offset(self, text_length: int) -> int:
        mask_id = self.tokenizer.mask_token_id
        if mask_id in self.prefix:
            return self.prefix.index(mask_id)
        return len(self.prefix) + text_length + self.suffix.index(mask_id)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> HeadOutput:
        """Label logits (texts, labels) for the task's encodings of the texts alone.

        `token_type_ids` of the text alone are ignored: the template gets its own.
        """
        batch, positions = self.build_inputs(input_ids, attention_mask)
        vocab_logits = self.mlm(**batch).logits
        rows = torch.arange(len(positions), device=vocab_logits.device)
        at_mask = vocab_logits[rows, torch.tensor(positions, device=vocab_logits.device)]
        logits = at_mask[:, self.word_ids].float() @ self.word_weights.float().T
        return HeadOutput(logits)

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the MLM (safetensors) and return the head's entry for bridgetune.json."""
        self.mlm.save_pretrained(directory)
        return {"type": "prompt", "template": self.template, "verbalizer": self.verbalizer}

    @classmethod
    def load(
        cls, directory: Path, head: dict[str, Any], labels: list[str], multilabel: bool
    ) -> PromptClassifier:
        """The classifier saved in `directory` (its MLM and tokenizer) with `head` from its meta."""
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        mlm = AutoModelForMaskedLM.from_pretrained(directory, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        return cls(mlm, tokenizer, head["template"], head["verbalizer"], labels, multilabel)


def check_verbalizer(verbalizer: dict[str, Any], labels: list[str]) -> dict[str, list[str]]:
    """The verbalizer in label order, each label with a non-empty list of words."""
    missing = [label for label in labels if label not in verbalizer]
    if missing:
        raise PromptError(
            f"the verbalizer has no words for label(s) {missing}; it has {list(verbalizer)}. "
            f"Give every label one or more words, e.g. {{{missing[0]!r}: ['word']}}"
        )
    unknown = [label for label in verbalizer if label not in labels]
    if unknown:
        raise PromptError(
            f"the verbalizer maps unknown label(s) {unknown}; the labels are {labels}. "
            "Fix their spelling or remove them"
        )
    words = {
        label: [verbalizer[label]] if isinstance(verbalizer[label], str) else verbalizer[label]
        for label in labels
    }
    empty = [label for label, group in words.items() if not group]
    if empty:
        raise PromptError(f"the verbalizer gives no words for label(s) {empty}; add at least one")
    return {label: list(group) for label, group in words.items()}


def word_token(word: str, label: str, tokenizer: Any) -> int:
    """The single token `word` is after a space (how BPE vocabularies spell a word mid-text)."""
    ids = tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise PromptError(
            f"verbalizer word {word!r} for label {label!r} is not one token of the model's "
            f"vocabulary (it tokenizes as {pieces}); choose a different word that is a single "
            "token, such as a shorter or more common synonym"
        )
    return ids[0]


def verbalizer_weights(
    verbalizer: dict[str, list[str]], tokenizer: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of all words, and a (labels, words) matrix that averages each label's words."""
    word_ids: list[int] = []
    weights = torch.zeros(len(verbalizer), sum(len(words) for words in verbalizer.values()))
    for row, (label, words) in enumerate(verbalizer.items()):
        weights[row, len(word_ids) : len(word_ids) + len(words)] = 1 / len(words)
        word_ids += [word_token(word, label, tokenizer) for word in words]
    return torch.tensor(word_ids), weights


def encode_template(template: str, tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids of the template before and after {text}, with the mask token in its slot."""
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise PromptError("the tokenizer has no mask token; " + ADVICE)
    try:
        parts = list(Formatter().parse(template))
    except ValueError as error:
        raise PromptError(
            f"template {template!r}: {error} (write literal braces as {{{{ }}}})"
        ) from error
    fields = [field for _, field, _, _ in parts if field is not None]
    if sorted(fields) != ["mask", "text"]:
        raise PromptError(
            f"template {template!r} must contain {{text}} and {{mask}} once each and no other "
            f"fields (it has {fields}), e.g. '{{text}} It was {{mask}}.'"
        )
    sides: list[list[int]] = [[]]
    for literal, field, _, _ in parts:
        if field == "mask":
            # The predicted word carries the space (verbalizer words are spelled after a space,
            # and RoBERTa's mask token absorbs the space before it the same way).
            literal = literal.rstrip()
        if literal:
            sides[-1] += tokenizer(literal, add_special_tokens=False)["input_ids"]
        if field == "mask":
            sides[-1].append(mask_id)
        elif field == "text":
            sides.append([])
    prefix, suffix = sides
    if (prefix + suffix).count(mask_id) != 1:
        raise PromptError(f"template {template!r} contains the mask token outside {{mask}}")
    return prefix, suffix


def load_masked_lm(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedModel:
    """A masked LM whose LM head was trained (not freshly initialised by transformers).

    Raises:
        PromptError: the model has no masked-LM class or its checkpoint lacks the head.
    """
    from transformers import AutoModelForMaskedLM

    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(
            name_or_path, output_loading_info=True, trust_remote_code=trust_remote_code
        )
    except ValueError as error:  # the architecture has no masked-LM class
        reason = str(error).splitlines()[0]
        raise PromptError(f"{name_or_path} has no masked-LM head ({reason}); {ADVICE}") from error
    # Keys missing outside the base model are the head transformers had to initialise randomly.
    base = set(mlm.base_model.state_dict())
    prefix = mlm.base_model_prefix + "."
    head = sorted(k for k in info["missing_keys"] if not k.startswith(prefix) and k not in base)
    if head:
        raise PromptError(
            f"{name_or_path} has no trained masked-LM head (missing {', '.join(head[:2])}...); "
            + ADVICE
        )
    return mlm
