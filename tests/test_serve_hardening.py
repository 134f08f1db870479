"""The service on hostile and mistaken input: non-finite JSON numbers anywhere in a body (422 on
every route), a QA question longer than max_length, a damaged directory at start and on reload,
and feedback checked by the task's own reader rules, so that everything the endpoint stores
reads back as training data after `bridgetune feedback export`.

Models are tiny and untrained (built from the tiny BERT, not trained): these tests are about
what the service accepts, not what it predicts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import bridgetune
from bridgetune.config import DataConfig, ServeConfig
from bridgetune.data.io import read_file
from bridgetune.export.model_dir import save_model_dir
from bridgetune.inference.predictor import Predictor, pick_device
from bridgetune.models import load_tokenizer
from bridgetune.serve import create_app
from bridgetune.tasks import build_task, reader_for

ADMIN = {"X-API-Key": "root"}
LABELS = {
    "classification": ["negative", "positive"],
    "multilabel": ["late", "broken", "refund"],
    "pair": ["different", "same"],
    "regression": ["score"],
    "ranking": ["relevance"],
    "qa": ["start", "end"],
    "ner": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
}
# how each task's feedback exports (.jsonl, and .csv where its reader reads CSV)
EXPORT_SUFFIXES = {"ner": [".conll"], "qa": [".jsonl"]}
HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def untrained(tiny_bert: Path, name: str) -> Predictor:
    """A Predictor of task `name` around the tiny BERT with a fresh head (no training)."""
    task = build_task(name, LABELS[name])
    model = task.build_model(str(tiny_bert))
    meta = {"task": name, "labels": LABELS[name], "max_length": 32}
    return Predictor(model, load_tokenizer(str(tiny_bert)), task, meta, pick_device("cpu"))


@pytest.fixture(scope="module")
def predictors(tiny_bert: Path) -> dict[str, Predictor]:
    return {name: untrained(tiny_bert, name) for name in LABELS}


@pytest.fixture(scope="module")
def saved_classifier(predictors: dict[str, Predictor], tmp_path_factory) -> Path:
    """An untrained classifier saved as a model directory (its files can then be damaged)."""
    predictor = predictors["classification"]
    directory = tmp_path_factory.mktemp("saved") / "model"
    return save_model_dir(directory, predictor.model, predictor.tokenizer, predictor.meta)


def client_for(model: Predictor | Path, tmp_path: Path, **options: Any) -> TestClient:
    config = ServeConfig(feedback_db=str(tmp_path / "feedback.db"), admin_keys=["root"], **options)
    return TestClient(create_app(model, config))


# --- non-finite numbers ------------------------------------------------------------------------

BODIES = {  # a valid body per route; the bad number goes anywhere in it
    "/v1/predict": {"texts": ["love this phone"]},
    "/v1/rank": {"query": "phone", "candidates": ["a phone", "a charger"], "top_k": 1},
    "/v1/feedback": {"text": "the charger broke", "label": "negative"},
    "/v1/generate": {"prompts": ["hello"], "max_tokens": 4, "temperature": 0.5},
    "/v1/chat/completions": {
        "messages": [{"role": "user", "content": "hello"}],
        "temperature": 0.7,
        "top_p": 0.9,
    },
    "/admin/reload": {"model_dir": "/nowhere"},
}
BAD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999999", "-1e999999", "1" * 5000]
MARK = "__bad_number__"


def planted(value: Any, path: list[int]) -> Any:
    """`value` with MARK put at a place `path` picks: replacing a leaf, or added to a list or
    an object (as a new key's value)."""
    if not path:
        return MARK
    choice, rest = path[0], path[1:]
    if isinstance(value, dict) and value:
        keys = sorted(value)
        if choice % (len(keys) + 1) == len(keys):
            return {**value, "extra": MARK}
        key = keys[choice % len(keys)]
        return {**value, key: planted(value[key], rest)}
    if isinstance(value, list):
        if not value or choice % (len(value) + 1) == len(value):
            return [*value, MARK]
        index = choice % len(value)
        return [*value[:index], planted(value[index], rest), *value[index + 1 :]]
    return MARK


def test_non_finite_numbers_anywhere_in_a_body_are_422_on_every_route(predictors, tmp_path):
    seen: set[str] = set()
    with client_for(predictors["classification"], tmp_path) as client:

        @given(
            route=st.sampled_from(sorted(BODIES)),
            bad=st.sampled_from(BAD_NUMBERS),
            path=st.lists(st.integers(0, 5), max_size=4),
        )
        @HYPOTHESIS
        def run(route: str, bad: str, path: list[int]) -> None:
            body = json.dumps(planted(BODIES[route], path)).replace(f'"{MARK}"', bad)
            response = client.post(
                route, content=body, headers={**ADMIN, "Content-Type": "application/json"}
            )
            assert response.status_code == 422, (route, body[:200], response.text)
            detail = json.loads(response.text, parse_constant=_no_constants)["detail"]
            assert "is not a finite number" in detail, detail
            assert f"at character {body.index(bad)}" in detail, (detail, body[:200])
            seen.add(route)

        run()
    assert seen == set(BODIES)


def _no_constants(name: str) -> Any:
    raise AssertionError(f"the response holds {name}: not strict JSON")


def test_finite_numbers_and_number_words_in_strings_still_pass(predictors, tmp_path):
    with client_for(predictors["regression"], tmp_path) as client:
        for value in (1e308, -0.0, 12345678901234567890):
            stored = client.post("/v1/feedback", json={"text": "fine", "label": value})
            assert stored.status_code == 201, stored.text
        answer = client.post("/v1/predict", json={"texts": ["NaN", "Infinity 1e999999"]})
        assert answer.status_code == 200, answer.text


def test_a_body_that_is_not_utf8_is_422_not_400(predictors, tmp_path):
    with client_for(predictors["classification"], tmp_path) as client:
        response = client.post(
            "/v1/predict",
            content=b'{"texts": ["\xff\xfe"]}',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 422, response.text
        assert "not UTF-8" in response.json()["detail"]


# --- inputs a task cannot read -------------------------------------------------------------------


def test_a_qa_question_longer_than_max_length_is_422_with_the_limit(predictors, tmp_path):
    question = " ".join(["where is my order"] * 20)
    with client_for(predictors["qa"], tmp_path) as client:
        response = client.post(
            "/v1/predict", json={"texts": ["where is it", question], "text_pairs": ["here", "x"]}
        )
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "question 1 (" in detail and "max_length=32" in detail, detail
        short = client.post("/v1/predict", json={"texts": ["where"], "text_pairs": ["here"]})
        assert short.status_code == 200, short.text


def test_a_qa_model_asks_for_contexts_in_its_own_words(predictors, tmp_path):
    qa = predictors["qa"]
    with pytest.raises(ValueError, match="reads a context per question"):
        qa.predict(["where is my order"])
    with client_for(qa, tmp_path) as client:
        response = client.post("/v1/predict", json={"texts": ["where is my order"]})
        assert response.status_code == 422
        assert "qa model reads a context per question" in response.json()["detail"]
        feedback = client.post("/v1/feedback", json={"text": "where", "label": "here"})
        assert feedback.status_code == 422
        assert feedback.json()["detail"].startswith("text_pair: this qa model reads a context")


# --- damaged directories: at start and on reload ---------------------------------------------


def damaged(directory: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(directory, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return copy


def test_reload_of_damaged_weights_is_422_naming_the_file_and_the_old_model_serves(
    predictors, saved_classifier, tmp_path
):
    broken = damaged(saved_classifier, tmp_path)
    with client_for(predictors["classification"], tmp_path) as client:
        response = client.post("/admin/reload", json={"model_dir": str(broken)}, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert f"{broken / 'model.safetensors'} is truncated" in response.json()["detail"]
        assert client.post("/v1/predict", json={"texts": ["fine"]}).status_code == 200
        assert client.get("/ready").json()["ready"] is True


def test_a_model_that_fails_to_load_at_start_is_reported_on_ready_and_in_every_503(
    saved_classifier, tmp_path
):
    broken = damaged(saved_classifier, tmp_path)
    with client_for(broken, tmp_path) as client:
        ready = client.get("/ready")
        for _ in range(100):  # loading runs in the background
            if "error" in ready.json():
                break
            ready = client.get("/ready")
        assert ready.status_code == 503
        assert f"{broken / 'model.safetensors'} is truncated" in ready.json()["error"]
        predict = client.post("/v1/predict", json={"texts": ["fine"]})
        assert predict.status_code == 503
        assert predict.json()["detail"].startswith("no model is served: cannot load")
        assert "is truncated" in client.get("/v1/info").json()["detail"]
        reload = client.post(
            "/admin/reload", json={"model_dir": str(saved_classifier)}, headers=ADMIN
        )
        assert reload.status_code == 200, reload.text  # a repaired model serves again
        assert client.get("/ready").json()["ready"] is True


def test_cli_serve_refuses_a_damaged_directory_with_one_line(saved_classifier, tmp_path):
    from bridgetune.cli import app

    broken = damaged(saved_classifier, tmp_path)
    result = CliRunner().invoke(app, ["serve", str(broken)])
    assert result.exit_code == 2, result.output
    assert "is truncated" in result.output and "Traceback" not in result.output


def test_cli_serve_stops_when_the_model_fails_to_load_after_the_checks(saved_classifier, tmp_path):
    """A failure only loading finds (labels that do not fit the weights) stops the server."""
    from bridgetune.cli import app

    broken = tmp_path / "relabelled"
    shutil.copytree(saved_classifier, broken)
    meta = json.loads((broken / "bridgetune.json").read_text())
    (broken / "bridgetune.json").write_text(json.dumps({**meta, "labels": ["a", "b", "c"]}))
    db = tmp_path / "f.db"
    result = CliRunner().invoke(
        app, ["serve", str(broken), "--port", "0", "--feedback-db", str(db)]
    )
    assert result.exit_code == 2, result.output
    assert "lists 3 labels" in " ".join(result.output.split()), result.output


# --- feedback: what is stored can be trained on --------------------------------------------------

TEXTS = ["the charger broke", "  ", "john visited paris", "where is my order", "x\ty\u3000z"]
CONTEXTS = ["my order is in paris", "", "john smith visited paris on monday", "a phone case"]
LABEL_POOLS = {  # valid and invalid corrections for each task's model
    "classification": ["negative", "positive", "angry", ["negative"], 1],
    "multilabel": [["late"], ["late", "refund"], [], "late", "x", ["late", "x"]],
    "pair": ["same", "different", "maybe"],
    "regression": [0, 1, 2.5, -3, "1.5", "x", [1, 2]],
    "ranking": [0, 1, 2, -1, -0.5, "2", "x"],
    "qa": ["paris", "", "Paris", " ", "my order", "london", "in paris on", 3],
    "ner": ["PER"],
}
PAIRED = ("pair", "qa", "ranking")


@st.composite
def entity_lists(draw: Any) -> list[dict[str, Any]]:
    entities = []
    for _ in range(draw(st.integers(0, 3))):
        start = draw(st.integers(0, 20))
        entity = {"type": draw(st.sampled_from(["PER", "LOC", "CITY"])), "start": start,
                  "end": start + draw(st.integers(1, 8))}  # fmt: skip
        entities.append(entity)
    return entities


@st.composite
def feedback_bodies(draw: Any, task: str) -> dict[str, Any]:
    """Feedback bodies for a `task` model, valid and not: each field may be missing, empty,
    wrong for the model, or sent to the wrong kind of model (entities to a classifier)."""
    body: dict[str, Any] = {"text": draw(st.sampled_from(TEXTS))}
    if draw(st.integers(0, 5)) < (5 if task in PAIRED else 1):
        body["text_pair"] = draw(st.sampled_from(CONTEXTS))
    if draw(st.integers(0, 5)) < (1 if task == "ner" else 5):
        body["label"] = draw(st.sampled_from(LABEL_POOLS[task]))
    if draw(st.integers(0, 5)) < (5 if task == "ner" else 1):
        body["entities"] = draw(entity_lists())
    return body


FIELDS = ("text", "label", "entities", "body", "training could not read this correction")


def read_back(task: str, output: Path) -> list:
    pair = "text_pair" if task in ("pair", "ranking") else None
    cfg = DataConfig(train=str(output), text_pair_column=pair)
    return read_file(output, cfg, reader_for(task))


@pytest.mark.parametrize("task", sorted(LABELS))
def test_everything_feedback_accepts_reads_back_through_the_tasks_reader(
    predictors, tmp_path, task
):
    accepted, refused = [], []
    with client_for(predictors[task], tmp_path) as client:

        @given(body=feedback_bodies(task))
        @HYPOTHESIS
        def run(body: dict[str, Any]) -> None:
            if task == "ranking":  # the reader's group rule: a query needs a relevant candidate
                clicked = {"text": body["text"], "text_pair": "the clicked one", "label": 1}
                if client.post("/v1/feedback", json=clicked).status_code == 201:
                    accepted.append(clicked)
            response = client.post("/v1/feedback", json=body)
            assert response.status_code in (201, 422), response.text
            if response.status_code == 201:
                accepted.append(body)
            else:
                detail = response.json()["detail"]
                assert detail.startswith(FIELDS), detail  # the field, or the reader's words
                refused.append(detail)

        run()
    assert accepted and refused, (task, accepted, refused)
    for suffix in EXPORT_SUFFIXES.get(task, [".jsonl", ".csv"]):
        output = tmp_path / f"feedback{suffix}"
        assert bridgetune.export_feedback(tmp_path / "feedback.db", output) == len(accepted)
        examples = read_back(task, output)
        if task == "ranking":  # one example per query
            assert sum(len(e.candidates) for e in examples) == len(accepted)
        else:
            assert len(examples) == len(accepted)


@pytest.mark.parametrize(
    ("task", "body", "field", "words"),
    [
        ("qa", {"text": "where", "label": "paris"}, "text_pair", "context"),
        ("qa", {"text": "where", "text_pair": "in paris", "label": "london"}, "training",
         "is not a span of its context"),
        ("ranking", {"text": "phone", "text_pair": "a case", "label": -1}, "training",
         "is not a number >= 0"),
        ("ner", {"text": "john smith visited paris", "entities": [
            {"type": "PER", "start": 0, "end": 10}, {"type": "LOC", "start": 5, "end": 10}]},
         "entities", "overlap"),
        ("ner", {"text": "john visited paris", "label": "PER"}, "entities", "not a label"),
        ("ner", {"text": "john visited paris", "entities": [
            {"type": "PER", "start": 0, "end": 4, "text": "jon"}]}, "entities[0]", "'john'"),
        ("classification", {"text": "bad", "label": "negative", "entities": [
            {"type": "PER", "start": 0, "end": 3}]}, "entities", "takes no entities"),
        ("regression", {"text": "bad", "label": 1, "entities": []}, "entities",
         "takes no entities"),
        ("pair", {"text": "a", "label": "same"}, "text_pair", "text pairs"),
        ("classification", {"text": "a", "text_pair": "b", "label": "negative"}, "text_pair",
         "takes no text_pair"),
    ],
)  # fmt: skip
def test_feedback_training_could_not_read_is_422_naming_the_field(
    predictors, tmp_path, task, body, field, words
):
    with client_for(predictors[task], tmp_path) as client:
        response = client.post("/v1/feedback", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith(field) and words in detail, detail


def test_feedback_without_answer_start_reads_back_quietly(predictors, tmp_path, capfd):
    with client_for(predictors["qa"], tmp_path) as client:
        body = {"text": "where", "text_pair": "my order is in paris", "label": "paris"}
        assert client.post("/v1/feedback", json=body).status_code == 201
    assert "answer_start" not in capfd.readouterr().err  # nothing was moved: none was given


def test_export_leaves_out_what_training_cannot_read(tmp_path):
    """A ranking query whose corrections are all relevance 0 is not a training group yet; QA
    corrections are JSONL only (the QA reader reads no CSV)."""
    from bridgetune.lifecycle.store import FeedbackStore
    from bridgetune.recipes.feedback import export_feedback

    database = tmp_path / "ranking.db"
    store = FeedbackStore(database)
    for query, candidate, relevance in (("phone", "a case", 0), ("phone", "a charger", 2),
                                        ("laptop", "a bag", 0)):  # fmt: skip
        store.add(text=query, text_pair=candidate, label=relevance, task="ranking",
                  model_version="v1")  # fmt: skip
    output = tmp_path / "ranking.jsonl"
    assert export_feedback(database, output) == 2
    config = DataConfig(train=str(output), text_pair_column="text_pair", label_column="label")
    groups = read_file(output, config, reader_for("ranking"))
    assert [g.text for g in groups] == ["phone"] and groups[0].label == [0.0, 2.0]
    qa = tmp_path / "qa.db"
    FeedbackStore(qa).add(text="who?", text_pair="Ann came.", label="Ann", task="qa",
                          model_version="v1")  # fmt: skip
    with pytest.raises(ValueError, match=r"\*\.jsonl"):
        export_feedback(qa, tmp_path / "qa.csv")


def test_a_key_given_twice_and_a_stop_sequence_are_refused(served_classifier, tmp_path):
    """The last of two values would win silently; an ignored `stop` would answer past it."""
    with TestClient(
        create_app(served_classifier, ServeConfig(feedback_db=str(tmp_path / "f.db")))
    ) as client:
        body = b'{"text": "great", "label": "positive", "label": "negative"}'
        answer = client.post("/v1/feedback", content=body,
                             headers={"Content-Type": "application/json"})  # fmt: skip
        assert answer.status_code == 422 and "'label' is given twice" in answer.text
        chat = {"messages": [{"role": "user", "content": "hi"}], "stop": ["x"]}
        refused = client.post("/v1/chat/completions", json=chat)
        assert refused.status_code == 422 and "stop sequences are not supported" in refused.text
