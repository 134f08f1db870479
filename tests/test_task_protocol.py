"""A task defined here, not in the package, registered, then trained, evaluated, saved,
predicted and served with no change to library code: the Task protocol is the whole contract.

The toy task reads support tickets whose priority is a number 1-3 in a JSONL `priority` field
and classifies them as low/normal/urgent; its reader is its own (numbers mapped to names, a
clear error for anything else)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

import bridgetune
from bridgetune.config import DataConfig, ServeConfig
from bridgetune.data.readers import TextReader
from bridgetune.data.schema import DataError
from bridgetune.serve import create_app
from bridgetune.tasks import TASKS
from bridgetune.tasks.classification import ClassificationTask
from tests.conftest import tiny_config

NAMES = {"1": "low", "2": "normal", "3": "urgent"}


@dataclass(frozen=True)
class PriorityReader(TextReader):
    """Priorities as numbers 1-3 in the label column, read as names."""

    def _label(self, value: Any, cfg: DataConfig) -> str:
        name = NAMES.get(str(value).strip())
        if name is None:
            raise ValueError(f"priority {value!r} is not 1, 2 or 3")
        return name


class PriorityTask(ClassificationTask):
    name = "priority"
    reader = PriorityReader()
    default_metric = "f1_macro"


@pytest.fixture()
def priority_task():
    TASKS.register("priority")(PriorityTask)
    yield PriorityTask
    TASKS.unregister("priority")  # the registry is global: leave it as the package made it


TICKETS = [
    ("my order never arrived and I need it today", 3),
    ("the screen is cracked, please replace it now", 3),
    ("refund me immediately, I was charged twice", 3),
    ("urgent: my account was hacked", 3),
    ("how do I change my delivery address", 2),
    ("can I add a second item to my order", 2),
    ("when does the store open on sunday", 1),
    ("thanks for the quick delivery", 1),
    ("just saying the app looks nice", 1),
    ("which colours does the headset come in", 2),
]


def test_a_task_defined_outside_the_package_runs_end_to_end(priority_task, tiny_bert, tmp_path):
    data = tmp_path / "tickets.jsonl"
    data.write_text("".join(json.dumps({"text": t, "priority": p}) + "\n" for t, p in TICKETS * 2))
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        task="priority",
        data={"train": str(data), "dev": str(data), "label_column": "priority"},
        train={"epochs": 25},
    )
    result = bridgetune.train(config)
    assert result.metrics["f1_macro"] == 1.0  # overfits 10 tickets; f1_macro picked the best
    meta = bridgetune.load(result.model_dir).meta
    assert meta["task"] == "priority" and meta["labels"] == ["low", "normal", "urgent"]
    assert bridgetune.evaluate(result.model_dir, data)["f1_macro"] == 1.0
    predicted = bridgetune.predict(result.model_dir, ["urgent: my account was hacked"])
    assert predicted[0]["label"] == "urgent"
    app = create_app(result.model_dir, ServeConfig(feedback_db=str(tmp_path / "f.db")))
    with TestClient(app) as client:
        while not client.get("/ready").json()["ready"]:
            pass
        answer = client.post("/v1/predict", json={"texts": ["thanks for the quick delivery"]})
        assert answer.json()["task"] == "priority"
        assert answer.json()["predictions"][0]["label"] == "low"


def test_its_reader_reports_bad_values_with_the_file(priority_task, tiny_bert, tmp_path):
    data = tmp_path / "tickets.jsonl"
    data.write_text(json.dumps({"text": "hello", "priority": 7}) + "\n")
    config = tiny_config(
        tiny_bert, tmp_path, task="priority", data={"train": str(data), "label_column": "priority"}
    )
    with pytest.raises(DataError, match=r"tickets.jsonl:1: priority 7 is not 1, 2 or 3"):
        bridgetune.train(config)
