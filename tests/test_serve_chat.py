"""Generative models over HTTP: /v1/generate, OpenAI's /v1/chat/completions (plain and streamed)
and /v1/models, through the official `openai` client against a real uvicorn server; keys,
limits, the time cap, cancellation of a streamed request, concurrent clients."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import LiveServer, tiny_config

import bridgetune
from bridgetune.config import ServeConfig
from bridgetune.inference.predictor import Predictor
from bridgetune.serve.app import create_app

KEY = "chat-key"
ASK = [{"role": "user", "content": "refund"}]


@pytest.fixture(scope="module")
def assistant(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal_lm model that learned three support answers."""
    from tests.test_causal_lm import SUPPORT, write_jsonl

    root = tmp_path_factory.mktemp("served-assistant")
    data = write_jsonl(root / "chat.jsonl", SUPPORT)
    config = tiny_config(
        tiny_llama, root / "runs", task="causal_lm", data={"train": str(data), "dev": str(data)},
        train={"epochs": 60, "lr": 3e-2}, generate={"eval_examples": 0},
    )  # fmt: skip
    return bridgetune.train(config).model_dir


@pytest.fixture()
def live(assistant: Path):
    config = ServeConfig(api_keys=[KEY], max_new_tokens=400)
    with LiveServer(create_app(Predictor.load(assistant, device="cpu"), config)) as server:
        yield server


def test_the_openai_client_gets_plain_and_streamed_completions(live: LiveServer, assistant):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=KEY, max_retries=0)
    expected = Predictor.load(assistant, device="cpu").generate([ASK])[0]["text"]
    assert expected == "the money is back in five days"

    reply = client.chat.completions.create(model="any", messages=ASK, max_tokens=16)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "stop"  # the trained EOS ended it
    assert reply.usage.completion_tokens == 7 and reply.usage.prompt_tokens > 0
    assert reply.model.startswith("tiny@")

    stream = client.chat.completions.create(model="any", messages=ASK, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip() == expected
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.id for c in chunks} == {chunks[0].id}

    assert [m.id for m in client.models.list()] == [reply.model]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_generate_endpoint_limits_and_client_mistakes(live: LiveServer):
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as http:
        body = http.post("/v1/generate", json={"prompts": ["hello"], "max_tokens": 3}).json()
        assert body["generations"][0]["tokens"] <= 3 and body["task"] == "causal_lm"
        chat = "/v1/chat/completions"
        cases = [
            ({"messages": ASK, "max_tokens": 401}, "over this server's cap of 400"),
            ({"messages": ASK, "n": 2}, "n:"),
            ({"messages": []}, "messages:"),
            ({"messages": [{"role": "robot", "content": "hi"}]}, "role"),
            ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "text content"),
        ]
        for payload, message in cases:
            answer = http.post(chat, json=payload)
            assert answer.status_code == 422 and message in answer.json()["detail"], payload
        assert http.post("/v1/generate", json={"prompts": [" "]}).status_code == 422
        predict = http.post("/v1/predict", json={"texts": ["refund"]})
        assert predict.status_code == 422 and "/v1/chat/completions" in predict.json()["detail"]
        assert httpx.post(f"{live.url}{chat}", json={"messages": ASK}).status_code == 401


def test_a_classifier_does_not_chat(served_classifier: Path):
    from fastapi.testclient import TestClient

    with TestClient(create_app(Predictor.load(served_classifier, device="cpu"))) as http:
        answer = http.post("/v1/chat/completions", json={"messages": ASK})
        assert answer.status_code == 422 and "does not generate" in answer.json()["detail"]


