"""Pieces of SentencePiece and byte-level BPE tokenizers against the characters of the text.

Such tokenizers mark a word's start inside its first piece (SentencePiece's `▁`, byte-level BPE's
`Ġ`), and their offsets include the white space the mark stands for. NER (`tasks/token.py`) and
extractive QA (`tasks/qa.py`) both need a piece's characters without it, and no characters at all
for a bare marker piece.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bridgetune.data.edits import CJK_CHAR

# the words of raw text for whole-text tokenizers: a CJK character, a run of letters and digits,
# or any other symbol
_CJK_RANGES = CJK_CHAR.pattern[1:-1]
_UNIT = re.compile(f"[{_CJK_RANGES}]|[^\\W_{_CJK_RANGES}]+|\\S")
MARKERS = frozenset("\u2581\u0120")  # SentencePiece's ▁ and byte-level BPE's Ġ


def reads_whole_text(tokenizer: Any) -> bool:
    """Whether `tokenizer` marks word starts in its pieces (a Metaspace or ByteLevel
    pre-tokenizer: SentencePiece, byte-level BPE), so NER reads sentences whole
    (`whole_alignment`) instead of pre-split words. Slow tokenizers keep pre-split words."""
    cached = getattr(tokenizer, "_bridgetune_whole_text", None)
    if cached is not None:
        return cached
    backend = getattr(tokenizer, "backend_tokenizer", None)
    found = False
    if backend is not None:
        pre = json.loads(backend.to_str()).get("pre_tokenizer") or {}
        found = any(kind in json.dumps(pre) for kind in ('"Metaspace"', '"ByteLevel"'))
    try:
        tokenizer._bridgetune_whole_text = found
    except AttributeError:  # a tokenizer that takes no attributes: detect again next time
        pass
    return found


def text_units(text: str) -> list[tuple[int, int]]:
    """Character spans of raw text's words for whole-text tokenizers: each CJK character (as
    Chinese NER data tags them), each run of letters and digits, each other symbol."""
    return [match.span() for match in _UNIT.finditer(text)]


def piece_span(text: str, start: int, end: int, piece: str) -> tuple[int, int] | None:
    """The characters of `text` piece `piece` (offsets start..end) covers without the white
    space its marker stands for (`▁bank` is (3, 8) over " bank"); None for a bare marker piece
    (`▁` alone: over a space, or repeating the next character's offsets) and an empty span
    (special tokens)."""
    if piece and set(piece) <= MARKERS:
        return None
    while start < end and text[start].isspace():
        start += 1
    return (start, end) if start < end else None


def _byte_level(text: str) -> str:
    """`text` as a byte-level BPE vocabulary spells it (GPT-2's byte-to-character table)."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    table = bytes_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


def _vocabulary(tokenizer: Any) -> tuple[dict[str, int], Any, bool]:
    """The tokenizer's pieces, normalizer and whether it is byte-level (cached on it, for
    this backend and size: a pruned copy or added tokens look again)."""
    backend = tokenizer.backend_tokenizer
    key = (id(backend), len(tokenizer))
    cached = getattr(tokenizer, "_bridgetune_vocabulary", None)
    if cached is None or cached[0] != key:
        pre = json.loads(backend.to_str()).get("pre_tokenizer") or {}
        found = (tokenizer.get_vocab(), backend.normalizer, '"ByteLevel"' in json.dumps(pre))
        cached = (key, found)
        try:
            tokenizer._bridgetune_vocabulary = cached
        except AttributeError:  # a tokenizer that takes no attributes: look again next time
            pass
    return cached[1]


def split_at_words(
    text: str,
    words: list[tuple[int, int]],
    ids: list[int],
    offsets: list[tuple[int, int]],
    tokenizer: Any,
) -> tuple[list[int], list[tuple[int, int]]]:
    """A whole-text encoding with every piece that spans several words (`银行` over 银 and 行)
    replaced by one piece per word (`银`, `行`; the first keeps the piece's word-start marker,
    or gets a bare marker piece before it where the vocabulary has no marked form, as the
    tokenizer itself spells `▁浙`). A piece stays whole where a part has no piece of its own
    (it would become unknown). Returns the new ids and offsets, not truncated."""
    pieces = tokenizer.convert_ids_to_tokens(ids)
    vocab, normalizer, byte_level = _vocabulary(tokenizer)
    cuts = sorted({c for span in words for c in span})
    out_ids: list[int] = []
    out_offsets: list[tuple[int, int]] = []
    for token, piece, (start, end) in zip(ids, pieces, offsets):
        span = piece_span(text, start, end, piece)
        inner = [c for c in cuts if span is not None and span[0] < c < span[1]]
        if not inner:
            out_ids.append(token)
            out_offsets.append((start, end))
            continue
        bounds = [span[0], *inner, span[1]]  # type: ignore[index]
        marker = piece[0] if piece[0] in MARKERS else ""
        parts: list[tuple[int, tuple[int, int]]] = []
        for number, (a, b) in enumerate(zip(bounds, bounds[1:])):
            if not text[a:b].strip():
                continue
            part = text[a:b]
            part = normalizer.normalize_str(part) if normalizer is not None else part
            part = _byte_level(part) if byte_level else part
            first = number == 0 and marker
            if first and marker + part in vocab:
                parts.append((vocab[marker + part], (start, b)))
            elif part in vocab:
                if first and marker in vocab:
                    parts.append((vocab[marker], (start, b)))
                elif first:  # no bare marker either: the marker's start lost, not the piece
                    pass
                parts.append((vocab[part], (a, b)))
            else:
                parts = []
                break
        if parts:
            out_ids.extend(token_id for token_id, _ in parts)
            out_offsets.extend(span_of for _, span_of in parts)
        else:
            out_ids.append(token)
            out_offsets.append((start, end))
    return out_ids, out_offsets
