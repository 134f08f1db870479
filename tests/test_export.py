"""bridgetune export: ONNX (fp32, int8) with the parity check, and exported directories run by
the Predictor, the CLI and the service with the PyTorch model's outputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from conftest import NER_SENTENCES, train_tiny_model, write_conll  # noqa: E402

TEXTS = [
    "great movie",
    "a truly terrible waste of time and money, never again",
    "ok",
    "i loved every minute of it and would watch it again tomorrow",
    "bad",
]


@pytest.fixture(scope="module")
def exported_classifier(served_classifier: Path, tmp_path_factory: pytest.TempPathFactory):
    from bridgetune.recipes.export import export_model as export

    return export(served_classifier, output=tmp_path_factory.mktemp("onnx") / "sentiment-onnx")


def test_fp32_export_is_the_same_model(served_classifier: Path, exported_classifier) -> None:
    from bridgetune.inference.predictor import Predictor
    from bridgetune.modeldir import read_meta

    parity = exported_classifier.parity
    assert parity["agreement"] == 1.0 and parity["examples"] > 2
    assert parity["max_logit_difference"] < 1e-4
    assert parity["metric"] == "accuracy" and abs(parity["metric_delta"]) < 1e-9
    directory = exported_classifier.directory
    meta = read_meta(directory)
    assert meta["runtime"]["name"] == "onnx" and meta["runtime"]["quantization"] is None
    assert meta["runtime"]["source"] == str(served_classifier.resolve())
    assert not list(directory.glob("*.safetensors"))  # the graph replaces the weights
    assert json.loads((directory / "parity.json").read_text())["agreement"] == 1.0
    torch_model, onnx_model = Predictor.load(served_classifier), Predictor.load(directory)
    assert type(onnx_model.model).__name__ == "OnnxModel"
    # batch and sequence sizes other than the traced ones: one text, then five of mixed lengths
    for texts in (TEXTS[:1], TEXTS, TEXTS * 7):
        ours, theirs = torch_model.predict(texts), onnx_model.predict(texts)
        assert [p["label"] for p in ours] == [p["label"] for p in theirs]
        for a, b in zip(ours, theirs):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_int8_export_records_its_parity(served_classifier: Path, tmp_path: Path) -> None:
    from bridgetune.inference.predictor import Predictor
    from bridgetune.recipes.export import export_model as export

    result = export(served_classifier, quantize="int8", output=tmp_path / "int8",
                    min_agreement=0.0)  # fmt: skip
    runtime = json.loads((result.directory / "bridgetune.json").read_text())["runtime"]
    assert runtime["quantization"] == "int8" and runtime["per_channel"] is False
    assert result.parity["attempts"] == [
        {"per_channel": False, "fp32_head_layers": 0, "agreement": result.parity["agreement"]}
    ]
    assert runtime["parity"]["agreement"] == result.parity["agreement"]
    assert set(result.parity["texts_per_second"]) == {"pytorch", "exported"}
    assert len(Predictor.load(result.directory).predict(TEXTS)) == len(TEXTS)


def flipped_output_layer(real):
    """`export_onnx` that writes the graph with its 2-label output layer's weights negated."""
    import onnx
    from onnx import numpy_helper

    def flipped(model, sample, path):
        names = real(model, sample, path)
        graph = onnx.load(str(path))
        for initializer in graph.graph.initializer:
            array = numpy_helper.to_array(initializer)
            if array.ndim == 2 and 2 in array.shape:  # (labels, hidden) or its transpose
                initializer.CopyFrom(numpy_helper.from_array(-array, initializer.name))
        onnx.save(graph, str(path))
        return names

    return flipped


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_a_corrupted_export_is_refused_and_leaves_nothing(
    served_classifier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quantize
) -> None:
    from bridgetune.export import onnx as onnx_export
    from bridgetune.export.parity import ParityError
    from bridgetune.recipes import export as recipe

    monkeypatch.setattr(recipe, "export_onnx", flipped_output_layer(onnx_export.export_onnx))
    with pytest.raises(ParityError, match="agrees with the PyTorch model on") as refused:
        recipe.export_model(served_classifier, quantize=quantize, output=tmp_path / "bad")
    if quantize:  # every int8 setting was tried before the refusal
        assert str(refused.value).count("int8 per") == 3
        assert "last 2 layers in fp32" in str(refused.value)
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad")]  # no staging left


OPENVINO = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
    reason="openvino and nncf are not installed (bridgetune[openvino])",
)
FORMATS = ["onnx", pytest.param("openvino", marks=OPENVINO)]


# OpenVINO's NER spans in the slow step (~6 s: a CRF model trained and exported again)
@pytest.mark.parametrize(
    "format", ["onnx", pytest.param("openvino", marks=[OPENVINO, pytest.mark.slow])]
)
def test_ner_spans_from_the_runtime_equal_pytorch_spans(
    tiny_bert: Path, tmp_path: Path, format: str
) -> None:
    from bridgetune.inference.predictor import Predictor
    from bridgetune.recipes.export import export_model as export

    data = write_conll(tmp_path / "ner.conll", NER_SENTENCES)
    model_dir = train_tiny_model(tiny_bert, tmp_path / "runs", data, "crf", epochs=15,
                                 task={"name": "ner", "crf": True})  # fmt: skip
    result = export(model_dir, format=format, output=tmp_path / f"crf-{format}")
    assert result.parity["agreement"] == 1.0 and result.parity["metric"] == "entity_f1"
    texts = ["john smith lives in paris", "acme corp hired mary in london today", "hello"]
    ours = Predictor.load(model_dir).predict(texts)
    theirs = Predictor.load(result.directory).predict(texts)
    assert [p["entities"] for p in ours] == [p["entities"] for p in theirs]
    assert any(p["entities"] for p in ours)


