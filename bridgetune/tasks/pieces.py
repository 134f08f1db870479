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
