"""Relation extraction from raw text to a knowledge graph (#27): sentence splitting, streamed
documents, candidate pairs, the per-sentence core, the graph files read back by networkx and
csv, `bridgetune extract` end to end on the shipped news example (tiny NER and relation
models trained on it), `/v1/extract` giving the CLI's triples, and the errors."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import networkx as nx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import bridgetune
from bridgetune.cli import app
from bridgetune.config import ServeConfig
from bridgetune.data.documents import DocumentSource
from bridgetune.data.schema import DataError
from bridgetune.data.sentences import sentence_spans, split_sentences
from bridgetune.inference.extraction import (
    TRIPLE_FIELDS,
    ExtractionCounts,
    ExtractionSettings,
    candidate_pairs,
    check_models,
    extract_documents,
)
from bridgetune.inference.predictor import Predictor
from bridgetune.knowledge.graph import KnowledgeGraph, normalize_mention, write_graph_files
from bridgetune.recipes.extract import chunks, merge_parts
from bridgetune.serve import create_app
from bridgetune.serve.extract import check_extract_models

ROOT = Path(__file__).resolve().parents[1]
NEWS = ROOT / "examples" / "data" / "news_relations"
runner = CliRunner()


def texts(text: str, **options) -> list[str]:
    return [s.text for s in split_sentences(text, **options)]


# -- sentences ---------------------------------------------------------------------------------


def test_english_sentences_keep_abbreviations_decimals_and_initials():
    text = (
        "Mr. Smith paid $3.5 billion for Acme Inc. on Monday. Then he left! Did he? "
        'He said "Go." J. K. Rowling, e.g. the U.S. author, wrote books, etc. and left.'
    )
    assert texts(text) == [
        "Mr. Smith paid $3.5 billion for Acme Inc. on Monday.",
        "Then he left!",
        "Did he?",
        'He said "Go."',
        "J. K. Rowling, e.g. the U.S. author, wrote books, etc. and left.",
    ]


def test_chinese_punctuation_quotes_mixed_text_and_line_breaks():
    text = "他说：“收购完成。”然后离开了！真的吗？是的；好……下一句\r\n"
    text += "  Acme acquired Beta.苹果收购了Beats。\n\n"
    assert texts(text) == ["他说：“收购完成。”", "然后离开了！", "真的吗？", "是的；", "好……",
                           "下一句", "Acme acquired Beta.", "苹果收购了Beats。"]  # fmt: skip


def test_long_sentences_are_cut_at_a_space_or_the_bound():
    assert texts("word " * 10, max_chars=12) == ["word word"] * 5
    assert texts("a" * 25, max_chars=12) == ["a" * 12, "a" * 12, "a"]
    with pytest.raises(ValueError, match="max_chars"):
        split_sentences("x", max_chars=0)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab .!?。！”\n\r 3,")), max_size=60),
       st.integers(1, 20))  # fmt: skip
def test_sentence_offsets_map_back_to_the_text(text, bound):
    spans = sentence_spans(text, bound)
    for (start, end), following in zip(spans, [*spans[1:], (len(text), len(text))]):
        piece = text[start:end]
        assert piece and piece == piece.strip() and len(piece) <= bound
        assert end <= following[0]
    kept = "".join("".join(text[s:e].split()) for s, e in spans)
    assert kept == "".join(text.split())  # every character but white space is in a sentence


# -- documents ---------------------------------------------------------------------------------


def test_documents_of_txt_jsonl_and_csv_files(tmp_path):
    txt = tmp_path / "docs.txt"
    txt.write_bytes("\ufefffirst\r\n\nthird\rfourth\n".encode())
    assert [(n, t) for n, t, _ in DocumentSource(txt)] == [
        (0, "first"), (1, ""), (2, "third"), (3, "fourth")]  # fmt: skip
    source = DocumentSource(txt)
    assert list(source)[-1][2] == source.total and source.texts_read == 3
    rows = tmp_path / "docs.jsonl"
    rows.write_text('{"body": "one"}\n\n{"body": "two"}\n', "utf-8")
    assert [t for _, t, _ in DocumentSource(rows, "body")] == ["one", "two"]
    with pytest.raises(DataError, match=r"docs.jsonl:1: no 'text' field .*--text-column"):
        list(DocumentSource(rows))
    table = tmp_path / "docs.csv"
    table.write_text('id,text\n1,"two\nlines"\n2,plain\n', "utf-8")
    assert [t for _, t, _ in DocumentSource(table)] == ["two\nlines", "plain"]


def test_document_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        DocumentSource(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="is a folder"):
        DocumentSource(tmp_path)
    (tmp_path / "docs.pdf").write_text("x")
    with pytest.raises(DataError, match="cannot tell the format"):
        DocumentSource(tmp_path / "docs.pdf")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nstill fine\nbroken \xff here\n")
    with pytest.raises(DataError, match=r"bad.txt:3: byte 0xff is not UTF-8"):
        list(DocumentSource(bad))
    wide = tmp_path / "wide.txt"
    wide.write_bytes("text\n".encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16 or UTF-32.*iconv"):
        list(DocumentSource(wide))
    with pytest.raises(ValueError, match=r"inputs\[1\] is a int"):
        DocumentSource(["text", 3])


def test_chunks_give_each_process_every_nth_document(tmp_path):
    source = DocumentSource([f"doc {i}" for i in range(7)])
    mine = [[n for n, _ in chunk] for chunk, _ in chunks(source, 1, 3, size=2)]
    assert mine == [[1, 4], []]  # the last (empty) chunk reports the whole input read
    shares = [[n for chunk, _ in chunks(source, rank, 3) for n, _ in chunk] for rank in range(3)]
    assert sorted(sum(shares, [])) == list(range(7))
    for rank in range(2):  # the parts of a launch merge back in document order
        lines = [json.dumps({"doc": n}) for n in range(rank, 5, 2)]
        (tmp_path / f".triples.part-{rank}-of-2.jsonl").write_text("\n".join(lines) + "\n")
    merge_parts(tmp_path, 2, tmp_path / "triples.jsonl")
    merged = (tmp_path / "triples.jsonl").read_text().splitlines()
    assert [json.loads(line)["doc"] for line in merged] == [0, 1, 2, 3, 4]
    assert not list(tmp_path.glob(".triples.part-*"))


# -- candidates and the per-sentence core, with stub models ------------------------------------


def entity(text: str, name: str, kind: str, start: int = 0) -> dict:
    at = text.index(name, start)
    return {"type": kind, "start": at, "end": at + len(name), "text": name}


def test_candidate_pairs_are_ordered_typed_and_near():
    text = "Acme bought Beta in Paris; ACME later sold it, far away" + " " * 60 + "Gamma."
    entities = [entity(text, "Acme", "ORG"), entity(text, "Beta", "ORG"),
                entity(text, "Paris", "CITY"), entity(text, "ACME", "ORG"),
                entity(text, "Gamma", "ORG")]  # fmt: skip
    allowed = {("ORG", "ORG"), ("ORG", "CITY")}
    counts = ExtractionCounts()
    pairs = candidate_pairs(entities, lambda h, t: (h, t) in allowed, 50, counts)
    names = [(h["text"], t["text"]) for h, t in pairs]
    assert names == [("Acme", "Beta"), ("Acme", "Paris"), ("Beta", "Acme"), ("Beta", "Paris"),
                     ("Beta", "ACME"), ("ACME", "Beta"), ("ACME", "Paris")]  # fmt: skip
    assert ("Acme", "ACME") not in names  # one normalized mention: no self-loop
    assert counts.pairs_of_other_types == 4  # (Paris, *): a city never heads a relation here
    assert counts.pairs_too_far == 7  # Gamma is 60+ characters from the others


class StubNer(Predictor):
    """Finds the names it is given (name -> type) in every text."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names, self.directory = names, None
        self.task = SimpleNamespace(name="ner", output="entities")

    def predict(self, inputs, batch_size=64):
        return [{"entities": [entity(t, n, k) for n, k in self.names.items() if n in t],
                 "truncated": False} for t in inputs]  # fmt: skip


