"""bridgetune: fine-tune pretrained transformers on your labelled data, end to end."""

from __future__ import annotations

__version__ = "0.1.0"

from bridgetune.api import (  # noqa: E402
    TrainResult,
    augment_preview,
    evaluate,
    export_feedback,
    generate,
    load,
    monitor,
    predict,
    rank,
    train,
)
from bridgetune.config import RunConfig, load_config  # noqa: E402
from bridgetune.fewshot import fewshot  # noqa: E402
from bridgetune.zeroshot import zeroshot  # noqa: E402

__all__ = [
    "RunConfig",
    "TrainResult",
    "__version__",
    "augment_preview",
    "evaluate",
    "export_feedback",
    "fewshot",
    "generate",
    "load",
    "load_config",
    "monitor",
    "predict",
    "rank",
    "train",
    "zeroshot",
]
