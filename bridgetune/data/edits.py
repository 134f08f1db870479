"""The units augmenters edit (words, or characters of Chinese text, with their tags) and the edits
shared by every augmenter, rule-based (augment.py) and model-backed (augment_models.py)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

from bridgetune.config import AugmentConfig
from bridgetune.data.io import join_tokens
from bridgetune.data.schema import Example
from bridgetune.data.tags import decode_spans

_CJK_RANGES = "\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef"  # as data/io.py

CJK_CHAR = re.compile(f"[{_CJK_RANGES}]")

_WORD = re.compile(f"[{_CJK_RANGES}]|[^\\s{_CJK_RANGES}]+")

_AFFIXES = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)


class Unit(NamedTuple):
    """A word that ops may change (`entity` None), or an entity mention (NER) kept whole."""

    words: tuple[str, ...]
    entity: str | None = None


class Augmenter(Protocol):
    """Yields augmented versions of an example (none when the op cannot change it)."""

    def __call__(self, example: Example, rng: random.Random) -> Iterator[Example]: ...


@dataclass
class AugmentContext:
    """What a factory may use to build its augmenter; `examples` is the whole split."""

    cfg: AugmentConfig
    tagged: bool  # examples carry word tags (NER): mentions and tags stay aligned
    tokenizer: Any
    model_path: str
    examples: list[Example]
    tag_scheme: str = "IOB2"


Substitute = Callable[[str, random.Random], str | None]


def split_words(text: str) -> list[str]:
    """Words of a text: whitespace-separated, except that each CJK character is one word."""
    return _WORD.findall(text)


def join_words(words: Sequence[str]) -> str:
    """Inverse of `split_words`: a space between two non-CJK words, none next to CJK text."""
    parts: list[str] = []
    for word in words:
        if parts and not CJK_CHAR.match(parts[-1][-1:]) and not CJK_CHAR.match(word[:1]):
            parts.append(" ")
        parts.append(word)
    return "".join(parts)


def split_affixes(word: str) -> tuple[str, str, str]:
    """'(great!' -> ('(', 'great', '!'): ops replace the core and keep the punctuation."""
    lead, core, trail = _AFFIXES.match(word).groups()  # type: ignore[union-attr]
    return lead, core, trail


def encode_tags(units: Sequence[Unit], scheme: str, separator: str = "-") -> list[str]:
    """Tags of the units' tokens in `scheme` (IOB2, IOB1, BIOES or BMES)."""
    tags: list[str] = []
    previous = None
    for unit in units:
        if unit.entity is None:
            tags.append("O")
            previous = None
            continue
        size = len(unit.words)
        if scheme in ("IOB2", "IOB1"):
            first = "B" if scheme == "IOB2" or previous == unit.entity else "I"
            prefixes = [first] + ["I"] * (size - 1)
        else:
            inside = "M" if scheme == "BMES" else "I"
            prefixes = ["S"] if size == 1 else ["B"] + [inside] * (size - 2) + ["E"]
        tags += [f"{prefix}{separator}{unit.entity}" for prefix in prefixes]
        previous = unit.entity
    return tags


def _separator(tags: Sequence[str]) -> str:
    return next((tag[1] for tag in tags if tag != "O" and tag[1:2] in "-_"), "-")


def to_units(example: Example, scheme: str) -> list[Unit] | None:
    """The example as units; None for an untagged token example or tags outside strict spans."""
    if example.tokens is None:
        return [Unit((word,)) for word in split_words(example.text)]
    if example.tags is None:
        return None
    units: list[Unit] = []
    position = 0
    for entity, start, end in decode_spans(example.tags, scheme):
        units += [Unit((token,)) for token in example.tokens[position:start]]
        units.append(Unit(tuple(example.tokens[start:end]), entity))
        position = end
    units += [Unit((token,)) for token in example.tokens[position:]]
    if encode_tags(units, scheme, _separator(example.tags)) != example.tags:
        return None  # ill-formed runs: leave the example alone rather than relabel it
    return units


def from_units(example: Example, units: Sequence[Unit], scheme: str) -> Example:
    """A copy of `example` made of `units`: text (pair and label kept), or tokens/tags/offsets."""
    words = [word for unit in units for word in unit.words]
    if example.tokens is None:
        return replace(example, text=join_words(words))
    text, offsets = join_tokens(words)  # the same text and offsets the readers build
    tags = encode_tags(units, scheme, _separator(example.tags or []))
    return replace(example, text=text, tokens=words, tags=tags, offsets=offsets)


def change_count(n_words: int, p: float) -> int:
    """How many words an op changes: max(1, round(p * n_words))."""
    return max(1, round(p * n_words))


def editable(units: Sequence[Unit]) -> list[int]:
    """Indices of the units ops may change (not entity mentions)."""
    return [index for index, unit in enumerate(units) if unit.entity is None]


def replace_words(
    units: list[Unit], rng: random.Random, p: float, substitute: Substitute
) -> list[Unit] | None:
    """Replace max(1, round(p * n)) words by `substitute(core, rng)`, punctuation kept.

    Words without a substitute (None, or the word itself) are passed over.
    """
    slots = [i for i in editable(units) if split_affixes(units[i].words[0])[1]]
    rng.shuffle(slots)
    units, changed, count = list(units), 0, change_count(len(editable(units)), p)
    for index in slots:
        if changed == count:
            break
        lead, core, trail = split_affixes(units[index].words[0])
        new = substitute(core, rng)
        if new and new != core:
            units[index] = Unit((lead + new + trail,))
            changed += 1
    return units if changed else None


def unit_augmenter(
    edit: Callable[[list[Unit], random.Random], list[Unit] | None], scheme: str
) -> Augmenter:
    """An augmenter from an edit of units: split the example, edit, rebuild."""

    def augment(example: Example, rng: random.Random) -> Iterator[Example]:
        units = to_units(example, scheme)
        edited = edit(units, rng) if units else None
        if edited is not None:
            yield from_units(example, edited, scheme)

    return augment