class StubRelations(Predictor):
    """`acquired` when just 'bought' stands between head and tail (head first), else none."""

    def __init__(self) -> None:
        self.directory, self.seen = None, []
        self.task = SimpleNamespace(name="relation", output="label", no_relation="none",
                                    allowed_pair=lambda h, t: h == "ORG")  # fmt: skip

    def predict(self, inputs, batch_size=64):
        self.seen += inputs
        found = []
        for example in inputs:
            head, tail = example.mentions
            between = example.text[head["end"] : tail["start"]]
            found.append({"label": "acquired" if between.strip() == "bought" else "none",
                          "score": 0.9 if "Beta" in example.text else 0.4})  # fmt: skip
        return found


STUB_NAMES = {"Acme": "ORG", "Beta": "ORG", "Paris": "CITY", "Gamma": "ORG"}


def test_triples_have_document_offsets_and_drop_none_and_low_scores():
    documents = ["Intro. Acme bought Beta in Paris.", "Gamma bought Acme.", "   "]
    relations = StubRelations()
    counts = ExtractionCounts()
    triples = extract_documents(StubNer(STUB_NAMES), relations, enumerate(documents),
                                ExtractionSettings(min_score=0.5), counts)  # fmt: skip
    assert [(t["head"], t["relation"], t["tail"], t["doc"]) for t in triples] == [
        ("Acme", "acquired", "Beta", 0)]  # Gamma->Acme scores 0.4 < min_score  # fmt: skip
    triple = triples[0]
    assert list(triple) == list(TRIPLE_FIELDS)
    text = documents[0]
    assert text[triple["head_start"] : triple["head_end"]] == "Acme"
    assert text[triple["tail_start"] : triple["tail_end"]] == "Beta"
    assert text[triple["sentence_start"] : triple["sentence_end"]] == triple["sentence"]
    assert triple["sentence"] == "Acme bought Beta in Paris." and triple["score"] == 0.9
    # the relation model saw the sentence with head and tail as typed mentions
    first = relations.seen[0]
    assert first.text == "Acme bought Beta in Paris."
    assert first.mentions == [{"start": 0, "end": 4, "type": "ORG"},
                              {"start": 12, "end": 16, "type": "ORG"}]  # fmt: skip
    assert counts.as_dict() == {"documents": 3, "sentences": 3, "truncated_sentences": 0,
                                "entities": 5, "candidates": 6, "pairs_of_other_types": 2,
                                "pairs_too_far": 0, "triples": 1}  # fmt: skip


