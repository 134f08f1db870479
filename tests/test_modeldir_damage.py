"""A damaged model directory fails to load with one line naming the file and what to do, instead
of loading and predicting garbage: missing files, damaged or pickled weights, a bridgetune.json
whose task or labels do not fit the weights, a tokenizer that does not fit the embeddings.

The directories are copies of one untrained tiny classifier (no training needed to damage it)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bridgetune.export.model_dir import save_model_dir
from bridgetune.inference.predictor import Predictor
from bridgetune.modeldir import ModelDirectoryError, check_files, check_safetensors, read_meta
from bridgetune.models import ModelError, load_tokenizer
from bridgetune.tasks import build_task

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def model_dir(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    task = build_task("classification", LABELS)
    model = task.build_model(str(tiny_bert))
    meta = {"task": "classification", "labels": LABELS, "max_length": 32}
    directory = tmp_path_factory.mktemp("intact") / "model"
    return save_model_dir(directory, model, load_tokenizer(str(tiny_bert)), meta)


def _remove(*names: str) -> Callable[[Path], None]:
    def remove(directory: Path) -> None:
        for name in names:
            (directory / name).unlink()

    return remove


def _weights(content: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        path = directory / "model.safetensors"
        path.write_bytes(content(path.read_bytes()))

    return write


def _pickled(directory: Path) -> None:
    torch.save({"weight": torch.zeros(2)}, directory / "model.safetensors")


def _only_bin(directory: Path) -> None:
    from safetensors.torch import load_file

    torch.save(load_file(directory / "model.safetensors"), directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()


def _meta(**changes: object) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        path = directory / "bridgetune.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return edit


def _grown_tokenizer(directory: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.add_tokens([f"word{i}" for i in range(300)])
    tokenizer.save_pretrained(directory)


def _config(**changes: object) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        path = directory / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return edit


def _tensors(change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        from safetensors.torch import load_file, save_file

        weights = load_file(directory / "model.safetensors")
        changed = {k: change(v) if v.is_floating_point() else v for k, v in weights.items()}
        save_file(changed, directory / "model.safetensors", metadata={"format": "pt"})

    return write


DAMAGES = {
    "no tokenizer files": (
        _remove("tokenizer.json", "tokenizer_config.json"),
        "has no tokenizer files (tokenizer.json)",
    ),
    "no config.json": (_remove("config.json"), "config.json is missing"),
    "no weights": (_remove("model.safetensors"), "has no model.safetensors"),
    "empty weights": (_weights(lambda data: b""), "model.safetensors is empty"),
    "truncated weights": (_weights(lambda data: data[:-100]), "model.safetensors is truncated"),
    "cut in the header": (_weights(lambda data: data[:200]), "model.safetensors is truncated"),
    "not safetensors": (_weights(lambda data: b"\x00" * 64), "is not a safetensors file"),
    "pickled weights": (_pickled, "is a pickle (PyTorch torch.save), not safetensors"),
    "only pytorch_model.bin": (_only_bin, "pytorch_model.bin: bridgetune loads safetensors"),
    "unknown task": (_meta(task="clasification"), "did you mean 'classification'"),
    "task of other weights": (
        _meta(task="ner", labels=["O", "B-X"]),
        "names task 'ner', whose model is a BertForTokenClassification",
    ),
    "more labels than outputs": (_meta(labels=["a", "b", "c"]), "lists 3 labels"),
    "other label names": (_meta(labels=["x", "y"]), "does not belong to these weights"),
    "labels not a list": (_meta(labels="negative"), "'labels' a list"),
    "tokenizer of another model": (_grown_tokenizer, "has 505 tokens but the model's embeddings"),
    "config of fewer layers": (_config(num_hidden_layers=1), "that the BertForSequenceClassific"),
    "integer weights": (_tensors(lambda t: (t * 100).to(torch.int8)), "is stored as I8"),
    "NaN weights": (_tensors(lambda t: t * float("nan")), "holds NaN or infinite values"),
    "half-precision weights": (_tensors(lambda t: t.half()), None),  # a cast, not damage
    "a negative max_length": (_meta(max_length=-1), "'max_length' is -1"),
    "a threshold that is text": (_meta(threshold="high"), "'threshold' is 'high'"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_directory_fails_to_load_naming_the_file(model_dir, tmp_path, damage):
    change, message = DAMAGES[damage]
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    change(broken)
    if message is None:  # loads and predicts
        assert Predictor.load(broken).predict(["love this phone"])[0]["label"] in LABELS
        return
    with pytest.raises((ModelError, ModelDirectoryError)) as raised:
        Predictor.load(broken)
    text = str(raised.value)
    assert message in text and str(broken) in text, text
    assert "\n" not in text  # one line: the CLI prints it as it is


def test_the_intact_directory_loads_and_predicts(model_dir):
    prediction = Predictor.load(model_dir).predict(["love this phone"])[0]
    assert prediction["label"] in LABELS


@pytest.mark.parametrize("damage", ["no tokenizer files", "pickled weights", "unknown task"])
def test_cli_predict_on_a_damaged_directory_is_one_line_and_exit_2(model_dir, tmp_path, damage):
    from bridgetune.cli import app

    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    DAMAGES[damage][0](broken)
    result = CliRunner().invoke(app, ["predict", str(broken), "love this phone"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output
    assert DAMAGES[damage][1] in " ".join(result.output.split())


def test_every_prefix_of_a_weights_file_is_refused_and_the_whole_file_passes(model_dir, tmp_path):
    data = (model_dir / "model.safetensors").read_bytes()
    path = tmp_path / "model.safetensors"

    @given(cut=st.integers(min_value=0, max_value=len(data) - 1))
    @settings(max_examples=60, deadline=None, database=None, derandomize=True)
    def run(cut: int) -> None:
        path.write_bytes(data[:cut])
        with pytest.raises(ModelDirectoryError, match="empty|truncated|not a safetensors"):
            check_safetensors(path)

    run()
    path.write_bytes(data)
    check_safetensors(path)
    path.write_bytes(data + b"\x00")  # bytes past the tensors: not the file that was saved
    with pytest.raises(ModelDirectoryError, match="the file has"):
        check_safetensors(path)


def test_sharded_weights_need_every_shard_the_index_names(model_dir, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").rename(broken / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}}  # fmt: skip
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelDirectoryError, match="names model-00002-of-00002.safetensors"):
        check_files(broken, read_meta(broken))
