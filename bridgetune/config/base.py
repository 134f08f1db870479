"""What every config section shares: the error users fix, the strict section base, tag schemes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

TagScheme = Literal["IOB1", "IOB2", "BIOES", "BMES"]


class ConfigError(ValueError):
    """A configuration problem the user can fix; the message says what and where."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def validated_options(
    section: str, owner: str, options: Mapping[str, Any], models: Mapping[str, type[BaseModel]]
) -> BaseModel:
    """The `section.*` options (`task.*`, `method.*`) of `owner`, validated by its model in
    `models` (each registered task's `Options`, each method's `Params`).

    Raises:
        ConfigError: an option `owner` does not take (naming those that do and what `owner`
            takes), or a bad value.
    """
    model = models[owner]
    try:
        return model.model_validate(dict(options))
    except ValidationError as error:
        problems = []
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"])
            if item["type"] == "extra_forbidden":
                users = [name for name, other in models.items() if key in other.model_fields]
                takes = ", ".join(model.model_fields) or "no options"
                where = f"applies to {', '.join(users)}; " if users else ""
                problems.append(f"{section}.{key}: {where}{section} {owner!r} takes {takes}")
            else:
                problems.append(f"{section}.{key}: {item['msg']}")
        raise ConfigError("; ".join(problems)) from None


# A name becomes one directory (`<output_dir>/<name>`, beside its staging `.<name>.partial`):
# NAME_MAX is 255 bytes on the common filesystems, less the staging name's 9 extra bytes and the
# temporary siblings' process ids (bridgetune.lifecycle.atomic).
MAX_NAME_BYTES = 200


def plain_name(value: str, what: str) -> str:
    """`value` when it is one plain path component, the only kind of name a path is built from.

    Refused: empty, `.` and `..`, path separators (`/`, and `\\` everywhere: a name must mean
    the same folder on every system), a leading `.` (hidden; the staging names start with one),
    control characters, surrounding spaces and names longer than MAX_NAME_BYTES.

    Raises:
        ValueError: what is wrong with `value`, and an example of a name that works.
    """
    problem = None
    if not value or not value.strip():
        problem = "is empty"
    elif value in (".", ".."):
        problem = "means output_dir itself or the folder above it, not a folder of its own"
    elif "/" in value or "\\" in value:
        problem = "contains a path separator (a name is one folder, not a path)"
    elif value.startswith("."):
        problem = "starts with '.' (bridgetune's own temporary folders do)"
    elif any(ord(c) < 32 or ord(c) == 127 for c in value):
        problem = "contains a control character"
    elif value != value.strip():
        problem = "starts or ends with a space"
    elif len(value.encode("utf-8")) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    if problem:
        raise ValueError(
            f"{what} {value!r} {problem}; use one plain folder name such as 'sst2-lora' or "
            "'客服-v2' (output_dir chooses where it goes)"
        )
    return value
