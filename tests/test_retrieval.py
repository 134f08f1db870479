"""The knowledge base (bridgetune.inference.retrieval): documents read and cut into passages
(folders, text, JSONL/CSV records, Chinese sentences), bad records at their file and line, search by
embedding with the embeddings cached, passages put into the system turn; served: chat answers
carry their sources (plain, streamed, through the official openai client), retrieval on/off,
passages that would overflow max_length left out."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from conftest import LiveServer

from bridgetune.config import ServeConfig
from bridgetune.data.schema import DataError
from bridgetune.inference import retrieval
from bridgetune.inference.predictor import Predictor
from bridgetune.inference.retrieval import KnowledgeBase, read_passages, with_passages
from bridgetune.serve.app import create_app
from tests.test_serve_chat import ASK, assistant  # noqa: F401 (the fixture)


def test_documents_are_read_and_cut_into_cited_passages(tmp_path):
    folder = tmp_path / "docs"
    (folder / "policies").mkdir(parents=True)
    (folder / "faq.md").write_text("Refunds take five days.\n\nShipping is free.\n", "utf-8")
    (folder / "policies" / "returns.txt").write_text("Return within 30 days.", "utf-8")
    (folder / "image.png").write_bytes(b"\x89PNG")  # not a document: skipped
    passages = read_passages(folder, chunk_chars=600)
    assert [(p.source, p.text) for p in passages] == [
        ("faq.md#1", "Refunds take five days.\n\nShipping is free."),
        ("policies/returns.txt#1", "Return within 30 days."),
    ]
    # paragraphs joined up to the limit; a long Chinese paragraph cut at its sentence ends
    chinese = "退款五个工作日内到账。" * 6 + "运费满五十元免费。"
    (tmp_path / "zh.txt").write_text(f"短段落。\n\n{chinese}", "utf-8")
    cut = read_passages(tmp_path / "zh.txt", chunk_chars=50)
    assert all(len(p.text) <= 50 for p in cut)
    assert "".join(p.text.replace("\n\n", "") for p in cut) == "短段落。" + chinese
    assert all(p.text.endswith("。") for p in cut)

    records = tmp_path / "answers.jsonl"
    rows = [{"question": "Where is my refund?", "answer": "It takes five days.", "id": "t-17"},
            {"text": "Gift cards never expire.", "source": "gift-cards.md"}]  # fmt: skip
    records.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    assert [(p.source, p.text) for p in read_passages(records)] == [
        ("t-17", "Where is my refund?\nIt takes five days."),
        ("gift-cards.md", "Gift cards never expire."),
    ]
    table = tmp_path / "answers.csv"
    table.write_text("question,answer\nDo you ship abroad?,Yes: to 30 countries.\n", "utf-8")
    assert read_passages(table)[0].source == "answers.csv:2"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "ok"}\n{"title": "no text"}\n', "bad.jsonl:2: a knowledge record"),
        ("bad.jsonl", '{"text": "ok"}\nnot json\n', "bad.jsonl:2: not valid JSON"),
        ("bad.csv", "title,body\nx,y\n", "bad.csv:2: a knowledge record needs `text`"),
        ("empty.txt", "\n\n", "no text found"),
        ("notes.pdf", "%PDF", ".jsonl or .csv"),
    ],
)
def test_bad_documents_say_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content, "utf-8")
    with pytest.raises(DataError, match=re.escape(message)):
        read_passages(tmp_path / name)


def test_search_finds_a_passage_by_meaning_and_caches_embeddings(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    docs = tmp_path / "faq.md"
    fox = "the quick brown fox runs across the green field"
    paragraphs = ["hello world, this is the first paragraph here", fox,
                  "a lazy dog sleeps under the table all day long"]  # fmt: skip
    docs.write_text("\n\n".join(paragraphs), "utf-8")
    knowledge = KnowledgeBase.load(docs, encoder=str(tiny_bert), chunk_chars=50)
    assert len(knowledge.passages) == 3  # each paragraph alone: two would pass 50 characters
    best = knowledge.search(fox, top_k=2)
    assert best[0] == {"text": fox, "source": "faq.md#2", "score": pytest.approx(1, abs=1e-4)}
    assert len(best) == 2 and best[0]["score"] > best[1]["score"]
    assert knowledge.search(fox, top_k=3, min_score=0.9999) == best[:1]
    assert knowledge.search("   ") == []

    def refuse(*args, **kwargs):
        raise AssertionError("the cached embeddings were not used")

    monkeypatch.setattr(retrieval, "_embed", refuse)
    with pytest.raises(AssertionError, match="not used"):  # the question still needs one
        KnowledgeBase.load(docs, encoder=str(tiny_bert), chunk_chars=50).search("fox")
    docs.write_text("something else entirely\n", "utf-8")
    with pytest.raises(AssertionError, match="not used"):  # new passages: embedded again
        KnowledgeBase.load(docs, encoder=str(tiny_bert))


def test_passages_go_into_the_system_turn():
    found = [{"text": "it ships tomorrow", "source": "faq.md#1"}]
    plain = with_passages(ASK, found, "use these")
    listed = "use these\n\n[1] it ships tomorrow (source: faq.md#1)"
    assert plain[0] == {"role": "system", "content": listed}
    assert plain[1:] == ASK
    briefed = with_passages([{"role": "system", "content": "be brief"}, *ASK], found, "use")
    assert briefed[0]["content"].startswith("be brief\n\nuse\n\n[1] it ships tomorrow")
    assert len(briefed) == 2 and with_passages(ASK, [], "use") == ASK


def test_served_chat_answers_with_sources(assistant, tiny_bert, tmp_path):  # noqa: F811
    openai = pytest.importorskip("openai")
    docs = tmp_path / "answers.jsonl"
    rows = [{"text": "it ships tomorrow", "source": "shipping"},
            {"text": "the money is back in five days", "source": "refunds"},
            {"text": "black and white", "source": "colours"}]  # fmt: skip
    docs.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    # min_score -1: a random tiny encoder ranks, but nothing is filtered
    knowledge = {"documents": str(docs), "encoder": str(tiny_bert), "instruction": "be brief",
                 "min_score": -1, "top_k": 3}  # fmt: skip
    config = ServeConfig(knowledge=knowledge, max_new_tokens=64)
    predictor = Predictor.load(assistant, device="cpu")
    with LiveServer(create_app(predictor, config)) as server:
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/ready").status_code != 200:
            assert time.monotonic() < deadline, "the knowledge base did not load"
            time.sleep(0.05)
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=ASK, max_tokens=8)
        sources = reply.model_extra["sources"]
        # three passages would not fit the model's 32 tokens: the weakest went
        assert 1 <= len(sources) < 3
        assert [s["index"] for s in sources] == list(range(1, len(sources) + 1))
        assert {s["source"] for s in sources} <= {"shipping", "refunds", "colours"}
        assert reply.usage.prompt_tokens <= predictor.max_length
        alone = client.chat.completions.create(
            model="m", messages=ASK, max_tokens=8, extra_body={"retrieval": False}
        )
        assert "sources" not in (alone.model_extra or {})
        assert alone.usage.prompt_tokens < reply.usage.prompt_tokens

        stream = client.chat.completions.create(model="m", messages=ASK, max_tokens=8,
                                                stream=True)  # fmt: skip
        chunks = list(stream)
        assert chunks[0].model_extra["sources"] == sources
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "bridgetune_retrieval_seconds_count 2.0" in metrics


def test_the_shipped_knowledge_base_answers_english_and_chinese_questions(tmp_path, monkeypatch):
    """examples/serve/assistant.yaml's documents, embedded by the bundled MiniLM."""
    from bridgetune.config import load_serve_config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root = Path(__file__).resolve().parents[1]
    settings = load_serve_config(root / "examples" / "serve" / "assistant.yaml").knowledge
    knowledge = KnowledgeBase.load(root / settings.documents, settings.encoder,
                                   settings.chunk_chars)  # fmt: skip
    expected = {
        "How long until I get my money back?": "refunds.md#1",
        "Is shipping free?": "shipping.md#1",
        "I forgot my password": "account.md#1",
        "What colours does the Nova tablet come in?": "store.md#2",
        "退款多久到账？": "售后政策.md#1",
        "保修多久": "售后政策.md#1",
    }
    for question, source in expected.items():
        found = knowledge.search(question, settings.top_k, settings.min_score)
        assert found and found[0]["source"] == source, (question, found)