@pytest.mark.filterwarnings("ignore:Unfeasible length constraints")  # min_new_tokens, on purpose
def test_a_cancelled_stream_frees_the_model_and_a_time_cap_ends_generations(assistant: Path):
    config = ServeConfig(max_new_tokens=400)
    predictor = Predictor.load(assistant, device="cpu")
    predictor.model.generation_config.min_new_tokens = 400  # no EOS: a generation to cut short
    chatter = [{"role": "user", "content": "hello hello hello"}]
    assert not predictor.generate([chatter], max_new_tokens=400)[0]["finished"]
    with LiveServer(create_app(predictor, config)) as server:
        long = {"messages": chatter, "max_tokens": 400, "stream": True}
        with httpx.Client(base_url=server.url, timeout=30) as http:
            with http.stream("POST", "/v1/chat/completions", json=long) as response:
                first = next(response.iter_lines())
                assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]
            # the client went away after one event: its generation stops, the model is free
            again = http.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 16})
            assert again.status_code == 200
            metrics = {
                line.split()[0]: float(line.split()[1])
                for line in http.get("/metrics").text.splitlines()
                if line.startswith("bridgetune_") and " " in line
            }
            assert metrics["bridgetune_cancelled_generations_total"] == 1
            assert metrics["bridgetune_generation_queue_seconds_count"] == 2
            assert metrics["bridgetune_generated_tokens_total"] < 400 + 7
            # no max_tokens: the model's own limit (450 here), within the server's cap (400)
            predictor.model.generation_config.max_new_tokens = 450
            uncapped = http.post("/v1/chat/completions", json={"messages": chatter}).json()
            assert uncapped["usage"]["completion_tokens"] == 400
    quick = ServeConfig(generation_timeout_s=0.001)
    with LiveServer(create_app(predictor, quick)) as server:
        capped = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"messages": ASK, "max_tokens": 300, "temperature": 1.5},
            timeout=30,
        ).json()
        assert capped["choices"][0]["finish_reason"] == "length"
        assert capped["usage"]["completion_tokens"] < 300


def test_concurrent_chat_clients_all_get_answers(live: LiveServer):
    headers = {"Authorization": f"Bearer {KEY}"}
    errors: list[str] = []
    lock = threading.Lock()

    def ask(index: int) -> str:
        payload = {"messages": ASK, "max_tokens": 12, "stream": index % 2 == 0}
        with httpx.Client(base_url=live.url, headers=headers, timeout=60) as http:
            if not payload["stream"]:
                answer = http.post("/v1/chat/completions", json=payload)
                if answer.status_code != 200:
                    with lock:
                        errors.append(answer.text)
                return answer.json()["choices"][0]["message"]["content"]
            text = []
            with http.stream("POST", "/v1/chat/completions", json=payload) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        delta = json.loads(line[6:])["choices"][0]["delta"]
                        text.append(delta.get("content") or "")
            return "".join(text).strip()

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(ask, range(32)))
    assert not errors
    assert set(answers) == {"the money is back in five days"}
    metrics = _metrics(httpx.get(f"{live.url}/metrics", headers=headers).text)
    # continuous batching: forward passes advanced several generations at once
    rows = metrics["bridgetune_generation_batch_rows_sum"]
    assert rows / metrics["bridgetune_generation_batch_rows_count"] > 1.5
    assert metrics["bridgetune_generated_tokens_total"] == 32 * 7


