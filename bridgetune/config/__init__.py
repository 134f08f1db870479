"""Run configuration: pydantic models validated before any work starts.

A config is YAML with four sections (`data`, `model`, `train`, `method`) plus `task`, `name` and
`output_dir`. Unknown keys are errors with a "did you mean" hint; dotted overrides such as
`train.lr=3e-5` are applied before validation.

The package: base (errors, the section base), sections (data, model, method, train, ...), run
(task, RunConfig, loading and overrides), distill (the distill section), serving (serve,
monitor, retrieval), schema (the reference). Pure: it imports nothing else of ours (checked
by import-linter)."""

from bridgetune.config.base import ConfigError, TagScheme
from bridgetune.config.distill import DistillConfig
from bridgetune.config.run import (
    MOVED_TO_TASK,
    RunConfig,
    TaskConfig,
    apply_overrides,
    build_config,
    load_config,
)
from bridgetune.config.schema import schema_lines, schema_markdown
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
from bridgetune.config.serving import MonitorConfig, RetrievalConfig, ServeConfig, load_serve_config

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "FewShotConfig",
    "GenerateConfig",
    "DistillConfig",
    "KnowledgeConfig",
    "MOVED_TO_TASK",
    "MethodConfig",
    "ModelConfig",
    "MonitorConfig",
    "PretrainConfig",
    "RetrievalConfig",
    "RuleConfig",
    "RunConfig",
    "ServeConfig",
    "TagScheme",
    "TaskConfig",
    "TrainConfig",
    "apply_overrides",
    "build_config",
    "load_config",
    "load_serve_config",
    "schema_lines",
    "schema_markdown",
]
