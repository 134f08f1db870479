"""Sentences of raw text, each with its character offsets into the text (relation extraction
reads a document sentence by sentence and reports offsets into the document).

A sentence ends at a line end (a hard break); after Chinese and full-width enders (`。！？；…`,
also `！？` doubled, `……`) wherever they stand; and after English `.`, `!` and `?` when white
space, a CJK character or the end of the line follows. Closing quotes and brackets after an
ender belong to the sentence (`他说：“收购完成。”`, `He said "done."`). A period is no end
inside a number (3.5) or after a common abbreviation or an initial (Mr. Dr. Inc. Corp. Ltd.
Co. U.S. e.g. etc., J. Smith): an abbreviation that ends a sentence keeps it joined to the next
one, a rare and harmless error for extraction next to cutting "Acme Inc." from its verb. White
space around a sentence is not part of it; empty pieces are dropped; a sentence longer than
`max_chars` is cut at the last space or comma before the bound (or at the bound).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_MAX_CHARS = 1000

# lower-cased, without their final period
ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt rev gen col capt lt sgt hon inc corp ltd co llc plc bros
    dept univ assn est fig no nos vol vs etc e.g i.e cf al approx u.s u.k u.n e.u a.m p.m
    jan feb mar apr jun jul aug sep sept oct nov dec""".split()
)
_CJK_ENDERS = "。！？；…｡"
_ENDER = re.compile(r"(?:[。！？；…｡!?]+|\.+)[\"'”’」』）)\]】》〉]*")
_CLOSING = "\"'”’」』）)]】》〉"
_LINE = re.compile(r"[^\r\n]+")
_CUT_AT = re.compile(r"[\s,，、;；:：]")
_CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef]")


@dataclass(frozen=True)
class Sentence:
    """A sentence: `text == document[start:end]`."""

    start: int
    end: int
    text: str


def split_sentences(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[Sentence]:
    """The sentences of `text`, in order, with their offsets (module docstring).

    Raises:
        ValueError: `max_chars` is below 1.
    """
    return [Sentence(s, e, text[s:e]) for s, e in sentence_spans(text, max_chars)]


def sentence_spans(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text` (split_sentences without the texts)."""
    if max_chars < 1:
        raise ValueError(f"max_chars is {max_chars}; a sentence needs at least 1 character")
    spans = []
    for line in _LINE.finditer(text):
        begin = line.start()
        for end in _ends(text, line.start(), line.end()):
            spans += _trimmed_pieces(text, begin, end, max_chars)
            begin = end
        spans += _trimmed_pieces(text, begin, line.end(), max_chars)
    return spans


def _ends(text: str, start: int, stop: int) -> list[int]:
    """Where sentences end inside the line text[start:stop] (after the ender's closers)."""
    ends = []
    for match in _ENDER.finditer(text, start, stop):
        after = match.end()
        if any(c in _CJK_ENDERS for c in match.group()):
            ends.append(after)
        elif after == stop or text[after].isspace() or _CJK.match(text[after]):
            if match.group()[0] != "." or not _abbreviation(text, start, match.start()):
                ends.append(after)
    return ends


def _abbreviation(text: str, line_start: int, period: int) -> bool:
    """Whether the word before the period at `period` is an abbreviation or an initial."""
    word = re.search(r"\S*$", text[line_start:period]).group().lstrip(_CLOSING + "(（[“‘")
    return word.lower() in ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _trimmed_pieces(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """text[start:end] without surrounding white space, cut into pieces of at most `max_chars`
    (each trimmed too); nothing for white space only."""
    pieces = []
    while True:
        while start < end and text[start].isspace():
            start += 1
        stop = end
        while stop > start and text[stop - 1].isspace():
            stop -= 1
        if start == stop:
            return pieces
        if stop - start <= max_chars:
            return [*pieces, (start, stop)]
        cut = _cut_point(text, start, start + max_chars)
        piece_end = cut
        while piece_end > start and text[piece_end - 1].isspace():
            piece_end -= 1
        pieces.append((start, piece_end))
        start = cut


def _cut_point(text: str, start: int, bound: int) -> int:
    """The end of the first piece of a long sentence: after the last space or comma in the
    second half of text[start:bound], else `bound` itself."""
    middle = start + (bound - start) // 2
    last = None
    for match in _CUT_AT.finditer(text, middle, bound):
        last = match.end()
    return last if last is not None and last > start else bound
