"""`bridgetune extract`: raw text to triples to a knowledge graph, with an NER model and a
relation model.

Documents stream in chunks (bridgetune.data.documents): each chunk is split into sentences,
its entities found and their pairs classified by the one per-sentence core the service shares
(bridgetune.inference.extraction), and its triples appended to triples.jsonl. The graph files
(bridgetune.knowledge.graph) are built from triples.jsonl at the end. Under `accelerate launch`
each process takes every n-th document and writes its own part; the first process merges the
parts in document order once all are done, then builds the graph. Every file is written
atomically: a crash leaves the previous outputs, never half of new ones.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridgetune.data.documents import DocumentSource
from bridgetune.data.schema import DataError
from bridgetune.data.sentences import DEFAULT_MAX_CHARS
from bridgetune.inference.extraction import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_DISTANCE,
    DEFAULT_MIN_SCORE,
    ExtractionCounts,
    ExtractionSettings,
    check_models,
    extract_documents,
)
from bridgetune.inference.predictor import Predictor
from bridgetune.knowledge.graph import FILES as GRAPH_FILES
from bridgetune.knowledge.graph import KnowledgeGraph, write_graph_files
from bridgetune.lifecycle.atomic import atomic_lines
from bridgetune.runtime.processes import processes

TRIPLES_FILE = "triples.jsonl"
CHUNK_DOCUMENTS = 64  # documents read, split and predicted together
PLAIN_INTERVAL_S = 30


@dataclass
class ExtractResult:
    """What `extract` wrote: the files by kind (triples, graphml, nodes, edges, summary,
    summary_md, plot) and the counts of the run (documents, sentences, entities, candidates,
    triples, ...; nodes and edges of the graph)."""

    output_dir: Path
    files: dict[str, Path]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def triples_path(self) -> Path:
        return self.files["triples"]

    @property
    def triples(self) -> int:
        return self.counts.get("triples", 0)


def extract(
    ner_model: str | Path | Predictor,
    relation_model: str | Path | Predictor,
    inputs: str | Path | Sequence[str],
    output_dir: str | Path,
    *,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    min_score: float = DEFAULT_MIN_SCORE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    text_column: str = "text",
    max_sentence_chars: int = DEFAULT_MAX_CHARS,
    device: str = "auto",
    progress: bool = True,
) -> ExtractResult:
    """Triples and a knowledge graph from documents, written into `output_dir`.

    Args:
        ner_model: an NER model directory (task: ner), or its loaded Predictor.
        relation_model: a relation model directory (task: relation), or its Predictor.
        inputs: a .txt file (a document per line), a .jsonl/.csv/.tsv file with a
            `text_column`, or a list of texts.
        output_dir: where triples.jsonl and the graph files go (other files there stay).
        max_distance: most characters between the two mentions of a candidate pair.
        min_score: least relation score of a kept triple.
        batch_size: sentences (NER) and pairs (relations) per forward pass.
        text_column: the field of a .jsonl/.csv row that holds its text.
        max_sentence_chars: a longer sentence is cut into pieces of at most this.
        device: auto|cpu|cuda|cuda:N (under accelerate launch: each process's own).
        progress: show a progress bar (the first process only).

    Raises:
        DataError: a missing or unreadable input file (file and line), or no text at all.
        ValueError: a model of the wrong kind (which one), a setting out of range, an
            output_dir that is a file or inside a model directory.
    """
    settings = ExtractionSettings(max_distance, min_score, batch_size, max_sentence_chars)
    source = DocumentSource(inputs, text_column)
    if source.known_empty:  # before any model is loaded
        raise DataError(f"{source.name}: no text in any document; give documents to read")
    output_dir = checked_output(Path(output_dir), [ner_model, relation_model])
    rank, world, device = launch(device)
    ner, relations = _loaded(ner_model, device), _loaded(relation_model, device)
    check_models(ner, relations)
    counts = ExtractionCounts()
    part = output_dir / (TRIPLES_FILE if world == 1 else f".triples.part-{rank}-of-{world}.jsonl")
    with atomic_lines(part) as write, _progress(source, progress and rank == 0) as shown:
        for chunk, done in chunks(source, rank, world):
            for triple in extract_documents(ner, relations, chunk, settings, counts):
                write(json.dumps(triple, ensure_ascii=False))
            shown(done, counts)
        if not source.texts_read:  # every process reads the whole input: they agree
            raise DataError(f"{source.name}: no text in any document; give documents to read")
    return _finish(output_dir, counts, rank, world, ner, relations, settings)


def launch(device: str) -> tuple[int, int, str]:
    """(rank, processes, device) of this process: under accelerate launch / torchrun the
    process group is set up (accelerate's PartialState) and each process gets its device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, device
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    rank, world = processes()
    return rank, world, str(state.device)


def checked_output(output_dir: Path, models: list[Any]) -> Path:
    """`output_dir`, refused when it is a file or inside one of the model directories."""
    if output_dir.is_file():
        raise ValueError(f"the output {output_dir} is a file; give the folder to write into")
    for model in models:
        directory = getattr(model, "directory", None) if isinstance(model, Predictor) else model
        if directory is not None and output_dir.resolve().is_relative_to(Path(directory).resolve()):
            raise ValueError(
                f"the output {output_dir} is inside the model directory {directory}; write "
                "the graph somewhere else"
            )
    output_dir.mkdir(parents=True, exist_ok=True)
    return output_dir


def chunks(
    source: DocumentSource, rank: int, world: int, size: int = CHUNK_DOCUMENTS
) -> Iterator[tuple[list[tuple[int, str]], int]]:
    """(this process's next documents as (number, text), how much of the input is read): every
    `world`-th document from `rank`, `size` at a time."""
    chunk: list[tuple[int, str]] = []
    done = 0
    for number, text, done in source:
        if number % world == rank:
            chunk.append((number, text))
        if len(chunk) >= size:
            yield chunk, done
            chunk = []
    yield chunk, done


@contextlib.contextmanager
def _progress(source: DocumentSource, enabled: bool) -> Iterator[Callable[..., None]]:
    """`show(done, counts)`: the bar over the input read (bytes of a file, texts of a list);
    where stderr is no terminal (logs of a batch job), a line every PLAIN_INTERVAL_S instead."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    plain = enabled and not console.is_terminal
    columns = ("[bold]extracting", BarColumn(), TextColumn("{task.fields[documents]} documents"),
               TextColumn("{task.fields[triples]} triples"), TimeElapsedColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console, disable=not enabled) as bar:
        task = bar.add_task("extracting", total=max(1, source.total), documents=0, triples=0)
        last = [time.monotonic()]

        def show(done: int, counts: ExtractionCounts) -> None:
            bar.update(task, completed=done, documents=f"{counts.documents:,}",
                       triples=f"{counts.triples:,}")  # fmt: skip
            if plain and time.monotonic() - last[0] > PLAIN_INTERVAL_S:
                last[0] = time.monotonic()
                share = 100 * done / max(1, source.total)
                console.print(
                    f"extracting: {counts.documents:,} documents, {counts.triples:,} triples, "
                    f"{share:.0f}% of {source.name} read"
                )

        yield show


def _loaded(model: str | Path | Predictor, device: str) -> Predictor:
    return model if isinstance(model, Predictor) else Predictor.load(model, device=device)


def _finish(
    output_dir: Path,
    counts: ExtractionCounts,
    rank: int,
    world: int,
    ner: Predictor,
    relations: Predictor,
    settings: ExtractionSettings,
) -> ExtractResult:
    """The parts merged (a launch), the graph built from triples.jsonl, the result."""
    totals = _all_counts(counts, world)
    triples = output_dir / TRIPLES_FILE
    files = {"triples": triples}
    if rank == 0:
        if world > 1:
            merge_parts(output_dir, world, triples)
        graph = KnowledgeGraph().add_all(read_triples(triples))
        extra = {**totals, "ner_model": str(ner.directory or ""),
                 "relation_model": str(relations.directory or ""),
                 "settings": settings.__dict__}  # fmt: skip
        files.update(write_graph_files(graph, output_dir, extra))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # the graph is written before any process returns
    summary = json.loads((output_dir / "summary.json").read_text("utf-8"))
    files.update({kind: output_dir / name for kind, name in GRAPH_FILES.items()})
    return ExtractResult(output_dir, files, {**totals, "nodes": summary["nodes"],
                                             "edges": summary["edges"]})  # fmt: skip


def _all_counts(counts: ExtractionCounts, world: int) -> dict[str, int]:
    """The counts of every process summed (a launch gathers them: also its barrier)."""
    if world == 1:
        return counts.as_dict()
    import torch.distributed as dist

    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, counts.as_dict())
    return {key: sum(part[key] for part in parts) for key in parts[0]}


def merge_parts(output_dir: Path, world: int, target: Path) -> None:
    """The processes' part files merged into `target` in document order, then removed."""
    parts = [output_dir / f".triples.part-{rank}-of-{world}.jsonl" for rank in range(world)]
    with contextlib.ExitStack() as stack:
        streams = [stack.enter_context(path.open(encoding="utf-8")) for path in parts]
        keyed = [((json.loads(line)["doc"], line) for line in stream) for stream in streams]
        with atomic_lines(target) as write:
            for _, line in heapq.merge(*keyed, key=lambda item: item[0]):
                write(line.rstrip("\n"))
    for path in output_dir.glob(".triples.part-*-of-*.jsonl"):  # also a killed launch's parts
        path.unlink(missing_ok=True)


def read_triples(path: Path) -> Iterator[dict[str, Any]]:
    """The triples of a triples.jsonl, one at a time."""
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)
