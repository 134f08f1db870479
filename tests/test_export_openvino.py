"""bridgetune export --format openvino: OpenVINO IR (fp32, NNCF static int8) with the parity
check, and exported directories run by the Predictor with PyTorch's outputs (NER spans and the
service's answers: tests/test_export.py, for both formats)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from test_export import TEXTS, flipped_output_layer  # noqa: E402


def test_openvino_fp32_export_is_the_same_model(served_classifier: Path, openvino_classifier):
    from bridgetune.inference.predictor import Predictor
    from bridgetune.modeldir import read_meta

    parity = openvino_classifier.parity
    assert parity["agreement"] == 1.0 and parity["max_logit_difference"] < 1e-4
    directory = openvino_classifier.directory
    runtime = read_meta(directory)["runtime"]
    assert runtime["name"] == "openvino" and runtime["quantization"] is None
    assert {"model.xml", "model.bin"} <= {p.name for p in directory.iterdir()}
    assert not list(directory.glob("*.safetensors")) and not list(directory.glob("*.onnx"))
    torch_model, exported = Predictor.load(served_classifier), Predictor.load(directory)
    assert type(exported.model).__name__ == "OpenVinoModel"
    for texts in (TEXTS[:1], TEXTS, TEXTS * 7):  # sizes other than the traced ones
        ours, theirs = torch_model.predict(texts), exported.predict(texts)
        assert [p["label"] for p in ours] == [p["label"] for p in theirs]
        for a, b in zip(ours, theirs):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)


@pytest.mark.slow  # ~10 s (NNCF's calibration); the default suite exports OpenVINO fp32
def test_openvino_static_int8_is_calibrated_and_records_its_parity(
    served_classifier: Path, tmp_path: Path
):
    from bridgetune.inference.predictor import Predictor
    from bridgetune.recipes.export import export_model

    result = export_model(served_classifier, format="openvino", quantize="int8",
                          output=tmp_path / "int8", min_agreement=0.0)  # fmt: skip
    runtime = json.loads((result.directory / "bridgetune.json").read_text())["runtime"]
    assert runtime["quantization"] == "int8" and runtime["scheme"] == "static"
    assert runtime["calibration_examples"] == result.parity["examples"]  # fewer than 300 here
    assert result.parity["attempts"] == [
        {"static": True, "fp32_head_layers": 0, "agreement": result.parity["agreement"]}
    ]
    # the int8 graph holds int8 weights: a quarter of the fp32 weights' bytes, roughly
    xml = (result.directory / "model.xml").read_text()
    assert 'element_type="i8"' in xml or 'element_type="u8"' in xml
    assert len(Predictor.load(result.directory).predict(TEXTS)) == len(TEXTS)


# slow (5-8 s each): the parity check that refuses is the same code as for ONNX, whose corrupted
# exports the default suite refuses (tests/test_export.py)
@pytest.mark.slow
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_a_corrupted_openvino_export_is_refused_and_leaves_nothing(
    served_classifier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quantize
):
    from bridgetune.export.parity import ParityError
    from bridgetune.recipes import export as recipe

    monkeypatch.setattr(recipe, "export_onnx", flipped_output_layer(recipe.export_onnx))
    with pytest.raises(ParityError, match="agrees with the PyTorch model on") as refused:
        recipe.export_model(served_classifier, format="openvino", quantize=quantize,
                            output=tmp_path / "bad")  # fmt: skip
    if quantize:  # both static settings were tried before the refusal
        assert str(refused.value).count("static int8") == 2
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad")]


def test_openvino_refusals(
    served_classifier: Path, openvino_classifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import importlib.util
    import shutil

    from bridgetune.inference.predictor import Predictor
    from bridgetune.recipes.export import export_model

    with pytest.raises(ValueError, match="per_channel is onnxruntime's int8 option"):
        export_model(served_classifier, format="openvino", quantize="int8", per_channel=True)
    with pytest.raises(ValueError, match="format 'tensorrt': choose one of onnx, openvino"):
        export_model(served_classifier, format="tensorrt")
    # an IR without its weights file is named, not half-loaded
    broken = tmp_path / "broken"
    shutil.copytree(openvino_classifier.directory, broken)
    (broken / "model.bin").unlink()
    with pytest.raises(ValueError, match=r"model\.bin is missing or empty"):
        Predictor.load(broken)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a)
    )
    with pytest.raises(ValueError, match=r"needs nncf: pip install 'bridgetune\[openvino\]'"):
        export_model(served_classifier, format="openvino", quantize="int8")


@pytest.mark.slow  # ~6 s; the CLI's export command is tested on ONNX in the default suite
def test_openvino_export_cli(served_classifier: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from bridgetune.cli import app

    out = tmp_path / "cli-openvino"
    result = CliRunner().invoke(
        app, ["export", str(served_classifier), "--format", "openvino", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "agreement 100.00%" in result.output and (out / "model.xml").is_file()
    predicted = CliRunner().invoke(app, ["predict", str(out), "great movie"])
    assert predicted.exit_code == 0 and '"label"' in predicted.output, predicted.output
