"""task: embedding: the reader's layouts, the batch (distinct texts, the exclusions), the loss on
a hand-computed batch, retrieval metrics on a hand-built ranking, training a tiny bi-encoder, the
sentence-transformers round trip and the embeddings endpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bridgetune
from bridgetune.config import DataConfig
from bridgetune.data.schema import DataError
from bridgetune.tasks import build_task
from bridgetune.tasks.embedding import batch_layout, retrieval_metrics, top_k
from bridgetune.tasks.embedding_reader import EmbeddingReader
from bridgetune.tasks.losses import embedding_loss
from tests.conftest import tiny_config

PAIRS = [
    ("how do i reset my password", "password reset: open account then change password"),
    ("where is my order", "order tracking: where is my package delivery"),
    ("can i get a refund", "refund: we refund a broken item"),
    ("change my email", "account email: change email in account"),
    ("my phone charger is broken", "broken charger: we send a new charger"),
    ("delivery on monday", "delivery days: monday to friday"),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read(path: Path, **data) -> list:
    return EmbeddingReader().read_file(path, DataConfig(train=str(path), **data), True)


def test_reader_pairs_negatives_and_groups(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"text": "q1", "positive": "p1", "negative": "n1"},
        {"text": "q1", "positive": "p2", "negatives": ["n2", ""]},
        {"text": "q2", "positive": "p3", "negative_1": "n3", "negative_2": "n4"},
    ])  # fmt: skip
    first, second = read(path)
    assert (first.text, first.candidates, first.label) == ("q1", ["p1", "n1", "p2", "n2"],
                                                           [1.0, 0.0, 1.0, 0.0])  # fmt: skip
    assert (second.candidates, second.label) == (["p3", "n3", "n4"], [1.0, 0.0, 0.0])


def test_reader_takes_the_ranking_file_and_refuses_bad_rows(tmp_path):
    path = tmp_path / "rank.csv"
    path.write_text("text,passage,label\nq1,p1,1\nq1,n1,0\nq2,p2,0.6\n", encoding="utf-8")
    first, second = read(path, text_pair_column="passage")
    assert (first.candidates, first.label) == (["p1", "n1"], [1.0, 0.0])
    assert second.label == [0.6]
    path.write_text("text,passage,label\nq1,n1,0\n", encoding="utf-8")
    with pytest.raises(DataError, match="rank.csv:2: query 'q1' has no positive"):
        read(path, text_pair_column="passage")
    path.write_text("text,passage,label\nq1,p1,high\n", encoding="utf-8")
    with pytest.raises(DataError, match="rank.csv:2: relevance 'high'"):
        read(path, text_pair_column="passage")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "q", "positive": " "}])
    with pytest.raises(DataError, match="bad.jsonl:1: empty text in column 'positive'"):
        read(bad)


def test_a_batch_holds_each_text_once_and_excludes_a_querys_other_positives():
    features = [
        {"input_ids": [1], "passages": [[10], [11], [12]], "labels": [1.0, 1.0, 0.0]},
        {"input_ids": [2], "passages": [[10], [13], [14]], "labels": [1.0, 0.0, 0.0]},
    ]
    layout = batch_layout(features, negatives=1)
    assert layout.queries == [[1], [2]]
    assert layout.passages == [[10], [11], [12], [13]]  # [14]: the second negative of query 2
    assert layout.rows == [(0, 0, 1.0), (0, 1, 1.0), (0, 2, 0.0), (1, 0, 1.0), (1, 3, 0.0)]
    task = build_task("embedding", ["relevance"])
    batch = task.collate_train(features, pad_id=0)
    # row (q1 -> p10) must not count q1's other positive p11 as a negative, and vice versa;
    # p10 is shared by both queries: a positive of both, nobody's negative (a hard negative's
    # row, which only the cosine loss scores, excludes all its query's positives)
    assert batch["groups"].tolist() == [
        [False, True, False, False],
        [True, False, False, False],
        [True, True, False, False],
        [False, False, False, False],
        [True, False, False, False],
    ]
    assert batch["passage_input_ids"].shape[0] == 4


def test_the_loss_on_a_hand_computed_batch():
    q = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    p = F.normalize(torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    vectors = torch.cat([q, p])
    rows = torch.tensor([[0, 1, 1.0], [0, 0, 1.0], [1, 2, 1.0], [1, 0, 0.0]])
    exclude = torch.tensor([[True, False, False], [False, True, False],
                            [False, False, False], [False, False, False]])  # fmt: skip
    scale = 10.0
    # row 0: q0 against p1 (target) and p2 (p0, its other positive, excluded)
    c = 1 / math.sqrt(2)
    row0 = -math.log(math.exp(scale) / (math.exp(scale) + math.exp(0)))
    row1 = -math.log(math.exp(scale * c) / (math.exp(scale * c) + math.exp(0)))  # p0 vs p2
    row2 = -math.log(math.exp(scale) / (math.exp(scale) + math.exp(scale * c) + math.exp(0)))
    expected = (row0 + row1 + row2) / 3
    loss = embedding_loss(vectors, rows, exclude, "mnrl", scale)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    cosine = embedding_loss(vectors, rows, exclude, "cosine", scale)
    assert cosine.item() == pytest.approx(((c - 1) ** 2 + 0 + 0 + c**2) / 4, rel=1e-5)
    both = embedding_loss(vectors, rows, exclude, "mnrl+cosine", scale)
    assert both.item() == pytest.approx(loss.item() + cosine.item(), rel=1e-5)


def test_retrieval_metrics_on_a_hand_built_ranking():
    corpus = np.eye(12, dtype=np.float32)
    # query 0 scores passage i at 1 - i/20: its ranking is 0, 1, 2, ...
    scores = np.array([1 - i / 20 for i in range(12)], dtype=np.float32)
    queries = np.stack([scores, scores, scores])
    relevant = [{0}, {2, 11}, set()]  # the first at rank 1; ranks 3 and 12; none
    metrics = retrieval_metrics(queries, corpus, relevant)
    assert metrics["recall@1"] == pytest.approx((1 + 0 + 0) / 3)
    assert metrics["recall@5"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert metrics["recall@100"] == pytest.approx((1 + 1 + 0) / 3)
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 3) / 3)
    ndcg_second = (1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert metrics["ndcg@10"] == pytest.approx((1 + ndcg_second) / 3)
    assert metrics["first_relevant"] == {"1": 1, "3": 1}
    assert (metrics["queries"], metrics["corpus"]) == (3, 12)
    assert top_k(queries[:1], corpus, 3).tolist() == [[0, 1, 2]]


def _config(model: Path, root: Path, **task) -> dict:
    rows = [{"text": q, "positive": p} for q, p in PAIRS]
    data = write_jsonl(root / "pairs.jsonl", rows)
    config = tiny_config(model, root / "runs", data={"train": str(data), "dev": str(data)})
    config["task"] = {"name": "embedding", **task}
    config["train"].update(epochs=8, lr=2e-3, batch_size=6)
    return config


@pytest.fixture(scope="module")
def retriever(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny bi-encoder trained on PAIRS (queries read with the prefix 'q: ')."""
    root = tmp_path_factory.mktemp("retriever")
    config = _config(tiny_bert, root, query_prefix="q: ")
    corpus = root / "corpus.txt"  # two more passages that evaluation ranks with dev's six
    corpus.write_text("great phone thanks\n\nlove this service\n", encoding="utf-8")
    config["data"]["corpus"] = str(corpus)
    return bridgetune.train(config)


