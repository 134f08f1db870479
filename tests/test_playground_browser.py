"""The web playground at `/`, driven in headless Chromium against a real uvicorn server.

Needs Debian's chromium and chromedriver (`scripts/install-browser.sh`); skipped without them.
Selenium talks to /usr/bin/chromedriver directly, so selenium-manager never downloads anything.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason=f"needs {CHROMIUM} and {CHROMEDRIVER}: run scripts/install-browser.sh",
    ),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CLASSES = ["negative", "neutral", "positive"]
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
NER_TEXT = "John Smith visited Paris on Monday"
WAIT = 20


def _save_model(base: Path, directory: Path, task_name: str, labels: list[str]) -> Path:
    """A random-init model directory (no training): enough to exercise the page end to end."""
    import torch
    from transformers import AutoTokenizer

    from bridgetune.export.model_dir import save_model_dir
    from bridgetune.tasks import build_task

    torch.manual_seed(0)
    task = build_task(task_name, labels)
    meta = {
        "task": task_name,
        "labels": labels,
        "tag_scheme": "IOB2" if task_name == "ner" else None,
        "max_length": 32,
        "base_model": "tiny-bert",
        "method": "full",
        "metrics": {"dev": {"accuracy": 0.9, "macro_f1": 0.875}},
        "label_distribution": {},
        "created": "2024-05-01T12:00:00+00:00",
    }
    model = task.build_model(str(base))
    return save_model_dir(directory, model, AutoTokenizer.from_pretrained(base), meta)


@pytest.fixture(scope="module")
def predictors(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from bridgetune.inference.predictor import Predictor

    root = tmp_path_factory.mktemp("playground-models")
    return {
        "classification": Predictor.load(
            _save_model(tiny_bert, root / "intent", "classification", CLASSES), device="cpu"
        ),
        "ner": Predictor.load(_save_model(tiny_bert, root / "ner", "ner", TAGS), device="cpu"),
        "regression": Predictor.load(
            _save_model(tiny_bert, root / "value", "regression", ["rating"]), device="cpu"
        ),
        "qa": Predictor.load(_save_model(tiny_bert, root / "qa", "qa", ["start", "end"]), "cpu"),
        "ranking": Predictor.load(
            _save_model(tiny_bert, root / "rank", "ranking", ["relevance"]), device="cpu"
        ),
    }


class LiveServer:
    """uvicorn serving one app on a free localhost port, in a background thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + WAIT
        while not self.server.started:
            assert self.thread.is_alive(), "the server thread died at start-up"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        # ready: the model and any knowledge base loaded (before that the page's first
        # /v1/info answers 503 and the browser logs it as an error, which the tests count)
        import urllib.error
        import urllib.request

        while True:
            try:
                with urllib.request.urlopen(self.url + "ready", timeout=5):
                    return self
            except urllib.error.HTTPError:
                assert time.monotonic() < deadline, "the server did not become ready"
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture()
def serve(tmp_path: Path) -> Iterator:
    """serve(predictor, **config) -> a started LiveServer writing feedback to tmp_path/fb.db."""
    from bridgetune.config import ServeConfig
    from bridgetune.serve import create_app

    servers: list[LiveServer] = []

    def start(predictor, **config) -> LiveServer:
        db = tmp_path / "fb.db"
        app = create_app(predictor, ServeConfig(feedback_db=str(db), threads=1, **config))
        server = LiveServer(app).__enter__()
        server.db = db
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1100,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(WAIT)
    yield browser
    browser.quit()


def _wait(driver, condition, message: str):
    return WebDriverWait(driver, WAIT).until(condition, message)


def _text_in(element_id: str, text: str):
    return ec.text_to_be_present_in_element((By.ID, element_id), text)


