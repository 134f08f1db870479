"""Gazetteer features (bridgetune.knowledge.gazetteer): hand-checked matches and B/M/E/S flags,
gazetteer sources (lists, files, jieba's dictionary), the features' map, and training:
names the model never saw in training are found through the dictionary with the features on
and missed with them off; models save, reload and load in plain transformers."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

import bridgetune
from bridgetune.config import ConfigError
from bridgetune.data.schema import DataError
from bridgetune.knowledge.gazetteer import Gazetteer, LexiconModel, load_gazetteers, token_lexicon
from tests.conftest import tiny_config, write_conll, write_csv


def test_matches_and_flags_by_hand():
    gazetteer = Gazetteer({"LOC": "上海\n上海市\n北京", "PER": "张三", "ORG": "acme corp"})
    assert gazetteer.types == ["LOC", "ORG", "PER"]
    words = list("我在上海市见张三")
    assert sorted(gazetteer.matches(words)) == [(2, 4, 0), (2, 5, 0), (6, 8, 2)]
    # 4 flags per type (B, M, E, S); LOC = 0..3, ORG = 4..7, PER = 8..11
    assert gazetteer.word_flags(words) == [
        (2, 0),  # 上 begins 上海 and 上海市
        (3, 1),  # 海 is inside 上海市
        (3, 2),  # and ends 上海
        (4, 2),  # 市 ends 上海市
        (6, 8),  # 张 begins 张三
        (7, 10),  # 三 ends it
    ]
    english = "the acme corp office".split()
    assert gazetteer.word_flags(english) == [(1, 4), (2, 6)]  # a two-word name, word by word
    assert gazetteer.word_flags(["acme"]) == []  # half a name is no match
    assert gazetteer.counts("上海和北京, acme corp", None) == [round(math.log1p(2), 6), round(
        math.log1p(1), 6), 0.0]  # fmt: skip
    assert gazetteer.counts("我在上海", "张三在北京") == [round(math.log1p(2), 6), 0.0, round(
        math.log1p(1), 6)]  # fmt: skip
    # every sub-token of a word carries the word's flags; special tokens none
    assert token_lexicon([(0, 3), (1, 8)], [None, 0, 0, 1, None]) == [[1, 3], [2, 3], [3, 8]]


def test_gazetteer_sources(tmp_path):
    names = tmp_path / "cities.txt"
    names.write_text("# cities\n上海\n\n北京\n京\n", encoding="utf-8")
    loaded = load_gazetteers({"CITY": str(names), "BRAND": ["Acme", "X"]}, min_chars=2)
    assert loaded == {"CITY": "上海\n北京", "BRAND": "Acme"}  # short names dropped, sorted
    people = load_gazetteers({"PER": "jieba:nr"})["PER"].split("\n")
    assert len(people) > 50_000 and "周杰伦" in people  # jieba's person names, offline
    places = load_gazetteers({"LOC": "jieba:ns,nt"})["LOC"].split("\n")
    assert "上海" in places
    with pytest.raises(DataError, match="missing.txt: does not exist"):
        load_gazetteers({"CITY": str(tmp_path / "missing.txt")})
    with pytest.raises(ValueError, match="no name of at least 3"):
        load_gazetteers({"CITY": ["上海"]}, min_chars=3)
    with pytest.raises(ValueError, match="no word tagged"):
        load_gazetteers({"X": "jieba:nope"})


def test_the_features_move_the_logits_of_flagged_tokens_only(tiny_bert):
    from transformers import AutoModelForTokenClassification

    torch.manual_seed(0)
    tagger = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    model = LexiconModel(tagger, 8, "AutoModelForTokenClassification").eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    features = torch.zeros(1, 5, 8)
    features[0, 1, 0] = 1.0
    plain = tagger(input_ids=ids).logits
    moved = model(input_ids=ids, lexicon=features).logits
    assert not torch.allclose(moved[0, 1], plain[0, 1])  # the flagged token changed
    assert torch.allclose(moved[0, 2:], plain[0, 2:])  # the others did not
    assert torch.equal(model(input_ids=ids).logits, plain)  # no features: the plain model


def _random_word(rng: random.Random) -> str:
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(5))


def _place_sentences(rng: random.Random, places: list[str], count: int) -> list:
    """Sentences of random words where the words from `places` (each in turn) are LOC: nothing
    but the dictionary tells a place from another word."""
    sentences = []
    for index in range(count):
        words = [_random_word(rng) for _ in range(4)]
        slot = rng.randrange(4)
        words[slot] = places[index % len(places)]
        sentences.append([(w, "B-LOC" if i == slot else "O") for i, w in enumerate(words)])
    return sentences


def test_ner_finds_unseen_dictionary_names_only_with_the_features(tiny_bert, tmp_path):
    from transformers import AutoModelForTokenClassification

    rng = random.Random(0)
    seen, unseen = [_random_word(rng) for _ in range(48)], [_random_word(rng) for _ in range(12)]
    train = write_conll(tmp_path / "train.conll", _place_sentences(rng, seen, 48))
    dev = write_conll(tmp_path / "dev.conll", _place_sentences(rng, unseen, 24))
    config = tiny_config(tiny_bert, tmp_path / "runs", task="ner",
                         data={"train": str(train), "dev": str(dev)},
                         train={"epochs": 8, "lr": 5e-3})  # fmt: skip
    gazetteers = {"PLACE": seen + unseen}
    without = bridgetune.train({**config, "name": "without"})
    with_features = bridgetune.train(
        {**config, "name": "with", "knowledge": {"gazetteers": gazetteers}}
    )
    assert without.metrics["entity_f1"] < 0.3
    assert with_features.metrics["entity_f1"] > 0.9

    directory = with_features.model_dir
    meta = json.loads((directory / "bridgetune.json").read_text("utf-8"))
    assert meta["head"]["type"] == "lexicon" and meta["head"]["inner"] is None
    assert meta["settings"]["lexicon"] == "gazetteers.json"  # the names: a file of their own
    names = json.loads((directory / "gazetteers.json").read_text("utf-8"))
    assert sorted(names["PLACE"]) == sorted(seen + unseen)
    predictor = bridgetune.load(directory)
    sentence = f"{_random_word(rng)} {unseen[0]} {_random_word(rng)}"
    [prediction] = predictor.predict([sentence])
    assert [e["text"] for e in prediction["entities"]] == [unseen[0]]
    assert bridgetune.load(directory).predict([sentence]) == [prediction]
    plain = AutoModelForTokenClassification.from_pretrained(directory)  # without the features
    assert plain.config.id2label == {i: label for i, label in enumerate(meta["labels"])}
    (directory / "gazetteers.json").write_text("{", "utf-8")
    with pytest.raises(ValueError, match="gazetteers.json: the model's gazetteers cannot be"):
        bridgetune.load(directory)


def test_gazetteer_features_with_a_crf_save_and_reload(tiny_bert, ner_conll, tmp_path):
    config = tiny_config(tiny_bert, tmp_path / "runs", task="ner",
                         data={"train": str(ner_conll), "dev": str(ner_conll)},
                         train={"epochs": 20, "lr": 5e-3},
                         knowledge={"gazetteers": {"CITY": ["paris", "berlin", "london"]}},
                         )  # fmt: skip
    config["model"]["crf"] = True
    result = bridgetune.train(config)
    meta = json.loads((result.model_dir / "bridgetune.json").read_text("utf-8"))
    assert meta["head"]["type"] == "lexicon" and meta["head"]["inner"]["type"] == "crf"
    assert meta["settings"]["crf"] is True
    texts = ["bob visited paris", "carol smith was in london"]
    first = bridgetune.load(result.model_dir).predict(texts)
    assert bridgetune.load(result.model_dir).predict(texts) == first
    assert result.metrics["entity_f1"] > 0.8


def test_classification_learns_a_lexicon_it_never_saw_in_training(tiny_bert, tmp_path):
    rng = random.Random(1)
    good, bad = [_random_word(rng) for _ in range(40)], [_random_word(rng) for _ in range(40)]

    def rows(words_good: list[str], words_bad: list[str], count: int) -> list:
        out = []  # each lexicon word once per label: nothing to memorize
        for index in range(count):
            label = "pos" if index % 2 else "neg"
            word = (words_good if label == "pos" else words_bad)[index // 2]
            out.append((f"{_random_word(rng)} {word} {_random_word(rng)}", label))
        return out

    train = write_csv(tmp_path / "train.csv", ["text", "label"], rows(good[:30], bad[:30], 60))
    dev = write_csv(tmp_path / "dev.csv", ["text", "label"], rows(good[30:], bad[30:], 20))
    config = tiny_config(tiny_bert, tmp_path / "runs", data={"train": str(train),
                         "dev": str(dev)}, train={"epochs": 10, "lr": 5e-3})  # fmt: skip
    lexicon = {"knowledge": {"gazetteers": {"good": good, "bad": bad}}}
    without = bridgetune.train({**config, "name": "without"})
    with_features = bridgetune.train({**config, "name": "with", **lexicon})
    assert without.metrics["accuracy"] < 0.75
    assert with_features.metrics["accuracy"] > 0.95
    predictor = bridgetune.load(with_features.model_dir)
    [prediction] = predictor.predict([f"{_random_word(rng)} {good[35]}"])
    assert prediction["label"] == "pos"


def test_gazetteer_config_errors(tiny_bert, sentiment_csv, tmp_path):
    config = tiny_config(tiny_bert, tmp_path / "runs",
                         data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
                         knowledge={"gazetteers": {"good": ["great"]}})  # fmt: skip
    with pytest.raises(ConfigError, match="needs method.name: full"):
        bridgetune.train({**config, "method": {"name": "lora"}})
    with pytest.raises(ConfigError, match="task regression does not take gazetteer"):
        bridgetune.train({**config, "task": "regression"})
    with pytest.raises(ConfigError, match="gazetteers"):
        bridgetune.train({**config, "knowledge": {"gazetteers": {"good": 3}}})


def test_the_lexicon_models_head_is_the_classifier_and_its_vectors_not_the_encoder(tiny_bert):
    """train.head_lr reaches the wrapped model's head and the feature vectors only: the wrapper
    once counted the whole wrapped model as its head, so `train.head_lr: 3e-3` (the Chinese
    configs') trained the encoder at it and Weibo NER with gazetteers on multilingual-e5
    collapsed to all-O (dev F1 0.015)."""
    from transformers import AutoModelForTokenClassification

    from bridgetune.knowledge.crf import CRFTagger
    from bridgetune.methods.base import head_modules, is_head

    labels = ["O", "B-PER", "I-PER"]
    tagger = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    assert head_modules(LexiconModel(tagger, 8, "AutoModelForTokenClassification")) == [
        "model.classifier", "lexicon",
    ]  # fmt: skip
    model = LexiconModel(CRFTagger(tagger, labels, "IOB2"), 8, "AutoModelForTokenClassification")
    head = head_modules(model)
    assert head == ["model.tagger.classifier", "model.crf", "lexicon"]
    trained = {n for n, _ in model.named_parameters() if is_head(n, head)}
    assert trained == {
        "model.tagger.classifier.weight", "model.tagger.classifier.bias", "model.crf.transitions",
        "model.crf.start", "model.crf.end", "lexicon.weight",
    }  # fmt: skip
