"""Tasks: classification (single, pair, multi-label), regression, ranking, extractive question
answering, token classification (NER), relation classification, sentence embeddings (bi-encoder) and
generation (causal_lm,
seq2seq)."""

from __future__ import annotations

from typing import Any

from bridgetune.tasks import causal_lm as _causal_lm  # noqa: F401  (registers)
from bridgetune.tasks import classification as _classification  # noqa: F401  (registers)
from bridgetune.tasks import embedding as _embedding  # noqa: F401  (registers)
from bridgetune.tasks import mlm as _mlm  # noqa: F401  (registers)
from bridgetune.tasks import qa as _qa  # noqa: F401  (registers)
from bridgetune.tasks import ranking as _ranking  # noqa: F401  (registers)
from bridgetune.tasks import regression as _regression  # noqa: F401  (registers)
from bridgetune.tasks import relation as _relation  # noqa: F401  (registers)
from bridgetune.tasks import seq2seq as _seq2seq  # noqa: F401  (registers)
from bridgetune.tasks import token as _token  # noqa: F401  (registers)
from bridgetune.tasks.base import TASKS, Task


def build_task(
    name: str,
    labels: list[str],
    tag_scheme: str = "IOB2",
    threshold: float | None = None,
    pairs: bool = False,
    **settings: Any,
) -> Task:
    """The task object for a task name and its label set (tags for NER); each task class takes
    the settings it uses (`create`; `threshold`: a saved decision threshold, None before
    training; `pairs`: the data has a second text per row; `settings`: what a task saved with
    its model, `Task.settings()`)."""
    task_class: Any = TASKS.get(name)
    return task_class.create(
        labels, tag_scheme=tag_scheme, threshold=threshold, pairs=pairs, **settings
    )


def reader_of(name: str, options: dict[str, Any]) -> Any:
    """How task `name` reads its data with the task options `options` (a run's `task.*`, or
    what a saved model recorded)."""
    return TASKS.get(name).configured_reader(options)


def reader_for(name: str) -> Any:
    """How task `name` reads its data (bridgetune.data.readers)."""
    return TASKS.get(name).reader


__all__ = ["TASKS", "Task", "build_task", "reader_for", "reader_of"]
