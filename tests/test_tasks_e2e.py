"""Per task: overfit a handful of examples, save, reload with Predictor AND plain transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SENTIMENT, ZH_SENTENCES, tiny_config, write_csv

import bridgetune
from bridgetune.inference.predictor import Predictor
from bridgetune.recipes.evaluate import saved_data_config
from bridgetune.tasks import reader_for

PAIRS = [
    ("how do i reset my password", "how can i change my password", "same"),
    ("where is my order", "my order is late where is it", "same"),
    ("how do i get a refund", "can you help with a refund", "same"),
    ("where is my order", "how do i reset my password", "different"),
    ("how do i get a refund", "change my email", "different"),
    ("my package arrived broken", "love this phone", "different"),
]
TOPICS = [
    ("my order is late", "delivery"),
    ("refund please", "billing"),
    ("refund for the late order", "billing|delivery"),
    ("reset my password", "account"),
    ("change email and refund", "account|billing"),
    ("package arrived broken", "delivery"),
    ("where is my refund", "billing"),
    ("password reset and late delivery", "account|delivery"),
]


def _train(config: dict) -> bridgetune.TrainResult:
    result = bridgetune.train(config)
    assert (result.model_dir / "config.json").is_file()
    assert (result.model_dir / "model.safetensors").is_file()
    assert (result.run_dir / "dev_report.md").is_file()
    assert (result.run_dir / "learning_curve.png").is_file()
    return result


def _saved_labels(model_dir: Path) -> dict:
    return json.loads((model_dir / "config.json").read_text())["id2label"]


def test_classification_overfits_and_matches_pipeline(tiny_bert, sentiment_csv, tmp_path):
    from transformers import pipeline

    config = tiny_config(
        tiny_bert, tmp_path / "runs", data={"train": str(sentiment_csv), "dev": str(sentiment_csv)}
    )
    result = _train(config)
    assert result.metrics["accuracy"] == 1.0
    assert set(_saved_labels(result.model_dir).values()) == {"negative", "positive"}
    assert (result.run_dir / "dev_confusion_matrix.png").is_file()
    texts = [text for text, _ in SENTIMENT]
    ours = Predictor.load(result.model_dir).predict(texts)
    assert [p["label"] for p in ours] == [label for _, label in SENTIMENT]
    plain = pipeline("text-classification", model=str(result.model_dir), device="cpu")
    assert [p["label"] for p in plain(texts)] == [p["label"] for p in ours]
    scores = [p["score"] for p in plain(texts)]
    assert scores == pytest.approx([p["score"] for p in ours], abs=1e-4)


def test_pair_classification(tiny_bert, tmp_path):
    from transformers import pipeline

    data = write_csv(tmp_path / "pairs.csv", ["q1", "q2", "label"], PAIRS)
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        task="pair",
        data={"train": str(data), "dev": str(data), "text_column": "q1", "text_pair_column": "q2"},
    )
    result = _train(config)
    assert result.metrics["accuracy"] == 1.0
    ours = bridgetune.predict(result.model_dir, [(a, b) for a, b, _ in PAIRS])
    assert [p["label"] for p in ours] == [label for *_, label in PAIRS]
    plain = pipeline("text-classification", model=str(result.model_dir), device="cpu")
    answers = plain([{"text": a, "text_pair": b} for a, b, _ in PAIRS])
    assert [a["label"] for a in answers] == [p["label"] for p in ours]
    with pytest.raises(ValueError, match="pairs"):
        bridgetune.predict(result.model_dir, ["a single text"])


@pytest.mark.slow  # a multi-label training run to a tuned threshold (~14 s)
def test_multilabel_with_tuned_threshold(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = write_csv(tmp_path / "topics.csv", ["text", "topics"], TOPICS)
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        task="multilabel",
        train={"epochs": 80},
        data={"train": str(data), "dev": str(data), "label_column": "topics"},
    )
    result = _train(config)
    assert result.metrics["f1_micro"] >= 0.95
    meta = json.loads((result.model_dir / "bridgetune.json").read_text())
    assert 0 < meta["threshold"] < 1
    texts = [text for text, _ in TOPICS]
    ours = bridgetune.predict(result.model_dir, texts)
    assert [sorted(p["labels"]) for p in ours] == [sorted(t.split("|")) for _, t in TOPICS]
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    assert model.config.problem_type == "multi_label_classification"
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    with torch.no_grad():
        probs = torch.sigmoid(model(**tokenizer(texts, padding=True, return_tensors="pt")).logits)
    ours_probs = [p["scores"][label] for p in ours for label in meta["labels"]]
    assert probs.flatten().tolist() == pytest.approx(ours_probs, abs=1e-4)


def _plain_word_tags(model_dir: Path, words: list[list[str]]) -> list[list[str]]:
    """Tags from plain transformers: argmax at each word's first sub-token."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoded = tokenizer(words, is_split_into_words=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        best = model(**encoded).logits.argmax(-1)
    tags = []
    for row in range(len(words)):
        seen, row_tags = set(), []
        for position, word in enumerate(encoded.word_ids(row)):
            if word is not None and word not in seen:
                seen.add(word)
                row_tags.append(model.config.id2label[int(best[row, position])])
        tags.append(row_tags)
    return tags


