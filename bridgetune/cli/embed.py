"""`bridgetune embed` (texts to vectors) and `bridgetune mine-negatives` (hard negatives for a
training file) with an embedding model (`task: embedding`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bridgetune.cli.common import app, console, fail, quiet_libraries, run_action

Role = Annotated[
    str, typer.Option(help="query|passage: the prefix the model was trained with for each.")
]


@app.command()
def embed(
    model_dir: Path,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed.")] = None,
    file: Annotated[
        Path | None, typer.Option(help="TXT (a text per line), or CSV/TSV/JSONL (--column).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="A .npy matrix, or JSONL (default: JSONL on stdout).")
    ] = None,
    column: Annotated[str, typer.Option(help="Text column of CSV/TSV/JSONL.")] = "text",
    role: Role = "query",
) -> None:
    """Embed texts with an embedding model: one vector per text, as .npy or JSONL."""
    import bridgetune
    from bridgetune.cli.core import check_output

    quiet_libraries()
    check_output(output, model_dir)
    if file is None and not texts:
        fail(ValueError("no input: give texts as arguments, or --file PATH"))
    if file is not None:
        if output is None:
            fail(ValueError("--file needs --output (a .npy or .jsonl file)"))
        count = run_action(lambda: bridgetune.embed_file(model_dir, file, output, role, column,
                                                         progress=True))  # fmt: skip
        console.print(f"{count:,} embeddings written to {output}")
        return
    vectors = run_action(lambda: bridgetune.embed(model_dir, texts or [], role))
    if output is not None:
        from bridgetune.recipes.embed import write_vectors

        run_action(lambda: write_vectors(output, texts or [], vectors))
        console.print(f"{len(vectors):,} embeddings written to {output}")
        return
    lines = [json.dumps({"text": t, "embedding": v.tolist()}, ensure_ascii=False)
             for t, v in zip(texts or [], vectors)]  # fmt: skip
    typer.echo("\n".join(lines))


@app.command("mine-negatives")
def mine_negatives(
    model_dir: Path,
    data: Annotated[Path, typer.Option(help="Training rows: query + positive (CSV/TSV/JSONL).")],
    output: Annotated[Path, typer.Option(help="JSONL rows {text, positive, negatives}.")],
    negatives: Annotated[int, typer.Option(help="Hard negatives per query.")] = 1,
    skip: Annotated[
        int,
        typer.Option(help="Leave out the closest N non-positives (often unlabelled positives)."),
    ] = 0,
    corpus: Annotated[
        Path | None, typer.Option(help="More passages to mine from (TXT lines or CSV/JSONL text).")
    ] = None,
    text_column: Annotated[str, typer.Option(help="The query column.")] = "text",
    positive_column: Annotated[str, typer.Option(help="The positive passage column.")] = "positive",
) -> None:
    """Hard negatives for a training file from an embedding model's own ranking: the passages
    it ranks highest for a query that are not its positives."""
    from bridgetune.recipes.embed import mine_negatives as mine

    quiet_libraries()
    if negatives < 1:
        fail(ValueError("--negatives must be at least 1"))
    columns = {"text_column": text_column, "text_pair_column": positive_column}
    result = run_action(lambda: mine(model_dir, data, output, negatives, skip, corpus, columns,
                                     progress=True))  # fmt: skip
    console.print(
        f"{result['rows']:,} rows ({result['queries']:,} queries, mined among "
        f"{result['passages']:,} passages) written to {output}"
    )