def test_a_reload_during_generations_loses_none(assistant: Path):
    """Generations running on the old model finish on it; requests after the switch go to the
    new one; the old model's engine ends."""
    config = ServeConfig(admin_keys=["root"], max_new_tokens=400)
    predictor = Predictor.load(assistant, device="cpu")
    predictor.model.generation_config.min_new_tokens = 60  # long enough to overlap the reload
    app = create_app(predictor, config)
    with LiveServer(app) as server:
        old_engine = []

        def stream() -> tuple[int, str | None]:
            payload = {"messages": ASK, "max_tokens": 60, "stream": True}
            pieces, finish = 0, None
            with httpx.Client(base_url=server.url, timeout=60) as http:
                with http.stream("POST", "/v1/chat/completions", json=payload) as response:
                    for line in response.iter_lines():
                        if line.startswith("data: {"):
                            choice = json.loads(line[6:])["choices"][0]
                            pieces += bool(choice["delta"].get("content"))
                            finish = choice["finish_reason"] or finish
            return pieces, finish

        with ThreadPoolExecutor(max_workers=4) as pool:
            running = [pool.submit(stream) for _ in range(4)]
            app_service = app.state.service
            while not (app_service.slot.engine and app_service.slot.engine.running):
                threading.Event().wait(0.01)
            old_engine.append(app_service.slot.engine)
            switched = httpx.post(
                f"{server.url}/admin/reload", json={"model_dir": str(assistant)},
                headers={"X-API-Key": "root"}, timeout=60,
            )  # fmt: skip
            assert switched.status_code == 200, switched.text
            results = [future.result() for future in running]
        # every old generation ran to its end (a piece per token, but tokens that decode to
        # nothing)
        assert all(finish == "length" and pieces > 50 for pieces, finish in results)
        after = httpx.post(
            f"{server.url}/v1/chat/completions", json={"messages": ASK, "max_tokens": 16},
            timeout=60,
        ).json()  # fmt: skip
        assert after["choices"][0]["message"]["content"] == "the money is back in five days"
        assert app_service.slot.engine is not old_engine[0]
        old_engine[0]._thread.join(10)
        assert not old_engine[0]._thread.is_alive()


def _metrics(text: str) -> dict[str, float]:
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("bridgetune_") and " " in line
    }


def test_feedback_on_generations_exports_as_training_data(assistant, served_classifier, tmp_path):
    from fastapi.testclient import TestClient

    database = tmp_path / "feedback.db"
    config = ServeConfig(feedback_db=str(database))
    conversation = [{"role": "system", "content": "be brief"}, *ASK]
    with TestClient(create_app(Predictor.load(assistant, device="cpu"), config)) as client:
        sent = [
            {"messages": conversation, "predicted": "black", "label": "it ships tomorrow",
             "rating": "down"},  # a correction
            {"text": "what colour", "predicted": "black and white", "rating": "up"},
            {"text": "hello", "predicted": "hi", "rating": "down"},  # kept, not training data
        ]  # fmt: skip
        for body in sent:
            answer = client.post("/v1/feedback", json=body)
            assert answer.status_code == 201, answer.text
        mistakes = {
            "end with the user turn": {"messages": [*ASK, {"role": "assistant", "content": "x"}],
                                       "label": "y"},
            "give `label`": {"text": "refund"},
            "a thumbs up needs `predicted`": {"text": "refund", "rating": "up"},
            "give `text`": {"label": "y"},
        }  # fmt: skip
        for message, body in mistakes.items():
            answer = client.post("/v1/feedback", json=body)
            assert answer.status_code == 422 and message in answer.text, answer.text
    with TestClient(create_app(Predictor.load(served_classifier, device="cpu"), config)) as client:
        answer = client.post("/v1/feedback", json={"text": "great", "rating": "up"})
        assert answer.status_code == 422 and "for generative models" in answer.text

    exported = tmp_path / "sft.jsonl"
    assert bridgetune.export_feedback(database, exported, model_version=None) == 2
    records = [json.loads(line) for line in exported.read_text().splitlines()]
    assert records == [
        {"messages": [*conversation, {"role": "assistant", "content": "it ships tomorrow"}]},
        {"messages": [{"role": "user", "content": "what colour"},
                      {"role": "assistant", "content": "black and white"}]},
    ]  # fmt: skip
    with pytest.raises(ValueError, match="JSONL"):
        bridgetune.export_feedback(database, tmp_path / "sft.csv")
    # `train` reads the export as it is
    retrain = tiny_config(
        assistant, tmp_path / "runs", task="causal_lm",
        data={"train": str(exported), "dev": str(exported)},
        train={"epochs": 1}, generate={"eval_examples": 0},
    )  # fmt: skip
    assert bridgetune.train(retrain).metrics["loss"] > 0
