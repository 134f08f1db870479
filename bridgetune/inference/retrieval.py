"""A knowledge base for generative models: documents or past answers, cut into passages,
embedded with an encoder (the bundled MiniLM by default), searched per request; the best
passages go into the prompt and come back as the answer's sources.

Documents: a folder (every .txt/.md file in it, recursively), a .txt/.md file (paragraphs), or a
.jsonl/.csv file of records with `text` (a document) or `answer` (a past answer; with its
`question` when given), and optionally `source`, `title` or `id` to cite. Passages are
paragraphs joined up to `chunk_chars` characters; a longer paragraph is cut at sentence ends
(。！？ as well as .!?), so Chinese text without spaces is cut sensibly too.

Embeddings (normalized mean-pooled, as sentence-transformers' MiniLM was trained) are cached
under ~/.cache/bridgetune/knowledge by a hash of the encoder and the passages, so a restart with
the same documents does not embed them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bridgetune.data.schema import DataError

log = logging.getLogger("bridgetune")

SUFFIXES = (".txt", ".md")
# a sentence ends after CJK punctuation, or after Latin punctuation and a space ("$4.99" stays)
_SENTENCE_END = re.compile(r"(?<=[。！？；])\s*|(?<=[.!?;])\s+")


@dataclass(frozen=True)
class Passage:
    text: str
    source: str  # what to cite: file and paragraph, or the record's source/title/id


class KnowledgeBase:
    """Passages and their embeddings; `search(query)` returns the closest ones. `retriever`:
    a fine-tuned embedding model (a Predictor of `task: embedding`) that embeds the queries,
    instead of `encoder`."""

    def __init__(self, passages: list[Passage], encoder: Any, tokenizer: Any,
                 vectors: torch.Tensor, max_length: int = 256,
                 retriever: Any = None) -> None:  # fmt: skip
        self.passages = passages
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.vectors = vectors
        self.max_length = max_length
        self.retriever = retriever

    @classmethod
    def load(
        cls,
        documents: str | Path,
        encoder: str = "minilm",
        chunk_chars: int = 300,
        max_length: int = 256,
        cache: bool = True,
        retriever: str | Path | None = None,
    ) -> KnowledgeBase:
        """Read, cut and embed `documents` (see the module's docstring); with `retriever` (a
        `task: embedding` model directory) its embeddings instead of `encoder`'s, cached by
        the model's files, so a retrained retriever embeds the passages again."""
        from transformers import AutoModel

        from bridgetune.models import load_tokenizer, resolve_model

        passages = read_passages(Path(documents), chunk_chars)
        predictor, model, tokenizer = None, None, None
        if retriever is not None:
            predictor = load_retriever(retriever)
            identity: Any = ["retriever", model_fingerprint(Path(retriever))]
        else:
            path = resolve_model(encoder)
            tokenizer = load_tokenizer(path)
            model = AutoModel.from_pretrained(path).eval()
            identity = str(Path(path).resolve()) if Path(path).exists() else path
        key = hashlib.sha256(
            json.dumps([identity, max_length, [(p.text, p.source) for p in passages]]).encode()
        ).hexdigest()[:32]
        cached = _cache_dir() / f"{key}.pt"
        vectors = None
        if cache and cached.is_file():
            try:
                vectors = torch.load(cached, weights_only=True)
            except (OSError, RuntimeError):
                vectors = None
        if vectors is None or vectors.shape[0] != len(passages):
            texts = [p.text for p in passages]
            if predictor is not None:
                vectors = torch.from_numpy(predictor.embed(texts, "passage"))
            else:
                vectors = _embed(model, tokenizer, texts, max_length, True)
            if cache:
                cached.parent.mkdir(parents=True, exist_ok=True)
                temporary = cached.with_suffix(f".{os.getpid()}.tmp")
                torch.save(vectors, temporary)
                temporary.replace(cached)
        log.info("knowledge base: %d passages from %s", len(passages), documents)
        return cls(passages, model, tokenizer, vectors, max_length, predictor)

    def search(self, query: str, top_k: int = 3, min_score: float = 0.0) -> list[dict[str, Any]]:
        """The `top_k` passages closest to `query` with a cosine similarity of at least
        `min_score`, best first: {"text", "source", "score"}."""
        if not query.strip() or top_k <= 0:
            return []
        if self.retriever is not None:
            vector = torch.from_numpy(self.retriever.embed([query], "query")[0])
        else:
            vector = _embed(self.encoder, self.tokenizer, [query], self.max_length, False)[0]
        scores = self.vectors @ vector
        best = torch.topk(scores, min(top_k, len(self.passages)))
        return [
            {"text": self.passages[i].text, "source": self.passages[i].source,
             "score": round(float(s), 4)}
            for s, i in zip(best.values.tolist(), best.indices.tolist())
            if s >= min_score
        ]  # fmt: skip


def check_retriever(directory: str | Path) -> None:
    """Refuse a `serve.knowledge.model` that is no embedding model directory, before any
    model is loaded.

    Raises:
        FileNotFoundError: not a model directory.
        ValueError: a damaged one, or not of an embedding model.
    """
    from bridgetune.inference.predictor import checked_meta
    from bridgetune.tasks import TASKS

    meta = checked_meta(Path(directory))
    if not TASKS.get(meta["task"]).embeds:
        raise ValueError(
            f"knowledge.model {directory}: a {meta['task']} model; the knowledge base needs an "
            "embedding model (task: embedding), or leave knowledge.model out to use "
            "knowledge.encoder"
        )


