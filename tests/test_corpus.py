"""Pre-training corpora (bridgetune.knowledge.corpus): documents read from disk when needed,
with file:line errors, and windows tokenized once into a cache that later runs map."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridgetune.config import DataConfig
from bridgetune.data.schema import DataError
from bridgetune.knowledge.corpus import LazyLines, WindowStore
from bridgetune.tasks import build_task
from bridgetune.tasks.mlm import CorpusReader


def read(path: Path, **data):
    return CorpusReader().read_file(path, DataConfig(train=str(path), **data), False)


def test_text_documents_are_read_from_disk_when_needed(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes("\ufeff第一篇\n\n  second document  \n\n第三篇 third\n".encode())
    documents = read(path)
    assert isinstance(documents, LazyLines) and len(documents) == 3
    assert [d.text for d in documents] == ["第一篇", "second document", "第三篇 third"]
    assert documents[1].source == f"{path}:3" and documents[-1].source == f"{path}:5"
    assert [d.text for d in documents[1:]] == ["second document", "第三篇 third"]
    broken = tmp_path / "broken.txt"
    broken.write_bytes(b"fine\n\xff\xfe bad bytes\n")
    with pytest.raises(DataError, match=r"broken.txt:2: not UTF-8"):
        list(read(broken))


def test_jsonl_documents_and_their_errors(tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [{"text": "一篇文档", "id": 1}, {"text": "another"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    documents = read(path)
    assert isinstance(documents, LazyLines)
    assert [d.text for d in documents] == ["一篇文档", "another"]
    path.write_text('{"text": "ok"}\n{"text": \n', "utf-8")
    with pytest.raises(DataError, match=r"corpus.jsonl:2: not valid JSON"):
        list(read(path))
    path.write_text('{"text": "ok"}\n{"body": "no text"}\n', "utf-8")
    with pytest.raises(DataError, match=r"corpus.jsonl:2"):
        list(read(path))


def test_windows_are_tokenized_once_and_mapped_after(tiny_bert, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    path = tmp_path / "corpus.txt"
    path.write_text("my order is late\n" + "the package arrived broken " * 6 + "\nthanks\n")
    documents = read(path)
    task = build_task("mlm", [], masking="token")
    calls = []
    cut = task.cut

    def counted(examples, tok, max_length):
        calls.append(len(examples))
        return cut(examples, tok, max_length)

    monkeypatch.setattr(task, "cut", counted)
    store = task.encode(documents, tokenizer, 16)
    assert isinstance(store, WindowStore) and calls == [3]
    expected = [(doc, ids, units) for doc, ids, units in cut(list(documents), tokenizer, 16)]
    assert len(store) == len(expected) > 3  # the long document spans several windows
    for window, (doc, ids, units) in zip(store, expected):
        assert window["input_ids"] == ids and window["units"] == units
        assert window["example"].text == documents[doc].text
        assert len(ids) <= 16
    assert store.lengths() == [len(ids) for _, ids, _ in expected]
    again = task.encode(read(path), tokenizer, 16)  # same text, vocabulary and settings
    assert calls == [3] and [w["input_ids"] for w in again] == [w["input_ids"] for w in store]
    task.encode(documents, tokenizer, 12)  # another window size: tokenized anew
    assert calls == [3, 3]
    path.write_text("my order is late\n")  # other text: tokenized anew
    task.encode(read(path), tokenizer, 16)
    assert calls == [3, 3, 1]
