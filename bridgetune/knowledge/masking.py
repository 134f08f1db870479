"""Masking for masked-LM pre-training: which tokens are hidden together, and how.

Units (tokens masked together):
- `token`: every token alone (BERT's original masking);
- `whole_word`: every word's tokens together. Words are the tokenizer's own words for spaced
  text; for Chinese, jieba's words (transformers' whole-word collator sees an unspaced Chinese
  run as one word, or, with BERT's tokenizer, every character as a word; neither is a word);
- `knowledge`: whole words, and every occurrence of a phrase of the dictionary (entities,
  product names, terms) as one unit, as ERNIE masks phrases and entities.

About `mask_prob` of a text's tokens are chosen, unit by unit in random order; of those, 80%
become [MASK], 10% a random token and 10% stay (BERT's recipe). The label of a chosen token is
its id; every other position is IGNORE.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import torch

from bridgetune.knowledge.vocab import CJK

MODES = ("token", "whole_word", "knowledge")


def units(
    text: str,
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    mode: str,
    phrases: Sequence[str] = (),
) -> list[int]:
    """The unit of every token (-1: a special token, never masked); see the module docstring.
    `offsets` are the tokens' character spans in `text`, `word_ids` the tokenizer's words."""
    if mode == "token":
        return [i if w is not None else -1 for i, w in enumerate(word_ids)]
    spans = jieba_words(text) if CJK.search(text) else None
    found: list[int] = []
    for (start, end), word in zip(offsets, word_ids):
        if word is None or start == end:
            found.append(-1)
        elif spans is None:
            found.append(word)
        else:
            found.append(_covering(spans, start))
    if mode == "knowledge" and phrases:
        found = _merge_phrases(text, offsets, found, phrases)
    return found


def jieba_words(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of jieba's words of `text` (its default dictionary plus
    the words added with `add_words`)."""
    return [(start, end) for _, start, end in _jieba().tokenize(text)]


def add_words(words: Sequence[str]) -> None:
    """Teach jieba words it should not cut (a user dictionary: the knowledge phrases)."""
    segmenter = _jieba()
    for word in words:
        segmenter.add_word(word)


def _jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict" lines on every start
    return jieba


def _covering(spans: list[tuple[int, int]], position: int) -> int:
    low, high = 0, len(spans) - 1
    while low < high:  # the last span starting at or before `position`
        middle = (low + high + 1) // 2
        if spans[middle][0] <= position:
            low = middle
        else:
            high = middle - 1
    return low


def _merge_phrases(
    text: str, offsets: Sequence[tuple[int, int]], found: list[int], phrases: Sequence[str]
) -> list[int]:
    merged = list(found)
    next_unit = max(found, default=-1) + 1
    for phrase in phrases:
        for match in re.finditer(re.escape(phrase), text):
            inside = [
                i for i, (s, e) in enumerate(offsets)
                if merged[i] >= 0 and s >= match.start() and e <= match.end()
            ]  # fmt: skip
            for index in inside:
                merged[index] = next_unit
            next_unit += 1
    return merged


def mask(
    ids: Sequence[int],
    token_units: Sequence[int],
    tokenizer: Any,
    probability: float,
    generator: torch.Generator | None,
    ignore: int,
) -> tuple[list[int], list[int]]:
    """(input ids with the chosen units masked, labels); see the module docstring."""
    groups: dict[int, list[int]] = {}
    for position, unit in enumerate(token_units):
        if unit >= 0:
            groups.setdefault(unit, []).append(position)
    inputs, labels = list(ids), [ignore] * len(ids)
    if not groups:
        return inputs, labels
    target = max(1, round(probability * sum(len(g) for g in groups.values())))
    order = torch.randperm(len(groups), generator=generator).tolist()
    keys = list(groups)
    chosen: list[int] = []
    for index in order:
        if len(chosen) >= target:
            break
        chosen.extend(groups[keys[index]])
    draws = torch.rand(len(chosen), generator=generator).tolist()
    randoms = torch.randint(len(tokenizer), (len(chosen),), generator=generator).tolist()
    for position, draw, random_id in zip(chosen, draws, randoms):
        labels[position] = inputs[position]
        if draw < 0.8:
            inputs[position] = tokenizer.mask_token_id
        elif draw < 0.9:
            inputs[position] = random_id
    return inputs, labels
