"""Hub datasets (`hf:<name>[:<config>]`): the real reader over a stand-in for load_dataset."""

from __future__ import annotations

import datasets
import pytest

from bridgetune.config import DataConfig
from bridgetune.data.io import read_hub
from bridgetune.data.schema import DataError
from bridgetune.tasks import reader_for


def _fake_hub(monkeypatch, table, features):
    calls = []

    def load_dataset(name, subset, split):
        calls.append((name, subset, split))
        return datasets.Dataset.from_dict(table, features=features)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_classification_labels_become_names(monkeypatch):
    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
        }
    )
    calls = _fake_hub(monkeypatch, {"sentence": ["bad", "good"], "label": [0, 1]}, features)
    cfg = DataConfig(train="hf:glue:sst2", column_map={"sentence": "text"})
    examples = read_hub("hf:glue:sst2", cfg, reader_for("classification"), "dev")
    assert calls == [("glue", "sst2", "validation")]
    assert [(e.text, e.label) for e in examples] == [("bad", "negative"), ("good", "positive")]


def test_ner_tag_ids_become_tags(monkeypatch):
    tags = datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"]))
    features = datasets.Features(
        {"tokens": datasets.Sequence(datasets.Value("string")), "ner_tags": tags}
    )
    _fake_hub(
        monkeypatch, {"tokens": [["John", "Smith", "ran"]], "ner_tags": [[1, 2, 0]]}, features
    )
    cfg = DataConfig(train="hf:conll2003", label_column="ner_tags")
    (example,) = read_hub("hf:conll2003", cfg, reader_for("ner"), "train")
    assert example.tags == ["B-PER", "I-PER", "O"] and example.text == "John Smith ran"


def test_unreachable_dataset_is_a_clear_error(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(DataError, match="hf:nope.*could not load split 'train'"):
        read_hub("hf:nope", DataConfig(train="hf:nope"), reader_for("classification"), "train")
