"""Embeddings of texts with an embedding model (`task: embedding`): `embed` (a list of texts),
`embed_file` (a file to .npy or JSONL, with a progress bar) and `mine_negatives` (hard
negatives for a training file from the model's own retrieval).

Each writes its output atomically: an interrupted run leaves the previous file, never half of
a new one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridgetune.config import DataConfig
from bridgetune.data.io import read_file
from bridgetune.data.schema import DataError
from bridgetune.inference.predictor import Predictor
from bridgetune.lifecycle.atomic import atomic_lines, atomic_write_bytes
from bridgetune.tasks import reader_for
from bridgetune.tasks.embedding import top_k

BLOCK = 512  # texts embedded per progress step


def _predictor(model: str | Path | Predictor) -> Predictor:
    predictor = model if isinstance(model, Predictor) else Predictor.load(model)
    if not predictor.task.embeds:
        raise ValueError(
            f"{predictor.directory}: a {predictor.task.name} model; embeddings come from an "
            "embedding model (task: embedding)"
        )
    return predictor


def embed(
    model_dir: str | Path | Predictor, texts: Sequence[str], role: str = "query"
) -> np.ndarray:
    """Embeddings of `texts` from an embedding model (one float32 row per text), read as
    queries or passages (`role`: the prefix the model was trained with)."""
    return _predictor(model_dir).embed(texts, role)


def _embedded(predictor: Predictor, texts: list[str], role: str, progress: bool) -> np.ndarray:
    """`texts` embedded in blocks, with a progress bar when `progress`."""
    from rich.progress import Progress

    blocks = []
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task(f"embedding {len(texts):,} texts", total=len(texts))
        for start in range(0, len(texts), BLOCK):
            blocks.append(predictor.embed(texts[start : start + BLOCK], role))
            bar.advance(job, len(blocks[-1]))
    if not blocks:
        return predictor.embed([], role)
    return np.concatenate(blocks)


def read_texts(path: Path, column: str = "text") -> list[str]:
    """Texts of a TXT file (a line each) or of `column` in CSV/TSV/JSONL rows."""
    return reader_for("embedding").read_passages(Path(path), column)


def embed_file(
    model_dir: str | Path | Predictor,
    file: str | Path,
    output: str | Path,
    role: str = "query",
    column: str = "text",
    progress: bool = False,
) -> int:
    """Embed the texts of `file` (TXT lines, or `column` of CSV/TSV/JSONL) into `output`:
    a .npy matrix (a row per text, in order) or JSONL ({"text", "embedding"} per line).
    Returns the number of texts."""
    predictor = _predictor(model_dir)
    texts = read_texts(Path(file), column)
    write_vectors(Path(output), texts, _embedded(predictor, texts, role, progress))
    return len(texts)


def write_vectors(output: Path, texts: list[str], vectors: np.ndarray) -> None:
    """`vectors` written atomically to `output`: a .npy matrix (a row per text, in order), or
    JSONL ({"text", "embedding"} per line)."""
    if output.suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        atomic_write_bytes(output, buffer.getvalue())
        return
    with atomic_lines(output) as write:
        for text, vector in zip(texts, vectors):
            write(json.dumps({"text": text, "embedding": vector.tolist()}, ensure_ascii=False))


def mine_negatives(
    model_dir: str | Path | Predictor,
    data: str | Path,
    output: str | Path,
    negatives: int = 1,
    skip: int = 0,
    corpus: str | Path | None = None,
    data_config: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Hard negatives for the (query, positive) rows of `data` from the model's own ranking:
    every distinct passage of the file (and of `corpus`, a TXT/CSV/JSONL file of passages)
    is ranked for each query, and the `negatives` best that are not one of the query's
    positives (after the first `skip` of them: the very closest are often unlabelled
    positives) become its hard negatives. Writes JSONL rows {text, positive, negatives} (a row
    per positive) that `task: embedding` trains on. `data_config`: data.* keys to read `data`
    with (text_column, text_pair_column, ...)."""
    predictor = _predictor(model_dir)
    path = Path(data)
    cfg = DataConfig(train=str(path), **(data_config or {}))
    examples = read_file(path, cfg, reader_for("embedding"), labelled=True)
    passages: dict[str, int] = {}
    for example in examples:
        for text in example.candidates or []:
            passages.setdefault(text, len(passages))
    if corpus is not None:
        for text in read_texts(Path(corpus)):
            passages.setdefault(text, len(passages))
    texts = list(passages)
    if len(texts) < 2:
        raise DataError(f"{path}: fewer than two distinct passages; nothing to mine from")
    passage_vectors = _embedded(predictor, texts, "passage", progress)
    query_vectors = _embedded(predictor, [e.text for e in examples], "query", progress)
    depth = min(len(texts), skip + negatives + max(len(e.candidates or []) for e in examples))
    ranked = top_k(query_vectors, passage_vectors, depth)
    rows = 0
    with atomic_lines(Path(output)) as write:
        for example, order in zip(examples, ranked):
            label = example.label if isinstance(example.label, list) else []
            positives = {t for t, v in zip(example.candidates or [], label) if float(v) > 0}  # type: ignore[arg-type]
            found = [texts[i] for i in order if texts[i] not in positives][skip : skip + negatives]
            for positive in [t for t in example.candidates or [] if t in positives]:
                write(json.dumps({"text": example.text, "positive": positive,
                                  "negatives": found}, ensure_ascii=False))  # fmt: skip
                rows += 1
    return {"rows": rows, "queries": len(examples), "passages": len(texts), "output": str(output)}
