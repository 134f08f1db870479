"""What every config section shares: the error users fix, the strict section base, tag schemes,
and how a text file (a config, a data file) is read: its path checked, its bytes decoded."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

TagScheme = Literal["IOB1", "IOB2", "BIOES", "BMES"]


class ConfigError(ValueError):
    """A configuration problem the user can fix; the message says what and where."""


class _Section(BaseModel):
    # no NaN or infinity in any number: `train.epochs: .inf` would only fail deep in training
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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


# byte-order marks, longest first: UTF-32 LE's mark starts with UTF-16 LE's
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(raw: bytes, source: str, error: type[ValueError] = ValueError) -> str:
    """The text of a file's bytes: UTF-8 (a BOM dropped), or UTF-16/UTF-32 where a byte-order
    mark says so (Windows saves "Unicode" text so: Notepad, Excel's Unicode Text, PowerShell
    5's `>`). Without a mark a file is UTF-8: a guessed encoding could read wrong characters
    without any error.

    Raises:
        error: naming `source`, the line and column of the first bad byte and how to re-save
            the file; or NUL bytes (UTF-16 without its mark, or not a text file at all).
    """
    encoding = next((name for bom, name in _BOMS if raw.startswith(bom)), "utf-8-sig")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as bad:
        before = raw[: bad.start].decode(encoding, errors="replace")
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
        name = "UTF-8" if encoding == "utf-8-sig" else f"{encoding.upper()} (its byte-order mark)"
        raise error(
            f"{source}:{line}: byte 0x{raw[bad.start]:02x} at column {column} is not valid "
            f"{name}; re-save the text as UTF-8 (e.g. iconv -f GBK -t UTF-8 for GBK files)"
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise error(
            f"{source}:{line}: NUL bytes, so the file is UTF-16 without a byte-order mark or not "
            "text at all; re-save it as UTF-8 (e.g. iconv -f UTF-16LE -t UTF-8)"
        )
    return text


def check_file(
    path: Path, what: str, hint: str, error: type[ValueError], suffixes: tuple[str, ...] = ()
) -> None:
    """Raises `error` naming `path` when it does not exist or is a directory (with a few of its
    files, those with `suffixes` if any: the one meant is often among them), with `hint`."""
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        matching = [name for name in names if suffixes and name.lower().endswith(suffixes)]
        names = matching or names
        held = f" (it holds {', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
        raise error(f"{path}: is a directory, not a {what}{held if names else ''}; {hint}")
    if not path.exists():
        raise error(f"{path}: the {what} does not exist; {hint}")


def read_file_text(
    path: Path, what: str, hint: str, error: type[ValueError], suffixes: tuple[str, ...] = ()
) -> str:
    """The text of the file at `path` (decode_text), for a config or a data file.

    Raises:
        error: naming `path` when it does not exist, is a directory (check_file, which lists
            its files with `suffixes`) or cannot be read, each with `hint`.
    """
    check_file(path, what, hint, error, suffixes)
    try:
        raw = path.read_bytes()
    except OSError as problem:  # permissions, a device: still one line naming the file
        raise error(f"{path}: cannot read the {what} ({problem.strerror}); {hint}") from None
    return decode_text(raw, str(path), error)