def _severe(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _stored(db: Path) -> list[dict]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT text, predicted, label, task FROM feedback").fetchall()
    return [
        {"text": t, "predicted": json.loads(p), "label": json.loads(label), "task": task}
        for t, p, label, task in rows
    ]


def test_classification_predict_and_correct(driver, serve, predictors, tmp_path):
    predictor = predictors["classification"]
    server = serve(predictor)
    text = "where is my order"
    expected = predictor.predict([text])[0]["label"]

    driver.get_log("browser")  # forget the previous page's messages
    driver.get(server.url)
    _wait(driver, _text_in("model-info", "classification"), "the header shows no model info")
    header = driver.find_element(By.ID, "model-info").text
    assert "tiny-bert" in header and "accuracy 0.900" in header
    assert not driver.find_element(By.ID, "text-pair").is_displayed()

    driver.find_element(By.ID, "text").send_keys(text)
    driver.find_element(By.ID, "predict").click()
    top = _wait(
        driver,
        ec.visibility_of_element_located((By.CSS_SELECTOR, "#result .scores li.top")),
        "no prediction shown",
    )
    assert top.text.startswith(expected)
    rows = driver.find_elements(By.CSS_SELECTOR, "#result .scores li")
    assert sorted(row.text.split("\n")[0] for row in rows) == CLASSES

    assert driver.find_element(By.ID, "feedback-form").is_displayed()
    select = Select(driver.find_element(By.ID, "correct-label"))
    assert select.first_selected_option.get_attribute("value") == expected
    corrected = next(label for label in CLASSES if label != expected)
    select.select_by_value(corrected)
    driver.find_element(By.ID, "send-feedback").click()
    _wait(driver, _text_in("feedback-status", "Saved"), "the feedback was not saved")
    driver.save_screenshot(str(tmp_path / "classification.png"))
    assert _severe(driver) == []

    rows = _stored(server.db)
    assert rows == [
        {"text": text, "predicted": expected, "label": corrected, "task": "classification"}
    ]


_SELECT_CHARACTERS = """
const [root, start, end] = arguments;
const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
const range = document.createRange();
let at = 0;
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const next = at + node.length;
  if (start >= at && start < next) range.setStart(node, start - at);
  if (end > at && end <= next) range.setEnd(node, end - at);
  at = next;
}
const selection = window.getSelection();
selection.removeAllRanges();
selection.addRange(range);
"""


def test_ner_highlights_and_entity_correction(driver, serve, predictors, tmp_path):
    predictor = predictors["ner"]
    server = serve(predictor)
    predicted = predictor.predict([NER_TEXT])[0]["entities"]

    driver.get_log("browser")  # forget the previous page's messages
    driver.get(server.url)
    _wait(driver, _text_in("model-info", "ner"), "the header shows no model info")
    box = driver.find_element(By.ID, "text")
    box.send_keys(NER_TEXT)
    box.send_keys(Keys.CONTROL, Keys.ENTER)  # Ctrl+Enter predicts
    shown = _wait(
        driver, ec.visibility_of_element_located((By.ID, "ner-text")), "no entities shown"
    )
    assert shown.text.replace("\n", "").startswith("John")
    marks = driver.find_elements(By.CSS_SELECTOR, "#ner-text mark")
    assert [(m.text, m.get_attribute("data-type")) for m in marks] == [
        (e["text"], e["type"]) for e in predicted
    ]
    assert len(driver.find_elements(By.CSS_SELECTOR, "#entity-list .remove-entity")) == len(
        predicted
    )
    driver.save_screenshot(str(tmp_path / "ner-predicted.png"))

    # Correct it: remove every predicted entity, then tag "Paris" as a LOC by selecting it.
    while buttons := driver.find_elements(By.CSS_SELECTOR, "#entity-list .remove-entity"):
        buttons[0].click()
    assert driver.find_elements(By.CSS_SELECTOR, "#ner-text mark") == []
    start = NER_TEXT.index("Paris")
    driver.execute_script(
        _SELECT_CHARACTERS, driver.find_element(By.ID, "ner-text"), start - 1, start + 6
    )  # " Paris " with its spaces: the page trims them
    _wait(driver, _text_in("selection", "“Paris”"), "the selection was not picked up")
    Select(driver.find_element(By.ID, "entity-type")).select_by_value("LOC")
    driver.find_element(By.ID, "add-entity").click()
    mark = driver.find_element(By.CSS_SELECTOR, "#ner-text mark")
    assert (mark.text, mark.get_attribute("data-type")) == ("Paris", "LOC")

    driver.find_element(By.ID, "send-feedback").click()
    _wait(driver, _text_in("feedback-status", "Saved"), "the feedback was not saved")
    driver.save_screenshot(str(tmp_path / "ner-corrected.png"))
    assert _severe(driver) == []

    (row,) = _stored(server.db)
    assert row["text"] == NER_TEXT and row["task"] == "ner"
    spans = [(e["type"], e["start"], e["end"]) for e in row["label"]]
    assert spans == [("LOC", start, start + 5)]
    assert [(e["type"], e["start"], e["end"]) for e in row["predicted"]] == [
        (e["type"], e["start"], e["end"]) for e in predicted
    ]


def test_api_key_is_asked_for_and_sent(driver, serve, predictors):
    server = serve(predictors["classification"], api_keys=["s3cret"])
    driver.get(server.url)
    _wait(driver, _text_in("model-info", "401"), "a missing key is not reported")
    key = driver.find_element(By.ID, "api-key")
    key.send_keys("s3cret", Keys.TAB)  # change event: reload the model info with the key
    _wait(driver, _text_in("model-info", "classification"), "the key was not used")
    driver.find_element(By.ID, "text").send_keys("refund please", Keys.CONTROL, Keys.ENTER)
    _wait(
        driver,
        ec.visibility_of_element_located((By.CSS_SELECTOR, "#result .scores li.top")),
        "no prediction with the key",
    )


def test_value_answer_and_ranking_views(driver, serve, predictors):
    """Each task's kind of output is shown (and corrected) in its own way."""
    value = predictors["regression"].predict(["great phone"])[0]["value"]
    server = serve(predictors["regression"])
    driver.get_log("browser")  # forget the previous page's messages
    driver.get(server.url)
    _wait(driver, _text_in("model-info", "regression"), "no model info")
    driver.find_element(By.ID, "text").send_keys("great phone")
    driver.find_element(By.ID, "predict").click()
    _wait(driver, _text_in("values", "rating"), "no value shown")
    shown = float(driver.find_element(By.CSS_SELECTOR, "#values dd").text)
    assert shown == pytest.approx(value, abs=0.02)  # 3 decimals; bf16 on some CPUs
    box = driver.find_element(By.ID, "correct-value-0")
    box.clear()
    box.send_keys("4.5")
    driver.find_element(By.ID, "send-feedback").click()
    _wait(driver, _text_in("feedback-status", "Saved"), "feedback not saved")
    assert _stored(server.db)[-1]["label"] == 4.5

    context = "my order is late and the delivery is slow"
    answer = predictors["qa"].predict([("what is late", context)])[0]
    server = serve(predictors["qa"])
    driver.get(server.url)
    _wait(driver, _text_in("text-label", "Question"), "no question field")
    assert driver.find_element(By.ID, "pair-label").text == "Context"
    driver.find_element(By.ID, "text").send_keys("what is late")
    driver.find_element(By.ID, "text-pair").send_keys(context)
    driver.find_element(By.ID, "predict").click()
    _wait(driver, ec.visibility_of_element_located((By.ID, "answer")), "no answer shown")
    assert driver.find_element(By.CSS_SELECTOR, "#answer-context mark").text == answer["answer"]

    candidates = ["great phone", "my order is late", "thanks"]
    ranked = predictors["ranking"].rank("my order", candidates)
    server = serve(predictors["ranking"])
    driver.get(server.url)
    _wait(driver, _text_in("pair-label", "Candidates"), "no candidates field")
    driver.find_element(By.ID, "text").send_keys("my order")
    driver.find_element(By.ID, "text-pair").send_keys("\n".join(candidates))
    driver.find_element(By.ID, "predict").click()
    _wait(driver, ec.visibility_of_element_located((By.ID, "ranking")), "no ranking shown")
    items = driver.find_elements(By.CSS_SELECTOR, "#ranking li")
    assert [item.text.rsplit(" (", 1)[0] for item in items] == [r["text"] for r in ranked]
    assert not driver.find_element(By.ID, "feedback-box").is_displayed()
    assert not _severe(driver)


@pytest.fixture(scope="module")
def chat_model(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal_lm that learned three support answers ("refund" -> "the money is back in
    five days")."""
    import bridgetune
    from tests.conftest import tiny_config
    from tests.test_causal_lm import SUPPORT, write_jsonl

    root = tmp_path_factory.mktemp("playground-chat")
    data = write_jsonl(root / "chat.jsonl", SUPPORT)
    config = tiny_config(
        tiny_llama, root / "runs", task="causal_lm", data={"train": str(data), "dev": str(data)},
        train={"epochs": 60, "lr": 3e-2}, generate={"eval_examples": 0},
    )  # fmt: skip
    return bridgetune.train(config).model_dir


def test_chat_view_streams_answers_rates_corrects_and_shows_sources(
    driver, serve, chat_model, tiny_bert, tmp_path_factory
):
    """A generative model gets the chat view: streamed answers, thumbs and corrections stored
    as feedback on the conversation, sources of the knowledge base listed under the answer and
    the model alone when retrieval is unchecked."""
    from bridgetune.inference.predictor import Predictor

    root = tmp_path_factory.mktemp("playground-kb")
    docs = root / "kb.jsonl"
    docs.write_text(json.dumps({"text": "it ships tomorrow", "source": "shipping"}) + "\n")
    knowledge = {"documents": str(docs), "encoder": str(tiny_bert), "instruction": "be brief",
                 "min_score": -1, "top_k": 1}  # fmt: skip
    server = serve(Predictor.load(chat_model, device="cpu"), knowledge=knowledge)

    driver.get_log("browser")
    driver.get(server.url)
    _wait(driver, _text_in("model-info", "causal_lm"), "the header shows no model info")
    assert driver.find_element(By.ID, "chat-box").is_displayed()
    assert not driver.find_element(By.ID, "input-box").is_displayed()
    assert driver.find_element(By.ID, "use-retrieval").is_displayed()

    def ask(text: str) -> object:
        count = len(driver.find_elements(By.CSS_SELECTOR, ".turn.assistant .turn-actions"))
        driver.find_element(By.ID, "message").send_keys(text)
        driver.find_element(By.ID, "send").click()
        _wait(
            driver,
            lambda d: (
                len(d.find_elements(By.CSS_SELECTOR, ".turn.assistant .turn-actions")) > count
            ),
            "no answer shown",
        )
        return driver.find_elements(By.CSS_SELECTOR, ".turn.assistant")[-1]

    # retrieval on: the passage is listed as the answer's source
    answer = ask("refund")
    assert answer.find_element(By.CSS_SELECTOR, ".sources li").text.startswith("shipping")
    # a new conversation, the model alone: the trained answer, no sources
    driver.find_element(By.ID, "new-chat").click()
    assert not driver.find_elements(By.CSS_SELECTOR, ".turn")
    driver.find_element(By.ID, "use-retrieval").click()
    answer = ask("refund")
    assert answer.find_element(By.CSS_SELECTOR, ".content").text == (
        "the money is back in five days"
    )
    assert not answer.find_elements(By.CSS_SELECTOR, ".sources")
    answer.find_element(By.CSS_SELECTOR, ".rate-up").click()
    _wait(driver, lambda d: "Saved" in answer.text, "the rating was not saved")
    answer.find_element(By.CSS_SELECTOR, ".correct").click()
    box = answer.find_element(By.CSS_SELECTOR, ".corrected")
    box.clear()
    box.send_keys("your refund is on its way")
    answer.find_element(By.CSS_SELECTOR, ".save-correction").click()
    _wait(driver, lambda d: answer.find_elements(By.CSS_SELECTOR, ".turn-status.ok") and
          "Saved" in answer.text, "the correction was not saved")  # fmt: skip
    driver.save_screenshot(str(tmp_path_factory.getbasetemp() / "chat.png"))
    assert _severe(driver) == []

    rows = _stored(server.db)
    asked = [{"role": "user", "content": "refund"}]
    assert [(r["predicted"], r["label"]["completion"], r["label"]["rating"]) for r in rows] == [
        ("the money is back in five days", "the money is back in five days", "up"),
        ("the money is back in five days", "your refund is on its way", "down"),
    ]
    assert all(r["label"]["messages"] == asked and r["task"] == "causal_lm" for r in rows)


def test_chat_view_stop_cancels_the_generation(driver, serve, chat_model):
    from bridgetune.inference.predictor import Predictor

    predictor = Predictor.load(chat_model, device="cpu")
    predictor.model.generation_config.min_new_tokens = 20000  # no EOS: runs until stopped
    predictor.model.generation_config.max_new_tokens = 20000
    forward = predictor.model.forward

    def slow(*args, **kwargs):  # a token every 10 ms, as a real model: Stop comes in time
        time.sleep(0.01)
        return forward(*args, **kwargs)

    predictor.model.forward = slow
    server = serve(predictor, max_new_tokens=20000)

    driver.get(server.url)
    _wait(driver, _text_in("model-info", "causal_lm"), "the header shows no model info")
    driver.find_element(By.ID, "message").send_keys("refund")
    driver.find_element(By.ID, "send").click()
    stop = _wait(driver, ec.visibility_of_element_located((By.ID, "stop")), "no Stop button")
    _wait(driver, lambda d: len(d.find_element(By.CSS_SELECTOR, ".turn.assistant .content")
                                .text.split()) > 3, "no streamed text")  # fmt: skip
    stop.click()
    _wait(driver, _text_in("transcript", "(stopped)"), "the answer is not marked stopped")
    deadline = time.monotonic() + WAIT
    while "bridgetune_cancelled_generations_total 1.0" not in _metrics(server):
        assert time.monotonic() < deadline, "the server did not cancel the generation"
        time.sleep(0.1)


def _metrics(server) -> str:
    import urllib.request

    with urllib.request.urlopen(server.url + "metrics") as response:
        return response.read().decode()
