"""The `bridgetune` command line: each command is a thin shell over a recipe
(bridgetune.recipes, through the package face).

`app` is the typer application (the `bridgetune` entry point; `python -m bridgetune.cli`).
The commands live by theme in `core` (train, evaluate, predict, data and config), `fewshot`
(few-shot and zero-shot), `serving` (serve, feedback, monitor), `models` (models pull),
`extract` (triples and a knowledge graph from raw text), `embed` (vectors, hard negatives) and
`export` (ONNX, int8, with the parity check);
importing them registers them.
"""

from bridgetune.cli import core, embed, export, extract, fewshot, models, serving  # noqa: F401
from bridgetune.cli.common import app

__all__ = ["app"]
