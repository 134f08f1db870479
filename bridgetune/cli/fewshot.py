"""Few-shot and zero-shot commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridgetune.cli.common import (
    Overrides,
    Overwrite,
    app,
    console,
    key_value,
    print_metrics,
    quiet_libraries,
    run_action,
    run_training,
)


@app.command()
def fewshot(
    config: Path,
    overrides: Overrides = None,
    overwrite: Overwrite = False,
) -> None:
    """Few-shot training as CONFIG's `fewshot` section says (contrastive or prompt-based)."""
    from bridgetune.recipes.fewshot import fewshot as run_fewshot

    run_training(lambda: run_fewshot(config, overrides or [], overwrite=overwrite))


@app.command()
def zeroshot(
    labels: Annotated[str, typer.Option(help="Comma-separated labels: positive,negative.")],
    output: Annotated[Path, typer.Option(help="Model directory to write.")],
    method: Annotated[str, typer.Option(help="embedding | nli | prompt")] = "embedding",
    model: Annotated[
        str, typer.Option(help="minilm (embedding), an NLI model (nli), a masked LM (prompt).")
    ] = "minilm",
    description: Annotated[
        list[str] | None,
        typer.Option(help="LABEL=TEXT: what a label means (embedding; repeatable)."),
    ] = None,
    hypothesis: Annotated[
        str, typer.Option(help="NLI hypothesis with {label}.")
    ] = "This text is about {label}.",
    template: Annotated[str, typer.Option(help="Prompt template with {text} and {mask}.")] = (
        "{text} It was {mask}."
    ),
    verbalizer: Annotated[
        list[str] | None, typer.Option(help="LABEL=word1,word2 (prompt; repeatable).")
    ] = None,
    multilabel: Annotated[bool, typer.Option(help="Independent labels (nli).")] = False,
    max_length: int = 128,
    text_column: Annotated[str, typer.Option(help="Text column of files to predict.")] = "text",
    label_column: Annotated[str, typer.Option(help="Label column of files.")] = "label",
    evaluate: Annotated[
        Path | None, typer.Option(help="Labelled file to evaluate the new model on.")
    ] = None,
) -> None:
    """Build a classifier with no training data: label descriptions, NLI or a prompt."""
    import bridgetune
    from bridgetune.lifecycle.reports import headline
    from bridgetune.recipes.zeroshot import zeroshot as build

    quiet_libraries()
    names = [label.strip() for label in labels.split(",") if label.strip()]
    descriptions = dict(key_value(item, "--description") for item in description or [])
    words = {
        label: [w.strip() for w in value.split(",") if w.strip()]
        for label, value in (key_value(item, "--verbalizer") for item in verbalizer or [])
    }
    directory = run_action(
        lambda: build(
            names,
            output,
            model=model,
            method=method,
            descriptions=descriptions or None,
            multilabel=multilabel,
            hypothesis_template=hypothesis,
            template=template,
            verbalizer=words or None,
            max_length=max_length,
            text_column=text_column,
            label_column=label_column,
        )
    )
    console.print(f"zero-shot model saved to [bold]{directory}[/bold]")
    if evaluate is not None:
        metrics = run_action(lambda: bridgetune.evaluate(directory, evaluate))
        print_metrics(str(evaluate), headline(metrics))
