"""A training run's config: the task section, RunConfig, YAML loading, dotted overrides, readable
errors with "did you mean", and the older spellings of task options."""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bridgetune.config.base import ConfigError, _Section, plain_name, read_file_text
from bridgetune.config.distill import DistillConfig
from bridgetune.config.sections import (
    AugmentConfig,
    DataConfig,
    FewShotConfig,
    GenerateConfig,
    KnowledgeConfig,
    MethodConfig,
    ModelConfig,
    PretrainConfig,
    RuleConfig,
    TrainConfig,
)


class TaskConfig(_Section):
    """What to learn. Besides `name`, the section holds the task's own options: each task
    declares them as its `Options` model (bridgetune.tasks, e.g. `task.crf` for ner,
    `task.packing` for causal_lm), validated with the config; an option the task does not take
    is an error. `task: ner` is short for `task: {name: ner}`.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str = Field(
        "classification",
        description="A registered task (checked with 'did you mean'): classification, "
        "multilabel, pair, ner, regression, ranking, qa, causal_lm, seq2seq, mlm (masked-LM "
        "pre-training: bridgetune pretrain). Its options: the task.* rows below.",
    )

    def options(self) -> dict[str, Any]:
        """The task options set in the config (everything but `name`)."""
        return dict(self.model_extra or {})


class RunConfig(_Section):
    name: str = Field("run", description="Run name; outputs go to <output_dir>/<name>.")
    output_dir: str = Field("runs", description="Parent directory of run directories.")
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    fewshot: FewShotConfig = Field(default_factory=FewShotConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    rules: list[RuleConfig] = Field(
        default_factory=list,
        description="ner, classification, pair: rules applied to every prediction, top to "
        "bottom (regex or words that add, override or veto; docs/chinese.md).",
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return plain_name(value, "name")

    @field_validator("output_dir")
    @classmethod
    def _output_dir(cls, value: str) -> str:
        if not value.strip() or "\x00" in value:
            raise ValueError(
                f"output_dir {value!r} is not a folder path; give one such as 'runs' or "
                "'/data/runs'"
            )
        # `~/runs` means the home folder's runs, as in a shell (and model.name): unexpanded, it
        # would be a folder named `~` in the working directory
        return os.path.expanduser(value)

    @field_validator("task", mode="before")
    @classmethod
    def _task_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _crf_loss(self) -> RunConfig:
        """task.crf trains with the CRF's loss unless train.loss says otherwise (an error the
        task reports)."""
        if self.task.options().get("crf") and self.train.loss is None:
            self.train.loss = "crf"
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. train.lr=3e-5)")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw != "" else None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys (``train.lr=3e-5``) in a raw config dict; values are parsed as YAML."""
    for item in overrides:
        path, value = _parse_override(item)
        if path[0] == "task" and len(path) > 1 and isinstance(raw.get("task"), str):
            raw["task"] = {"name": raw["task"]}  # `task: ner` is short for `task: {name: ner}`
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[path[-1]] = value
    return raw


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section that `loc` points into (for "did you mean")."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _describe(error: ValidationError, source: str, root: type[BaseModel] | None = None) -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        loc = item["loc"]
        where = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(root or RunConfig, loc), n=1)
            hint = f"; did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else ""
            lines.append(f"  - {where}: unknown key{hint}")
        elif item["type"] == "literal_error" and isinstance(item.get("input"), str):
            choices = str(item.get("ctx", {}).get("expected", "")).replace(" or ", ", ")
            options = [c.strip(" '") for c in choices.split(",") if c.strip(" '")]
            close = difflib.get_close_matches(item["input"], options, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            lines.append(f"  - {where}: unknown value {item['input']!r}{hint} ({item['msg']})")
        else:
            lines.append(f"  - {where}: {item['msg']}")
    lines.append("Run `bridgetune config --schema` to list every key.")
    return "\n".join(lines)


# options that were run-level keys before they became the task's own (task.*): configs that
# spell them the old way keep working
MOVED_TO_TASK = {
    ("model", "crf"): "crf",
    ("train", "packing"): "packing",
    ("data", "prompt_template"): "prompt_template",
    ("data", "as_chat"): "as_chat",
    ("data", "role_map"): "role_map",
}


def _move_task_options(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with the old spellings of task options (model.crf, train.packing, data.prompt_template,
    data.as_chat, data.role_map) under task.*."""
    moved = {}
    for (section, key), option in MOVED_TO_TASK.items():
        if isinstance(raw.get(section), dict) and key in raw[section]:
            moved[option] = raw[section].pop(key)
    if moved:
        task = raw.get("task", "classification")
        raw["task"] = {**({"name": task} if isinstance(task, str) else task), **moved}
    return raw


def build_config(raw: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Validate a raw dict into a RunConfig, raising ConfigError with readable messages."""
    try:
        return RunConfig.model_validate(_move_task_options(raw))
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys, so a second `train:` section would silently
    replace the first (its lr, its epochs): a key twice in one mapping is refused at its line."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may repeat keys
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: PyYAML's own error says so
                continue
            if first != line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (also at line {first}): the second "
                    "would replace the first; keep one", key_node.start_mark,
                )  # fmt: skip
        return super().construct_mapping(node, deep)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (json keeps the last of two equal ones)."""
    keys = [key for key, _ in pairs]
    twice = next((key for key in keys if keys.count(key) > 1), None)
    if twice is not None:
        raise ValueError(f"{twice!r} is given twice in one object: the second would replace the "
                         "first; keep one")  # fmt: skip
    return dict(pairs)


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    """The mapping of a YAML file (UTF-8, or UTF-16 with its byte-order mark: decode_text); a
    `.json` file is read as JSON (JSON indented with tabs is no YAML). A key given twice in
    one mapping is refused (the parsers keep the last one).

    Raises:
        ConfigError: one line naming the file: missing, a directory, not text, not YAML.
    """
    hint = "give the path of a YAML file"
    text = read_file_text(path, f"{what} file", hint, ConfigError, (".yaml", ".yml", ".json"))
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text, object_pairs_hook=_unique_pairs) if text.strip() else {}
        else:
            raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{path}:{error.lineno}: not valid JSON ({error.msg}); fix that line"
        ) from None
    except ValueError as error:  # a key twice (_unique_pairs)
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    except yaml.YAMLError as error:  # one line at the line it names, not PyYAML's report
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).split("\n")[0]
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix that line") from None
    except RecursionError:  # thousands of nested brackets: no config, and no traceback
        raise ConfigError(f"{path}: nested too deeply to be a config; check the file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config, apply dotted overrides and validate it.

    Relative data paths (and gazetteer files) are resolved against the config file's directory
    when they exist there.
    """
    path = Path(path)
    raw = apply_overrides(_read_yaml(path, "config"), overrides or [])
    _resolve_data_paths(raw, path.parent)
    return build_config(raw, str(path))


def _resolve_data_paths(raw: dict[str, Any], base: Path) -> None:
    knowledge = raw.get("knowledge")
    gazetteers = knowledge.get("gazetteers") if isinstance(knowledge, dict) else None
    if isinstance(gazetteers, dict):  # files of names, like data files
        for kind, value in gazetteers.items():
            if isinstance(value, str) and not value.startswith("jieba:"):
                if not Path(value).exists() and (base / value).exists():
                    gazetteers[kind] = str(base / value)
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    # parallel files are named by a path prefix: <prefix>.<first language> must exist
    suffix = ""
    if data.get("format") == "parallel" and isinstance(data.get("languages"), list):
        suffix = f".{data['languages'][0]}" if data["languages"] else ""
    for key in ("train", "dev", "test", "corpus"):
        value = data.get(key)
        if isinstance(value, str) and not value.startswith("hf:") and not Path(value).is_absolute():
            candidate = base / value
            if not Path(value + suffix).exists() and Path(str(candidate) + suffix).exists():
                data[key] = str(candidate)
