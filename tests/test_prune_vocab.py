"""Vocabulary pruning (bridgetune.knowledge.prune): covered text tokenizes the same, specials
keep their ids, the sliced model computes what the whole one did, plain transformers loads both
halves, `auto` leaves small and non-Unigram vocabularies alone, and a pruned run's saved model
predicts what the trained one did."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch

import bridgetune
from bridgetune.config import ConfigError
from bridgetune.data.io import Splits
from bridgetune.data.schema import Example
from bridgetune.knowledge.prune import data_texts, prune_vocabulary, pruned_vocabulary
from bridgetune.recipes.check import as_config
from tests.conftest import ZH_SENTENCES, tiny_config, tiny_unigram_tokenizer

TEXTS = ["my order is late", "love this phone", "我在上海买的耳机", "张三的手机坏了"]


def ids_and_pieces(tokenizer, text: str) -> tuple[list[int], list[str]]:
    ids = tokenizer(text)["input_ids"]
    return ids, tokenizer.convert_ids_to_tokens(ids)


def test_covered_text_reads_the_same_and_specials_keep_their_ids():
    tokenizer = tiny_unigram_tokenizer()
    pruning = prune_vocabulary(tokenizer, TEXTS, reserve=0)
    pruned = pruning.tokenizer
    assert len(pruned) == len(pruning.kept) < len(tokenizer)
    assert pruning.kept == sorted(pruning.kept) and pruning.reserve == 0
    for text in [*TEXTS, "我在上海", "late order"]:  # covered by the kept pieces
        old_ids, old_pieces = ids_and_pieces(tokenizer, text)
        new_ids, new_pieces = ids_and_pieces(pruned, text)
        assert new_pieces == old_pieces
        assert [pruning.kept[i] for i in new_ids] == old_ids
    assert pruned.special_tokens_map == tokenizer.special_tokens_map
    for name in ("bos", "pad", "eos", "unk", "mask"):
        old, new = (getattr(t, f"{name}_token_id") for t in (tokenizer, pruned))
        assert pruning.kept[new] == old
    assert pruned.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    # 北京 and 明天 are not in the data: their whole pieces go, every CJK character stays
    pieces = ids_and_pieces(pruned, "北京明天很好")[1]
    assert pieces == ["<s>", "▁", "北", "京", "明", "天", "很", "好", "</s>"]
    assert "<unk>" in ids_and_pieces(pruned, "phone charger")[1]  # charger's pieces were pruned


def test_the_reserve_is_the_highest_scores_and_the_limit_is_checked():
    tokenizer = tiny_unigram_tokenizer()
    needed = len(prune_vocabulary(tokenizer, TEXTS, reserve=0).kept)
    pruning = prune_vocabulary(tokenizer, TEXTS, limit=needed + 3, reserve=8000)
    assert len(pruning.kept) == needed + 3 and pruning.reserve == 3
    # the best-scoring pieces the data does not use: ▁-words (-4) before the characters (-8)
    extra = set(pruning.kept) - set(prune_vocabulary(tokenizer, TEXTS, reserve=0).kept)
    assert all(tokenizer.convert_ids_to_tokens(i).startswith("▁") for i in extra)
    with pytest.raises(ConfigError, match=f"fewer than the data needs: {needed} "):
        prune_vocabulary(tokenizer, TEXTS, limit=needed - 1)


def test_the_sliced_model_computes_the_same_and_plain_transformers_loads_it(
    tiny_xlmr_bert, tmp_path
):
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_xlmr_bert)
    pruning = prune_vocabulary(tokenizer, TEXTS, reserve=10)
    whole, sliced, other = (AutoModel.from_pretrained(tiny_xlmr_bert).eval() for _ in range(3))
    sliced.config.eos_token_id = tokenizer.mask_token_id  # the last id: it moves
    pruning.slice(sliced)
    assert sliced.config.vocab_size == len(pruning.kept) == len(pruning.tokenizer)
    assert sliced.config.eos_token_id == pruning.tokenizer.mask_token_id < tokenizer.mask_token_id
    other.config.bos_token_id = tokenizer.convert_tokens_to_ids("▁email")  # not kept
    with pytest.raises(ConfigError, match="names token id .* as bos_token_id"):
        pruning.slice(other)
    summary = pruning.summary()
    assert summary["pieces_before"] == len(tokenizer) and summary["reserve_kept"] == 10
    assert summary["parameters_before"] - summary["parameters_after"] == (
        (len(tokenizer) - len(pruning.kept)) * whole.config.hidden_size
    )
    assert summary["embedding_mb_after"] < summary["embedding_mb_before"]
    pruning.tokenizer.save_pretrained(tmp_path)
    sliced.save_pretrained(tmp_path)
    plain_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    plain = AutoModel.from_pretrained(tmp_path).eval()
    old = tokenizer(TEXTS, padding=True, return_tensors="pt")
    new = plain_tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(torch.tensor(pruning.kept)[new["input_ids"]], old["input_ids"])
    with torch.no_grad():
        expected = whole(**old).last_hidden_state
        assert torch.allclose(plain(**new).last_hidden_state, expected, atol=1e-6)

    # a masked-LM head tied to the embeddings, its bias sliced too: the kept columns of the logits
    lm = AutoModelForMaskedLM.from_pretrained(tiny_xlmr_bert).eval()
    torch.nn.init.normal_(lm.get_output_embeddings().bias)
    pruned_lm = copy.deepcopy(lm)
    pruning.slice(pruned_lm)
    assert pruned_lm.get_output_embeddings().weight is pruned_lm.get_input_embeddings().weight
    with torch.no_grad():
        expected = lm(**old).logits[..., pruning.kept]
        assert torch.allclose(pruned_lm(**new).logits, expected, atol=1e-5)


def test_extended_tokens_survive_pruning_with_their_new_rows(tiny_xlmr_bert):
    from transformers import AutoModel, AutoTokenizer

    from bridgetune.knowledge.vocab import extend_vocabulary

    tokenizer = AutoTokenizer.from_pretrained(tiny_xlmr_bert)
    texts = ["浙江的耳机", "浙江的手机"]
    extension = extend_vocabulary(tokenizer, texts, "auto")
    assert extension.added == ["浙", "江"]  # unknown to the tiny vocabulary
    model = AutoModel.from_pretrained(tiny_xlmr_bert)
    extension.resize(model, tokenizer)
    rows = model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(["浙", "江"])]
    pruning = prune_vocabulary(tokenizer, texts, reserve=0)
    pruning.slice(model)
    pruned = pruning.tokenizer
    assert ids_and_pieces(pruned, "浙江的耳机")[1] == ["<s>", "浙", "江", "▁", "的", "耳机", "</s>"]
    assert ids_and_pieces(tokenizer, "浙江的耳机")[1] == ids_and_pieces(pruned, "浙江的耳机")[1]
    new_rows = model.get_input_embeddings().weight[pruned.convert_tokens_to_ids(["浙", "江"])]
    assert torch.equal(new_rows, rows)


def test_the_text_of_every_kind_of_example_counts():
    examples = [
        Example(text="question", text_pair="context"),
        Example(text="query", candidates=["first", "second"]),
        Example(text="prompt", label={"completion": "answer"}),
        Example(text="hi", label={"messages": [{"role": "user", "content": "turn"}]}),
        Example(text="john smith", tokens=["john", "smith"]),
    ]
    splits = Splits(examples[:2], examples[2:4], examples[4:], [], "")
    assert set(data_texts(splits)) == {
        "question", "context", "query", "first", "second", "prompt", "answer", "hi", "turn",
        "john smith", "john", "smith",
    }  # fmt: skip


def pruning_config(model, setting) -> Any:
    config = tiny_config(model, "runs", data={"train": "train.csv"})
    config["model"]["prune_vocab"] = setting
    return as_config(config)


def test_auto_leaves_wordpiece_and_small_vocabularies_alone(tiny_bert, tiny_xlmr_bert, capsys):
    from transformers import AutoTokenizer

    splits = Splits([Example(text="my order is late")], [], None, [], "")
    for model, reason in ((tiny_bert, "WordPiece tokenizer"), (tiny_xlmr_bert, "not over 60,000")):
        tokenizer = AutoTokenizer.from_pretrained(model)
        assert pruned_vocabulary(pruning_config(model, "auto"), tokenizer, splits) is None
        assert reason in " ".join(capsys.readouterr().err.split())  # rich wraps lines
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    with pytest.raises(ConfigError, match="needs a SentencePiece Unigram tokenizer"):
        pruned_vocabulary(pruning_config(tiny_bert, 5000), tokenizer, splits)
    with pytest.raises(ConfigError, match="prune_vocab"):
        pruning_config(tiny_bert, 0)


def test_a_pruned_run_saves_a_model_that_predicts_what_the_trained_one_did(
    tiny_xlmr_bert, zh_bmes, tmp_path, monkeypatch
):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    import bridgetune.recipes.train as recipe
    from bridgetune.inference.predictor import Predictor

    finished = {}

    def finish_run(run, cfg, fitted, task, tokenizer, *args, **kwargs):
        finished.update(model=fitted.model, task=task, tokenizer=tokenizer)
        return original(run, cfg, fitted, task, tokenizer, *args, **kwargs)

    original = recipe.finish_run
    monkeypatch.setattr(recipe, "finish_run", finish_run)
    data = {"train": str(zh_bmes), "dev": str(zh_bmes), "tag_scheme": "BMES"}
    config = tiny_config(tiny_xlmr_bert, tmp_path / "runs", task="ner", data=data,
                         train={"epochs": 15, "lr": 5e-3})  # fmt: skip
    config["model"]["prune_vocab"] = 100  # the data needs about 40 of the 180 pieces
    result = bridgetune.train(config)
    summary = json.loads((result.model_dir / "bridgetune.json").read_text("utf-8"))["vocab_pruning"]
    assert summary["pieces_after"] == 100 < summary["pieces_before"] == 180
    assert (result.run_dir / "vocab_pruning.json").is_file()

    texts = ["".join(ch for ch, _ in sentence) for sentence in ZH_SENTENCES]
    trained = Predictor(finished["model"], finished["tokenizer"], finished["task"],
                        {"max_length": 32}, torch.device("cpu"))  # fmt: skip
    saved = Predictor.load(result.model_dir, device="cpu")
    assert len(saved.tokenizer) == 100
    predicted = [p["entities"] for p in saved.predict(texts)]
    assert predicted == [p["entities"] for p in trained.predict(texts)] and any(predicted)
    assert bridgetune.evaluate(result.model_dir, str(zh_bmes))["entity_f1"] == pytest.approx(
        result.metrics["entity_f1"]
    )
    plain = AutoModelForTokenClassification.from_pretrained(result.model_dir)
    assert plain.get_input_embeddings().weight.shape[0] == 100
    assert len(AutoTokenizer.from_pretrained(result.model_dir)) == 100
