"""Prompts as token ids, their content as text: a template writes the control tokens, content
never does.

A chat template, or a plain prompt template (`task.prompt_template`), writes a prompt's
structure, and the control tokens in it (ChatML's `<|im_start|>`, BOS, EOS, ...) are encoded as
control tokens. Everything the template is given is content: the messages of every role (what a
client sends, the passages retrieval puts into the system turn, earlier answers), plain prompts
and the rows of training data. A control token typed in content is encoded as the plain text it
is; else a user could close their own turn and write a system turn, or end a prompt with EOS.
Training encodes its data the same way, so a model learns what it is served.

How: the control tokens in content are wrapped in private-use markers before the template
renders it; the rendered text, markers removed, is tokenized once as usual, and the tokens over
each marked span are replaced by the span tokenized as text (no added tokens; a piece that the
tokenizer's vocabulary still reads as a control token, as a Unigram vocabulary holding `</s>`
or a word-level one holding `<|im_end|>` do, is split until it is not, or becomes `unk`). Text
without control tokens is tokenized exactly as before, and text next to a marked token as the
tokenizer does next to a control token. Markers typed in content are dropped, so none can be
forged.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("bridgetune")

START, END = "\U000f0000", "\U000f0001"  # private-use characters: no text has them
_MARKED = re.compile(f"{START}([^{START}{END}]*){END}|[{START}{END}]")
SLOT = "{prompt}"


@dataclass(frozen=True)
class Encoded:
    """A rendered prompt and its tokens."""

    text: str  # as rendered, without markers
    ids: list[int]
    offsets: list[tuple[int, int]] | None  # each id's characters in `text` (fast tokenizers)


def fill_template(template: str | None, prompt: str) -> str:
    """`prompt` in `template` (its `{prompt}` slots), or as is without one."""
    return template.replace(SLOT, prompt) if template else prompt


def control_tokens(tokenizer: Any) -> dict[str, int]:
    """The strings the tokenizer reads as control tokens, with their ids: its special tokens,
    and the added tokens its chat template writes (not whitespace, which templates write as
    text). Other added tokens (a vocabulary extension's words) are text."""
    return _controls(tokenizer).tokens


def mark(tokenizer: Any, content: str) -> str:
    """`content` with each control token in it wrapped in markers."""
    pattern = _controls(tokenizer).pattern
    return pattern.sub(lambda found: f"{START}{found.group(0)}{END}", _unmarked(content))


def found_control_tokens(tokenizer: Any, content: str) -> list[str]:
    """The control tokens typed in `content`, in order."""
    return _controls(tokenizer).pattern.findall(content)


def template_content(template: str | None, prompt: str) -> str | None:
    """The prompt that filled `template`'s slots (the same in each: `fill_template`), or None
    where `prompt` is not the template filled in (all of it is content then). The lengths
    make it unique: content typed like the template's text cannot move the template's part."""
    literals = template.split(SLOT) if template else []
    if len(literals) < 2:
        return None
    first, *rest = map(re.escape, literals)
    pattern = first + "(?P<content>.*)" + "(?P=content)".join(rest)
    found = re.fullmatch(pattern, prompt, re.DOTALL)
    return found.group("content") if found else None


def marked_prompt(tokenizer: Any, prompt: str, template: str | None = None) -> str:
    """A plain prompt marked as content; where it is `template` filled in, the template's own
    text stays unmarked (its control tokens are the prompt's structure)."""
    content = template_content(template, prompt)
    if content is None:
        return mark(tokenizer, prompt)
    return fill_template(template, mark(tokenizer, content))


def marked_messages(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` with their contents marked (`mark`; content parts too), for `render`."""
    return [{**m, "content": _marked_value(tokenizer, m["content"])} for m in messages]


def render(
    tokenizer: Any, messages: Sequence[dict[str, Any]], generation_prompt: bool = False
) -> str:
    """Messages through the tokenizer's chat template, as text."""
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=generation_prompt
    )


def marked_chat(
    tokenizer: Any, messages: Sequence[dict[str, Any]], generation_prompt: bool = False
) -> str:
    """A conversation rendered by the tokenizer's chat template, every content marked."""
    return render(tokenizer, marked_messages(tokenizer, messages), generation_prompt)


def unmarked_text(marked: str) -> str:
    """A marked text as rendered (its markers removed)."""
    return _unmarked(marked)


def encode_marked(
    tokenizer: Any, marked: Sequence[str], add_special_tokens: bool, target: bool = False
) -> list[Encoded]:
    """Marked texts tokenized in one batch, marked spans as text (`target`: as the labels of an
    encoder-decoder, whose tokenizer may read targets differently)."""
    if not marked:
        return []
    if not getattr(tokenizer, "is_fast", False):
        return [_encode_pieces(tokenizer, text, add_special_tokens, target) for text in marked]
    rows = [_spans(text) for text in marked]
    call = {"text_target" if target else "text": [text for text, _ in rows]}
    encoded = tokenizer(**call, add_special_tokens=add_special_tokens,
                        return_offsets_mapping=True)  # fmt: skip
    forbidden = _controls(tokenizer).forbidden
    results = []
    for (text, spans), ids, offsets in zip(rows, encoded["input_ids"], encoded["offset_mapping"]):
        ids, offsets = list(ids), [tuple(o) for o in offsets]
        for start, end in reversed(spans):
            _as_text_over(tokenizer, text, ids, offsets, (start, end), forbidden)
        results.append(Encoded(text, ids, offsets))
    return results


def chat_encoding(
    tokenizer: Any, messages: Sequence[dict[str, Any]], generation_prompt: bool = False
) -> Encoded:
    """A conversation through the chat template, its contents as text."""
    marked = marked_chat(tokenizer, messages, generation_prompt)
    return encode_marked(tokenizer, [marked], add_special_tokens=False)[0]


def prompt_encodings(
    tokenizer: Any,
    prompts: Sequence[str],
    template: str | None = None,
    add_special_tokens: bool = True,
    target: bool = False,
) -> list[Encoded]:
    """Plain prompts (or targets), their content as text; see `marked_prompt`."""
    marked = [marked_prompt(tokenizer, prompt, template) for prompt in prompts]
    return encode_marked(tokenizer, marked, add_special_tokens, target)


def warn_control_tokens(tokenizer: Any, rows: Sequence[tuple[str | None, list[str]]]) -> int:
    """Log one line when the contents of `rows` ((where, contents) per example) hold control
    tokens: how many examples, which tokens and where the first one is. Returns the count."""
    found: dict[str, None] = {}
    count, first = 0, None
    for index, (where, contents) in enumerate(rows):
        tokens = [t for text in contents for t in found_control_tokens(tokenizer, text)]
        if tokens:
            count += 1
            first = first or where or f"example {index + 1}"
            found.update(dict.fromkeys(tokens))
    if count:
        log.warning(
            "%d of %d examples contain the tokenizer's control tokens (%s) in their text, the "
            "first at %s; they are encoded as plain text, as served prompts are",
            count, len(rows), ", ".join(found), first,
        )  # fmt: skip
    return count


def _marked_value(tokenizer: Any, value: Any) -> Any:
    """A content marked: a string, or the strings in a list of content parts."""
    if isinstance(value, str):
        return mark(tokenizer, value)
    if isinstance(value, dict):
        return {key: _marked_value(tokenizer, item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_marked_value(tokenizer, item) for item in value]
    return value


def _unmarked(text: str) -> str:
    return text.replace(START, "").replace(END, "")


def _spans(marked: str) -> tuple[str, list[tuple[int, int]]]:
    """The text without markers, and the character spans of its marked tokens. A lone marker
    (a template that split a content) is dropped."""
    pieces, spans, at, length = [], [], 0, 0
    for found in _MARKED.finditer(marked):
        pieces.append(marked[at : found.start()])
        length += found.start() - at
        token = found.group(1)
        if token:
            spans.append((length, length + len(token)))
            pieces.append(token)
            length += len(token)
        at = found.end()
    pieces.append(marked[at:])
    return "".join(pieces), spans


def _as_text_over(
    tokenizer: Any,
    text: str,
    ids: list[int],
    offsets: list[tuple[int, int]],
    span: tuple[int, int],
    forbidden: frozenset[int],
) -> None:
    """The tokens over `span` replaced (in place) by its characters tokenized as text. The
    replaced tokens may reach past the span (a control token that strips the space before
    it): their characters are included."""
    start, end = span
    over = [i for i, (a, b) in enumerate(offsets) if a < end and start < b]
    if not over:
        return
    low = min(start, offsets[over[0]][0])
    high = max(end, offsets[over[-1]][1])
    replacement = _text_ids(tokenizer, text[low:high], forbidden)
    ids[over[0] : over[-1] + 1] = replacement
    offsets[over[0] : over[-1] + 1] = [(low, high)] * len(replacement)


def _text_ids(
    tokenizer: Any, text: str, forbidden: frozenset[int], target: bool = False
) -> list[int]:
    """`text` tokenized as text: the tokenizer's pipeline without its added tokens (special or
    not). A piece its vocabulary still reads as a control token (a Unigram vocabulary holding
    `</s>`, a word-level one holding `<|im_end|>`) is split in two until none is left."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a Python tokenizer: split_special_tokens skips its added tokens
        call = "text_target" if target else "text"

        def encode(piece: str) -> list[int]:
            found = tokenizer(**{call: piece}, add_special_tokens=False, split_special_tokens=True)
            return found["input_ids"]

        return _split_until_text(encode, text, forbidden, tokenizer.unk_token_id)
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    splits = [text] if backend.pre_tokenizer is None else [
        split for split, _ in backend.pre_tokenizer.pre_tokenize_str(text)
    ]  # fmt: skip

    def tokens(piece: str) -> list[int]:
        return [token.id for token in backend.model.tokenize(piece)]

    # split after pre-tokenization: a half is not given a second prefix space
    unk = tokenizer.unk_token_id
    return [i for split in splits for i in _split_until_text(tokens, split, forbidden, unk)]


def _split_until_text(
    encode: Callable[[str], list[int]], piece: str, forbidden: frozenset[int], unk: int | None
) -> list[int]:
    """`encode(piece)`, or the halves of a piece it reads as a control token, recursively (a
    single character that still is one becomes `unk`)."""
    ids = encode(piece)
    if forbidden.isdisjoint(ids):
        return ids
    if len(piece) > 1:
        half = len(piece) // 2
        left = _split_until_text(encode, piece[:half], forbidden, unk)
        return left + _split_until_text(encode, piece[half:], forbidden, unk)
    if unk is None:
        raise ValueError(f"{piece!r}: the tokenizer reads this character only as a control token")
    return [unk]


def _encode_pieces(tokenizer: Any, marked: str, add_special_tokens: bool, target: bool) -> Encoded:
    """A Python tokenizer (no offsets): the pieces between marked tokens tokenized as usual,
    the marked tokens as text, the tokenizer's own special tokens around them."""
    forbidden = _controls(tokenizer).forbidden
    call = "text_target" if target else "text"
    ids: list[int] = []
    pieces = _MARKED.split(marked)  # [text, token, text, token, ..., text]
    for index, piece in enumerate(pieces):
        if not piece:
            continue
        if index % 2:
            ids += _text_ids(tokenizer, piece, forbidden, target)
        else:
            ids += tokenizer(**{call: piece}, add_special_tokens=False)["input_ids"]
    if add_special_tokens:
        ids = tokenizer.build_inputs_with_special_tokens(ids)
    return Encoded(_unmarked(marked), ids, None)


@dataclass(frozen=True)
class _Controls:
    tokens: dict[str, int]  # control token -> id
    pattern: re.Pattern  # matches any of them (other spellings too where normalization would)
    forbidden: frozenset[int]  # ids text must never become (`unk` is what unknown text is)


_CACHE: weakref.WeakKeyDictionary[Any, tuple[tuple, _Controls]] = weakref.WeakKeyDictionary()


def _controls(tokenizer: Any) -> _Controls:
    """The tokenizer's control tokens, cached until it gains tokens or changes its template
    (causal_lm gives a model without one ChatML)."""
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):  # named templates
        template = "\0".join(template.values())
    key = (len(tokenizer), template, tuple(tokenizer.all_special_tokens))
    cached = _CACHE.get(tokenizer)
    if cached is not None and cached[0] == key:
        return cached[1]
    added = tokenizer.added_tokens_decoder
    tokens = {
        token.content: index
        for index, token in added.items()
        if token.special or (token.content in template and not token.content.isspace())
    }
    for token in tokenizer.all_special_tokens:
        tokens.setdefault(token, tokenizer.convert_tokens_to_ids(token))
    # a control token matched after normalization (lower-casing, say) is also matched in
    # other spellings, which content must not use either
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalized = backend is not None and backend.normalizer is not None and any(
        t.normalized and t.content in tokens for t in added.values()
    )  # fmt: skip
    longest = sorted(tokens, key=len, reverse=True)  # a token before the tokens inside it
    body = "|".join(map(re.escape, longest)) or "(?!)"  # (?!): matches nothing
    pattern = re.compile(body, re.IGNORECASE if normalized else 0)
    forbidden = frozenset(tokens.values()) - {tokenizer.unk_token_id}
    controls = _Controls(tokens, pattern, forbidden)
    _CACHE[tokenizer] = (key, controls)
    return controls
