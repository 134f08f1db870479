"""The HTTP service via FastAPI's TestClient: predict, limits, keys, feedback, metrics, reload."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from bridgetune.config import DataConfig, ServeConfig
from bridgetune.data.io import read_file
from bridgetune.inference.predictor import Predictor
from bridgetune.lifecycle.store import FeedbackStore, export_rows
from bridgetune.serve import create_app
from bridgetune.tasks import reader_for

LONG = " ".join(["love this phone"] * 40)


@pytest.fixture(scope="module")
def classifier(served_classifier: Path) -> Predictor:
    return Predictor.load(served_classifier)


@pytest.fixture(scope="module")
def ner(served_ner: Path) -> Predictor:
    return Predictor.load(served_ner)


def client_for(predictor: Predictor | Path, tmp_path: Path, **options) -> TestClient:
    config = ServeConfig(feedback_db=str(tmp_path / "feedback.db"), **options)
    return TestClient(create_app(predictor, config))


def test_predict_classification_scores_and_truncation(classifier, tmp_path):
    with client_for(classifier, tmp_path, precision="fp32") as client:  # exact as Predictor
        response = client.post("/v1/predict", json={"texts": ["love this phone", LONG]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["task"] == "classification"
        assert body["model_version"].startswith("sentiment@")
        first, second = body["predictions"]
        assert first["label"] in ("negative", "positive")
        assert sum(first["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert first["score"] == max(first["scores"].values())
        assert first["truncated"] is False and second["truncated"] is True
        assert "entities" not in first  # fields of other tasks are left out
        expected = classifier.predict(["love this phone"])[0]
        assert first["label"] == expected["label"]
        assert first["score"] == pytest.approx(expected["score"], abs=1e-5)
        metrics = client.get("/metrics").text
        assert "bridgetune_truncated_texts_total 1.0" in metrics
        assert "bridgetune_texts_total 2.0" in metrics
        assert 'bridgetune_requests_total{endpoint="/v1/predict",method="POST",status="200"}' in (
            metrics
        )


def test_truncation_reject_mode(classifier, tmp_path):
    with client_for(classifier, tmp_path, truncation="reject") as client:
        response = client.post("/v1/predict", json={"texts": ["ok", LONG]})
        assert response.status_code == 422
        assert "texts [1] are longer than the model's max_length" in response.json()["detail"]


def test_ner_returns_entities_with_offsets(ner, tmp_path):
    text = "john smith visited paris"
    with client_for(ner, tmp_path) as client:
        body = client.post("/v1/predict", json={"texts": [text]}).json()
    prediction = body["predictions"][0]
    assert len(prediction["tags"]) == 4
    for entity in prediction["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]
    assert prediction == {**ner.predict([text])[0], "truncated": False}


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({}, "texts: Field required"),
        ({"texts": []}, "texts: List should have at least 1 item"),
        ({"texts": ["fine", "  "]}, "texts[1] is empty"),
        ({"texts": "not a list"}, "texts: Input should be a valid list"),
        ({"texts": ["a"], "textz": 1}, "textz: Extra inputs are not permitted"),
        ({"texts": ["a"], "text_pairs": ["b"]}, "takes no text_pairs"),
        ({"texts": ["a", "b"], "text_pairs": ["b"]}, "2 texts but 1 text_pairs"),
    ],
)
def test_schema_errors_are_422_with_a_readable_message(classifier, tmp_path, payload, fragment):
    with client_for(classifier, tmp_path) as client:
        response = client.post("/v1/predict", json=payload)
    assert response.status_code == 422
    assert fragment in response.json()["detail"]


def test_limits_answer_413(classifier, tmp_path):
    with client_for(classifier, tmp_path, max_texts=3, max_body_bytes=2000) as client:
        too_many = client.post("/v1/predict", json={"texts": ["a"] * 4})
        assert too_many.status_code == 413
        assert "at most 3" in too_many.json()["detail"]
        too_big = client.post("/v1/predict", json={"texts": ["x" * 3000]})
        assert too_big.status_code == 413

        def chunks():  # no content-length: the limit applies to the streamed body
            for _ in range(10):
                yield b" " * 500

        streamed = client.post(
            "/v1/predict", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert client.post("/v1/predict", json={"texts": ["fine"]}).status_code == 200


def test_api_keys_and_admin_keys(classifier, tmp_path):
    with client_for(classifier, tmp_path, api_keys=["k1", "k2"]) as client:
        assert client.post("/v1/predict", json={"texts": ["a"]}).status_code == 401
        assert client.get("/v1/info").status_code == 401
        wrong = client.post("/v1/predict", json={"texts": ["a"]}, headers={"X-API-Key": "k3"})
        assert wrong.status_code == 401
        ok = client.post("/v1/predict", json={"texts": ["a"]}, headers={"X-API-Key": "k2"})
        assert ok.status_code == 200
        bearer = client.get("/v1/info", headers={"Authorization": "Bearer k1"})
        assert bearer.status_code == 200
        assert client.get("/health").status_code == 200  # probes need no key
        off = client.post("/admin/reload", json={"model_dir": "x"}, headers={"X-API-Key": "k1"})
        assert off.status_code == 403
    with client_for(classifier, tmp_path, admin_keys=["root"]) as client:
        denied = client.post("/admin/reload", json={"model_dir": "x"}, headers={"X-API-Key": "k"})
        assert denied.status_code == 401


def test_info_health_ready(classifier, tmp_path):
    with client_for(classifier, tmp_path) as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json()["ready"] is True
        info = client.get("/v1/info").json()
        assert info["precision"] in ("fp32", "bf16")  # auto: bf16 only where it is native
        assert info["labels"] == ["negative", "positive"]
        assert info["task"] == "classification"
        assert set(info["label_distribution"]) == {"negative", "positive"}
        assert info["limits"]["max_texts"] == 256
        assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
        assert "<html" in client.get("/").text.lower()


def test_a_model_directory_loads_in_the_background(served_classifier, tmp_path):
    with client_for(served_classifier, tmp_path) as client:
        assert client.get("/health").status_code == 200
        for _ in range(200):
            if client.get("/ready").status_code == 200:
                break
            time.sleep(0.05)
        assert client.get("/ready").status_code == 200
        assert client.post("/v1/predict", json={"texts": ["a"]}).status_code == 200
    assert (tmp_path / "feedback.db").is_file()


def test_feedback_is_stored_once_and_exported_as_training_data(classifier, tmp_path):
    with client_for(classifier, tmp_path) as client:
        sent = {"text": "the charger broke", "predicted": "positive", "label": "negative"}
        first = client.post("/v1/feedback", json={**sent, "id": "c-1"})
        assert first.status_code == 201, first.text
        assert first.json()["stored"] is True
        again = client.post("/v1/feedback", json={**sent, "id": "c-1"})
        assert again.json()["stored"] is False
        assert again.json()["created"] == first.json()["created"]
        bad = client.post("/v1/feedback", json={**sent, "label": "angry"})
        assert bad.status_code == 422
        assert "unknown label(s) ['angry']" in bad.json()["detail"]
        assert client.post("/v1/feedback", json={"text": "x"}).status_code == 422
        assert "bridgetune_feedback_total 1.0" in client.get("/metrics").text
    rows = list(FeedbackStore(tmp_path / "feedback.db").rows())
    assert [(r.id, r.text, r.label, r.predicted) for r in rows] == [
        ("c-1", "the charger broke", "negative", "positive")
    ]
    path = tmp_path / "feedback.csv"
    path.write_text(export_rows(rows, "csv"), encoding="utf-8")
    examples = read_file(path, DataConfig(train=str(path)), reader_for("classification"))
    assert [(e.text, e.label) for e in examples] == [("the charger broke", "negative")]


def test_ner_feedback_exports_conll(ner, tmp_path):
    text = "bob visited london"
    entity = {"type": "LOC", "start": 12, "end": 18}
    with client_for(ner, tmp_path) as client:
        stored = client.post("/v1/feedback", json={"text": text, "entities": [entity]})
        assert stored.status_code == 201, stored.text
        wrong_type = {**entity, "type": "CITY"}
        bad = client.post("/v1/feedback", json={"text": text, "entities": [wrong_type]})
        assert bad.status_code == 422 and "unknown entity type 'CITY'" in bad.json()["detail"]
        past = client.post("/v1/feedback", json={"text": text, "entities": [{**entity, "end": 99}]})
        assert past.status_code == 422
    rows = list(FeedbackStore(tmp_path / "feedback.db").rows())
    path = tmp_path / "feedback.conll"
    path.write_text(export_rows(rows, "conll"), encoding="utf-8")
    examples = read_file(path, DataConfig(train=str(path)), reader_for("ner"))
    assert examples[0].tokens == ["bob", "visited", "london"]
    assert examples[0].tags == ["O", "O", "B-LOC"]


def test_monitoring_alert_becomes_metrics(classifier, tmp_path):
    label = classifier.predict(["love this phone"])[0]["label"]
    monitor = {"min_samples": 2, "window": 10, "label_share_max": {label: 0.5}}
    with client_for(classifier, tmp_path, monitor=monitor) as client:
        for _ in range(3):
            client.post("/v1/predict", json={"texts": ["love this phone"]})
        metrics = client.get("/metrics").text
    assert f'bridgetune_monitor_alerts_total{{kind="share_max",label="{label}"}} 1.0' in metrics
    assert f'bridgetune_monitor_alert_active{{kind="share_max",label="{label}"}} 1.0' in metrics
    assert f'bridgetune_monitor_label_share{{label="{label}"}} 1.0' in metrics


def test_reload_switches_models_without_failing_requests(served_classifier, served_ner, tmp_path):
    app = create_app(
        Predictor.load(served_classifier),
        ServeConfig(feedback_db=str(tmp_path / "fb.db"), admin_keys=["root"]),
    )

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

                async def ask() -> httpx.Response:
                    return await client.post("/v1/predict", json={"texts": ["love this phone"]})

                requests = [asyncio.create_task(ask()) for _ in range(30)]
                reload = await client.post(
                    "/admin/reload",
                    json={"model_dir": str(served_ner)},
                    headers={"Authorization": "Bearer root"},
                )
                answers = await asyncio.gather(*requests)
                answers.append(await ask())
                return answers, reload

    answers, reload = asyncio.run(scenario())
    assert reload.status_code == 200, reload.text
    assert reload.json()["task"] == "ner"
    assert reload.json()["previous_version"].startswith("sentiment@")
    assert all(a.status_code == 200 for a in answers)
    for answer in answers:  # every answer is whole and from one model
        body = answer.json()
        field = "entities" if body["task"] == "ner" else "label"
        assert body["model_version"].startswith(
            body["task"] if field == "entities" else "sentiment"
        )
        assert field in body["predictions"][0]
    assert answers[-1].json()["task"] == "ner"


def test_reload_of_a_bad_directory_keeps_the_old_model(classifier, tmp_path):
    with client_for(classifier, tmp_path, admin_keys=["root"]) as client:
        response = client.post(
            "/admin/reload", json={"model_dir": str(tmp_path)}, headers={"X-API-Key": "root"}
        )
        assert response.status_code == 422
        assert "not a bridgetune model directory" in response.json()["detail"]
        assert client.post("/v1/predict", json={"texts": ["a"]}).status_code == 200
        assert 'bridgetune_model_reloads_total{outcome="failed"} 1.0' in client.get("/metrics").text


def test_feedback_export_formats(tmp_path):
    store = FeedbackStore(tmp_path / "db.sqlite")
    store.add(text="a, b", label=["billing", "delivery"], task="multilabel", model_version="v")
    store.add(text="q1", text_pair="q2", label="same", task="pair", model_version="v")
    rows = list(store.rows())
    lines = list(csv.reader(export_rows(rows[:1], "csv").splitlines()))
    assert lines == [["text", "label"], ["a, b", "billing|delivery"]]
    records = [json.loads(line) for line in export_rows(rows[1:], "jsonl").splitlines()]
    assert records == [{"text": "q1", "label": "same", "text_pair": "q2"}]
    assert list(store.rows(since="2999")) == []


def test_shipped_serve_config_runs(classifier, tmp_path):
    from bridgetune.config import load_serve_config

    root = Path(__file__).resolve().parents[1]
    config = load_serve_config(root / "examples" / "serve" / "serve.yaml")
    config.feedback_db = str(tmp_path / "fb.db")
    config.monitor.label_share_max = {}  # the tiny model's labels differ from the example's
    with TestClient(create_app(classifier, config)) as client:
        assert client.post("/v1/predict", json={"texts": ["a"] * 65}).status_code == 413
        assert client.post("/v1/predict", json={"texts": ["a"]}).status_code == 200


def test_reload_refuses_a_model_without_the_monitored_label(classifier, served_ner, tmp_path):
    options = {"admin_keys": ["root"], "monitor": {"label_share_max": {"positive": 0.9}}}
    with client_for(classifier, tmp_path, **options) as client:
        response = client.post(
            "/admin/reload", json={"model_dir": str(served_ner)}, headers={"X-API-Key": "root"}
        )
        assert response.status_code == 422
        assert "the model has no label 'positive'" in response.json()["detail"]
        assert client.get("/v1/info").json()["task"] == "classification"


def test_cli_serve_checks_its_options_before_starting(served_classifier):
    from typer.testing import CliRunner

    from bridgetune.cli import app

    runner = CliRunner()
    typo = runner.invoke(app, ["serve", str(served_classifier), "max_textz=3"])
    assert typo.exit_code == 2 and "did you mean 'max_texts'" in _flat(typo.output)
    label = runner.invoke(
        app, ["serve", str(served_classifier), "monitor.label_share_max={negativ: 0.5}"]
    )
    assert label.exit_code == 2 and "did you mean 'negative'" in _flat(label.output)
    missing = runner.invoke(app, ["serve", str(served_classifier.parent)])
    assert missing.exit_code == 2
    assert "not a bridgetune model directory" in _flat(missing.output)


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_bodies_that_are_not_json_get_415(classifier, tmp_path):
    with client_for(classifier, tmp_path) as client:
        body = json.dumps({"texts": ["fine"]})
        for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/xml"}):
            response = client.post("/v1/predict", content=body, headers=headers)
            assert response.status_code == 415, (headers, response.text)
            assert "Content-Type: application/json" in response.json()["detail"]
        charset = {"Content-Type": "application/json; charset=utf-8"}
        assert client.post("/v1/predict", content=body, headers=charset).status_code == 200


def test_invalid_unicode_is_422_naming_the_text(classifier, tmp_path):
    with client_for(classifier, tmp_path) as client:
        raw = '{"texts": ["fine", "x\\ud800y"]}'  # a lone surrogate, escaped as JSON allows
        response = client.post(
            "/v1/predict", content=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert "texts[1] is not valid Unicode" in response.json()["detail"]
        feedback = '{"text": "a\\udfffb", "label": "positive"}'
        response = client.post(
            "/v1/feedback", content=feedback, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422 and "text is not valid Unicode" in response.text
        undecodable = client.post(
            "/v1/predict", content=b'{"texts": ["\xff\xfe"]}',
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert 400 <= undecodable.status_code < 500, undecodable.text


def test_an_unexpected_error_is_a_500_with_a_request_id_and_no_stack(
    classifier, tmp_path, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr("bridgetune.serve.schemas.Info", broken)
    app = create_app(classifier, ServeConfig(feedback_db=str(tmp_path / "f.db")))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/info")
    assert response.status_code == 500
    body = response.json()
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "secret" not in response.text and "Traceback" not in response.text
    assert body["request_id"] in caplog.text and "secret internal detail" in caplog.text


def test_metrics_need_the_key_when_keys_are_set(classifier, tmp_path):
    with client_for(classifier, tmp_path, api_keys=["k1"]) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": "k1"}).status_code == 200
    with client_for(classifier, tmp_path, api_keys=["k1"], metrics_public=True) as client:
        assert client.get("/metrics").status_code == 200
    with client_for(classifier, tmp_path) as client:  # no keys: open, as every endpoint
        assert client.get("/metrics").status_code == 200


def test_reload_of_a_directory_without_labels_says_which_key(classifier, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(classifier.directory, broken)
    meta = json.loads((broken / "bridgetune.json").read_text())
    del meta["labels"]
    (broken / "bridgetune.json").write_text(json.dumps(meta))
    with client_for(classifier, tmp_path, admin_keys=["root"]) as client:
        response = client.post(
            "/admin/reload", json={"model_dir": str(broken)}, headers={"X-API-Key": "root"}
        )
        assert response.status_code == 422
        assert "has no 'labels' (written by bridgetune" in response.json()["detail"]


def test_a_lone_surrogate_in_a_key_is_a_422_too(classifier, tmp_path):
    with client_for(classifier, tmp_path) as client:
        raw = '{"texts": ["fine"], "x\\ud800": 1}'
        response = client.post(
            "/v1/predict", content=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert "a key of the body is not valid Unicode" in response.json()["detail"]