def test_models_of_the_wrong_kind_are_named():
    ner, relations = StubNer({}), StubRelations()
    classifier = SimpleNamespace(task=SimpleNamespace(name="classification", output="label"),
                                 directory=Path("runs/sentiment/model"))  # fmt: skip
    check_models(ner, relations)
    with pytest.raises(ValueError, match="swapped"):
        check_models(relations, ner)
    with pytest.raises(ValueError, match=r"runs/sentiment/model is a classification model; the "
                       "NER model"):  # fmt: skip
        check_models(classifier, relations)
    with pytest.raises(ValueError, match="is a ner model; the relation model"):
        check_models(ner, ner)
    with pytest.raises(ValueError, match=r"settings|max_distance is -1"):
        ExtractionSettings(max_distance=-1)


# -- the graph ---------------------------------------------------------------------------------

TRIPLES = [
    {"head": "Acme  Corp", "head_type": "ORG", "relation": "acquired", "tail": "Beta",
     "tail_type": "ORG", "score": 0.9, "sentence": "Acme  Corp bought Beta.", "doc": 0,
     "sentence_start": 0, "head_start": 0, "head_end": 10, "tail_start": 18, "tail_end": 22},
    {"head": "Acme  Corp", "head_type": "ORG", "relation": "headquartered_in", "tail": "Paris",
     "tail_type": "CITY", "score": 0.5, "sentence": "Acme  Corp bought Beta.", "doc": 0,
     "sentence_start": 0, "head_start": 0, "head_end": 10, "tail_start": 30, "tail_end": 35},
    {"head": "ACME CORP", "head_type": "ORG", "relation": "acquired", "tail": "beta",
     "tail_type": "PRODUCT", "score": 0.7, "sentence": "ACME CORP bought beta.", "doc": 1},
    {"head": "Ａｃｍｅ Corp", "head_type": "ORG", "relation": "acquired", "tail": "Beta",
     "tail_type": "ORG", "score": 0.8, "sentence": "Ａｃｍｅ Corp bought Beta.", "doc": 2},
    {"head": "张伟", "head_type": "PERSON", "relation": "ceo_of", "tail": "星辰科技",
     "tail_type": "ORG", "score": 0.95, "sentence": "张伟是星辰科技的首席执行官。", "doc": 3},
]  # fmt: skip


