"""A task written outside the library (#24's acceptance test of the Task protocol): relation
classification between two marked entities, with its own marker tokens added to the tokenizer
and its own `task.*` options. It trains, saves, predicts and serves with no library edit; the
model directory keeps the markers as single tokens, so the Predictor and the service encode
exactly as training did. Chinese sentences share the data (characters, no spaces)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field

import bridgetune
from bridgetune.config import ConfigError
from bridgetune.data.readers import TextReader
from bridgetune.data.schema import DataError, Example
from bridgetune.models.pretrained import load_pretrained
from bridgetune.tasks import TASKS, Task
from bridgetune.tasks.base import pad_batch
from bridgetune.tasks.metrics import classification_metrics
from bridgetune.tasks.predictions import LabelPrediction
from tests.conftest import tiny_config

MARKERS = ["<e1>", "</e1>", "<e2>", "</e2>"]


class RelationOptions(BaseModel):
    """`task.*` of the toy relation task."""

    model_config = ConfigDict(extra="forbid")

    markers: list[str] = Field(
        default_factory=lambda: list(MARKERS),
        min_length=4,
        max_length=4,
        description="Open and close markers of the head and the tail entity, in this order.",
    )
    require_markers: bool = Field(True, description="Refuse a text without both entities marked.")


class RelationTask(Task):
    """The relation between <e1>head</e1> and <e2>tail</e2> in a sentence: one label."""

    name = "toy_relation"
    auto_class = "AutoModelForSequenceClassification"
    problem = "single"
    default_metric = "accuracy"
    output = "label"
    prediction = LabelPrediction
    reader = TextReader()
    Options = RelationOptions

    def __init__(self, labels: list[str], markers: list[str], require_markers: bool) -> None:
        self.labels, self.markers, self.require_markers = labels, markers, require_markers

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> RelationTask:
        markers = settings.get("markers") or list(MARKERS)
        return cls(labels, markers, settings.get("require_markers", True))

    def settings(self) -> dict[str, Any]:
        return {"markers": self.markers, "require_markers": self.require_markers}

    def prepare_tokenizer(self, tokenizer: Any) -> list[str]:
        new = [m for m in self.markers if m not in tokenizer.get_vocab()]
        tokenizer.add_special_tokens({"additional_special_tokens": new})
        return new

    def build_model(self, name_or_path: str, **kwargs: Any) -> torch.nn.Module:
        from transformers import AutoModelForSequenceClassification

        return load_pretrained(AutoModelForSequenceClassification, name_or_path, self.labels,
                               **kwargs)  # fmt: skip

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[dict]:
        marker_ids = tokenizer.convert_tokens_to_ids(self.markers)
        features = []
        for example in examples:
            ids = tokenizer(example.text, truncation=True, max_length=max_length)["input_ids"]
            if self.require_markers and not all(i in ids for i in marker_ids):
                raise DataError(f"{example.source or 'input'}: mark both entities with "
                                f"{' '.join(self.markers)}")  # fmt: skip
            label = None if example.label is None else self.labels.index(example.label)
            features.append({"input_ids": ids, "labels": label, "truncated": False})
        return features

    def collate(self, features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        return pad_batch(features, pad_id)

    def decode(self, logits: torch.Tensor, features: list[dict], examples: list[Example]):
        probs = torch.softmax(logits.float(), -1).tolist()
        out = []
        for row in probs:
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"label": self.labels[best], "score": row[best], "truncated": False,
                        "scores": dict(zip(self.labels, row))})  # fmt: skip
        return out

    def metrics(self, predictions: list[dict], examples: list[Example]) -> dict:
        gold = [e.label for e in examples]
        return classification_metrics(gold, [p["label"] for p in predictions], self.labels)

    def monitor_signal(self, prediction: dict[str, Any]) -> tuple[list[str], float | None]:
        return [prediction["label"]], prediction["score"]

    def counted_labels(self, prediction: dict[str, Any]) -> list[str]:
        return [prediction["label"]]

    def feedback_label(self, label: Any, entities: list[dict] | None, text: str) -> Any:
        if label not in self.labels:
            raise ValueError(f"unknown relation {label!r}; the model's are {self.labels}")
        return label


@pytest.fixture(autouse=True, scope="module")
def registered():
    """The task is registered while this module's tests run (the registry is global)."""
    TASKS.register("toy_relation")(RelationTask)
    yield
    TASKS.unregister("toy_relation")


