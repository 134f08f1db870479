"""Regression: numeric targets read and checked, an MSE-trained one-output model, correlation
and error metrics with a scatter plot, predictions and service answers as numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

import bridgetune
from bridgetune.config import ServeConfig
from bridgetune.data.schema import DataError
from bridgetune.serve import create_app
from bridgetune.tasks.regression import RegressionTask, regression_metrics
from tests.conftest import tiny_config

PAIRS = [
    ("love this phone", "great phone", 4.5),
    ("my order is late", "the delivery is slow", 4.0),
    ("love this phone", "my order is late", 0.5),
    ("great service thanks", "terrible slow delivery", 1.0),
    ("terrible slow delivery", "the delivery is slow", 3.5),
    ("great phone", "great service thanks", 2.5),
]


def write_pairs(path: Path, rows: list[tuple[str, str, object]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "score"])
        writer.writerows(rows)
    return path


def config(tiny_bert: Path, data: Path, runs: Path, **train) -> dict:
    return tiny_config(
        tiny_bert,
        runs,
        task="regression",
        data={
            "train": str(data),
            "dev": str(data),
            "text_column": "a",
            "text_pair_column": "b",
            "label_column": "score",
            "labels": ["similarity"],
        },
        train={"epochs": 60, "lr": 1e-2, **train},
    )


def test_regression_trains_reports_saves_and_serves_numbers(tiny_bert, tmp_path):
    data = write_pairs(tmp_path / "pairs.csv", PAIRS)
    result = bridgetune.train(config(tiny_bert, data, tmp_path / "runs"))
    assert result.metrics["spearman"] > 0.8  # the tiny model fits six pairs
    assert {"pearson", "mae", "rmse"} <= set(result.metrics)
    assert (result.run_dir / "dev_scatter.png").is_file()
    predictor = bridgetune.load(result.model_dir)
    assert predictor.meta["labels"] == ["similarity"]
    predicted = predictor.predict([(a, b) for a, b, _ in PAIRS])
    assert all(isinstance(p["value"], float) for p in predicted)
    assert bridgetune.evaluate(result.model_dir, data)["spearman"] == pytest.approx(
        result.metrics["spearman"]
    )
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    plain = AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    with torch.no_grad():
        output = plain(**tokenizer("love this phone", "great phone", return_tensors="pt"))
    assert output.logits.shape == (1, 1)
    assert output.logits.item() == pytest.approx(
        predicted[0]["value"], rel=1e-2
    )  # bf16 inference on CPUs that have it: 8 bits of mantissa, ~0.4% a step
    app = create_app(predictor, ServeConfig(feedback_db=str(tmp_path / "feedback.db")))
    with TestClient(app) as client:
        assert client.get("/v1/info").json()["output"] == "value"
        body = {"texts": ["love this phone"], "text_pairs": ["great phone"]}
        response = client.post("/v1/predict", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()["predictions"][0]
        assert answer["value"] == pytest.approx(
            predicted[0]["value"], rel=1e-2
        )  # bf16 inference on CPUs that have it
        pair = {"text": "love this phone", "text_pair": "great phone"}
        stored = client.post("/v1/feedback", json={**pair, "label": 4.8})
        assert stored.status_code == 201, stored.text
        wrong = client.post("/v1/feedback", json={**pair, "label": "high"})
        assert wrong.status_code == 422 and "a number" in wrong.text
        alone = client.post("/v1/feedback", json={"text": "love this phone", "label": 4.8})
        assert alone.status_code == 422 and alone.json()["detail"].startswith("text_pair")


def test_a_target_that_is_not_a_number_names_file_and_line(tiny_bert, tmp_path):
    data = write_pairs(tmp_path / "pairs.csv", [*PAIRS[:3], ("a", "b", "very")])
    with pytest.raises(DataError, match=r"pairs.csv:5: target 'very' in column 'score' is not"):
        bridgetune.train(config(tiny_bert, data, tmp_path / "runs"))


def test_classification_options_are_refused_for_regression(tiny_bert, tmp_path):
    from bridgetune.config import ConfigError

    data = write_pairs(tmp_path / "pairs.csv", PAIRS)
    with pytest.raises(ConfigError, match="class_weights and train.label_smoothing apply"):
        bridgetune.train(config(tiny_bert, data, tmp_path / "runs", label_smoothing=0.1))


def test_metrics_by_hand_and_their_direction():
    metrics = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 5.0])
    assert metrics["mae"] == pytest.approx((0.5 + 0 + 0.5 + 1) / 4)
    assert metrics["rmse"] == pytest.approx(((0.25 + 0 + 0.25 + 1) / 4) ** 0.5)
    assert metrics["spearman"] == pytest.approx(1.0)  # same order
    assert regression_metrics([1.0, 1.0], [0.0, 2.0])["pearson"] == 0.0  # undefined: constant
    assert RegressionTask.lower_is_better == {"mae", "rmse"}
    assert "spearman" not in RegressionTask.lower_is_better


REVIEWS = [  # (text, quality, delivery): two targets per text
    ("love this phone", 4.5, 3.0),
    ("great phone but the delivery is slow", 4.0, 1.0),
    ("terrible slow delivery", 1.0, 0.5),
    ("great service thanks", 3.5, 4.5),
    ("my order is late", 2.0, 1.0),
    ("great phone", 4.5, 3.5),
]


def test_several_targets_train_predict_and_take_feedback(tiny_bert, tmp_path):
    data = tmp_path / "reviews.jsonl"
    data.write_text(
        "".join(json.dumps({"text": t, "scores": [q, d]}) + "\n" for t, q, d in REVIEWS),
        encoding="utf-8",
    )
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        task="regression",
        data={"train": str(data), "dev": str(data), "label_column": "scores",
              "labels": ["quality", "delivery"]},
        train={"epochs": 60, "lr": 1e-2, "loss": "huber"},
    )  # fmt: skip
    result = bridgetune.train(config)
    assert set(result.metrics["per_target"]) == {"quality", "delivery"}
    assert result.metrics["spearman"] == pytest.approx(
        sum(m["spearman"] for m in result.metrics["per_target"].values()) / 2
    )
    assert result.metrics["spearman"] > 0.6
    predictor = bridgetune.load(result.model_dir)
    values = predictor.predict(["love this phone"])[0]["values"]
    assert set(values) == {"quality", "delivery"}
    with TestClient(create_app(predictor, ServeConfig(feedback_db=str(tmp_path / "f.db")))) as c:
        served = c.post("/v1/predict", json={"texts": ["love this phone"]}).json()
        # bf16 inference on CPUs that have it: about 3 significant digits
        assert served["predictions"][0]["values"] == pytest.approx(values, rel=1e-2)
        assert c.post("/v1/feedback", json={"text": "x", "label": [4, 2]}).status_code == 201
        one = c.post("/v1/feedback", json={"text": "x", "label": 4})
        assert one.status_code == 422 and "2 numbers, one per target" in one.text
    exported = tmp_path / "feedback.csv"
    assert bridgetune.export_feedback(tmp_path / "f.db", exported) == 1
    assert "4.0|2.0" in exported.read_text(encoding="utf-8")


def test_rows_with_another_number_of_targets_name_the_line(tmp_path):
    from bridgetune.config import DataConfig
    from bridgetune.tasks.regression import NumberReader

    path = tmp_path / "r.csv"
    path.write_text("text,score\na,1|2\nb,3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"r.csv:3: 1 targets, but the first row has 2"):
        NumberReader().read_file(path, DataConfig(train=str(path), label_column="score"), True)


def test_huber_is_gentler_than_mse_on_outliers():
    from bridgetune.tasks.losses import task_loss

    predicted, target = torch.tensor([[0.0], [0.0]]), torch.tensor([[0.5], [10.0]])
    huber = task_loss(predicted, target, "regression", kind="huber")
    mse = task_loss(predicted, target, "regression")
    assert huber == pytest.approx((0.125 + 9.5) / 2) and mse == pytest.approx((0.25 + 100) / 2)