def test_graph_merges_normalized_mentions_and_counts_each_mention_once():
    assert normalize_mention(" Ａｃｍｅ \t CORP ") == "acme corp"
    blank = {**TRIPLES[0], "tail": " \u3000 ", "doc": 9}  # an ideographic space only: left out
    graph = KnowledgeGraph().add_all([*TRIPLES, blank])
    assert sorted(graph.nodes) == ["acme corp", "beta", "paris", "张伟", "星辰科技"]
    acme = graph.nodes["acme corp"]
    assert acme.mentions == 3  # in two triples of doc 0, counted once there
    assert acme.name == "Acme  Corp" and acme.type == "ORG"
    assert dict(graph.nodes["beta"].types) == {"ORG": 2, "PRODUCT": 1}
    edge = graph.edges[("acme corp", "acquired", "beta")]
    assert edge.count == 3 and edge.score_max == 0.9 and edge.score_mean == pytest.approx(0.8)
    assert len(edge.examples) == 3 and graph.triples == 5 and len(graph.edges) == 3


def test_graph_files_read_back_by_networkx_and_csv(tmp_path):
    graph = KnowledgeGraph().add_all(TRIPLES)
    with warnings.catch_warnings():  # no missing-glyph warnings for the Chinese names
        warnings.simplefilter("error")
        paths = write_graph_files(graph, tmp_path, {"documents": 4, "sentences": 4})
    read = nx.read_graphml(paths["graphml"], force_multigraph=True)
    assert (read.number_of_nodes(), read.number_of_edges()) == (5, 3)
    assert read.nodes["acme corp"] == {"name": "Acme  Corp", "label": "Acme  Corp",
                                       "type": "ORG", "types": "ORG", "mentions": 3}  # fmt: skip
    attributes = read.edges["acme corp", "beta", "acquired"]
    assert attributes["count"] == 3 and attributes["score"] == 0.9
    assert json.loads(attributes["examples"])[0] == "Acme  Corp bought Beta."
    with paths["nodes"].open(encoding="utf-8", newline="") as stream:
        nodes = list(csv.reader(stream))
    assert nodes[0] == ["id:ID", "name", "type:LABEL", "mentions:int"] and len(nodes) == 6
    assert ["beta", "Beta", "ORG;PRODUCT", "3"] in nodes
    with paths["edges"].open(encoding="utf-8", newline="") as stream:
        edges = list(csv.DictReader(stream))
    assert len(edges) == 3 and edges[0][":TYPE"] == "acquired" and edges[0]["count:int"] == "3"
    summary = json.loads(paths["summary"].read_text("utf-8"))
    assert summary["relations"]["acquired"] == {"triples": 3, "edges": 1}
    assert summary["node_types"] == {"ORG": 3, "CITY": 1, "PERSON": 1}
    assert summary["documents"] == 4 and summary["top_nodes"][0]["name"] == "Acme  Corp"
    assert "| acquired | 3 | 1 |" in paths["summary_md"].read_text("utf-8")
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- end to end on the shipped example ---------------------------------------------------------