def test_training_lifts_retrieval_and_the_directory_is_a_sentence_transformer(retriever):
    history = retriever.history
    assert history[-1]["mrr@10"] >= history[0]["mrr@10"]
    assert (retriever.metrics["queries"], retriever.metrics["corpus"]) == (6, 8)  # + data.corpus
    assert retriever.metrics["mrr@10"] > 0.6  # 6 queries, 8 passages: better than chance (0.34)
    model_dir = Path(retriever.model_dir)
    assert (model_dir / "modules.json").is_file() and (model_dir / "1_Pooling").is_dir()
    assert (Path(retriever.run_dir) / "dev_first_relevant.png").is_file()  # the report's plot
    texts = [q for q, _ in PAIRS]
    ours = bridgetune.embed(model_dir, texts)  # queries: with the prefix
    assert ours.shape == (6, 32) and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    theirs = st.encode(texts, prompt_name="query", convert_to_numpy=True)
    assert np.abs(ours - theirs).max() < 1e-4
    passages = bridgetune.embed(model_dir, [p for _, p in PAIRS], role="passage")
    assert np.abs(passages - st.encode([p for _, p in PAIRS])).max() < 1e-4  # no prefix
    with pytest.raises(ValueError, match="role 'answer'"):
        bridgetune.embed(model_dir, texts, role="answer")


