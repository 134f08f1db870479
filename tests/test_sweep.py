"""The damaged-input sweep: the CLI and the service over a generated corpus of bad files, configs,
model directories and request bodies.

Every case must end without a traceback and without a 5xx; a refusal exits non-zero (2) with a
message that names the file or the field; nothing outside the run's output directory changes.
Cases the tool reads after a repair (CR-only CSV, a BOM) may succeed: then only "no traceback"
and "nothing touched" are asked of them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import SENTIMENT, tiny_config, write_csv
from typer.testing import CliRunner

from bridgetune.cli import app


@dataclass
class Case:
    name: str
    make: Callable[[Path], list[str]]  # writes the inputs under the folder; returns CLI args
    names: str | None = None  # what the message must mention (default: the damaged file)
    may_succeed: bool = False


def _csv(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


GOOD_ROWS = "".join(f'"{text}",{label}\n' for text, label in SENTIMENT)


def _data_case(name: str, content: str | bytes, suffix: str = ".csv", **kw) -> Case:
    """validate-data over a config whose train file is `content`."""

    def make(folder: Path) -> list[str]:
        data = _csv(folder / f"train{suffix}", content)
        return ["validate-data", str(_config(folder, {"train": str(data), "dev": str(data)}))]

    return Case(name, make, names=kw.pop("names", "train"), **kw)


def _config(folder: Path, data: dict, **extra) -> Path:
    config = tiny_config(Path(folder.parent / "model"), folder / "runs", data=data, **extra)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def _jsonl(rows: list[str]) -> str:
    return "\n".join(rows) + "\n"


DATA_CASES = [
    _data_case("empty file", b""),
    _data_case("header only", "text,label\n"),
    _data_case("no label column", "text,other\n" + GOOD_ROWS),
    _data_case("an empty text", "text,label\n" + GOOD_ROWS + '"",positive\n'),
    _data_case("latin-1 bytes", b"text,label\n" + GOOD_ROWS.encode() + b'"caf\xe9",positive\n'),
    _data_case("utf-16", ("text,label\n" + GOOD_ROWS).encode("utf-16"), may_succeed=True),
    _data_case(
        "cr-only lines", ("text,label\n" + GOOD_ROWS).replace("\n", "\r"), may_succeed=True
    ),  # fmt: skip
    _data_case(
        "mixed line ends", "text,label\r\n" + GOOD_ROWS.replace("\n", "\r", 3), may_succeed=True
    ),  # fmt: skip
    _data_case(
        "a NUL byte", "text,label\n" + GOOD_ROWS + '"bad\x00byte",positive\n', may_succeed=True
    ),  # fmt: skip
    _data_case("binary garbage", bytes(range(256)) * 8),
    _data_case("unbalanced quote", "text,label\n" + GOOD_ROWS + '"never closed,positive\n'),
    _data_case("one class only", "text,label\n" + "".join(f'"t{i}",positive\n' for i in range(9))),
    _data_case("utf-8 bom", "\ufefftext,label\n" + GOOD_ROWS, may_succeed=True),
    _data_case(
        "broken json line", _jsonl(['{"text": "a", "label": "positive"}', '{"text": ']), ".jsonl"
    ),  # fmt: skip
    _data_case(
        "json row not an object", _jsonl(['{"text": "a", "label": "positive"}', "[1, 2]"]), ".jsonl"
    ),  # fmt: skip
    _data_case(
        "json NaN label",
        _jsonl(
            [json.dumps({"text": t, "label": lab}) for t, lab in SENTIMENT]
            + ['{"text": "x", "label": NaN}']
        ),
        ".jsonl",
    ),  # fmt: skip
    _data_case(
        "json mixed label types",
        _jsonl(
            [
                json.dumps({"text": f"t{i}", "label": v})
                for i, v in enumerate([2, 2.0, True, "2"] * 3)
            ]
        ),
        ".jsonl",
        may_succeed=True,
    ),  # fmt: skip
    _data_case(
        "json text is a number",
        _jsonl(
            [json.dumps({"text": t, "label": lab}) for t, lab in SENTIMENT]
            + ['{"text": 5, "label": "positive"}']
        ),
        ".jsonl",
    ),  # fmt: skip
    _data_case(
        "a quote closed mid-cell would merge rows",
        'text\tlabel\n"so good\tpositive\nbad\tnegative\nhe said "fine\tpositive\n',
        ".tsv",
        names="train.tsv:4",
    ),  # fmt: skip
    _data_case(
        "excel csv with semicolons",
        "\ufefftext;label\r\n" + GOOD_ROWS.replace(",", ";"),
        names="';'",
    ),  # fmt: skip
    _data_case(
        "json row nested too deeply",
        _jsonl(
            ['{"text": "a", "label": "positive"}', '{"text": ' + "[" * 50000 + "]" * 50000 + "}"]
        ),
        ".jsonl",
        names="train.jsonl:2",
    ),  # fmt: skip
]


def _ner_case(name: str, content: str, **kw) -> Case:
    def make(folder: Path) -> list[str]:
        data = _csv(folder / "train.conll", content)
        path = _config(folder, {"train": str(data), "dev": str(data)}, task={"name": "ner"})
        return ["validate-data", str(path)]

    return Case(name, make, names=kw.pop("names", "train.conll"), **kw)


NER_OK = "john B-PER\nsmith I-PER\nvisited O\nparis B-LOC\n\nbob B-PER\nin O\nrome B-LOC\n"
NER_CASES = [
    _ner_case("a line without a tag", NER_OK + "\nalice\nwas O\n"),
    _ner_case("an unknown tag form", NER_OK + "\nalice X-PER\n"),
    _ner_case("crlf lines", NER_OK.replace("\n", "\r\n"), may_succeed=True),
    _ner_case("I- after O", NER_OK + "\nin O\nrome I-LOC\n", may_succeed=True),
    _ner_case(
        "a space as the token",
        "上 B-LOC\n海 I-LOC\n  O\n是 O\n\n北 B-LOC\n京 I-LOC\n",
        may_succeed=True,
    ),  # fmt: skip
]


def _config_case(name: str, content: str | bytes | None, *args: str, **kw) -> Case:
    def make(folder: Path) -> list[str]:
        path = folder / "config.yaml"
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return ["train", str(path), *args]

    return Case(name, make, names=kw.pop("names", "config.yaml"), **kw)


def _good_config(**changes) -> str:
    config = tiny_config(Path("../model"), Path("runs"), data={"train": "train.csv"})
    config.update(changes)
    return yaml.safe_dump(config)


CONFIG_CASES = [
    _config_case("yaml syntax", "data: {train: [unclosed\n"),
    _config_case("a list, not a mapping", "- data\n- train\n"),
    _config_case("empty config", ""),
    _config_case("a typo key", _good_config(trian={"lr": 1}), names="trian"),
    _config_case("a wrong type", _good_config(train={"lr": "fast"}), names="train.lr"),
    _config_case(
        "utf-16 config",
        _good_config().encode("utf-16"),
        names="train.csv",
    ),  # read (BOM) then the data file is missing  # fmt: skip
    _config_case("a directory as config", None),
    _config_case("name dot", _good_config(name="."), names="name"),
    _config_case("name parent", _good_config(name=".."), names="name"),
    _config_case("name path", _good_config(name="../outside"), names="name"),
    _config_case("unknown task", _good_config(task="clasification"), names="task"),
    _config_case("a bad override", _good_config(), "train.lr", names="train.lr"),
    _config_case("a missing data file", _good_config(), names="train.csv"),
    _config_case("a section twice", _good_config() + "train: {lr: 0.5}\n", names="given twice"),
    _config_case(
        "infinite epochs", _good_config(train={"epochs": float("inf")}), names="train.epochs"
    ),
    Case(
        "a json config nested too deeply",
        lambda folder: [
            "train",
            str(_csv(folder / "c.json", '{"a": ' + "[" * 50000 + "]" * 50000 + "}")),
        ],
        names="c.json",
    ),  # fmt: skip
    Case("a missing config", lambda folder: ["train", str(folder / "nope.yaml")], names="nope"),
    Case(
        "a directory as data",
        lambda folder: ["validate-data", str(_config(folder, {"train": str(folder)}))],
        names=None,
    ),  # fmt: skip
]


def _model_case(name: str, damage: Callable[[Path], None], **kw) -> Case:
    def make(folder: Path) -> list[str]:
        model = folder / "model-dir"
        shutil.copytree(folder.parent / "trained", model)
        damage(model)
        return ["predict", str(model), "great phone"]

    return Case(name, make, names=kw.pop("names", "model-dir"), **kw)


def _unlink(*names: str) -> Callable[[Path], None]:
    def damage(model: Path) -> None:
        for name in names:
            for path in model.glob(name):
                path.unlink()

    return damage


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda model: (model / name).write_bytes(content)


def _meta(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(model: Path) -> None:
        meta = json.loads((model / "bridgetune.json").read_text())
        change(meta)
        (model / "bridgetune.json").write_text(json.dumps(meta))

    return damage


def _truncate(model: Path) -> None:
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _pickle_only(model: Path) -> None:
    import torch

    torch.save({"x": torch.zeros(1)}, model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()


def _model_config(**changes) -> Callable[[Path], None]:
    def damage(model: Path) -> None:
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, **changes}))

    return damage


def torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def _retyped(change: Callable) -> Callable[[Path], None]:
    """Every floating weight of the file changed by `change` (cast to integers, made NaN)."""

    def damage(model: Path) -> None:
        from safetensors.torch import load_file, save_file

        weights = load_file(model / "model.safetensors")
        changed = {k: change(v) if v.is_floating_point() else v for k, v in weights.items()}
        save_file(changed, model / "model.safetensors", metadata={"format": "pt"})

    return damage


MODEL_CASES = [
    _model_case(
        "no tokenizer files", _unlink("tokenizer*", "vocab.txt", "special_tokens_map.json")
    ),
    _model_case("no config.json", _unlink("config.json")),
    _model_case("empty weights", _write("model.safetensors", b"")),
    _model_case("truncated weights", _truncate),
    _model_case("weights are a pickle", _write("model.safetensors", b"\x80\x04\x95" + b"\0" * 64)),
    _model_case("only pytorch_model.bin", _pickle_only),
    _model_case("garbage bridgetune.json", _write("bridgetune.json", b"{not json")),
    _model_case("unknown task in meta", _meta(lambda m: m.update(task="sentiment-magic"))),
    _model_case("labels do not fit the head", _meta(lambda m: m.update(labels=["a", "b", "c"]))),
    _model_case("a newer format", _meta(lambda m: m.update(format_version=99))),
    _model_case(
        "max_length past the positions",
        _meta(lambda m: m.update(max_length=100000)),
        names="max_length",
    ),  # fmt: skip
    _model_case(
        "config.json with fewer layers",
        _model_config(num_hidden_layers=1),
        names="config.json",
    ),
    _model_case(
        "integer weights",
        _retyped(lambda t: (t * 100).to(torch_dtype("int8"))),
        names="stored as I8",
    ),
    _model_case("NaN weights", _retyped(lambda t: t * float("nan")), names="NaN"),
    _model_case(
        "a negative max_length", _meta(lambda m: m.update(max_length=-1)), names="max_length"
    ),
    Case("not a directory", lambda folder: ["predict", str(_csv(folder / "m", "x")), "hi"], "m"),
    Case("a missing model", lambda folder: ["predict", str(folder / "none"), "hi"], "none"),
]

CASES = DATA_CASES + NER_CASES + CONFIG_CASES + MODEL_CASES


def _snapshot(root: Path, skip: set[Path]) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and not any(p.is_relative_to(s) for s in skip)
    }


@pytest.fixture(scope="module")
def sweep_root(tiny_bert, tmp_path_factory) -> Path:
    """A folder with the tiny model as `model` and a trained classifier as `trained`."""
    from conftest import train_tiny_model

    root = tmp_path_factory.mktemp("sweep")
    shutil.copytree(tiny_bert, root / "model")
    data = write_csv(root / "sentiment.csv", ["text", "label"], SENTIMENT)
    trained = train_tiny_model(tiny_bert, root / "runs", data, "trained", epochs=2)
    shutil.copytree(trained, root / "trained")
    return root


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_cli_over_damaged_inputs(case, sweep_root, monkeypatch):
    folder = sweep_root / case.name.replace(" ", "_")
    folder.mkdir()
    monkeypatch.chdir(folder)  # relative paths in the configs stay inside the case's folder
    args = case.make(folder)
    before = _snapshot(sweep_root, {folder / "runs", sweep_root / "runs"})
    result = CliRunner().invoke(app, args)
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{case.name}: uncaught {result.exception!r}\n{output}"
    )
    assert "Traceback" not in output, output
    if not (case.may_succeed and result.exit_code == 0):
        assert result.exit_code == 2, f"{case.name}: exit {result.exit_code}\n{output}"
        assert "error:" in output, output
        if case.names:
            assert case.names in output.replace("\n", ""), f"{case.name}: {output}"
    after = _snapshot(sweep_root, {folder / "runs", sweep_root / "runs"})
    assert after == before, f"{case.name} touched files outside its run: {set(after) ^ set(before)}"


# --- the service ---------------------------------------------------------------------------

NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999999", "-1e999999"]
WITH_NUMBERS = [  # @ is where each number goes
    ("/v1/predict", '{"texts": ["great"], "top_k": @}'),
    ("/v1/predict", '{"texts": [@]}'),
    ("/v1/feedback", '{"text": "great", "label": @}'),
    ("/v1/rank", '{"query": "q", "candidates": ["a"], "top_k": @}'),
    ("/v1/rank", '{"query": "q", "candidates": ["a", "b"], "deep": {"x": [1, {"y": @}]}}'),
]
BODIES = [
    *((route, body.replace("@", n)) for route, body in WITH_NUMBERS for n in NUMBERS),
    ("/v1/predict", ""),
    ("/v1/predict", "not json"),
    ("/v1/predict", "[]"),
    ("/v1/predict", "null"),
    ("/v1/predict", '{"texts": []}'),
    ("/v1/predict", '{"texts": [null]}'),
    ("/v1/predict", '{"texts": "a string"}'),
    ("/v1/predict", '{"texts": [["nested"]]}'),
    ("/v1/predict", '{"texts": ["a"], "unknown": 1}'),
    ("/v1/predict", '{"texts": ["' + "\\ud800" + '"]}'),  # a lone surrogate
    ("/v1/predict", "[" * 5000 + "]" * 5000),
    ("/v1/predict", '{"texts": ["a"]' + "}" * 3),
    ("/v1/feedback", '{"text": "great", "label": "no-such-label"}'),
    ("/v1/feedback", '{"text": "great", "label": "positive", "entities": [{"start": 0}]}'),
    ("/v1/feedback", '{"text": "", "label": "positive"}'),
    (
        "/v1/chat/completions",
        '{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    ),  # fmt: skip
]


@pytest.fixture(scope="module")
def service(sweep_root, tmp_path_factory):
    from fastapi.testclient import TestClient

    from bridgetune.config import ServeConfig
    from bridgetune.serve import create_app

    store = tmp_path_factory.mktemp("store") / "feedback.db"
    config = ServeConfig(feedback_db=str(store), admin_keys=["root"])
    with TestClient(create_app(sweep_root / "trained", config)) as client:
        yield client


@pytest.mark.parametrize("route,body", BODIES, ids=[f"{r} {b[:40]}" for r, b in BODIES])
def test_the_service_over_damaged_bodies(route, body, service):
    headers = {"Content-Type": "application/json", "X-API-Key": "root"}
    answer = service.post(route, content=body.encode("utf-8", "surrogatepass"), headers=headers)
    assert answer.status_code < 500, f"{route} {body[:80]}: {answer.status_code} {answer.text}"
    assert answer.status_code >= 400, f"{route} {body[:80]} accepted: {answer.text}"
    assert answer.json()["detail"]


RELOADED = MODEL_CASES[:-2]  # not "not a directory" nor "a missing model"


@pytest.mark.parametrize("case", RELOADED, ids=[c.name for c in RELOADED])
def test_reload_to_a_damaged_model_directory_is_refused(case, sweep_root, service):
    folder = sweep_root / f"reload_{case.name.replace(' ', '_')}"
    folder.mkdir()
    model = Path(case.make(folder)[1])
    headers = {"X-API-Key": "root"}
    answer = service.post("/admin/reload", json={"model_dir": str(model)}, headers=headers)
    assert answer.status_code == 422, f"{case.name}: {answer.status_code} {answer.text}"
    still = service.post("/v1/predict", json={"texts": ["great phone"]}, headers=headers)
    assert still.status_code == 200  # the old model keeps serving
