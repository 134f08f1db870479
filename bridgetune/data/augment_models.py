"""Model-backed augmentation ops: embedding-neighbour synonyms, fill-mask and back-translation.

Each augmenter loads its model once. 'contextual' and 'backtranslation' have `batch(pairs)`:
augment.py hands them the jobs of a split in chunks, and they run their model over padded
batches of texts, never one text at a time. Decoding is greedy, so outputs are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from typing import Any

import torch

from bridgetune.config import ConfigError
from bridgetune.data.edits import (
    CJK_CHAR,
    AugmentContext,
    Unit,
    change_count,
    editable,
    from_units,
    join_words,
    replace_words,
    split_affixes,
    to_units,
    unit_augmenter,
)
from bridgetune.data.schema import Example

BATCH_SIZE = 32  # texts per generate() call of backtranslation
# contextual: the model's logits cover batch x length x vocabulary, hence a smaller batch and a
# window of words each side of the masked word (inputs stay far below 512 tokens)
FILL_BATCH_SIZE = 16
WINDOW = 32
FILL_CANDIDATES = 10
MAX_NEW_TOKENS = 256
_LOAD_ERRORS = (OSError, ValueError, KeyError)  # what from_pretrained raises for one cause
# Never replaced nor put in (as EDA does): neighbours of function words are noise, and a
# negation that appears or disappears flips a label.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can cannot could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in into
    is it its itself just me more most my myself no nor not never of off on once only or other
    our ours ourselves out over own same she should so some such than that the their theirs
    them themselves then there these they this those through to too under until up very was we
    were what when where which while who whom why will with without would you your yours
    yourself yourselves""".split()
)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def vocabulary_words(tokenizer: Any) -> dict[int, str]:
    """Whole-word vocabulary entries as {id: word}: alphabetic, no pieces, no special tokens.

    WordPiece marks continuation pieces ('##'); byte-level BPE and SentencePiece mark word starts
    ('Ġ', '▁') instead, and there only the marked entries are whole words (decoded, so that
    byte-level entries of CJK text give their characters). Single Latin letters
    are left out (poor synonyms); single CJK characters are the words of CJK text.
    """
    words: dict[int, str] = {}
    vocab = tokenizer.get_vocab()
    specials = set(tokenizer.all_special_tokens)
    pieces = any(token.startswith("##") for token in vocab)
    marked = not pieces and any(token.startswith(("Ġ", "▁")) for token in vocab)
    for token, index in vocab.items():
        if token in specials or token.startswith("##"):
            continue
        if marked:
            if not token.startswith(("Ġ", "▁")) or token[1:2] in ("Ġ", "▁", ""):
                continue
            # byte-level BPE spells non-ASCII text as mapped bytes: decode to the real word
            token = tokenizer.convert_tokens_to_string([token]).strip()
        if token.isalpha() and (len(token) > 1 or CJK_CHAR.match(token)):
            words[index] = token
    return words


def content_words(tokenizer: Any) -> dict[int, str]:
    """`vocabulary_words` without stop words: the words synonym and contextual put in."""
    return {i: w for i, w in vocabulary_words(tokenizer).items() if w.lower() not in STOPWORDS}


def same_script(original: str, word: str) -> bool:
    """Both CJK or both not: a CJK fill would glue onto the words of an English text."""
    return bool(CJK_CHAR.match(original)) == bool(CJK_CHAR.match(word))