def test_embed_cli_writes_npy_and_jsonl_and_mine_negatives_finds_non_positives(retriever, tmp_path):
    from typer.testing import CliRunner

    from bridgetune.cli import app

    model_dir = str(retriever.model_dir)
    texts = tmp_path / "texts.txt"
    texts.write_text("where is my order\n\n我的订单在哪里\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["embed", model_dir, "--file", str(texts), "--output",
                                 str(tmp_path / "v.npy"), "--role", "passage"])  # fmt: skip
    assert result.exit_code == 0, result.output
    vectors = np.load(tmp_path / "v.npy")
    expected = bridgetune.embed(model_dir, ["where is my order", "我的订单在哪里"], "passage")
    assert vectors.shape == (2, 32) and np.allclose(vectors, expected, atol=1e-5)
    result = runner.invoke(app, ["embed", model_dir, "refund please"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.strip().splitlines()[-1])
    assert row["text"] == "refund please" and len(row["embedding"]) == 32
    data = write_jsonl(tmp_path / "train.jsonl", [{"text": q, "positive": p} for q, p in PAIRS])
    mined = tmp_path / "mined.jsonl"
    result = runner.invoke(app, ["mine-negatives", model_dir, "--data", str(data), "--output",
                                 str(mined), "--negatives", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in mined.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6
    for row, (query, positive) in zip(rows, PAIRS):
        assert (row["text"], row["positive"]) == (query, positive)
        assert len(row["negatives"]) == 2 and positive not in row["negatives"]
    assert read(mined)[0].label == [1.0, 0.0, 0.0]  # the mined file trains as it is


def test_the_embeddings_endpoint_answers_the_openai_client(retriever):
    openai = pytest.importorskip("openai")
    from conftest import LiveServer

    from bridgetune.config import ServeConfig
    from bridgetune.inference.predictor import Predictor
    from bridgetune.serve.app import create_app

    predictor = Predictor.load(retriever.model_dir, device="cpu")
    with LiveServer(create_app(predictor, ServeConfig(api_keys=["k"]))) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0)
        answer = client.embeddings.create(model="any", input=["where is my order", "退款"])
        assert [item.index for item in answer.data] == [0, 1]
        expected = predictor.embed(["where is my order", "退款"])  # query: the default
        got = np.asarray([item.embedding for item in answer.data], np.float32)
        assert np.abs(got - expected).max() < 1e-5  # base64 (the client's default) decoded
        assert answer.usage.prompt_tokens > 0
        plain = httpx.post(f"{server.url}/v1/embeddings", headers={"Authorization": "Bearer k"},
                           json={"input": "refund", "encoding_format": "float",
                                 "input_type": "passage"})  # fmt: skip
        assert plain.status_code == 200
        body = plain.json()
        assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
        assert np.allclose(body["data"][0]["embedding"], predictor.embed(["refund"], "passage")[0],
                           atol=1e-5)  # fmt: skip
        for bad, status in (
            ({"input": []}, 422),
            ({"input": ["ok", " "]}, 422),
            ({"input": "x", "dimensions": 7}, 422),
            ({"input": [1, 2]}, 422),
        ):
            answer = httpx.post(f"{server.url}/v1/embeddings", json=bad,
                                headers={"Authorization": "Bearer k"})  # fmt: skip
            assert answer.status_code == status, (bad, answer.text)


def test_a_classifier_refuses_embeddings(served_classifier):
    from fastapi.testclient import TestClient

    from bridgetune.inference.predictor import Predictor
    from bridgetune.serve.app import create_app

    with TestClient(create_app(Predictor.load(served_classifier, device="cpu"))) as http:
        answer = http.post("/v1/embeddings", json={"input": "hello"})
    assert answer.status_code == 422 and "embedding model" in answer.text


def test_methods_that_do_not_fit_a_bi_encoder_are_config_errors(tiny_bert, tmp_path):
    config = _config(tiny_bert, tmp_path)
    config["method"] = {"name": "head_only"}
    with pytest.raises(ValueError, match="method.name='head_only' does not apply to embedding"):
        bridgetune.as_config(config)


def test_the_knowledge_base_on_the_fine_tuned_retriever_finds_more_sources(
    retriever, tiny_bert, served_classifier, tmp_path, monkeypatch
):
    from bridgetune.inference.predictor import Predictor
    from bridgetune.inference.retrieval import KnowledgeBase, check_retriever

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    docs = tmp_path / "kb.md"
    docs.write_text("\n\n".join(p for _, p in PAIRS), encoding="utf-8")
    sources = {p: f"kb.md#{i}" for i, (_, p) in enumerate(PAIRS, 1)}

    def hits(knowledge: KnowledgeBase) -> int:
        return sum(knowledge.search(q, top_k=1)[0]["source"] == sources[p] for q, p in PAIRS)

    untuned = KnowledgeBase.load(docs, encoder=str(tiny_bert), chunk_chars=60)
    tuned = KnowledgeBase.load(docs, chunk_chars=60, retriever=retriever.model_dir)
    assert len(tuned.passages) == 6
    assert hits(tuned) == 6 and hits(tuned) > hits(untuned)

    roles: list[str] = []
    original = Predictor.embed

    def counted(self, texts, role="query", batch_size=64):
        roles.append(role)
        return original(self, texts, role, batch_size)

    monkeypatch.setattr(Predictor, "embed", counted)
    KnowledgeBase.load(docs, chunk_chars=60, retriever=retriever.model_dir)
    assert roles == []  # the passages' embeddings came from the cache
    meta = Path(retriever.model_dir) / "bridgetune.json"
    meta.write_text(meta.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    KnowledgeBase.load(docs, chunk_chars=60, retriever=retriever.model_dir)
    assert roles == ["passage"]  # the model directory changed: the passages embedded again
    with pytest.raises(ValueError, match="needs an embedding model"):
        check_retriever(served_classifier)


def test_a_pruned_vocabulary_keeps_the_prefixes_pieces(tiny_xlmr_bert, tmp_path):
    config = _config(tiny_xlmr_bert, tmp_path, query_prefix="john: ", passage_prefix="smith: ")
    config["model"].update(prune_vocab=100000, prune_vocab_reserve=0)  # the data's pieces only
    config["train"]["epochs"] = 1
    result = bridgetune.train(config)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    for prefix in ("john: ", "smith: "):  # in no text of the data: kept for the prefixes
        ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids, prefix


def test_the_memory_of_earlier_passages_adds_negatives_but_never_a_querys_positive():
    task = build_task("embedding", ["relevance"], memory=8, scale=10.0)
    first = [{"input_ids": [1], "passages": [[10]], "labels": [1.0]},
             {"input_ids": [2], "passages": [[11]], "labels": [1.0]}]  # fmt: skip
    second = [{"input_ids": [3], "passages": [[10]], "labels": [1.0]},  # p10 again: a positive
              {"input_ids": [4], "passages": [[12]], "labels": [1.0]}]  # fmt: skip
    q = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    p = F.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0]]), dim=-1)
    batch = task.collate_train(first, pad_id=0)
    plain = embedding_loss(torch.cat([q, p]), batch["labels"], batch["groups"][:-1].bool(),
                           "mnrl", 10.0)  # fmt: skip
    assert task.loss(torch.cat([q, p]), batch["labels"], batch["groups"]) == pytest.approx(
        plain.item()
    )  # an empty memory: the batch alone
    assert task.bank.vectors is not None and task.bank.vectors.shape == (2, 2)
    batch = task.collate_train(second, pad_id=0)
    p2 = F.normalize(torch.tensor([[1.0, 0.3], [0.5, 0.5]]), dim=-1)
    loss = task.loss(torch.cat([q, p2]), batch["labels"], batch["groups"])
    # row 0 (q3 -> p10): the memory's p10 is this batch's passage, hidden; its p11 a negative
    # row 1 (q4 -> p12): the memory's p10 is hidden too (this batch holds p10), p11 a negative
    s = 10.0
    row0 = -torch.log_softmax(s * torch.stack([q[0] @ p2[0], q[0] @ p2[1], q[0] @ p[1]]), 0)[0]
    row1 = -torch.log_softmax(s * torch.stack([q[1] @ p2[1], q[1] @ p2[0], q[1] @ p[1]]), 0)[0]
    assert loss.item() == pytest.approx(((row0 + row1) / 2).item(), rel=1e-5)
    assert task.bank.vectors.shape == (4, 2)  # both batches' passages, newest last
