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
    character span in it. Ranking puts the query in `text` and its candidate texts in
    `candidates` (`label`: a relevance per candidate); question answering the question in
    `text`, the context in `text_pair` and the answers in `label` ({"text", "start"} dicts,
    none for an unanswerable question); generation puts its target in `label` as a dict:
    {"completion": text} after the prompt in `text`, or {"messages": [{role, content}, ...]}
    for a conversation. Relation classification puts the sentence in `text` and its head and
    tail entity in `mentions` ([{"start", "end", "type"}, {...}]: character offsets, end
    exclusive, head first), the relation in `label`. `id` is the record's own id (query id,
    question id); `source` is "file:line" for error messages.
    """

    text: str
    text_pair: str | None = None
    label: str | list[str] | list[float] | list[dict] | dict | None = None
    tokens: list[str] | None = None
    tags: list[str] | None = None
    offsets: list[tuple[int, int]] | None = None
    candidates: list[str] | None = None
    mentions: list[dict] | None = None
    id: str | None = None
    source: str = ""
