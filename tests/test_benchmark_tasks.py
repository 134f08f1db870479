"""benchmarks/qa.py and benchmarks/ranking.py run on the shipped data and print their JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_config
from tests.test_ranking import config as ranking_config
from tests.test_ranking import write_groups

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / f"benchmarks/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(module, argv: list[str], capsys) -> dict:
    old = sys.argv
    sys.argv = ["bench", *argv]
    try:
        module.main()
    finally:
        sys.argv = old
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_qa_lexical_peer_and_a_model_on_the_shipped_dev_set(tiny_bert, tmp_path, capsys):
    qa = load("qa")
    assert qa.lexical_answer("谁买的耳机", "今天很好。张三买的耳机，还没到。") == "张三买的耳机，"
    assert qa.lexical_answer("how long is the warranty", "Hello there. The warranty is 2 years.")
    from bridgetune import api

    dev = ROOT / "examples/data/support_qa/dev.json"
    config = tiny_config(
        tiny_bert, tmp_path / "runs", task="qa", data={"train": str(dev), "dev": str(dev)},
        train={"epochs": 1, "batch_size": 32},
    )  # fmt: skip
    config["data"]["max_train_examples"] = 20
    config["model"]["max_length"] = 128  # the tiny tokenizer splits words into characters
    model = api.train(config).model_dir
    report = run(qa, ["--dev", str(dev), "--model", str(model)], capsys)
    assert report["questions"] == 235
    assert set(report["results"]) == {"lexical overlap (best clause)", "bridgetune"}
    assert 0 <= report["results"]["bridgetune"]["f1"] <= 1


def test_ranking_peers_and_a_model_on_the_shipped_queries(tiny_bert, tmp_path, capsys):
    from bridgetune import api

    data = write_groups(tmp_path / "recs.csv")
    model = api.train(ranking_config(tiny_bert, data, tmp_path / "runs", epochs=1)).model_dir
    report = run(load("ranking"), ["--model", str(model)], capsys)
    assert report["queries"] == 80
    results = report["results"]
    assert set(results) == {
        "random order",
        "MiniLM embeddings, zero-shot",
        "bridgetune cross-encoder",
    }
    assert results["MiniLM embeddings, zero-shot"]["ndcg@10"] > results["random order"]["ndcg@10"]


@pytest.mark.parametrize("name", ["qa"])
def test_a_missing_dev_file_is_skipped_cleanly(name, tmp_path, capsys):
    report = run(load(name), ["--dev", str(tmp_path / "absent.json")], capsys)
    assert report == {"skipped": str(tmp_path / "absent.json")}
