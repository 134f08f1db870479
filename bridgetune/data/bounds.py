"""How much of a long text is tokenized: a character bound derived from max_length.

A fast tokenizer encodes all of a text before it truncates, at some hundred bytes of memory per
character: one 50 MB text took a training run to 9.7 GB (1.2 GB without it) and validate-data
to 7.5 GB for the 64 tokens they keep. So a text is cut to `char_budget(max_length)` characters
first. Why that keeps the tokens the model sees and the truncation count exact: a token of the
tokenizers we ship (WordPiece, byte-level BPE, SentencePiece) covers a few characters of real
text on average, about 4 in English and 1 to 2 in Chinese, whose characters are tokens of
their own. `CHARS_PER_TOKEN` = 64, 16 times the English average, plus `SLACK_CHARS` for the
special tokens and a short text's spaces, holds more than max_length tokens of any real text
longer than the bound. Only a text of mostly white space (which has no tokens) or of letter runs
longer than 100 characters (one [UNK] each in WordPiece) could hold fewer; such a text is still
counted as truncated.
"""

from __future__ import annotations

from typing import Any

CHARS_PER_TOKEN = 64
SLACK_CHARS = 1024


def char_budget(max_length: int) -> int:
    """The characters of a text that tokenizing it to `max_length` tokens needs (see above)."""
    return max_length * CHARS_PER_TOKEN + SLACK_CHARS


def clip_text(text: str, max_length: int) -> str:
    """`text`, or its first char_budget(max_length) characters when it is longer."""
    budget = char_budget(max_length)
    return text if len(text) <= budget else text[:budget]


def clip_content(content: Any, max_length: int) -> Any:
    """A message's or completion's content clipped like `clip_text`: a text, or the text parts
    of a list of content parts; anything else (None) as is. Generative tasks cut the rendered
    conversation at max_length tokens from its start, so a content longer than the bound
    already holds more tokens than are kept: the kept tokens do not change."""
    if isinstance(content, str):
        return clip_text(content, max_length)
    if isinstance(content, list):
        return [
            {**part, "text": clip_text(part["text"], max_length)}
            if isinstance(part, dict) and isinstance(part.get("text"), str) else part
            for part in content
        ]  # fmt: skip
    return content


def is_clipped(text: str | None, max_length: int) -> bool:
    """Whether clip_text cuts `text`: then it is longer than max_length tokens (truncated)."""
    return text is not None and len(text) > char_budget(max_length)


def clip_words(words: list[str], max_length: int) -> list[str]:
    """The words of a pre-split text that can reach the model: every word is at least one
    token, so more than the character budget's worth of them never fits."""
    budget = char_budget(max_length)
    return words if len(words) <= budget else words[:budget]
