"""`bridgetune extract`: triples and a knowledge graph from raw text (NER + relation model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bridgetune.cli.common import app, console, quiet_libraries, run_action
from bridgetune.data.sentences import DEFAULT_MAX_CHARS
from bridgetune.inference.extraction import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_DISTANCE,
    DEFAULT_MIN_SCORE,
)


@app.command()
def extract(
    ner: Annotated[Path, typer.Option(help="NER model directory (task: ner).")],
    relations: Annotated[Path, typer.Option(help="Relation model directory (task: relation).")],
    file: Annotated[
        Path, typer.Option(help="Documents: .txt (one per line), .jsonl or .csv/.tsv.")
    ],
    output: Annotated[Path, typer.Option(help="Folder for triples.jsonl and the graph files.")],
    max_distance: Annotated[
        int, typer.Option(help="Most characters between the two entities of a pair.")
    ] = DEFAULT_MAX_DISTANCE,
    min_score: Annotated[
        float, typer.Option(help="Least relation score of a kept triple.")
    ] = DEFAULT_MIN_SCORE,
    batch_size: Annotated[
        int, typer.Option(help="Sentences or pairs per forward pass.")
    ] = DEFAULT_BATCH_SIZE,
    text_column: Annotated[
        str, typer.Option(help="The field of a .jsonl/.csv row that holds its text.")
    ] = "text",
    max_sentence_chars: Annotated[
        int, typer.Option(help="A longer sentence is cut into pieces of at most this.")
    ] = DEFAULT_MAX_CHARS,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda|cuda:N")] = "auto",
) -> None:
    """Find entities (--ner) and the relations between them (--relations) in every sentence of
    --file; write triples.jsonl, graph.graphml, nodes.csv/edges.csv (Neo4j import),
    summary.json/.md and graph.png into --output. Under `accelerate launch` the processes
    share the documents."""
    import bridgetune
    from bridgetune.runtime.processes import is_launch_main

    quiet_libraries()
    result = run_action(
        lambda: bridgetune.extract(
            ner, relations, file, output, max_distance=max_distance, min_score=min_score,
            batch_size=batch_size, text_column=text_column,
            max_sentence_chars=max_sentence_chars, device=device,
        )
    )  # fmt: skip
    if not is_launch_main():
        return
    print_counts(result.counts)
    hint = few_triples_hint(result.counts)
    if hint:
        console.print(f"[yellow]{hint}[/yellow]")
    console.print(f"{result.triples:,} triples written to [bold]{result.triples_path}[/bold]; "
                  f"graph files in {result.output_dir}")  # fmt: skip


def print_counts(counts: dict[str, int]) -> None:
    table = Table(title="extraction")
    table.add_column("")
    table.add_column("count", justify="right")
    for name, value in counts.items():
        table.add_row(name.replace("_", " "), f"{value:,}")
    Console().print(table)


def few_triples_hint(counts: dict[str, int]) -> str | None:
    """Why a run found no triples, when its counts tell."""
    if counts.get("triples"):
        return None
    if not counts.get("entities"):
        return "the NER model found no entities: is it trained for these texts' language?"
    if not counts.get("candidates") and counts.get("pairs_of_other_types"):
        return ("no entity pair has types the relation model saw with a relation in training: "
                "do the NER model's types match the relation model's?")  # fmt: skip
    if not counts.get("candidates") and counts.get("pairs_too_far"):
        return "every entity pair is further apart than --max-distance characters"
    if counts.get("candidates"):
        return "every pair was classified as no relation or scored below --min-score"
    return None