def load_retriever(directory: str | Path) -> Any:
    """The Predictor of a fine-tuned retriever directory (`check_retriever` first)."""
    from bridgetune.inference.predictor import Predictor

    check_retriever(directory)
    return Predictor.load(directory, device="cpu")


def model_fingerprint(directory: Path) -> list[Any]:
    """What changes when a model directory is written again: its files' names, sizes and
    modification times."""
    return sorted(
        [p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in directory.iterdir() if p.is_file()
    )


def with_passages(
    messages: list[dict[str, str]], passages: list[dict[str, Any]], instruction: str
) -> list[dict[str, str]]:
    """`messages` with the passages numbered in the system turn (appended to the one the
    conversation has, else a new first turn). Passages are content like the messages: a
    control token in a document is encoded as text (bridgetune.tasks.prompts), so a document
    cannot end the system turn and write one of its own."""
    if not passages:
        return messages
    listed = "\n".join(f"[{i}] {p['text']} (source: {p['source']})"
                       for i, p in enumerate(passages, 1))  # fmt: skip
    context = f"{instruction}\n\n{listed}"
    if messages and messages[0]["role"] == "system":
        first = {"role": "system", "content": f"{messages[0]['content']}\n\n{context}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": context}, *messages]


def read_passages(path: Path, chunk_chars: int = 300) -> list[Passage]:
    """Every passage of the documents at `path` (DataError with the file and line of a bad
    record; an empty knowledge base is an error too)."""
    if not path.exists():
        raise DataError(f"{path}: no documents there (a folder, .txt/.md, .jsonl or .csv)")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES)
        passages = [p for f in files for p in _text_file(f, chunk_chars, f.relative_to(path))]
    elif path.suffix.lower() in SUFFIXES:
        passages = list(_text_file(path, chunk_chars, Path(path.name)))
    elif path.suffix.lower() in (".jsonl", ".csv"):
        passages = list(_records(path, chunk_chars))
    else:
        raise DataError(f"{path}: knowledge documents are a folder, .txt/.md, .jsonl or .csv")
    if not passages:
        raise DataError(f"{path}: no text found to search (empty files?)")
    return passages


def _text_file(path: Path, chunk_chars: int, name: Path) -> Iterator[Passage]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    for index, chunk in enumerate(_chunks(paragraphs, chunk_chars), 1):
        yield Passage(chunk, f"{name.as_posix()}#{index}")


def _records(path: Path, chunk_chars: int) -> Iterator[Passage]:
    from bridgetune.data.io import read_records

    for line, row in read_records(path, path.suffix.lower().lstrip(".")):
        text = row.get("text") or row.get("answer")
        if not isinstance(text, str) or not text.strip():
            raise DataError(
                f"{path}:{line}: a knowledge record needs `text` (a document) or `answer` (a "
                f"past answer); this one has {sorted(row)}"
            )
        if row.get("question") and not row.get("text"):
            text = f"{str(row['question']).strip()}\n{text.strip()}"
        cite = row.get("source") or row.get("title") or row.get("id") or f"{path.name}:{line}"
        for index, chunk in enumerate(_chunks([text.strip()], chunk_chars), 1):
            yield Passage(chunk, str(cite) if index == 1 else f"{cite}#{index}")


def _chunks(paragraphs: list[str], limit: int) -> Iterator[str]:
    """Paragraphs joined up to `limit` characters; a longer one cut at sentence ends (a
    sentence longer than the limit is cut at the limit)."""
    pieces: list[str] = []
    for paragraph in paragraphs:
        if len(paragraph) <= limit:
            pieces.append(paragraph)
            continue
        part = ""
        for sentence in _SENTENCE_END.split(paragraph):
            while len(sentence) > limit:
                pieces.append(sentence[:limit])
                sentence = sentence[limit:]
            # sentences of one paragraph: a space after Latin punctuation, none after CJK
            joiner = " " if part and part[-1] in ".!?;" else ""
            if part and len(part) + len(joiner) + len(sentence) > limit:
                pieces.append(part)
                part, joiner = "", ""
            part += joiner + sentence
        if part:
            pieces.append(part)
    current = ""
    for piece in pieces:
        joiner = "\n\n" if current else ""
        if current and len(current) + len(joiner) + len(piece) > limit:
            yield current
            current, joiner = "", ""
        current += joiner + piece
    if current:
        yield current


@torch.inference_mode()
def _embed(model: Any, tokenizer: Any, texts: list[str], max_length: int, progress: bool):
    from bridgetune.heads.embedding import embed_texts

    if not progress or len(texts) <= 256:
        return embed_texts(model, tokenizer, texts, max_length)
    from rich.progress import Progress

    rows = []
    with Progress(transient=True) as bar:
        job = bar.add_task("embedding the knowledge base", total=len(texts))
        for start in range(0, len(texts), 256):
            rows.append(embed_texts(model, tokenizer, texts[start : start + 256], max_length))
            bar.update(job, advance=len(rows[-1]))
    return torch.cat(rows)


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "bridgetune" / "knowledge"
