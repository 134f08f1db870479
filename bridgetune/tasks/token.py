"""Token classification (NER): sub-token alignment, word tags and entity spans with offsets.

Two alignments, picked by the tokenizer (`reads_whole_text`):

- WordPiece and other tokenizers that spell no word boundary into their pieces get the words
  pre-split (`is_split_into_words`): training labels the first sub-token of every word and
  ignores the rest (-100); prediction reads the first sub-token's tag.
- SentencePiece (Metaspace) and byte-level BPE tokenizers mark a word's start in its first piece.
  Pre-split Chinese characters would each become a bare `▁` piece plus the character (every label
  on an identical `▁`, sequences twice as long), so these read the sentence whole and map pieces
  to words by character offsets (`whole_alignment`): a piece that spans several characters
  (`银行`) carries the entity of its first character, the tags are written per piece in the
  scheme (`银行` alone is S-ORG in BMES), and decoding turns the pieces' entities back into
  word tags. A bare marker piece (`▁`) takes no label.

Raw text is split into words with the tokenizer's own pre-tokenization (word ids and offsets;
for whole-text tokenizers: CJK characters, runs of letters and digits, other symbols), then
encoded exactly like training data. Piece offsets against characters (shared with QA) are in
`tasks/pieces.py`; the reader, both alignments and the task's encoding and decoding stay here
together (over 500 lines: they change together).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from bridgetune.config import DataConfig, RunConfig
from bridgetune.data.bounds import clip_text, clip_words
from bridgetune.data.io import (
    checked_token_example,
    column,
    detect_format,
    entity_tags,
    iob1_tags,
    join_tokens,
)
from bridgetune.data.readers import found_labels
from bridgetune.data.schema import DataError, Example
from bridgetune.data.tags import SCHEME_PREFIXES, decode_spans, split_tag
from bridgetune.data.tokenfiles import conll_examples, jsonl_token_examples
from bridgetune.knowledge.gazetteer import Gazetteer, LexiconModel, collate_lexicon, token_lexicon
from bridgetune.models.pretrained import load_pretrained
from bridgetune.tasks.base import TASKS, Feature, Task, pad_batch
from bridgetune.tasks.losses import IGNORE
from bridgetune.tasks.metrics import entity_metrics
from bridgetune.tasks.pieces import piece_span, reads_whole_text, split_at_words, text_units
from bridgetune.tasks.predictions import EntitiesPrediction


@dataclass(frozen=True)
class TokenReader:
    """Words with one tag each: CoNLL-style files (tag in the last column; character-per-line
    files whose token may be a space; Weibo NER's character+digit tokens with
    `data.char_position_digits`), JSONL rows with `tokens` and `tags`, or JSONL rows with `text`
    and entity spans (CLUENER2020's `label`, or `entities`); tags are checked against (span
    rows: written in) `data.tag_scheme`, bad sentences handled as `data.invalid_rows` says
    (bridgetune.data.tokenfiles)."""

    tagged = True

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        fmt = detect_format(path, cfg.format, tagged=True)
        if fmt == "jsonl":
            return jsonl_token_examples(path, cfg, labelled)
        if fmt != "conll":
            raise DataError(f"{path}: token tasks read CoNLL-style or JSONL files, not {fmt}")
        return conll_examples(path, cfg, labelled)

    def read_row(self, row: dict[str, Any], cfg: DataConfig, where: tuple[Path, int]) -> Example:
        path, number = where
        row = {cfg.column_map.get(k, k): v for k, v in row.items()}
        tags = column(row, cfg.label_column, path, number)
        return checked_token_example(row["tokens"], tags, cfg.tag_scheme, str(path), number)

    def infer_labels(self, train: list[Example], scheme: str | None) -> list[str]:
        """'O' first, then tags by entity type. With a tag `scheme`, every entity type gets all
        of the scheme's tags (B-X and I-X for IOB2), so the model can express any valid
        sequence even when train happens to lack one, e.g. only single-token entities of a type.
        """
        found = found_labels(train)
        if scheme:
            found |= {f"{p}{t[1]}{t[2:]}" for t in found - {"O"} for p in SCHEME_PREFIXES[scheme]}
            found.add("O")
        rest = sorted(found - {"O"}, key=lambda t: (t[2:], t[:1]))
        return (["O"] if "O" in found else []) + rest

    def check_label_set(self, labels: list[str], source: str) -> None:
        return None  # a split of all-O sentences still trains a tagger

    def stratum(self, example: Example) -> str | None:
        return None


def split_words(text: str, tokenizer: Any) -> list[tuple[int, int]]:
    """Character spans of the words the tokenizer sees in `text` (CJK: one per character)."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans: dict[int, list[int]] = {}
    for word, (start, end) in zip(encoding.word_ids(), encoding["offset_mapping"]):
        if word is None or start == end:
            continue
        span = spans.setdefault(word, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    return [(s, e) for s, e in (spans[w] for w in sorted(spans)) if text[s:e].strip()]


def words_example(text: str, tokenizer: Any, max_length: int) -> Example:
    """An unlabelled token example from raw text, with each word's character offsets (of the
    words in its first bounds.char_budget(max_length) characters: the model sees no others)."""
    clipped = clip_text(text, max_length)
    if reads_whole_text(tokenizer):
        offsets = text_units(clipped)
    else:
        offsets = split_words(clipped, tokenizer)
    tokens = [text[s:e].strip() or text[s:e] for s, e in offsets]
    return Example(text=text, tokens=tokens, offsets=offsets)


@dataclass
class WholeAlignment:
    """Pieces of a whole-text encoding against an example's words.

    `claims[p]`: the words whose first character lies in piece p (its words); `inside[p]`: for
    a piece that starts no word, the word it continues (None for special and marker pieces and
    pieces over no word)."""

    claims: list[list[int]]
    inside: list[int | None]

    @property
    def first(self) -> list[int]:
        """Positions of the pieces that start words: the ones that carry tags."""
        return [p for p, words in enumerate(self.claims) if words]

    def lexicon(self, flags: list[tuple[int, int]]) -> list[list[int]]:
        """Gazetteer features per piece from the words' (word, feature) flags: a piece over
        several words carries the flags of all of them (`上海` as the name 上海: B of 上 and E of
        海, not only B, which a piece that begins 上海市 also has); a piece inside a word, that
        word's."""
        by_word: dict[int, list[int]] = {}
        for word, feature in flags:
            by_word.setdefault(word, []).append(feature)
        return [
            [position, feature]
            for position, (words, inside) in enumerate(zip(self.claims, self.inside))
            for word in (words or ([] if inside is None else [inside]))
            for feature in by_word.get(word, ())
        ]


def whole_alignment(
    text: str, words: list[tuple[int, int]], offsets: list[tuple[int, int]], pieces: list[str]
) -> WholeAlignment:
    """Which words of `text` (character spans) each piece (`offsets`, piece strings `pieces`)
    starts or continues. A piece's span without its leading white space counts (`▁bank` is
    (3, 8) over " bank"); a bare marker piece (`▁` alone, whose offsets repeat the next
    character's) and special tokens ((0, 0)) take no word."""
    claims: list[list[int]] = [[] for _ in offsets]
    inside: list[int | None] = [None] * len(offsets)
    spans = [piece_span(text, start, end, piece) for (start, end), piece in zip(offsets, pieces)]
    starts = {start: word for word, (start, _) in enumerate(words)}
    owner: dict[int, int] = {}
    for word, (start, end) in enumerate(words):
        owner.update(dict.fromkeys(range(start, end), word))
    taken: set[int] = set()
    for p, span in enumerate(spans):
        if span is None:
            continue
        claims[p] = [starts[c] for c in range(*span) if c in starts and starts[c] not in taken]
        taken.update(claims[p])
        if not claims[p]:
            inside[p] = owner.get(span[0])
    return WholeAlignment(claims, inside)


def _bounded(
    ids: list[int], offsets: list[tuple[int, int]], max_length: int
) -> tuple[list[int], list[tuple[int, int]], bool]:
    """An encoding grown by `split_at_words` cut back to `max_length`, keeping its closing
    special tokens (offsets (0, 0)); whether anything was cut."""
    if len(ids) <= max_length:
        return ids, offsets, False
    tail = 0
    while tail < len(ids) - 1 and tuple(offsets[len(ids) - 1 - tail]) == (0, 0):
        tail += 1
    keep = max_length - tail
    return (
        ids[:keep] + ids[len(ids) - tail :],
        offsets[:keep] + offsets[len(offsets) - tail :],
        True,
    )


def piece_tags(tags: list[str], claims: list[list[int]], scheme: str) -> list[str | None]:
    """Gold tags per piece from word tags: a piece is in the entity of its first word, and
    each entity's pieces get that entity's tags in the scheme (None: a piece starting no word).
    An entity that starts inside a piece begun by a word outside it has no piece of its own
    and is lost for training (counted by `lost_entities`)."""
    first = [words[0] if words else None for words in claims]
    entity_of: dict[int, int] = {}
    spans = decode_spans(tags, scheme)
    for number, (_, start, end) in enumerate(spans):
        for word in range(start, end):
            entity_of[word] = number
    out: list[str | None] = [None if w is None else "O" for w in first]
    labelled = [p for p, w in enumerate(first) if w is not None]
    index = 0
    while index < len(labelled):
        number = entity_of.get(first[labelled[index]])  # type: ignore[arg-type]
        if number is None:
            index += 1
            continue
        run = index
        while run < len(labelled) and entity_of.get(first[labelled[run]]) == number:  # type: ignore[arg-type]
            run += 1
        kind = spans[number][0]
        written = entity_tags(kind, run - index, scheme)
        for p, tag in zip(labelled[index:run], written):
            out[p] = tag
        index = run
    if scheme == "IOB1":
        known = [t for t in out if t is not None]
        rewritten = iter(iob1_tags(known))
        out = [None if t is None else next(rewritten) for t in out]
    return out


def lost_entities(tags: list[str], claims: list[list[int]], scheme: str) -> int:
    """Entities of `tags` that no piece starts (see `piece_tags`)."""
    starts = {words[0] for words in claims if words}
    return sum(1 for _, start, _ in decode_spans(tags, scheme) if start not in starts)


def word_tags_from_pieces(
    found: list[str], claims: list[list[int]], count: int, scheme: str
) -> list[str]:
    """Word tags from the tags of the pieces that start words (`found`, in order) and the words
    each claims: every entity over pieces covers all their words (`银行` as S-ORG tags both
    characters), written again in the scheme; words of no piece (cut by truncation) are O."""
    owners = [words for words in claims if words]
    tags = ["O"] * count
    for kind, start, end in decode_spans(found, scheme):
        covered = [w for words in owners[start:end] for w in words]
        if not covered:
            continue
        first, last = covered[0], covered[-1]
        tags[first : last + 1] = entity_tags(kind, last - first + 1, scheme)
    if scheme == "IOB1":
        tags = iob1_tags(tags)
    return tags


def continuation_labels(labels: list[str], index: dict[str, int], scheme: str) -> dict[str, int]:
    """Label id of a word's later sub-tokens, per word tag (IOB schemes only).

    In IOB1/IOB2 the rest of a word continues its entity (I-X) or stays O. Training on them
    teaches the model that a fragment inside an entity is I-X. Raw text can then be split into
    finer words than the training files had (e.g. "#48213" -> "#", "48213") without losing
    the entity. BIOES/BMES have no tag that continues a word without ending it, so their later
    sub-tokens stay unlabelled (-100), as HF's run_ner does for all schemes.
    """
    if scheme not in ("IOB1", "IOB2"):
        return {}
    mapping = {"O": index["O"]} if "O" in index else {}
    for label in labels:
        inside = f"I-{label[2:]}"
        if label[:2] in ("B-", "I-") and inside in index:
            mapping[label] = index[inside]
    return mapping


class TokenOptions(BaseModel):
    """`task.*` options of ner."""

    model_config = ConfigDict(extra="forbid")

    crf: bool = Field(
        False,
        description="A CRF over the tags (transitions the tag scheme forbids are ruled "
        "out, Viterbi decoding; train.loss becomes crf). Needs method full.",
    )
    split_pieces: bool = Field(
        False,
        description="SentencePiece/byte-level tokenizers (which read sentences whole): a "
        "piece spanning several characters or words (`银行`) is split into one piece per "
        "character or word, so every character gets its own tag and an entity may start or "
        "end inside what was one piece (measured on CLUENER in docs/chinese.md). Sequences "
        "grow longer; WordPiece tokenizers are not affected.",
    )


@TASKS.register("ner")
class TokenTask(Task):
    """Named-entity recognition over words (English) or characters (Chinese)."""

    name = "ner"
    auto_class = "AutoModelForTokenClassification"
    problem = "token"
    default_metric = "entity_f1"
    takes_pairs = False
    output = "entities"  # tags per word and entity spans
    prediction = EntitiesPrediction
    distills = "token"
    lower_is_better: frozenset[str] = frozenset()
    reader = TokenReader()

    takes_crf = True  # task.crf: a CRF over the tags
    Options = TokenOptions
    takes_rules = True  # rules: (bridgetune.knowledge.rules) add, override or veto entities
    takes_gazetteers = True  # knowledge.gazetteers: B/M/E/S match flags per word

    def __init__(
        self,
        labels: list[str],
        scheme: str = "IOB2",
        crf: bool = False,
        rules: list[dict[str, Any]] | None = None,
        lexicon: dict[str, str] | None = None,
        split_pieces: bool = False,
    ) -> None:
        self.labels = labels
        self.split_pieces = split_pieces
        self.index = {label: i for i, label in enumerate(labels)}
        self.scheme = scheme
        self.crf = crf
        self.rules = rules or []
        self.lexicon = lexicon or {}
        self.gazetteer = Gazetteer(self.lexicon) if self.lexicon else None
        types = {label[2:] for label in labels if label != "O"}
        for rule in self.rules:
            if rule["action"] != "veto" and rule.get("type") not in types:
                raise ValueError(
                    f"{rule['name']}: an {rule['action']} rule needs `type`, one of the "
                    f"entity types {sorted(types)}"
                )
        # a CRF runs over words: only first sub-tokens carry labels
        self.continuation = {} if crf else continuation_labels(labels, self.index, scheme)

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> TokenTask:
        """The task for the tags `labels` in `tag_scheme` (default IOB2); `crf`: a CRF over
        the tags (bridgetune.knowledge.crf); `lexicon`: gazetteers whose matches are inputs
        (bridgetune.knowledge.gazetteer)."""
        return cls(labels, scheme=settings.get("tag_scheme") or "IOB2",
                   crf=bool(settings.get("crf")), rules=settings.get("rules"),
                   lexicon=settings.get("lexicon"),
                   split_pieces=bool(settings.get("split_pieces")))  # fmt: skip

    def settings(self) -> dict[str, Any]:
        """What a saved model needs to rebuild this task."""
        saved: dict[str, Any] = {"crf": True} if self.crf else {}
        if self.split_pieces:
            saved["split_pieces"] = True
        if self.rules:
            saved["rules"] = self.rules
        if self.lexicon:
            saved["lexicon"] = self.lexicon
        return saved

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Every option applies to tagging; a CRF trains with its own loss, fully."""
        crf_loss = cfg.train.loss == "crf"
        crf = bool(cfg.task.options().get("crf"))
        if crf_loss and not crf:
            raise ValueError("train.loss: crf needs task.crf: true (the CRF it trains)")
        if not crf:
            return
        if not crf_loss:
            raise ValueError(f"task.crf trains with train.loss: crf, not {cfg.train.loss}")
        if cfg.method.name != "full":
            raise ValueError(f"task.crf needs method.name: full (not {cfg.method.name})")
        unsupported = {
            "train.rdrop": cfg.train.rdrop,
            "train.class_weights": cfg.train.class_weights,
            "train.label_smoothing": cfg.train.label_smoothing,
        }
        for key, value in unsupported.items():  # fmt: skip
            if value:
                raise ValueError(f"{key} does not apply to the CRF's loss; leave it out")

    def build_model(self, name_or_path: str, **kwargs: Any) -> torch.nn.Module:
        from transformers import AutoModelForTokenClassification

        model = load_pretrained(
            AutoModelForTokenClassification, name_or_path, self.labels, **kwargs
        )
        if self.crf:
            from bridgetune.knowledge.crf import CRFTagger

            model = CRFTagger(model, self.labels, self.scheme)
        if self.gazetteer:
            model = LexiconModel(model, self.gazetteer.token_size, self.auto_class)
        return model

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        examples = [
            e if e.tokens is not None else words_example(e.text, tokenizer, max_length)
            for e in examples
        ]
        if reads_whole_text(tokenizer):
            return self._encode_whole(examples, tokenizer, max_length)
        encoded = tokenizer(  # a long sentence's words past the bound would be cut anyway
            [clip_words(e.tokens or [], max_length) for e in examples],
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
        )
        return [self._feature(encoded, i, e) for i, e in enumerate(examples)]

    def _encode_whole(
        self, examples: list[Example], tokenizer: Any, max_length: int
    ) -> list[Feature]:
        """Features of whole sentences (SentencePiece, byte-level BPE: module docstring)."""
        texts, spans = [], []
        for example in examples:
            words = example.tokens or []
            if example.offsets is not None and len(example.offsets) == len(words):
                text, offsets = example.text, list(example.offsets)
            else:  # built in code without offsets: the words joined as a reader joins them
                text, offsets = join_tokens(words)
            texts.append(clip_text(text, max_length))
            spans.append(offsets)
        encoded = tokenizer(
            texts, truncation=True, max_length=max_length, return_offsets_mapping=True
        )
        features = []
        for row, (example, words) in enumerate(zip(examples, spans)):
            ids, offsets = encoded["input_ids"][row], encoded["offset_mapping"][row]
            cut = bool(encoded.encodings[row].overflowing) or len(texts[row]) < len(example.text)
            if self.split_pieces:
                ids, offsets = split_at_words(texts[row], words, ids, offsets, tokenizer)
                ids, offsets, over = _bounded(ids, offsets, max_length)
                cut = cut or over
            align = whole_alignment(texts[row], words, offsets,
                                    tokenizer.convert_ids_to_tokens(ids))  # fmt: skip
            first = align.first
            feature: Feature = {
                "input_ids": ids,
                "first": first,
                "words": [align.claims[p][0] for p in first],
                "claims": [align.claims[p] for p in first],
                "truncated": cut,
                "labels": self._piece_labels(example, align) if example.tags is not None else None,
                "example": example,
            }
            if "token_type_ids" in encoded:  # one sentence: all of type 0
                feature["token_type_ids"] = [0] * len(ids)
            if self.gazetteer:
                flags = self.gazetteer.word_flags(example.tokens or [])
                feature["lexicon"] = align.lexicon(flags)
            features.append(feature)
        return features

    def _piece_labels(self, example: Example, align: WholeAlignment) -> list[int]:
        """Label ids per piece: the scheme's tags of the pieces that start words
        (`piece_tags`), the continuation of a word's later pieces (IOB, no CRF) or IGNORE."""
        tags = example.tags or []
        labels = [IGNORE] * len(align.claims)
        for position, tag in enumerate(piece_tags(tags, align.claims, self.scheme)):
            if tag is not None:
                if tag not in self.index:
                    raise ValueError(
                        f"{example.source or 'an example'}: the tag {tag} (an entity over "
                        "whole pieces) is not one of the model's labels; train with "
                        "data.tag_scheme set, so every entity type gets all the scheme's tags"
                    )
                labels[position] = self.index[tag]
            elif align.inside[position] is not None:
                word_tag = tags[align.inside[position]]  # type: ignore[index]
                labels[position] = self.continuation.get(word_tag, IGNORE)
        return labels

    def _feature(self, encoded: Any, row: int, example: Example) -> Feature:
        word_ids = encoded.word_ids(row)
        first: list[int] = []  # position of each word's first sub-token
        words: list[int] = []  # the word of each: a word may have no piece (U+FE0F alone)
        labels = [IGNORE] * len(word_ids)
        previous = None
        for position, word in enumerate(word_ids):
            if word is not None and word != previous:
                first.append(position)
                words.append(word)
                if example.tags is not None:
                    labels[position] = self.index[example.tags[word]]
            elif word is not None and example.tags is not None:
                labels[position] = self.continuation.get(example.tags[word], IGNORE)
            previous = word
        encoding = encoded.encodings[row] if encoded.encodings else None  # fast tokenizers
        cut = bool(encoding.overflowing) if encoding else len(first) < len(example.tokens or [])
        feature: Feature = {
            "input_ids": encoded["input_ids"][row],
            "first": first,
            "words": words,
            "truncated": cut,
            "labels": labels if example.tags is not None else None,
            "example": example,
        }
        if "token_type_ids" in encoded:
            feature["token_type_ids"] = encoded["token_type_ids"][row]
        if self.gazetteer:
            flags = self.gazetteer.word_flags(example.tokens or [])
            feature["lexicon"] = token_lexicon(flags, word_ids)
        return feature

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        batch = pad_batch(features, pad_id, label_pad=IGNORE)
        if self.gazetteer:
            width = batch["input_ids"].shape[1]
            batch["lexicon"] = collate_lexicon(features, width, self.gazetteer.token_size)
        return batch

    def word_tags(self, logits: torch.Tensor, features: list[Feature]) -> list[list[str]]:
        """Tag of every word (first sub-token's argmax, or the CRF's Viterbi path over the
        words); words cut by truncation get 'O'."""
        if self.crf:
            from bridgetune.knowledge.crf import unpack, viterbi

            emissions, moves, start, end = unpack(logits.detach().cpu())
            best = [
                viterbi(emissions[row, feature["first"]], moves, start, end)
                for row, feature in enumerate(features)
            ]
        else:
            best = logits.argmax(dim=-1).cpu().tolist()
        tags = []
        for row, feature in zip(best, features):
            found = (
                [self.labels[i] for i in row]
                if self.crf
                else [self.labels[row[p]] for p in feature["first"]]
            )
            count = len(feature["example"].tokens)
            if "claims" in feature:  # pieces of a whole sentence (module docstring)
                tags.append(word_tags_from_pieces(found, feature["claims"], count, self.scheme))
            else:
                tags.append(self.spread(found, feature["words"], count))
        return tags

    def spread(self, found: list[str], words: list[int], count: int) -> list[str]:
        """The tags of all `count` words from `found`, those of the words with pieces (`words`):
        a word the tokenizer gives no piece (a lone combining mark, variation selector or
        zero-width character of a character-per-line file) continues the entity around it,
        else is O; words cut by truncation are O."""
        tags = ["O"] * count
        for word, tag in zip(words, found):
            tags[word] = tag
        inside = "M" if self.scheme == "BMES" else "I"
        for before, after in zip(words, words[1:]):
            (opened, kind), (closing, other) = split_tag(tags[before]), split_tag(tags[after])
            if after > before + 1 and kind is not None and kind == other:
                if opened in ("B", "I", "M") and closing in ("I", "M", "E"):
                    tags[before + 1 : after] = [inside + tags[before][1:]] * (after - before - 1)
        return tags

    def labelled_by(self, example: Example, prediction: dict[str, Any]) -> Example:
        """The worded example (a feature's `example`) tagged with the predicted word tags
        (words past the model's max_length, which it never read, tagged O)."""
        tags = list(prediction["tags"])
        tags += ["O"] * (len(example.tokens or []) - len(tags))
        return dataclasses.replace(example, tags=tags)

    def soft_targets(self, logits: torch.Tensor, features: list[Feature]) -> list[torch.Tensor]:
        """The emissions per position (a CRF's logits also carry its transitions: the student
        learns its own from the hard labels)."""
        return super().soft_targets(self.emissions(logits), features)

    def distillation_loss(
        self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        return super().distillation_loss(self.emissions(student), teacher, mask, temperature)

    def emissions(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.crf:
            return logits
        from bridgetune.knowledge.crf import unpack

        return unpack(logits)[0]

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]:
        predictions = []
        for tags, feature in zip(self.word_tags(logits, features), features):
            example = feature["example"]
            entities = self.spans(example, tags)
            if self.rules:
                from bridgetune.knowledge.rules import apply_to_entities

                entities = apply_to_entities(self.rules, example.text, entities)
                tags = self.tags_of(example, entities)
            predictions.append(
                {"tags": tags, "entities": entities, "truncated": feature["truncated"]}
            )
        return predictions

    def tags_of(self, example: Example, entities: list[dict[str, Any]]) -> list[str]:
        """Word tags in this task's scheme for `entities` (after rules): a word is in the
        entity its characters overlap."""
        from bridgetune.data.io import entity_tags

        tags = ["O"] * len(example.offsets or [])
        for entity in entities:
            words = [i for i, (s, e) in enumerate(example.offsets or [])
                     if s < entity["end"] and entity["start"] < e]  # fmt: skip
            if words:
                span = entity_tags(entity["type"], len(words), self.scheme)
                for index, tag in zip(range(words[0], words[-1] + 1), span):
                    tags[index] = tag
        return tags

    def spans(self, example: Example, tags: list[str]) -> list[dict[str, Any]]:
        """Entities with character offsets into the example's text."""
        entities = []
        for kind, first, end in decode_spans(tags, self.scheme):
            start, stop = example.offsets[first][0], example.offsets[end - 1][1]
            entities.append(
                {"type": kind, "start": start, "end": stop, "text": example.text[start:stop]}
            )
        return entities

    def calibrate(
        self, predictions: list[dict[str, Any]], examples: list[Example]
    ) -> list[dict[str, Any]]:
        return predictions

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict:
        return entity_metrics(
            [e.tags for e in examples], [p["tags"] for p in predictions], self.scheme
        )

    def monitor_signal(self, prediction: dict[str, Any]) -> tuple[list[str], float | None]:
        """The tags (the monitor compares tag shares with training's); no confidence."""
        return list(prediction["tags"]), None

    def counted_labels(self, prediction: dict[str, Any]) -> list[str]:
        """Entity types: what the service counts per prediction."""
        return [entity["type"] for entity in prediction.get("entities", [])]

    def feedback_label(self, label: Any, entities: list[dict] | None, text: str) -> Any:
        """Corrected entities checked against the model's types and the text (the exported
        CoNLL file tags each word with one entity: spans may not overlap).

        Raises:
            ValueError: no entities, a label, an unknown type, an entity past the text's end,
                over blank text, not matching its `text`, or overlapping another.
        """
        if entities is None or label is not None:
            raise ValueError(
                "entities: this NER model takes 'entities' (type, start, end), not a label"
            )
        types = sorted({kind for kind in (split_tag(tag)[1] for tag in self.labels) if kind})
        for index, entity in enumerate(entities):
            _check_feedback_entity(f"entities[{index}]", entity, text, types)
        ordered = sorted(entities, key=lambda e: (e["start"], e["end"]))
        for first, second in zip(ordered, ordered[1:]):
            if second["start"] < first["end"]:
                raise ValueError(f"entities: {first} and {second} overlap; one entity per word")
        return entities


def _check_feedback_entity(where: str, entity: dict, text: str, types: list[str]) -> None:
    """One corrected entity: a known type over non-blank text inside `text` (and equal to the
    entity's own `text` when it gives one: offsets count characters, not UTF-8 or UTF-16)."""
    if entity["type"] not in types:
        raise ValueError(f"{where}: unknown entity type {entity['type']!r}; one of {types}")
    if entity["end"] > len(text):
        raise ValueError(f"{where}: entity end {entity['end']} is past the text's end")
    span = text[entity["start"] : entity["end"]]
    if not span.strip() or entity.get("text", span) != span:
        given = f", not {entity['text']!r}" if "text" in entity else ""
        raise ValueError(
            f"{where}: text[{entity['start']}:{entity['end']}] is {span!r}{given}; fix the "
            "offsets (they count characters)"
        )
