"""The config reference: every key with its default and description, as rows and as the Markdown
of docs/config.md (bridgetune.recipes.reference adds the tasks' and methods' options)."""

from __future__ import annotations

from pydantic import (
    BaseModel,
)

from bridgetune.config.run import RunConfig
from bridgetune.config.serving import ServeConfig


def schema_lines(root: type[BaseModel] | None = None) -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every field of `root` (default: RunConfig)."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
                continue
            default = (
                "required"
                if field.is_required()
                else repr(field.get_default(call_default_factory=True))
            )
            rows.append((f"{prefix}{name}", default, field.description or ""))

    walk(root or RunConfig, "")
    return rows


def schema_markdown(
    method_rows: list[tuple[str, str, str]], task_rows: list[tuple[str, str, str]]
) -> str:
    """docs/config.md: the config reference as Markdown tables (kept in sync by a test);
    `method_rows` and `task_rows` are the registered methods' and tasks' options
    (bridgetune.recipes.reference: config imports nothing of ours)."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `bridgetune/config/`, the tasks' `Options` and the methods' `Params` "
        "(`bridgetune config --schema` prints the same; regenerate: `python -m "
        "bridgetune.recipes.reference`).",
        "",
        "## Training (`bridgetune train CONFIG`)",
        "",
        *_markdown_table(schema_lines(RunConfig)),
        "",
        "### Task options (`task.*`, by `task.name`)",
        "",
        "Each task takes only its own options (its `Options` model in `bridgetune/tasks`); "
        "`task: ner` is short for `task: {name: ner}`. The spellings `model.crf`, "
        "`train.packing`, `data.prompt_template`, `data.as_chat` and `data.role_map` of older "
        "configs are read as the task options of the same name.",
        "",
        *_markdown_table(task_rows),
        "",
        "### Method options (`method.*`, by `method.name`)",
        "",
        "Each method takes only its own options (its `Params` model in `bridgetune/methods`).",
        "",
        *_markdown_table(method_rows),
        "",
        "## Serving (`bridgetune serve MODEL_DIR --config SERVE.yaml`)",
        "",
        "Command-line options override these; `monitor.*` also applies to `bridgetune monitor`.",
        "",
        *_markdown_table(schema_lines(ServeConfig)),
    ]
    return "\n".join(lines) + "\n"


def _markdown_table(rows: list[tuple[str, str, str]]) -> list[str]:
    lines = ["| key | default | description |", "|---|---|---|"]
    for key, default, text in rows:
        escaped = text.replace("|", "\\|")
        lines.append(f"| `{key}` | `{default}` | {escaped} |")
    return lines
