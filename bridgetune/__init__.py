"""bridgetune: fine-tune pretrained transformers on your labelled data, end to end.

The public face, loaded lazily (PEP 562): `import bridgetune` imports nothing else of ours, and
`bridgetune.train` imports the train recipe when first used, so `import bridgetune.inference`
or the service never pull in training through the package root.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bridgetune._version import __version__

# public name -> the module that defines it
_FACE = {
    "RunConfig": "bridgetune.config",
    "load_config": "bridgetune.config",
    "as_config": "bridgetune.recipes.check",
    "validate_data": "bridgetune.recipes.evaluate",
    "evaluate": "bridgetune.recipes.evaluate",
    "TrainResult": "bridgetune.recipes.finish",
    "train": "bridgetune.recipes.train",
    "pretrain": "bridgetune.recipes.train",
    "distill": "bridgetune.recipes.distill",
    "augment_preview": "bridgetune.recipes.augment",
    "fewshot": "bridgetune.recipes.fewshot",
    "zeroshot": "bridgetune.recipes.zeroshot",
    "load": "bridgetune.recipes.predict",
    "predict": "bridgetune.recipes.predict",
    "generate": "bridgetune.recipes.predict",
    "rank": "bridgetune.recipes.predict",
    "embed": "bridgetune.recipes.embed",
    "embed_file": "bridgetune.recipes.embed",
    "monitor": "bridgetune.recipes.monitor",
    "export_feedback": "bridgetune.recipes.feedback",
    "extract": "bridgetune.recipes.extract",
    "export_model": "bridgetune.recipes.export",
    "ExportResult": "bridgetune.recipes.export",
    "ExtractResult": "bridgetune.recipes.extract",
}

__all__ = [
    "ExportResult",
    "ExtractResult",
    "RunConfig",
    "TrainResult",
    "__version__",
    "as_config",
    "augment_preview",
    "distill",
    "embed",
    "embed_file",
    "evaluate",
    "export_feedback",
    "export_model",
    "extract",
    "fewshot",
    "generate",
    "load",
    "load_config",
    "monitor",
    "predict",
    "pretrain",
    "rank",
    "train",
    "validate_data",
    "zeroshot",
]


def __getattr__(name: str) -> Any:
    if name not in _FACE:
        raise AttributeError(f"module 'bridgetune' has no attribute {name!r}")
    value = getattr(importlib.import_module(_FACE[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FACE))


if TYPE_CHECKING:  # names for type checkers and IDEs; never executed
    from bridgetune.config import RunConfig, load_config
    from bridgetune.recipes.augment import augment_preview
    from bridgetune.recipes.check import as_config
    from bridgetune.recipes.distill import distill
    from bridgetune.recipes.embed import embed, embed_file
    from bridgetune.recipes.evaluate import evaluate, validate_data
    from bridgetune.recipes.extract import ExtractResult, extract
    from bridgetune.recipes.feedback import export_feedback
    from bridgetune.recipes.fewshot import fewshot
    from bridgetune.recipes.finish import TrainResult
    from bridgetune.recipes.monitor import monitor
    from bridgetune.recipes.predict import generate, load, predict, rank
    from bridgetune.recipes.train import pretrain, train
    from bridgetune.recipes.zeroshot import zeroshot
