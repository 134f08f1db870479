"""Config validation, "did you mean" hints, dotted overrides, YAML loading and the schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bridgetune.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    build_config,
    load_config,
    schema_lines,
)
from bridgetune.recipes.check import as_config
from bridgetune.registry import Registry


def minimal(**top: object) -> dict:
    return {"data": {"train": "train.csv"}, **top}


def write_yaml(path: Path, raw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


# --- validation and hints ------------------------------------------------------------------


def test_minimal_config_gets_defaults() -> None:
    cfg = build_config(minimal())
    assert isinstance(cfg, RunConfig)
    assert cfg.task.name == "classification"
    assert cfg.model.name == "minilm"
    assert cfg.train.lr == pytest.approx(5e-5)
    assert cfg.data.tag_scheme == "IOB2"
    assert cfg.run_dir == Path("runs") / "run"


def test_unknown_key_in_section_suggests_dotted_name() -> None:
    raw = minimal(train={"lrr": 1e-4})
    with pytest.raises(ConfigError) as info:
        build_config(raw, "my.yaml")
    message = str(info.value)
    assert "my.yaml" in message
    assert "train.lrr" in message
    assert "unknown key" in message
    assert "did you mean 'train.lr'" in message


def test_unknown_key_in_data_section_suggests_close_field() -> None:
    raw = {"data": {"train": "t.csv", "text_colum": "body"}}
    with pytest.raises(ConfigError, match=r"did you mean 'data\.text_column'"):
        build_config(raw)


def test_unknown_top_level_key_suggests_section() -> None:
    raw = minimal(trian={"lr": 1e-4})
    with pytest.raises(ConfigError) as info:
        build_config(raw)
    message = str(info.value)
    assert "trian" in message
    assert "did you mean 'train'" in message


def test_unknown_key_without_close_match_has_no_hint() -> None:
    with pytest.raises(ConfigError) as info:
        build_config(minimal(train={"zzzzzzzz": 1}))
    message = str(info.value)
    assert "train.zzzzzzzz: unknown key" in message
    assert "did you mean" not in message


def test_bad_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"train\.lr"):
        build_config(minimal(train={"lr": -1}))
    with pytest.raises(ConfigError, match=r"data\.tag_scheme"):
        build_config({"data": {"train": "t.conll", "tag_scheme": "BIO"}})


def test_missing_data_section_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data"):
        build_config({})


def test_pair_task_needs_text_pair_column() -> None:
    with pytest.raises(ConfigError, match="task 'pair' needs data.text_pair_column"):
        as_config(minimal(task="pair"))
    cfg = as_config({"task": "pair", "data": {"train": "t.csv", "text_pair_column": "b"}})
    assert cfg.data.text_pair_column == "b"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task=classifcation", "task: unknown task 'classifcation'; did you mean 'classification'"),
        ("method.name=lorra", "method.name: unknown method 'lorra'; did you mean 'lora'"),
        ("augment.ops=[swap,synonim]", "augment.ops: unknown augmentation 'synonim'; did you mean"),
        ("train.label_smoothing=0.1", "label_smoothing applies to single-label tasks"),
        ("augment.ops=[mention]", "'mention' replaces entity mentions"),
    ],
)
def test_names_and_task_options_are_checked_before_any_work(override, message) -> None:
    raw = minimal(task="multilabel") if "smoothing" in override else minimal()
    with pytest.raises(ConfigError, match=re.escape(message)):
        as_config(raw, [override])


# --- overrides -----------------------------------------------------------------------------


def test_overrides_are_parsed_as_yaml_values() -> None:
    raw = apply_overrides(
        minimal(),
        [
            "train.batch_size=16",
            "model.trust_remote_code=true",
            "data.labels=[neg, pos]",
            "model.name=x",
            "train.max_grad_norm=null",
            "train.metric=",
        ],
    )
    assert raw["train"]["batch_size"] == 16
    assert raw["model"]["trust_remote_code"] is True
    assert raw["data"]["labels"] == ["neg", "pos"]
    assert raw["model"]["name"] == "x"
    assert raw["train"]["max_grad_norm"] is None
    assert raw["train"]["metric"] is None
    assert raw["data"]["train"] == "train.csv"  # untouched


def test_override_lr_validates_to_float() -> None:
    cfg = build_config(apply_overrides(minimal(), ["train.lr=3e-5", "train.epochs=1.5"]))
    assert cfg.train.lr == pytest.approx(3e-5)
    assert cfg.train.epochs == pytest.approx(1.5)


def test_override_creates_new_nested_keys() -> None:
    raw = apply_overrides({}, ["data.train=a.csv", "data.column_map.sentence=text"])
    assert raw == {"data": {"train": "a.csv", "column_map": {"sentence": "text"}}}
    cfg = build_config(raw)
    assert cfg.data.column_map == {"sentence": "text"}


def test_override_value_may_contain_equals_sign() -> None:
    raw = apply_overrides(minimal(), ["name=a=b"])
    assert raw["name"] == "a=b"


def test_override_without_equals_is_rejected() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(minimal(), ["train.lr"])


def test_override_through_a_scalar_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides(minimal(train={"lr": 1e-3}), ["train.lr.x=1"])


def test_override_unknown_key_gets_hint() -> None:
    raw = apply_overrides(minimal(), ["train.lrr=3e-5"])
    with pytest.raises(ConfigError, match=r"did you mean 'train\.lr'"):
        build_config(raw)


# --- load_config ---------------------------------------------------------------------------


def test_load_config_resolves_data_paths_against_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text("text,label\na,b\n", encoding="utf-8")
    (folder / "data").mkdir()
    (folder / "data" / "dev.csv").write_text("text,label\na,b\n", encoding="utf-8")
    config = write_yaml(
        folder / "run.yaml",
        {
            "data": {"train": "train.csv", "dev": "data/dev.csv", "test": "hf:imdb"},
            "train": {"lr": 1e-4},
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(config)
    assert Path(cfg.data.train) == folder / "train.csv"
    assert Path(cfg.data.dev) == folder / "data" / "dev.csv"
    assert cfg.data.test == "hf:imdb"
    assert cfg.train.lr == pytest.approx(1e-4)


def test_load_config_keeps_paths_missing_next_to_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_yaml(tmp_path / "cfg" / "run.yaml", {"data": {"train": "missing.csv"}})
    monkeypatch.chdir(tmp_path)
    assert load_config(config).data.train == "missing.csv"


def test_load_config_keeps_absolute_paths(tmp_path: Path) -> None:
    train = tmp_path / "abs.csv"
    train.write_text("text,label\na,b\n", encoding="utf-8")
    config = write_yaml(tmp_path / "cfg" / "run.yaml", {"data": {"train": str(train)}})
    assert load_config(config).data.train == str(train)


def test_load_config_applies_overrides_before_validation(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "run.yaml", {"data": {"train": "t.csv"}, "train": {"lrr": 1}})
    with pytest.raises(ConfigError, match=r"did you mean 'train\.lr'") as info:
        load_config(config)
    assert str(config) in str(info.value)
    # an override cannot remove the bad key, but it does set values before validation
    config = write_yaml(tmp_path / "ok.yaml", {"data": {"train": "t.csv"}})
    cfg = load_config(config, ["train.lr=3e-5", "model.name=x", "task=multilabel"])
    assert cfg.train.lr == pytest.approx(3e-5)
    assert cfg.model.name == "x"
    assert cfg.task.name == "multilabel"


def test_load_config_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  train: [a, b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_load_config_top_level_must_be_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- data\n- train\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_load_config_empty_file_reports_missing_data(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="data"):
        load_config(path)


# --- schema --------------------------------------------------------------------------------


def test_schema_lines_describe_every_field() -> None:
    rows = schema_lines()
    keys = [key for key, _, _ in rows]
    assert len(keys) == len(set(keys))
    for key, default, description in rows:
        assert description.strip(), f"{key} has no description"
        assert isinstance(default, str)
    for expected in (
        "train.lr",
        "data.column_map",
        "data.train",
        "model.name",
        "task.name",
        "name",
    ):
        assert expected in keys
    by_key = {key: default for key, default, _ in rows}
    assert by_key["data.train"] == "required"
    assert by_key["data.column_map"] == "{}"
    assert float(by_key["train.lr"]) == pytest.approx(5e-5)
    # sections themselves are walked, not listed
    assert not {"data", "model", "train", "method"} & set(keys)


def test_schema_lines_cover_all_section_fields() -> None:
    from bridgetune.config import DataConfig, MethodConfig, ModelConfig, TrainConfig

    keys = {key for key, _, _ in schema_lines()}
    for prefix, model in (
        ("data", DataConfig),
        ("model", ModelConfig),
        ("method", MethodConfig),
        ("train", TrainConfig),
    ):
        for name in model.model_fields:
            assert f"{prefix}.{name}" in keys


# --- registry ------------------------------------------------------------------------------


def test_registry_get_suggests_close_name() -> None:
    registry: Registry[int] = Registry("widget")
    registry.register("classification")(1)
    registry.register("multilabel")(2)
    assert registry.get("multilabel") == 2
    assert "classification" in registry
    assert list(registry) == ["classification", "multilabel"]
    with pytest.raises(KeyError) as info:
        registry.get("clasification")
    message = str(info.value)
    assert "unknown widget 'clasification'" in message
    assert "did you mean 'classification'" in message
    assert "known: classification, multilabel" in message


def test_registry_unknown_name_without_close_match() -> None:
    registry: Registry[int] = Registry("widget")
    registry.register("alpha")(1)
    with pytest.raises(KeyError) as info:
        registry.get("zzz")
    assert "did you mean" not in str(info.value)


def test_registry_rejects_double_registration() -> None:
    registry: Registry[int] = Registry("widget")
    registry.register("a")(1)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(2)


def test_task_registry_suggests_close_task() -> None:
    from bridgetune.tasks.base import TASKS

    with pytest.raises(KeyError, match="did you mean 'ner'"):
        TASKS.get("nerr")


# --- task options (task.*) ------------------------------------------------------------------


def test_task_is_a_name_or_a_section_with_the_tasks_own_options() -> None:
    assert build_config(minimal(task="ner")).task.name == "ner"
    cfg = as_config(minimal(task={"name": "ner", "crf": True}))
    assert cfg.task.options() == {"crf": True} and cfg.train.loss == "crf"
    overridden = as_config(minimal(task="ner"), ["task.crf=true"])  # a name gets a section
    assert overridden.task.name == "ner" and overridden.task.options() == {"crf": True}
    assert as_config(minimal(task="causal_lm"), ["task.packing=true"]).task.options() == {
        "packing": True
    }


def test_older_spellings_of_task_options_are_read_as_task_options() -> None:
    crf = as_config(minimal(task="ner", model={"crf": True}))
    assert crf.task.options() == {"crf": True} and "crf" not in crf.model.model_dump()
    packed = as_config(minimal(task="causal_lm"), ["train.packing=true"])
    assert packed.task.name == "causal_lm" and packed.task.options() == {"packing": True}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "classification", "crf": True},
         "task.crf: applies to ner; task 'classification' takes no options"),
        ({"name": "ner", "crf": "often"}, "task.crf: Input should be a valid boolean"),
        ({"name": "ner", "packing": True},
         "task.packing: applies to causal_lm; task 'ner' takes crf"),
    ],
)  # fmt: skip
def test_task_options_are_checked_by_the_tasks_options_model(raw, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        as_config(minimal(task=raw))
