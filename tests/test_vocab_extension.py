"""Vocabulary extension (bridgetune.knowledge.vocab): which units are added on WordPiece and
byte-level BPE tokenizers, new ids and embedding rows (mean of the old pieces), token files,
and a run whose model directory loads in plain transformers with the same tokens and tags."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from bridgetune.config import ConfigError
from bridgetune.data.schema import DataError
from bridgetune.knowledge.vocab import VocabExtension, extend_vocabulary, statistics
from tests.conftest import tiny_config


def bert_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


def test_wordpiece_gets_the_unknown_characters_and_long_words(tiny_bert):
    tokenizer = bert_tokenizer(tiny_bert)
    size = len(tokenizer)
    texts = ["浙商银行在上海", "浙商的耳机", "kubernetes cluster kubernetes"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("浙商")["input_ids"][1:-1]) == ["[UNK]"] * 2
    extension = extend_vocabulary(tokenizer, texts, "auto", min_count=2)
    # 浙 and 商 occur twice and are unknown; 银/行 once; 在/上/海/的/耳/机 are known characters;
    # "kubernetes" is ten one-letter pieces in this vocabulary: a long word
    assert extension.added == ["浙", "商", "kubernetes"]
    assert tokenizer.convert_tokens_to_ids(extension.added) == [size, size + 1, size + 2]
    assert tokenizer("浙商")["input_ids"][1:-1] == [size, size + 1]
    assert extension.before["unk_share"] > extension.after["unk_share"]
    assert extension.pieces["浙"] == [] and len(extension.pieces["kubernetes"]) >= 4
    # nothing is added twice
    assert extend_vocabulary(tokenizer, texts, "auto", min_count=2).added == []


def test_new_embedding_rows_start_at_the_mean_of_their_old_pieces(tiny_bert):
    from transformers import AutoModelForTokenClassification

    tokenizer = bert_tokenizer(tiny_bert)
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    old = model.get_input_embeddings().weight.detach().clone()
    extension = extend_vocabulary(tokenizer, ["浙江 kubernetes"] * 2, "auto")
    extension.resize(model, tokenizer)
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == len(tokenizer) == old.shape[0] + 3
    zhe, kube = tokenizer.convert_tokens_to_ids(["浙", "kubernetes"])
    assert torch.allclose(weight[zhe], old.mean(0))  # [UNK] alone: the mean of all rows
    pieces = extension.pieces["kubernetes"]
    assert torch.allclose(weight[kube], old[pieces].mean(0))
    assert torch.equal(weight[: old.shape[0]], old)  # old rows untouched


def test_byte_level_bpe_spells_chinese_in_bytes_and_gets_whole_characters():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    core = ByteLevelBPETokenizer()
    core.train_from_iterator(["where is my order", "it ships tomorrow"] * 20, vocab_size=300,
                             special_tokens=["<|endoftext|>"], show_progress=False)  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core._tokenizer,
                                        eos_token="<|endoftext|>")  # fmt: skip
    assert len(tokenizer("订单")["input_ids"]) == 6  # three bytes per character
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1,
                                       n_head=2))  # fmt: skip
    old = model.get_input_embeddings().weight.detach().clone()
    extension = extend_vocabulary(tokenizer, ["我的订单", "订单到了"], "auto")
    assert extension.added == ["订", "单"]
    assert extension.before["pieces_per_unit"] > extension.after["pieces_per_unit"]
    extension.resize(model, tokenizer)
    order = tokenizer.convert_tokens_to_ids("订")
    assert tokenizer("订单")["input_ids"] == [order, order + 1]
    assert torch.allclose(model.get_input_embeddings().weight[order],
                          old[extension.pieces["订"]].mean(0))  # fmt: skip
    assert model.get_output_embeddings().weight.shape[0] == len(tokenizer)  # tied, grown too


def test_token_files_and_their_mistakes(tiny_bert, tmp_path):
    tokenizer = bert_tokenizer(tiny_bert)
    listed = tmp_path / "tokens.txt"
    listed.write_text("# drug names\n\nibuprofen\n浙\nibuprofen\n", "utf-8")
    assert extend_vocabulary(tokenizer, [], str(listed)).added == ["ibuprofen", "浙"]
    listed.write_text("ok\ntwo words\n", "utf-8")
    with pytest.raises(DataError, match=r"tokens.txt:2: a token has no white space"):
        extend_vocabulary(tokenizer, [], str(listed))
    with pytest.raises(DataError, match="no token file there"):
        extend_vocabulary(tokenizer, [], str(tmp_path / "missing.txt"))


def test_statistics_count_unknown_units_and_pieces(tiny_bert):
    tokenizer = bert_tokenizer(tiny_bert)
    found = statistics(tokenizer, Counter({"浙": 3, "我": 1}))
    assert found == {"unk_share": 0.75, "pieces_per_unit": 1.0}
    assert VocabExtension([]).summary()["added"] == 0


def test_a_run_with_extended_vocabulary_loads_in_plain_transformers(tiny_bert, tmp_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    import bridgetune

    rows = [{"text": "浙商在杭州买的耳机", "label": {"company": {"浙商": [[0, 1]]},
                                              "address": {"杭州": [[3, 4]]}}},
            {"text": "招商在深圳买的手机", "label": {"company": {"招商": [[0, 1]]},
                                              "address": {"深圳": [[3, 4]]}}}] * 4  # fmt: skip
    data = tmp_path / "train.json"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    config = tiny_config(tiny_bert, tmp_path / "runs", task="ner",
                         data={"train": str(data), "dev": str(data)},
                         train={"epochs": 30, "lr": 5e-3})  # fmt: skip
    config["model"]["extend_vocab"] = "auto"
    result = bridgetune.train(config)
    assert result.metrics["entity_f1"] == 1.0
    meta = json.loads((result.model_dir / "bridgetune.json").read_text("utf-8"))
    assert meta["vocab_extension"]["added"] == 7  # 浙 商 杭 州 招 深 圳: the unknown ones
    assert (result.run_dir / "vocab_extension.json").is_file()

    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    plain = AutoModelForTokenClassification.from_pretrained(result.model_dir)
    words = list("招商在杭州买的耳机")
    encoded = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    assert "[UNK]" not in tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    with torch.no_grad():
        tags = plain(**encoded).logits.argmax(-1)[0, 1:-1].tolist()
    predicted = bridgetune.load(result.model_dir).predict(["招商在杭州买的耳机"])[0]["tags"]
    assert [plain.config.id2label[t] for t in tags] == predicted

    with pytest.raises(ConfigError, match="method.name: full"):
        bridgetune.train({**config, "name": "lora", "method": {"name": "lora"}})


def test_mostly_chinese_text_the_model_cannot_read_gets_the_multilingual_advice():
    from bridgetune.knowledge.vocab import chinese_model_advice
    from bridgetune.models import bundled_minilm_path, load_tokenizer

    minilm = load_tokenizer(bundled_minilm_path())
    chinese = ["浙商银行企业信贷部叶老桂博士则从另一个角度解读", "我在杭州买了 iPhone"]
    advice = chinese_model_advice(minilm, chinese * 3)
    assert advice and "bridgetune models pull multilingual" in advice and "[UNK]" in advice
    assert chinese_model_advice(minilm, ["my order is late", "great service"]) is None
    # mostly English with a few Chinese words: no advice
    assert chinese_model_advice(minilm, ["the 银行 is closed today, sorry about that"]) is None
    # a tokenizer that reads the characters (the XLM-R-style one): no advice
    from tests.conftest import tiny_unigram_tokenizer

    assert chinese_model_advice(tiny_unigram_tokenizer(), ["我在上海买的耳机"] * 3) is None


def test_train_advises_a_chinese_model_for_chinese_ner(tiny_bert, tmp_path, capsys):
    import bridgetune

    rows = [{"text": "浙商银行企业信贷部叶老桂", "label": {"name": {"叶老桂": [[9, 11]]}}}] * 8
    data = tmp_path / "zh.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), "utf-8")
    config = {
        "task": "ner",
        "model": {"name": str(tiny_bert)},
        "output_dir": str(tmp_path),
        "data": {"train": str(data), "dev": str(data)},
        "train": {"epochs": 1},
    }
    bridgetune.train(config)
    said = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "reads 100% of them as [UNK]" in said and "models pull multilingual" in said
