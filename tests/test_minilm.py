"""Integration on the bundled all-MiniLM-L6-v2: saved models give the same labels in plain
`transformers` pipelines as in `bridgetune predict`, on the dev sets of the shipped examples."""

from __future__ import annotations

from pathlib import Path

import pytest

import bridgetune
from bridgetune.data.io import read_file
from bridgetune.recipes.evaluate import saved_data_config
from bridgetune.tasks import reader_for
from bridgetune.tasks.token import split_words

ROOT = Path(__file__).resolve().parents[1]


def _quick(run_dir: Path, epochs: int) -> list[str]:
    return [
        f"output_dir={run_dir}",
        f"train.epochs={epochs}",
        "data.max_train_examples=96",
        "train.lr=3e-4",
        "train.batch_size=16",
    ]


@pytest.mark.slow  # fine-tunes the bundled MiniLM and runs transformers' pipeline (~10 s)
def test_classifier_matches_text_classification_pipeline(tmp_path):
    from transformers import pipeline

    result = bridgetune.train(ROOT / "examples/configs/support_sentiment.yaml", _quick(tmp_path, 4))
    predictor = bridgetune.load(result.model_dir)
    dev = read_file(
        ROOT / "examples/data/support/dev.csv",
        saved_data_config(predictor.meta, "dev.csv"),
        reader_for("classification"),
    )
    ours = [p["label"] for p in predictor.predict([e.text for e in dev])]
    plain = pipeline("text-classification", model=str(result.model_dir), device="cpu")
    assert [p["label"] for p in plain([e.text for e in dev], batch_size=16)] == ours
    assert result.metrics["accuracy"] > 0.5  # 96 examples, 4 epochs: well above chance (1/3)


@pytest.mark.slow  # the real MiniLM trained and run through the pipeline (~9 s)
def test_ner_matches_token_classification_pipeline(tmp_path):
    from transformers import pipeline

    result = bridgetune.train(ROOT / "examples/configs/support_ner.yaml", _quick(tmp_path, 3))
    predictor = bridgetune.load(result.model_dir)
    texts = [
        e.text
        for e in read_file(
            ROOT / "examples/data/support_ner/dev.conll",
            saved_data_config(predictor.meta, "dev.conll"),
            reader_for("ner"),
        )
    ]
    ours = predictor.predict(texts)
    plain = pipeline(
        "token-classification",
        model=str(result.model_dir),
        device="cpu",
        aggregation_strategy="none",
        ignore_labels=[],
    )
    for text, prediction, tokens in zip(texts, ours, plain(texts)):
        by_start = {}
        for token in tokens:
            by_start.setdefault(token["start"], token["entity"])  # first sub-token of a word
        starts = [start for start, _ in split_words(text, predictor.tokenizer)]
        assert [by_start[s] for s in starts] == prediction["tags"], text


def test_prefix_tuning_trains_the_default_model(tmp_path):
    """method: prefix on MiniLM with the locked transformers (peft's prefix tuning broke there):
    trains, saves prefix + head, reloads to the same metrics."""
    import json

    overrides = [*_quick(tmp_path, 2), "method.name=prefix", "train.lr=5e-3", "train.log_every=2"]
    result = bridgetune.train(ROOT / "examples/configs/support_sentiment.yaml", overrides)
    history = json.loads((result.run_dir / "history.json").read_text())
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert losses[-1] < losses[0]
    assert (result.model_dir / "prefix_model.safetensors").is_file()
    reloaded = bridgetune.evaluate(result.model_dir, ROOT / "examples/data/support/dev.csv")
    assert reloaded["accuracy"] == result.metrics["accuracy"]