ROWS = [
    ("<e1>alice</e1> works for <e2>acme corp</e2>", "employer"),
    ("<e1>bob</e1> visited <e2>paris</e2>", "visited"),
    ("<e1>carol</e1> works for <e2>acme</e2>", "employer"),
    ("<e1>john smith</e1> visited <e2>london</e2>", "visited"),
    ("<e1>张三</e1>在<e2>北京</e2>", "visited"),
    ("<e1>李四</e1> works for <e2>acme corp</e2>", "employer"),
]


def relation_config(tiny_bert, tmp_path, **task: Any) -> dict:
    data = tmp_path / "relations.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n"
                            for t, y in ROWS), encoding="utf-8")  # fmt: skip
    config = tiny_config(tiny_bert, tmp_path / "runs", data={"train": str(data), "dev": str(data)})
    config["task"] = {"name": "toy_relation", **task}
    config["train"]["epochs"] = 25
    return config


def test_a_task_outside_the_library_trains_saves_predicts_and_serves(tiny_bert, tmp_path):
    from fastapi.testclient import TestClient
    from transformers import AutoTokenizer

    from bridgetune.config import ServeConfig
    from bridgetune.serve import create_app

    result = bridgetune.train(relation_config(tiny_bert, tmp_path, markers=MARKERS))
    assert result.metrics["accuracy"] == 1.0
    saved = AutoTokenizer.from_pretrained(result.model_dir)
    assert len(saved) == len(AutoTokenizer.from_pretrained(tiny_bert)) + 4
    assert saved.tokenize("<e1>bob</e1>")[0] == "<e1>"  # one token, not < e 1 >
    meta = json.loads((result.model_dir / "bridgetune.json").read_text())
    assert meta["task"] == "toy_relation" and meta["settings"]["markers"] == MARKERS
    texts = [ROWS[1][0], ROWS[0][0], ROWS[4][0]]  # learnt by heart, the Chinese row too
    predicted = bridgetune.predict(result.model_dir, texts)
    assert [p["label"] for p in predicted] == ["visited", "employer", "visited"]
    with pytest.raises(DataError, match="mark both entities with <e1> </e1> <e2> </e2>"):
        bridgetune.predict(result.model_dir, ["alice visited london"])  # task.require_markers
    served_config = ServeConfig(feedback_db=str(tmp_path / "feedback.db"))
    with TestClient(create_app(bridgetune.load(result.model_dir), served_config)) as client:
        served = client.post("/v1/predict", json={"texts": texts})
        assert served.status_code == 200, served.text
        assert [p["label"] for p in served.json()["predictions"]] == [
            "visited",
            "employer",
            "visited",
        ]
        feedback = {"text": texts[0], "label": "visited", "predicted": "visited"}
        assert client.post("/v1/feedback", json=feedback).status_code == 201
        wrong = {"text": texts[0], "label": "founded", "predicted": "visited"}
        assert client.post("/v1/feedback", json=wrong).status_code == 422


def test_the_task_options_are_validated_with_the_config(tiny_bert, tmp_path):
    message = "task.require_marker: task 'toy_relation' takes markers, require_markers"
    with pytest.raises(ConfigError, match=message):
        bridgetune.as_config(relation_config(tiny_bert, tmp_path, require_marker=False))
    with pytest.raises(ConfigError, match="task.markers"):
        bridgetune.as_config(relation_config(tiny_bert, tmp_path, markers=["<a>"]))
    with pytest.raises(ConfigError, match="task.crf: applies to ner"):
        bridgetune.as_config(relation_config(tiny_bert, tmp_path, crf=True))


def test_unmarked_texts_pass_when_the_task_does_not_require_markers(tiny_bert):
    from bridgetune.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_bert))
    strict, lenient = (RelationTask.create(["a"], require_markers=flag) for flag in (True, False))
    assert strict.prepare_tokenizer(tokenizer) == MARKERS  # added once
    assert lenient.prepare_tokenizer(tokenizer) == []
    unmarked = [Example(text="bob visited paris", source="rows.jsonl:3")]
    assert lenient.encode(unmarked, tokenizer, 32)[0]["input_ids"]
    with pytest.raises(DataError, match="rows.jsonl:3: mark both entities"):
        strict.encode(unmarked, tokenizer, 32)
