"""bridgetune: fine-tune pretrained transformers on your labelled data, end to end."""

from __future__ import annotations

__version__ = "0.1.0"

from bridgetune.api import TrainResult, evaluate, load, predict, train  # noqa: E402
from bridgetune.config import RunConfig, load_config  # noqa: E402

__all__ = [
    "RunConfig",
    "TrainResult",
    "__version__",
    "evaluate",
    "load",
    "load_config",
    "predict",
    "train",
]