@pytest.mark.parametrize("format", FORMATS)
def test_the_service_answers_alike_from_an_exported_directory(
    served_classifier: Path, exported_classifier, format: str, request: pytest.FixtureRequest
) -> None:
    import time

    from fastapi.testclient import TestClient

    from bridgetune.serve.app import create_app

    exported = exported_classifier if format == "onnx" else request.getfixturevalue(
        "openvino_classifier"
    )  # fmt: skip
    answers = []
    for directory in (served_classifier, exported.directory):
        with TestClient(create_app(str(directory))) as client:  # loads it as `serve` does
            deadline = time.monotonic() + 60
            while not client.get("/ready").json()["ready"] and time.monotonic() < deadline:
                time.sleep(0.05)
            response = client.post("/v1/predict", json={"texts": TEXTS})
            assert response.status_code == 200, response.text
            answers.append(response.json()["predictions"])
    assert [p["label"] for p in answers[0]] == [p["label"] for p in answers[1]]
    for ours, theirs in zip(*answers):
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)


def test_export_refusals(served_classifier: Path, exported_classifier, tmp_path: Path) -> None:
    from bridgetune.recipes.export import export_model as export

    with pytest.raises(ValueError, match="is an export already"):
        export(exported_classifier.directory, output=tmp_path / "again")
    with pytest.raises(ValueError, match="is the model directory itself"):
        export(served_classifier, output=served_classifier)
    with pytest.raises(ValueError, match="format 'tflite'"):
        export(served_classifier, format="tflite")
    lone = tmp_path / "lone"  # a model directory outside its run: no dev file recorded
    import shutil

    shutil.copytree(served_classifier, lone)
    with pytest.raises(ValueError, match="--data FILE"):
        export(lone, output=tmp_path / "lone-onnx")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS), encoding="utf-8")
    result = export(lone, output=tmp_path / "lone-onnx", data=texts)  # unlabelled: agreement
    assert result.parity["agreement"] == 1.0 and "metric" not in result.parity


def test_export_cli(served_classifier: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bridgetune.cli import app

    out = tmp_path / "cli-onnx"
    result = CliRunner().invoke(app, ["export", str(served_classifier), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "agreement" in result.output and (out / "model.onnx").is_file()
    predicted = CliRunner().invoke(app, ["predict", str(out), "great movie"])
    assert predicted.exit_code == 0, predicted.output


def _encoder_configs() -> list[Path]:
    from test_examples import CONFIGS, SHARED

    from bridgetune.config import load_config
    from bridgetune.tasks import TASKS

    return [
        path
        for path in CONFIGS
        if path.name not in SHARED
        and not TASKS.get(load_config(path).task.name).generative
        and load_config(path).task.name != "mlm"
    ]


@pytest.mark.slow  # ~10-20 s per shipped encoder config (a tiny training run and an export)
@pytest.mark.parametrize("path", _encoder_configs(), ids=lambda p: p.name)
def test_every_shipped_encoder_task_exports_with_full_agreement(path, tmp_path, request) -> None:
    """Each task of the shipped examples (classification, pairs, multi-label, regression,
    ranking, NER with CRF or gazetteers, QA, relation, embedding ...) on its tiny model: the
    fp32 graph (ONNX, and OpenVINO's IR of it) predicts what PyTorch predicts on the run's dev
    data."""
    from test_examples import MULTILINGUAL, _tiny

    import bridgetune
    from bridgetune.config import load_config
    from bridgetune.recipes.export import export_model

    model = "tiny_bert" if load_config(path).model.name != "multilingual" else MULTILINGUAL
    tiny = request.getfixturevalue(model)
    result = bridgetune.train(path, _tiny(tiny, tmp_path / "runs"))
    formats = ["onnx"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    for format in formats:  # OpenVINO reads the same graph: its IR must agree as well
        exported = export_model(result.model_dir, format=format, output=tmp_path / format)
        assert exported.parity["agreement"] == 1.0, (format, exported.parity)
        assert exported.parity["max_logit_difference"] < 1e-3


def test_rankings_agree_up_to_the_order_of_tied_candidates() -> None:
    from bridgetune.export.parity import agree

    def ranking(*pairs):
        return {"ranking": [{"index": i, "score": s} for i, s in pairs], "truncated": False}

    reference = ranking((2, 0.9), (0, 0.5), (1, 0.5), (3, 0.1))  # 0 and 1: duplicates
    assert agree(reference, ranking((2, 0.9), (1, 0.5), (0, 0.5), (3, 0.1)), 0.05)
    assert not agree(reference, ranking((0, 0.5), (2, 0.9), (1, 0.5), (3, 0.1)), 0.05)
    close = ranking((2, 0.9), (0, 0.5001), (1, 0.5), (3, 0.1))  # a close call that flips
    assert not agree(close, ranking((2, 0.9), (1, 0.5), (0, 0.5001), (3, 0.1)), 0.05)
    assert not agree(reference, ranking((2, 0.9), (0, 0.5), (3, 0.1)), 0.05)  # one missing
