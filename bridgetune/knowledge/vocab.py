"""Vocabulary extension: tokens the base tokenizer reads badly, added with sensible embeddings.

The bundled MiniLM knows about 244 single CJK characters: the rest of a Chinese sentence becomes
[UNK], so a model cannot tell 浙 from 叶. Byte-level BPE tokenizers (GPT-2, SmolLM2) spell a CJK
character as two or three byte pieces. Domain words (drug names, tickers) split into many
pieces. `model.extend_vocab` adds such units as whole tokens:

- `auto`: from the training text, every CJK character the tokenizer maps to [UNK] or to more
  than one piece, and every other word it maps to [UNK] or to at least `LONG_WORD` pieces, that
  occurs at least `min_count` times; most frequent first, at most `max_tokens`;
- a file: one token per line (blank lines and lines starting with # are skipped).

A new token's embedding starts as the mean of the embeddings of the pieces the old tokenizer
gave it (without [UNK]), else as the mean of all embeddings, so it starts where the model
already read it. The tokenizer (with its added tokens) and the resized model are saved as usual:
plain `transformers` loads them with the same tokens. The summary (tokens added, [UNK] share and
pieces per word before and after, on the training text) goes into bridgetune.json and
`vocab_extension.json` in the run directory.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bridgetune.config import ConfigError, RunConfig
from bridgetune.data.splits import Splits

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_UNIT = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_\u3400-\u9fff\uf900-\ufaff]+")
LONG_WORD = 4  # a non-CJK word in this many pieces or more is a candidate


@dataclass
class VocabExtension:
    """Tokens added to a tokenizer, with what the old tokenizer made of each (for the
    embeddings) and the before/after statistics."""

    added: list[str]
    pieces: dict[str, list[int]] = field(default_factory=dict)  # old piece ids per new token
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)

    def resize(self, model: torch.nn.Module, tokenizer: Any) -> None:
        """Grow `model`'s embeddings to the tokenizer and start each new row (and an untied
        output row) at the mean of its old pieces' rows."""
        if not self.added:
            return
        embeddings = model.get_input_embeddings().weight
        old_rows = embeddings.shape[0]
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        new_ids = tokenizer.convert_tokens_to_ids(self.added)
        targets = [model.get_input_embeddings().weight]
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if output is not None and output.weight is not targets[0]:
            if output.weight.shape[0] == len(tokenizer):  # a language-model head of the vocab
                targets.append(output.weight)
        with torch.no_grad():
            for weight in targets:
                mean = weight[:old_rows].mean(0)
                for token, new in zip(self.added, new_ids):
                    known = [i for i in self.pieces.get(token, []) if i < old_rows]
                    weight[new] = weight[known].mean(0) if known else mean

    def summary(self) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "examples": self.added[:20],
            "before": self.before,
            "after": self.after,
        }


def extend_vocabulary(
    tokenizer: Any,
    texts: Iterable[str],
    source: str,
    min_count: int = 2,
    max_tokens: int = 5000,
) -> VocabExtension:
    """Add tokens to `tokenizer` in place (`source`: "auto" or a file of tokens); see the
    module docstring."""
    texts = list(texts)
    units = Counter(u for text in texts for u in _UNIT.findall(text))
    unk = tokenizer.unk_token_id
    if source == "auto":
        chosen = _candidates(tokenizer, units, min_count, max_tokens)
    else:
        chosen = _read_tokens(Path(source))
    vocabulary = tokenizer.get_vocab()
    chosen = [t for t in chosen if t not in vocabulary]
    pieces = {t: [i for i in _piece_ids(tokenizer, t) if i != unk] for t in chosen}
    before = statistics(tokenizer, units)
    if chosen:
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(t, single_word=False, normalized=True) for t in chosen])
    return VocabExtension(chosen, pieces, before, statistics(tokenizer, units))


def _candidates(tokenizer: Any, units: Counter, min_count: int, limit: int) -> list[str]:
    unk = tokenizer.unk_token_id
    found = []
    for unit, count in units.most_common():
        if count < min_count:
            break
        ids = _piece_ids(tokenizer, unit)
        unknown = unk is not None and unk in ids
        if CJK.fullmatch(unit):
            if unknown or len(ids) > 1:
                found.append(unit)
        elif unknown or len(ids) >= LONG_WORD:
            found.append(unit)
        if len(found) >= limit:
            break
    return found


def _piece_ids(tokenizer: Any, unit: str) -> list[int]:
    return tokenizer(unit, add_special_tokens=False)["input_ids"]