def match_case(original: str, word: str) -> str:
    """`word` with the capitalisation of `original` ('Good' -> 'Great', 'GOOD' -> 'GREAT')."""
    if len(original) > 1 and original.isupper():
        return word.upper()
    if original[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


class SynonymAugmenter:
    """Replaces words by one of their nearest neighbours (cosine) in the model's own input
    embedding matrix, among whole-word vocabulary entries; single-token words only."""

    def __init__(self, ctx: AugmentContext) -> None:
        vectors = _input_embeddings(ctx.model_path)
        words = {i: w for i, w in content_words(ctx.tokenizer).items() if i < len(vectors)}
        ids = sorted(words)
        self.words = [words[i] for i in ids]
        self.rows = {word: row for row, word in enumerate(self.words)}
        self.matrix = torch.nn.functional.normalize(vectors[ids].float(), dim=1)
        self.k = ctx.cfg.synonym_neighbours
        self.cache: dict[str, list[str]] = {}
        edit = partial(replace_words, p=ctx.cfg.p, substitute=self.substitute)
        self._augment = unit_augmenter(edit, ctx.tag_scheme)

    def __call__(self, example: Example, rng: random.Random) -> Iterator[Example]:
        return self._augment(example, rng)

    def neighbours(self, word: str) -> list[str]:
        """The `synonym_neighbours` nearest whole words, the word and its case variants left out."""
        row = self.rows.get(word, self.rows.get(word.lower()))
        if row is None:  # not one token, or a stop word
            return []
        if word not in self.cache:
            scores = self.matrix @ self.matrix[row]
            top = scores.topk(min(len(scores), 4 * self.k + 8)).indices.tolist()
            found = [
                self.words[i]
                for i in top
                if self.words[i].lower() != word.lower() and same_script(word, self.words[i])
            ]
            self.cache[word] = list(dict.fromkeys(found))[: self.k]
        return self.cache[word]

    def substitute(self, word: str, rng: random.Random) -> str | None:
        options = self.neighbours(word)
        return match_case(word, rng.choice(options)) if options else None


def _input_embeddings(model_path: str) -> torch.Tensor:
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(model_path)
    except _LOAD_ERRORS as error:
        raise ConfigError(
            f"augment op 'synonym' reads the input embeddings of model {model_path!r}, which "
            f"could not be loaded ({_first_line(error)}); check model.name"
        ) from None
    return model.get_input_embeddings().weight.detach()


class ContextualAugmenter:
    """Masks words and fills each with the best whole-word prediction of a fill-mask model
    that differs from the original word; each masked word gets its own window of context."""

    def __init__(self, ctx: AugmentContext) -> None:
        self.tokenizer, self.model = _load_masked_lm(str(ctx.cfg.fill_mask_model))
        size = self.model.get_output_embeddings().weight.shape[0]
        self.words = {i: w for i, w in content_words(self.tokenizer).items() if i < size}
        self.allowed = torch.zeros(size, dtype=torch.bool)
        self.allowed[list(self.words)] = True
        self.p, self.scheme = ctx.cfg.p, ctx.tag_scheme

    def __call__(self, example: Example, rng: random.Random) -> Iterator[Example]:
        yield from filter(None, self.batch([(example, rng)]))

    def batch(self, pairs: list[tuple[Example, random.Random]]) -> list[Example | None]:
        """One augmented example (or None) per (example, rng), predicted in batches."""
        plans = [self._choose(example, rng) for example, rng in pairs]
        texts = [self._window(units, slot) for units, slots in plans for slot in slots]
        fills = iter(self.predict(texts))
        results = []
        for (example, _), (units, slots) in zip(pairs, plans):
            units, changed = list(units), False
            for slot, candidates in zip(slots, fills):
                lead, core, trail = split_affixes(units[slot].words[0])
                new = next(
                    (w for w in candidates if w.lower() != core.lower() and same_script(core, w)),
                    None,
                )
                if new:
                    units[slot] = Unit((lead + match_case(core, new) + trail,))
                    changed = True
            results.append(from_units(example, units, self.scheme) if changed else None)
        return results

    def _choose(self, example: Example, rng: random.Random) -> tuple[list[Unit], list[int]]:
        units = to_units(example, self.scheme) or []
        cores = {i: split_affixes(units[i].words[0])[1] for i in editable(units)}
        slots = [i for i, core in cores.items() if core and core.lower() not in STOPWORDS]
        count = min(len(slots), change_count(len(cores), self.p))
        return units, sorted(rng.sample(slots, count))

    def _window(self, units: list[Unit], slot: int) -> str:
        lead, _, trail = split_affixes(units[slot].words[0])
        before = [w for unit in units[max(0, slot - WINDOW) : slot] for w in unit.words]
        after = [w for unit in units[slot + 1 : slot + 1 + WINDOW] for w in unit.words]
        return join_words([*before, lead + self.tokenizer.mask_token + trail, *after])

    @torch.inference_mode()
    def predict(self, texts: list[str]) -> list[list[str]]:
        """Whole-word candidates for the (first) mask of each text, best first."""
        results: list[list[str]] = []
        limit = min(self.tokenizer.model_max_length, 512)
        allowed = self.allowed.to(self.model.device)
        for start in range(0, len(texts), FILL_BATCH_SIZE):
            encoded = self.tokenizer(
                texts[start : start + FILL_BATCH_SIZE],
                padding=True,
                truncation=True,
                max_length=limit,
                return_tensors="pt",
            ).to(self.model.device)
            is_mask = encoded["input_ids"] == self.tokenizer.mask_token_id
            logits = self.model(**encoded).logits
            scores = logits[torch.arange(len(is_mask)), is_mask.int().argmax(dim=1)].float()
            scores = scores.masked_fill(~allowed, float("-inf"))
            top = scores.topk(min(FILL_CANDIDATES, len(self.words))).indices.tolist()
            for ids, found in zip(top, is_mask.any(dim=1).tolist()):
                # a mask truncated away gets no candidates: the word stays as it is
                results.append([self.words[i] for i in ids if i in self.words] if found else [])
        return results


def _load_masked_lm(name: str) -> tuple[Any, Any]:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model, info = AutoModelForMaskedLM.from_pretrained(name, output_loading_info=True)
    except _LOAD_ERRORS as error:
        raise ConfigError(
            f"augment.fill_mask_model {name!r} could not be loaded as a fill-mask model "
            f"({_first_line(error)}); give a local directory or a reachable hub id of a masked "
            "language model such as bert-base-uncased"
        ) from None
    # keys missing outside the base model are a head transformers initialised randomly
    prefix = model.base_model_prefix + "."
    head = sorted(k for k in info["missing_keys"] if not k.startswith(prefix))
    if head:
        raise ConfigError(
            f"augment.fill_mask_model {name!r} has no trained masked-LM head (missing "
            f"{head[0]}, ...); use a model saved with its MLM head such as bert-base-uncased "
            "(sentence-embedding models like the bundled minilm have none)"
        )
    if tokenizer.mask_token_id is None:
        raise ConfigError(f"augment.fill_mask_model {name!r}: its tokenizer has no mask token")
    return tokenizer, model.to(_device()).eval()


class BacktranslationAugmenter:
    """Translates texts to a pivot language and back with two seq2seq models (greedy)."""

    def __init__(self, ctx: AugmentContext) -> None:
        names = ctx.cfg.translation_models or []
        self.stages = [_load_translator(name, position) for position, name in enumerate(names)]

    def __call__(self, example: Example, rng: random.Random) -> Iterator[Example]:
        yield from filter(None, self.batch([(example, rng)]))

    def batch(self, pairs: list[tuple[Example, random.Random]]) -> list[Example | None]:
        """Each distinct text goes through both models once; empty or unchanged results: None."""
        texts = list(dict.fromkeys(example.text for example, _ in pairs))
        translated = texts
        for tokenizer, model in self.stages:
            translated = translate(translated, tokenizer, model)
        round_trip = dict(zip(texts, translated))
        return [_backtranslated(example, round_trip[example.text]) for example, _ in pairs]


def _backtranslated(example: Example, text: str) -> Example | None:
    text = " ".join(text.split())
    if not text or text.casefold() == " ".join(example.text.split()).casefold():
        return None
    return replace(example, text=text)


@torch.inference_mode()
def translate(texts: list[str], tokenizer: Any, model: Any) -> list[str]:
    """Greedy translations of `texts`, in padded batches of similar length."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    results = [""] * len(texts)
    limit = min(tokenizer.model_max_length, 512)
    for start in range(0, len(order), BATCH_SIZE):
        rows = order[start : start + BATCH_SIZE]
        encoded = tokenizer(
            [texts[i] for i in rows],
            padding=True,
            truncation=True,
            max_length=limit,
            return_tensors="pt",
            return_token_type_ids=False,
        ).to(model.device)
        budget = min(MAX_NEW_TOKENS, 2 * encoded["input_ids"].shape[1] + 8)
        generated = model.generate(**encoded, do_sample=False, num_beams=1, max_new_tokens=budget)
        for row, text in zip(rows, tokenizer.batch_decode(generated, skip_special_tokens=True)):
            results[row] = text.strip()
    return results


def _load_translator(name: str, position: int) -> tuple[Any, Any]:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForSeq2SeqLM.from_pretrained(name)
    except _LOAD_ERRORS as error:
        role = "source->pivot" if position == 0 else "pivot->source"
        raise ConfigError(
            f"augment.translation_models[{position}] ({role}) {name!r} could not be loaded as "
            f"a translation model ({_first_line(error)}); give a local directory or a reachable "
            "hub id of a sequence-to-sequence model such as Helsinki-NLP/opus-mt-en-de"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model.to(_device()).eval()


AUGMENTER_CLASSES = {
    "synonym": SynonymAugmenter,
    "contextual": ContextualAugmenter,
    "backtranslation": BacktranslationAugmenter,
}