@pytest.fixture(scope="module")
def news_models(tiny_xlmr_bert, tmp_path_factory) -> tuple[Path, Path]:
    """Tiny NER and relation models trained briefly on the shipped news example (the
    shipped configs on the multilingual encoder's tiny stand-in)."""
    runs = tmp_path_factory.mktemp("news-runs")
    tiny = [f"model.name={tiny_xlmr_bert}", f"output_dir={runs}", "model.prune_vocab=null",
            "model.max_length=128", "train.lr=3e-3", "train.head_lr=null", "train.batch_size=8",
            "data.max_eval_examples=16", "train.seed=0"]  # fmt: skip
    ner = bridgetune.train(ROOT / "examples/configs/news_ner.yaml",
                           [*tiny, "train.epochs=30", "data.max_train_examples=64"])  # fmt: skip
    relations = bridgetune.train(
        ROOT / "examples/configs/news_relations.yaml",
        [*tiny, "train.epochs=3", "data.max_train_examples=96"],
    )
    return ner.model_dir, relations.model_dir


@pytest.fixture(scope="module")
def extracted(news_models, tmp_path_factory) -> Path:
    """`bridgetune extract` on the shipped docs.txt (every score kept: tiny models)."""
    ner, relations = news_models
    output = tmp_path_factory.mktemp("news-graph")
    result = cli_extract(ner, relations, NEWS / "docs.txt", output, "--min-score", "0")
    assert result.exit_code == 0, result.output
    assert "triples written to" in result.output
    return output


def cli_extract(ner: Path, relations: Path, file: Path, output: Path, *more: str):
    return runner.invoke(app, ["extract", "--ner", str(ner), "--relations", str(relations),
                               "--file", str(file), "--output", str(output), *more])  # fmt: skip


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_cli_writes_triples_and_a_graph_networkx_reads_back(extracted):
    triples = read_jsonl(extracted / "triples.jsonl")
    documents = (NEWS / "docs.txt").read_text("utf-8").splitlines()
    assert triples and len(documents) == 128
    for triple in triples:
        text = documents[triple["doc"]]
        assert text[triple["head_start"] : triple["head_end"]] == triple["head"]
        assert text[triple["tail_start"] : triple["tail_end"]] == triple["tail"]
        assert text[triple["sentence_start"] : triple["sentence_end"]] == triple["sentence"]
        assert triple["relation"] != "no_relation"
    assert [t["doc"] for t in triples] == sorted(t["doc"] for t in triples)
    nodes = {normalize_mention(t[role]) for t in triples for role in ("head", "tail")}
    edges = {(normalize_mention(t["head"]), t["relation"], normalize_mention(t["tail"]))
             for t in triples}  # fmt: skip
    read = nx.read_graphml(extracted / "graph.graphml", force_multigraph=True)
    assert (read.number_of_nodes(), read.number_of_edges()) == (len(nodes), len(edges))
    with (extracted / "nodes.csv").open(encoding="utf-8", newline="") as stream:
        assert len(list(csv.DictReader(stream))) == len(nodes)
    with (extracted / "edges.csv").open(encoding="utf-8", newline="") as stream:
        assert len(list(csv.DictReader(stream))) == len(edges)
    summary = json.loads((extracted / "summary.json").read_text("utf-8"))
    assert summary["documents"] == 128 and summary["sentences"] == 320
    assert summary["triples"] == len(triples)
    assert sum(r["triples"] for r in summary["relations"].values()) == len(triples)
    assert (extracted / "graph.png").stat().st_size > 0


def test_service_extract_returns_the_cli_triples(news_models, extracted, tmp_path):
    ner, relations = news_models
    documents = (NEWS / "docs.txt").read_text("utf-8").splitlines()
    config = ServeConfig(extract_ner=str(ner), feedback_db=str(tmp_path / "feedback.db"))
    with TestClient(create_app(Predictor.load(relations), config)) as client:
        response = client.post("/v1/extract", json={"texts": documents, "min_score": 0})
        assert response.status_code == 200, response.text
        body = response.json()
        empty = client.post("/v1/extract", json={"texts": ["ok", " "]})
        assert empty.status_code == 422 and "texts[1] is empty" in empty.text
    assert body["sentences"] == 320 and body["ner_model_version"]
    served, written = body["triples"], read_jsonl(extracted / "triples.jsonl")
    assert len(served) == len(written)
    for one, other in zip(served, written):
        assert one["score"] == pytest.approx(other["score"], abs=1e-5)
        assert {**one, "score": 0} == {**other, "score": 0}


