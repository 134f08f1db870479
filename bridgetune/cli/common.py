"""What the command modules share: the typer app, the error shell, metric tables."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fine-tune pretrained transformers on your labelled data.",
)
console = Console(stderr=True)

Overrides = Annotated[list[str] | None, typer.Argument(help="Dotted overrides: train.lr=3e-5")]
Overwrite = Annotated[
    bool,
    typer.Option(help="Replace a finished run of the same name (kept until the new one is done)."),
]
Resume = Annotated[
    bool, typer.Option(help="Continue the run's unfinished training from its checkpoint.")
]


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def fail(error: Exception) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/bold red] {escape(str(error))}", highlight=False)
    raise typer.Exit(2)


def run_action(action):
    """Run an action, turning user-fixable errors into one readable line and exit code 2."""
    from bridgetune.config import ConfigError
    from bridgetune.data.schema import DataError
    from bridgetune.lifecycle.rundir import RunDirectoryError
    from bridgetune.models import ModelError

    try:
        return action()
    except (
        ConfigError,
        DataError,
        ModelError,
        RunDirectoryError,
        OSError,  # a full disk (DiskFull says where), a file that cannot be read or written
        ValueError,
    ) as error:
        fail(error)


def run_training(action) -> None:
    """Run a training action; print dev/test metrics, or say how to resume after Ctrl-C."""
    from bridgetune.lifecycle.reports import headline
    from bridgetune.training.loop import TrainingInterrupted

    quiet_libraries()
    try:
        result = run_action(action)
    except TrainingInterrupted as stop:
        console.print(f"[yellow]{stop}[/yellow]")
        raise typer.Exit(130) from None
    from bridgetune.runtime.processes import is_launch_main

    if not is_launch_main():  # the other processes of a launch: the first one reports
        return
    print_metrics("dev", headline(result.metrics))
    if result.test_metrics:
        print_metrics("test", headline(result.test_metrics))
    console.print(f"model saved to [bold]{result.model_dir}[/bold]; report in {result.run_dir}")


def print_metrics(split: str, metrics: dict[str, float]) -> None:
    table = Table(title=f"{split} metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    Console().print(table)


def key_value(item: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip():
        fail(ValueError(f"{option} {item!r} is not LABEL=VALUE"))
    return key.strip(), value.strip()