def statistics(tokenizer: Any, units: Counter) -> dict[str, float]:
    """Share of the text's units (CJK characters, words) read as [UNK] (in part), and pieces
    per unit, weighted by how often each occurs."""
    unk = tokenizer.unk_token_id
    total = sum(units.values()) or 1
    unknown = pieces = 0
    for unit, count in units.items():
        ids = _piece_ids(tokenizer, unit)
        pieces += len(ids) * count
        unknown += count if unk is not None and unk in ids else 0
    return {"unk_share": round(unknown / total, 4), "pieces_per_unit": round(pieces / total, 3)}


def _read_tokens(path: Path) -> list[str]:
    from bridgetune.data.schema import DataError
    from bridgetune.knowledge.words import read_word_list

    missing = "no token file there (model.extend_vocab: auto, or a file with one token per line)"
    tokens = []
    for number, token in read_word_list(path, missing):
        if any(c.isspace() for c in token):
            raise DataError(f"{path}:{number}: a token has no white space inside ({token!r})")
        tokens.append(token)
    return list(dict.fromkeys(tokens))


def example_texts(examples: Iterable[Any]) -> Iterable[str]:
    """The text of examples of any task (text, text pair, candidates, generation targets)."""
    for example in examples:
        yield example.text
        if example.text_pair:
            yield example.text_pair
        yield from example.candidates or []
        label = example.label
        if isinstance(label, dict):
            if isinstance(label.get("completion"), str):
                yield label["completion"]
            for message in label.get("messages") or []:
                yield message.get("content") or ""


CJK_MOSTLY = 0.5  # share of a text's letters that are CJK characters
UNK_MANY = 0.2  # share of those CJK characters the tokenizer reads as [UNK]
SAMPLE = 2000  # examples looked at for the suggestion


def chinese_model_advice(tokenizer: Any, texts: Iterable[str]) -> str | None:
    """A suggestion to use the multilingual encoder when the text is mostly CJK characters
    (at least CJK_MOSTLY of its letters, on the first SAMPLE texts) and the tokenizer reads at
    least UNK_MANY of those characters as [UNK]; None otherwise (or without an [UNK] token)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return None
    characters: Counter = Counter()
    letters = 0
    for index, text in enumerate(texts):
        if index >= SAMPLE:
            break
        characters.update(CJK.findall(text))
        letters += sum(1 for c in text if c.isalnum())
    cjk = sum(characters.values())
    if not cjk or cjk < CJK_MOSTLY * letters:
        return None
    unknown = sum(n for c, n in characters.items() if unk in _piece_ids(tokenizer, c))
    if unknown < UNK_MANY * cjk:
        return None
    return (
        f"the training text is {cjk / max(letters, 1):.0%} Chinese characters and this model "
        f"reads {unknown / cjk:.0%} of them as [UNK]: a model that reads Chinese does better "
        "(`bridgetune models pull multilingual` once, then model.name: multilingual; "
        "docs/chinese.md), or model.extend_vocab: auto teaches this one the characters"
    )


def extended_vocabulary(cfg: RunConfig, tokenizer: Any, splits: Splits) -> Any:
    """model.extend_vocab applied to `tokenizer` (bridgetune.knowledge.vocab), reported; None
    when the config does not ask for it (then, for mostly Chinese text the tokenizer cannot
    read, the suggestion of `chinese_model_advice` is printed)."""
    from rich.console import Console

    if not cfg.model.extend_vocab:
        advice = chinese_model_advice(tokenizer, example_texts(splits.train))
        if advice:
            Console(stderr=True).print(f"[yellow]note:[/yellow] {advice}")
        return None

    if cfg.method.name != "full":
        raise ConfigError(
            f"model.extend_vocab needs the new embeddings to train: method.name: full (not "
            f"{cfg.method.name})"
        )
    extension = extend_vocabulary(
        tokenizer,
        example_texts(splits.train),
        cfg.model.extend_vocab,
        cfg.model.extend_vocab_min_count,
        cfg.model.extend_vocab_max_tokens,
    )
    before, after = extension.before, extension.after
    Console(stderr=True).print(
        f"vocabulary: {len(extension.added)} tokens added (e.g. {' '.join(extension.added[:8])}); "
        f"[UNK] share of the training text {before['unk_share']:.1%} -> {after['unk_share']:.1%}, "
        f"pieces per word {before['pieces_per_unit']} -> {after['pieces_per_unit']}"
    )
    return extension
