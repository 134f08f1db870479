"""Ranking: query groups read and checked, a cross-encoder trained with listwise, pairwise and
pointwise losses on whole queries, per-query metrics, `rank` in Python, CLI and service."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import bridgetune
from bridgetune.cli import app as cli
from bridgetune.config import ConfigError, DataConfig
from bridgetune.data.schema import DataError
from bridgetune.serve import create_app
from bridgetune.tasks.losses import task_loss
from bridgetune.tasks.ranking import RankingReader, ranking_metrics
from tests.conftest import tiny_config

# which product suits which customer: the relevant ones share a word the model can learn
QUERIES = {
    "q1": ("loves music", ["great phone", "love this phone", "terrible slow delivery"], [2, 1, 0]),
    "q2": ("my order", ["my order is late", "great service thanks", "great phone"], [1, 0, 0]),
    "q3": ("slow delivery", ["the delivery is slow", "great phone", "my order is late"], [2, 0, 1]),
}


def write_groups(path: Path, queries: dict = QUERIES) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["qid", "query", "item", "rel"])
        for qid, (query, items, relevance) in queries.items():
            writer.writerows((qid, query, item, rel) for item, rel in zip(items, relevance))
    return path


def config(tiny_bert: Path, data: Path, runs: Path, **train) -> dict:
    return tiny_config(
        tiny_bert,
        runs,
        task="ranking",
        data={
            "train": str(data),
            "dev": str(data),
            "text_column": "query",
            "text_pair_column": "item",
            "label_column": "rel",
            "group_column": "qid",
        },
        train={"epochs": 40, "lr": 1e-2, "batch_size": 2, **train},
    )


def data_config(path: Path, **extra) -> DataConfig:
    return DataConfig(
        train=str(path), text_column="query", text_pair_column="item", label_column="rel", **extra
    )


def test_rows_are_grouped_by_query_id_in_first_seen_order(tmp_path):
    path = write_groups(tmp_path / "r.csv")
    examples = RankingReader().read_file(path, data_config(path, group_column="qid"), True)
    assert [e.id for e in examples] == ["q1", "q2", "q3"]
    assert examples[0].candidates == QUERIES["q1"][1] and examples[0].label == [2.0, 1.0, 0.0]
    assert examples[1].source.endswith("r.csv:5")
    by_text = RankingReader().read_file(path, data_config(path), False)  # no id: the query text
    assert [e.text for e in by_text] == ["loves music", "my order", "slow delivery"]
    assert by_text[0].label is None


@pytest.mark.parametrize(
    ("queries", "message"),
    [
        ({"q1": ("a", ["x", "y"], [0, 0])}, r"r.csv:2: query 'q1' has no relevant candidate"),
        ({"q1": ("a", ["x", "y"], [1, "high"])}, r"r.csv:3: relevance 'high' in column 'rel'"),
        ({"q1": ("a", ["x", "y"], [1, -1])}, r"r.csv:3: relevance '-1' in column 'rel'"),
    ],
)
def test_bad_groups_name_file_line_and_what_to_do(tmp_path, queries, message):
    path = write_groups(tmp_path / "r.csv", queries)
    with pytest.raises(DataError, match=message):
        RankingReader().read_file(path, data_config(path, group_column="qid"), True)


def test_one_id_with_two_query_texts_is_an_error(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("qid,query,item,rel\nq1,a,x,1\nq1,b,y,0\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"r.csv:3: query id 'q1' has another query text"):
        RankingReader().read_file(path, data_config(path, group_column="qid"), True)


def test_metrics_by_hand():
    # query 1: relevant at ranks 2 and 3 of 4; query 2: graded, best first
    metrics = ranking_metrics([[0, 1, 1, 0], [2, 1, 0]], [[0, 1, 2, 3], [0, 1, 2]])
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    assert metrics["map"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1) / 2)
    ideal = 1 + 1 / math.log2(3)
    ndcg1 = (1 / math.log2(3) + 1 / math.log2(4)) / ideal
    assert metrics["ndcg@10"] == pytest.approx((ndcg1 + 1) / 2)
    assert metrics["auc"] == pytest.approx((2 / 4 + 1) / 2)  # q1: 2 of 4 pairs in order
    assert metrics["first_relevant"] == {"1": 1, "2": 1}


@pytest.mark.parametrize("kind", ["listwise", "pairwise", "pointwise"])
def test_every_ranking_loss_prefers_the_right_order(kind):
    relevance = torch.tensor([2.0, 0.0, 1.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 1, 1])
    right = torch.tensor([[3.0], [-2.0], [1.0], [-1.0], [2.0]])
    wrong = -right
    good = task_loss(right, relevance, "ranking", groups=groups, kind=kind)
    bad = task_loss(wrong, relevance, "ranking", groups=groups, kind=kind)
    assert good < bad


def test_listwise_loss_does_not_mix_queries():
    relevance, groups = torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([[5.0], [0.0], [0.0], [0.0]])
    alone = task_loss(scores[2:], relevance[2:], "ranking", groups=groups[2:])
    together = task_loss(scores, relevance, "ranking", groups=groups)
    first = task_loss(scores[:2], relevance[:2], "ranking", groups=groups[:2])
    assert together == pytest.approx((alone + first) / 2)


@pytest.mark.parametrize("loss", ["listwise", "pairwise"])
def test_ranking_trains_ranks_and_serves(tiny_bert, tmp_path, loss):
    data = write_groups(tmp_path / "recs.csv")
    result = bridgetune.train(config(tiny_bert, data, tmp_path / "runs", loss=loss))
    assert result.metrics["mrr"] == 1.0 and result.metrics["ndcg@10"] > 0.95  # fits 3 queries
    assert {"map", "auc", "ndcg@5"} <= set(result.metrics)
    assert (result.run_dir / "dev_first_relevant.png").is_file()
    ranked = bridgetune.rank(result.model_dir, "slow delivery", QUERIES["q3"][1])
    assert ranked[0]["text"] == "the delivery is slow"
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    assert bridgetune.evaluate(result.model_dir, data)["ndcg@10"] == pytest.approx(
        result.metrics["ndcg@10"]
    )
    if loss != "listwise":
        return
    candidates = tmp_path / "items.txt"
    candidates.write_text("\n".join(QUERIES["q3"][1]) + "\n", encoding="utf-8")
    out = CliRunner().invoke(
        cli,
        ["rank", str(result.model_dir), "--query", "slow delivery", "--candidates", str(candidates),
         "--top-k", "2"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["rank"] for line in lines] == [1, 2] and lines[0]["index"] == 0
    app = create_app(bridgetune.load(result.model_dir))
    with TestClient(app) as client:
        assert client.get("/v1/info").json()["output"] == "ranking"
        body = {"query": "slow delivery", "candidates": QUERIES["q3"][1], "top_k": 2}
        response = client.post("/v1/rank", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert [r["text"] for r in answer["ranking"]] == [r["text"] for r in ranked[:2]]
        wrong = client.post("/v1/predict", json={"texts": ["slow delivery"]})
        assert wrong.status_code == 422 and "/v1/rank" in wrong.text
        empty = client.post("/v1/rank", json={"query": "x", "candidates": ["a", " "]})
        assert empty.status_code == 422 and "candidates[1]" in empty.text


def test_a_loss_of_another_task_is_refused_with_the_choices(tiny_bert, tmp_path):
    data = write_groups(tmp_path / "recs.csv")
    with pytest.raises(ConfigError, match="train.loss='huber' is not a loss of task 'ranking'"):
        bridgetune.as_config(config(tiny_bert, data, tmp_path / "runs", loss="huber"))
    raw = config(tiny_bert, data, tmp_path / "runs")
    del raw["data"]["text_pair_column"]
    with pytest.raises(ConfigError, match="needs data.text_pair_column"):
        bridgetune.as_config(raw)
