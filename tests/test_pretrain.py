"""Masked-LM pre-training (`bridgetune pretrain`, task mlm): masking units by token, by word
(jieba for Chinese) and by dictionary phrase, hand-checked masks, BERT's 80/10/10 recipe,
windows of long documents, a run that reports dev perplexity before and after, resumes to the
same weights as an uninterrupted run, and whose model directory a NER config can name."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import bridgetune
from bridgetune.config import ConfigError
from bridgetune.knowledge.masking import jieba_words, mask, units
from bridgetune.tasks.losses import IGNORE
from bridgetune.tasks.mlm import MaskedLMTask
from bridgetune.training.loop import TrainingInterrupted
from tests.conftest import tiny_config


def encoded(tokenizer, text: str):
    found = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return found["input_ids"], found["offset_mapping"], found.word_ids()


def test_units_by_token_word_chinese_word_and_phrase(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    ids, offsets, words = encoded(tokenizer, "hello world")  # one-letter pieces each
    assert units("hello world", offsets, words, "token") == list(range(len(ids)))
    assert units("hello world", offsets, words, "whole_word") == [0] * 5 + [1] * 5
    text = "我在上海买的耳机"
    ids, offsets, words = encoded(tokenizer, text)
    assert len(ids) == 8  # a character per token, each its own word for BERT's tokenizer
    spans = jieba_words(text)
    assert spans[:2] == [(0, 1), (1, 2)] and (2, 4) in spans and (6, 8) in spans
    by_word = units(text, offsets, words, "whole_word")
    assert by_word[2] == by_word[3] and by_word[6] == by_word[7] and by_word[1] != by_word[2]
    knowledge = units(text, offsets, words, "knowledge", phrases=["买的耳机"])
    assert len(set(knowledge[4:8])) == 1 and knowledge[4] not in knowledge[:4]


def test_masks_take_whole_units_and_follow_the_80_10_10_recipe(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    ids = list(range(10, 30))
    groups = [-1] + [i // 4 for i in range(18)] + [-1]  # five 4-token words, two specials
    generator = torch.Generator().manual_seed(0)
    inputs, labels = mask(ids, groups, tokenizer, 0.15, generator, IGNORE)
    chosen = [i for i, label in enumerate(labels) if label != IGNORE]
    assert labels[0] == labels[-1] == IGNORE  # never a special token
    # whole words until at least 15% of the 18 tokens (3): every chosen word complete
    taken = {groups[i] for i in chosen}
    assert chosen == [i for i, g in enumerate(groups) if g in taken]
    assert 3 <= len(chosen) < 3 + 4
    assert all(labels[i] == ids[i] for i in chosen)
    # over many draws: 80% [MASK], 10% a random token, 10% unchanged
    masked = random = kept = 0
    generator = torch.Generator().manual_seed(1)
    single = [-1] + list(range(18)) + [-1]
    for _ in range(400):
        inputs, labels = mask(ids, single, tokenizer, 0.5, generator, IGNORE)
        for i, label in enumerate(labels):
            if label == IGNORE:
                continue
            if inputs[i] == tokenizer.mask_token_id:
                masked += 1
            elif inputs[i] == ids[i]:
                kept += 1
            else:
                random += 1
    total = masked + random + kept
    assert total == 400 * 9
    assert 0.77 < masked / total < 0.83 and 0.07 < random / total < 0.13


def test_long_documents_become_windows_and_dev_masks_repeat(tiny_bert):
    from transformers import AutoTokenizer

    from bridgetune.data.schema import Example

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    task = MaskedLMTask([], "whole_word")
    text = "我在上海买的耳机" * 10
    features = task.encode([Example(text=text)], tokenizer, 32)
    assert [len(f["input_ids"]) for f in features] == [32, 32, 22]  # 80 characters + specials
    assert all(f["input_ids"][0] == tokenizer.cls_token_id for f in features)
    assert all(f["units"][0] == -1 and f["units"][-1] == -1 for f in features)
    first = task.collate(features, tokenizer.pad_token_id)
    again = task.collate(features, tokenizer.pad_token_id)
    assert torch.equal(first["labels"], again["labels"])  # dev: the same masks every time
    assert (first["labels"] != IGNORE).any()


def write_corpus(path: Path) -> Path:
    lines = ["我在上海买的耳机还没到", "张三在北京买的手机很好", "李四今天买的耳机坏了",
             "where is my order", "the order ships tomorrow"] * 6  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pretrain_config(tiny_bert: Path, corpus: Path, run_dir: Path, **train) -> dict:
    config = tiny_config(tiny_bert, run_dir, data={"train": str(corpus), "dev": str(corpus)},
                         train={"epochs": 3, "lr": 5e-3, "batch_size": 8, **train})  # fmt: skip
    config["name"] = "zh-pretrain"
    return config


def test_pretraining_reports_perplexity_and_its_model_feeds_a_ner_run(
    tiny_bert, zh_bmes, tmp_path, capsys
):
    corpus = write_corpus(tmp_path / "corpus.txt")
    result = bridgetune.pretrain(pretrain_config(tiny_bert, corpus, tmp_path / "runs", epochs=8))
    said = " ".join(capsys.readouterr().err.split())
    assert "has no trained masked-LM head: a fresh one starts" in said
    meta = json.loads((result.model_dir / "bridgetune.json").read_text("utf-8"))
    assert meta["task"] == "mlm" and meta["settings"]["masking"] == "whole_word"
    before = meta["before_training"]["perplexity"]
    assert result.metrics["perplexity"] < before / 2  # it learned the corpus
    assert (result.run_dir / "before_training.json").is_file()

    ner = tiny_config(result.model_dir, tmp_path / "ner", task="ner",
                      data={"train": str(zh_bmes), "dev": str(zh_bmes), "tag_scheme": "BMES"},
                      train={"epochs": 2})  # fmt: skip
    assert "entity_f1" in bridgetune.train(ner).metrics

    with pytest.raises(ConfigError, match="method.name: full"):
        bridgetune.pretrain({**pretrain_config(tiny_bert, corpus, tmp_path / "x"),
                      "method": {"name": "lora"}})  # fmt: skip
    bad = pretrain_config(tiny_bert, corpus, tmp_path / "y")
    bad["pretrain"] = {"masking": "knowledge"}
    with pytest.raises(ConfigError, match="set pretrain.phrases"):
        bridgetune.pretrain(bad)


def test_a_resumed_pretraining_ends_where_an_uninterrupted_one_does(tiny_bert, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    whole = bridgetune.pretrain(pretrain_config(tiny_bert, corpus, tmp_path / "a"))
    config = pretrain_config(tiny_bert, corpus, tmp_path / "b")

    def stop(state) -> None:
        if state.global_step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        bridgetune.pretrain(config, on_step=stop)
    resumed = bridgetune.pretrain(config, resume=True)
    assert resumed.metrics["loss"] == whole.metrics["loss"]
    ours = load_file(resumed.model_dir / "model.safetensors")
    reference = load_file(whole.model_dir / "model.safetensors")
    assert all(torch.equal(ours[k], reference[k]) for k in reference)