def test_service_without_an_ner_model_or_a_relation_model_says_so(news_models, tmp_path):
    ner, relations = news_models
    body = {"texts": ["Acme bought Beta."]}
    db = str(tmp_path / "feedback.db")
    served_ner, served_relations = Predictor.load(ner), Predictor.load(relations)
    with TestClient(create_app(served_relations, ServeConfig(feedback_db=db))) as client:
        response = client.post("/v1/extract", json=body)
        assert response.status_code == 404 and "--ner NER_DIR" in response.json()["detail"]
    config = ServeConfig(extract_ner=str(ner), feedback_db=db)
    with TestClient(create_app(served_ner, config)) as client:
        response = client.post("/v1/extract", json=body)
        assert response.status_code == 409 and "is a ner model" in response.json()["detail"]
    meta = json.loads((relations / "bridgetune.json").read_text("utf-8"))
    check_extract_models(ner, meta, relations)  # what `serve --ner` checks before it starts
    with pytest.raises(ValueError, match="swapped"):
        check_extract_models(relations, json.loads((ner / "bridgetune.json").read_text()), ner)
    result = runner.invoke(app, ["serve", str(ner), "--ner", str(ner)])  # stops before serving
    assert result.exit_code == 2 and "is a ner model; the relation model" in " ".join(
        result.output.split()
    )


def test_extract_errors(news_models, tmp_path):
    ner, relations = news_models
    with pytest.raises(DataError, match="no text in any document"):
        bridgetune.extract(ner, relations, ["", "  "], tmp_path / "out")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty.txt: no text"):
        bridgetune.extract(ner, relations, tmp_path / "empty.txt", tmp_path / "out")
    with pytest.raises(ValueError, match="is a ner model; the relation model"):
        bridgetune.extract(ner, ner, ["Acme bought Beta."], tmp_path / "out")
    with pytest.raises(ValueError, match="inside the model directory"):
        bridgetune.extract(ner, relations, ["Acme bought Beta."], relations / "graph")
    result = cli_extract(relations, ner, NEWS / "docs.txt", tmp_path)
    assert result.exit_code == 2 and "the models are swapped" in " ".join(result.output.split())
    result = cli_extract(ner, relations, tmp_path / "nope.txt", tmp_path)
    assert result.exit_code == 2 and "nope.txt: no such file" in " ".join(result.output.split())
    assert not (tmp_path / "triples.jsonl").exists()


@pytest.mark.slow  # two processes under accelerate launch import torch and transformers (~11 s)
def test_two_processes_share_the_documents_and_merge_in_order(news_models, extracted, tmp_path):
    ner, relations = news_models
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "bridgetune.cli", "extract", "--ner", str(ner),
               "--relations", str(relations), "--file", str(NEWS / "docs.txt"),
               "--output", str(tmp_path), "--min-score", "0", "--device", "cpu"]  # fmt: skip
    with socket.socket() as probe:  # a free port: fixed ports collide between suites
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": port}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    sharded, alone = read_jsonl(tmp_path / "triples.jsonl"), read_jsonl(extracted / "triples.jsonl")
    assert [(t["doc"], t["head_start"], t["tail_start"], t["relation"]) for t in sharded] == [
        (t["doc"], t["head_start"], t["tail_start"], t["relation"]) for t in alone
    ]
    summary = json.loads((tmp_path / "summary.json").read_text("utf-8"))
    assert summary["documents"] == 128 and summary["sentences"] == 320
    assert not list(tmp_path.glob(".triples.part-*"))
