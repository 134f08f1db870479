"""Example types shared by readers, tasks and the predictor."""

from __future__ import annotations

from dataclasses import dataclass


class DataError(ValueError):
    """Bad input data; the message names the file, the line or row, and what to do."""


@dataclass
class Example:
    """One labelled (or unlabelled) example.

    Text tasks use `text` (+ `text_pair`) and `label` (a list for multilabel). Token tasks use
    `tokens` and `tags`; `text` is then the tokens joined, and `offsets` gives each token's
    character span in it. `source` is "file:line" for error messages.
    """

    text: str
    text_pair: str | None = None
    label: str | list[str] | list[float] | None = None
    tokens: list[str] | None = None
    tags: list[str] | None = None
    offsets: list[tuple[int, int]] | None = None
    source: str = ""
