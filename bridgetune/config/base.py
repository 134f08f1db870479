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
