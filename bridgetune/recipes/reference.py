"""The config reference: every key of the config, the tasks' options (`task.*`) and the methods'
options (`method.*`). `python -m bridgetune.recipes.reference` regenerates docs/config.md (a test
keeps it current); `bridgetune config --schema` prints the same rows."""

from __future__ import annotations

from pathlib import Path

from bridgetune.config import schema_lines, schema_markdown
from bridgetune.methods import params_schema_lines
from bridgetune.tasks import TASKS


def task_options_lines() -> list[tuple[str, str, str]]:
    """(task.<option>, default, "task: description") for every registered task's options."""
    rows = []
    for name in TASKS:
        for key, default, text in schema_lines(TASKS.get(name).Options):
            rows.append((f"task.{key}", default, f"{name}: {text}"))
    return rows


def reference_rows() -> list[tuple[str, str, str]]:
    """Every config key: run-level sections, then task and method options."""
    return schema_lines() + task_options_lines() + params_schema_lines()


def config_reference() -> str:
    """docs/config.md: every config key, the tasks' and the methods' options included."""
    return schema_markdown(params_schema_lines(), task_options_lines())


if __name__ == "__main__":
    path = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    path.write_text(config_reference(), encoding="utf-8")
    print(f"wrote {path}")