@pytest.mark.parametrize("model_fixture", ["tiny_bert", "tiny_roberta"])
def test_ner_wordpiece_and_bpe(model_fixture, request, ner_conll, tmp_path):
    from conftest import NER_SENTENCES

    model = request.getfixturevalue(model_fixture)
    config = tiny_config(
        model,
        tmp_path / "runs",
        task="ner",
        train={"epochs": 60},
        data={"train": str(ner_conll), "dev": str(ner_conll)},
    )
    result = _train(config)
    assert result.metrics["entity_f1"] == 1.0
    assert set(result.metrics["per_type"]) == {"PER", "LOC", "ORG"}
    words = [[w for w, _ in sentence] for sentence in NER_SENTENCES]
    gold = [[t for _, t in sentence] for sentence in NER_SENTENCES]
    predictor = Predictor.load(result.model_dir)
    from bridgetune.data.io import read_file

    examples = read_file(
        ner_conll, saved_data_config(predictor.meta, str(ner_conll)), reader_for("ner")
    )
    assert [p["tags"] for p in predictor.predict(examples)] == gold
    assert _plain_word_tags(result.model_dir, words) == gold
    raw = predictor.predict(["john smith visited paris"])[0]
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in raw["entities"]] == [
        ("PER", "john smith", 0, 10),
        ("LOC", "paris", 19, 24),
    ]


def test_chinese_character_ner_bmes(tiny_bert, zh_bmes, tmp_path):
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        task="ner",
        train={"epochs": 100},
        data={"train": str(zh_bmes), "dev": str(zh_bmes), "tag_scheme": "BMES"},
    )
    result = _train(config)
    assert result.metrics["entity_f1"] == 1.0
    prediction = bridgetune.predict(result.model_dir, ["我在上海买的耳机"])[0]
    entities = [(e["type"], e["text"], e["start"], e["end"]) for e in prediction["entities"]]
    assert entities == [("CITY", "上海", 2, 4), ("PRODUCT", "耳机", 6, 8)]
    chars = ["".join(ch for ch, _ in s) for s in ZH_SENTENCES]
    assert len(bridgetune.predict(result.model_dir, chars)) == len(chars)


def test_evaluate_saved_model_writes_report(tiny_bert, sentiment_csv, tmp_path):
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        train={"epochs": 2},
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
    )
    result = bridgetune.train(config)
    metrics = bridgetune.evaluate(result.model_dir, sentiment_csv, output=tmp_path / "report")
    assert metrics["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert (tmp_path / "report" / "eval_report.md").is_file()
    assert (tmp_path / "report" / "eval_confusion_matrix.png").is_file()


def test_later_subtokens_continue_the_entity_in_iob_schemes():
    from bridgetune.tasks.token import continuation_labels

    labels = ["O", "B-PER", "I-PER", "B-LOC"]
    index = {label: i for i, label in enumerate(labels)}
    assert continuation_labels(labels, index, "IOB2") == {"O": 0, "B-PER": 2, "I-PER": 2}
    assert continuation_labels(labels, index, "BIOES") == {}
