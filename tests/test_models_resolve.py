"""Model name resolution and the max_length check (offline: bundled MiniLM, tiny local configs)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from bridgetune.models import (
    ModelError,
    check_max_length,
    load_tokenizer,
    model_max_length,
    resolve_model,
)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "a", "b", "##s"]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """config.json (64 positions) and a fast WordPiece tokenizer (limit 48); no weights needed."""
    from transformers import BertConfig, BertTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-bert-config")
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    config.save_pretrained(directory)
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), model_max_length=48)
    tokenizer.save_pretrained(directory)
    return directory


def test_resolve_bundled_alias() -> None:
    for alias in ("minilm", "MiniLM", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        path = Path(resolve_model(alias))
        assert path.is_dir()
        assert (path / "config.json").is_file()


def test_resolve_missing_local_path_names_it() -> None:
    with pytest.raises(ModelError, match=r"\./nope/model") as info:
        resolve_model("./nope/model")
    assert "model.name" in str(info.value)
    with pytest.raises(ModelError, match="/nope/deeper/model"):
        resolve_model("/nope/deeper/model")


def test_resolve_existing_directory(tiny_bert_dir: Path) -> None:
    assert resolve_model(str(tiny_bert_dir)) == str(tiny_bert_dir)


def test_resolve_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="config.json") as info:
        resolve_model(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_resolve_hub_id_is_passed_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    assert resolve_model("bert-base-uncased") == "bert-base-uncased"
    assert resolve_model("org/some-model") == "org/some-model"


def test_check_max_length_bundled_minilm() -> None:
    path = resolve_model("minilm")
    tokenizer = load_tokenizer(path)
    assert model_max_length(path, tokenizer) == 512
    check_max_length(path, tokenizer, 512)
    with pytest.raises(ModelError, match="512") as info:
        check_max_length(path, tokenizer, 1024)
    assert "model.max_length=1024" in str(info.value)


def test_check_max_length_tiny_bert(tiny_bert_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    # 64 positions, but the tokenizer caps at 48
    assert model_max_length(str(tiny_bert_dir), tokenizer) == 48
    check_max_length(str(tiny_bert_dir), tokenizer, 48)
    with pytest.raises(ModelError, match="at most 48"):
        check_max_length(str(tiny_bert_dir), tokenizer, 49)
    # a tokenizer without a real limit leaves the position embeddings as the limit
    unlimited = SimpleNamespace(model_max_length=int(1e30))
    assert model_max_length(str(tiny_bert_dir), unlimited) == 64
    with pytest.raises(ModelError, match="at most 64"):
        check_max_length(str(tiny_bert_dir), unlimited, 65)


def test_roberta_positions_exclude_padding_offset(tmp_path: Path) -> None:
    from transformers import RobertaConfig

    RobertaConfig(
        vocab_size=10,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=66,
    ).save_pretrained(tmp_path)
    tokenizer = SimpleNamespace(model_max_length=int(1e30))
    assert model_max_length(str(tmp_path), tokenizer) == 64
    check_max_length(str(tmp_path), tokenizer, 64)
    with pytest.raises(ModelError, match="at most 64"):
        check_max_length(str(tmp_path), tokenizer, 65)
