"""Serving, the feedback store and drift monitoring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bridgetune.cli.common import Overrides, app, console, fail, quiet_libraries, run_action


@app.command()
def serve(
    model_dir: Path,
    config: Annotated[
        Path | None, typer.Option(help="Serve config YAML (keys: docs/config.md).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(help="Server processes.")] = None,
    api_key: Annotated[
        list[str] | None, typer.Option(help="Key accepted for predict/feedback (repeatable).")
    ] = None,
    admin_key: Annotated[
        list[str] | None, typer.Option(help="Key for /admin endpoints (repeatable).")
    ] = None,
    feedback_db: Annotated[Path | None, typer.Option(help="SQLite file of feedback.")] = None,
    ner: Annotated[
        Path | None,
        typer.Option(help="NER model beside a relation model: POST /v1/extract (triples)."),
    ] = None,
    retriever: Annotated[
        Path | None,
        typer.Option(help="A fine-tuned retriever (task: embedding) for the knowledge base."),
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    overrides: Overrides = None,
) -> None:
    """Serve a model directory over HTTP: /v1/predict, /v1/feedback, /metrics, playground at /;
    with --ner beside a relation model, /v1/extract (docs/relation_extraction.md).

    A directory that breaks the model-directory contract is refused before the server starts;
    a model that still fails to load stops the server (exit code 2, with the reason).
    """
    from bridgetune.config import load_serve_config
    from bridgetune.inference.predictor import checked_meta

    quiet_libraries()
    meta = run_action(lambda: checked_meta(model_dir))
    options = {
        "host": host,
        "port": port,
        "workers": workers,
        "api_keys": api_key,
        "admin_keys": admin_key,
        "feedback_db": str(feedback_db) if feedback_db else None,
        "extract_ner": str(ner) if ner else None,
        "knowledge.model": str(retriever) if retriever else None,
    }
    extra = [f"{key}={json.dumps(value)}" for key, value in options.items() if value]
    cfg = run_action(lambda: load_serve_config(config, [*(overrides or []), *extra]))
    from bridgetune.lifecycle.monitor import check_labels

    run_action(lambda: check_labels(cfg.monitor, meta["labels"]))
    if cfg.extract_ner:  # both models of their kinds, before the server starts
        from bridgetune.serve.extract import check_extract_models

        run_action(lambda: check_extract_models(cfg.extract_ner, meta, model_dir))
    if cfg.knowledge.documents:  # bad documents stop here, with their file and line
        from bridgetune.inference.retrieval import check_retriever, read_passages

        knowledge = cfg.knowledge
        run_action(lambda: read_passages(Path(knowledge.documents), knowledge.chunk_chars))
        if knowledge.model:  # a retriever of the wrong kind stops here too
            run_action(lambda: check_retriever(knowledge.model))
    from bridgetune.serve.service import open_store

    run_action(lambda: open_store(cfg, model_dir))  # a CSV given as --feedback-db stops here
    from bridgetune.serve.run import ServeError, run_server

    try:
        run_server(model_dir, cfg, access_log=access_log)
    except ServeError as error:
        fail(error)


feedback_app = typer.Typer(no_args_is_help=True, help="Feedback collected by `serve`.")
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("export")
def feedback_export(
    database: Annotated[Path, typer.Argument(help="The SQLite feedback file.")],
    output: Annotated[Path, typer.Option(help="Dataset to write (.csv, .jsonl, .conll).")],
    since: Annotated[
        str | None, typer.Option(help="Only rows created at or after this ISO time.")
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Only rows answered by this model version.")
    ] = None,
) -> None:
    """Write stored corrections as a dataset `bridgetune train` accepts (CSV, JSONL or CoNLL)."""
    import bridgetune

    count = run_action(lambda: bridgetune.export_feedback(database, output, since, model_version))
    console.print(f"{count} feedback rows written to [bold]{output}[/bold]")


@app.command()
def monitor(
    model_dir: Path,
    input_path: Annotated[
        Path, typer.Option("--input", help="JSONL stream: text, timestamp (+ text_pair).")
    ],
    output: Annotated[Path, typer.Option(help="Report directory.")] = Path("monitor-report"),
    window: Annotated[str, typer.Option(help="Window length: 90s, 30m, 1h, 1d.")] = "1h",
    config: Annotated[
        Path | None, typer.Option(help="Serve config YAML; its monitor section applies.")
    ] = None,
    max_share_shift: Annotated[
        float | None, typer.Option(help="Alert when a share moves this far from training.")
    ] = None,
    label_share_max: Annotated[
        list[str] | None,
        typer.Option(help="LABEL=SHARE: alert when LABEL's share exceeds SHARE (repeatable)."),
    ] = None,
    min_confidence: Annotated[
        float | None, typer.Option(help="Alert when mean confidence falls below this.")
    ] = None,
    min_samples: Annotated[
        int | None, typer.Option(help="Predictions a window needs before it can alert.")
    ] = None,
    webhook: Annotated[str | None, typer.Option(help="POST each alert as JSON here.")] = None,
    fail_on_alert: Annotated[
        bool, typer.Option(help="Exit with code 1 when any window is flagged (cron).")
    ] = False,
) -> None:
    """Check a timestamped stream for drift: label shares per time window against training.

    Writes monitor_report.json, monitor_report.md and label_shares.png into --output.
    """
    import bridgetune
    from bridgetune.config import load_serve_config

    quiet_libraries()
    overrides = _monitor_overrides(
        max_share_shift, label_share_max, min_confidence, min_samples, webhook
    )
    serve = run_action(lambda: load_serve_config(config, overrides))
    report = run_action(
        lambda: bridgetune.monitor(model_dir, input_path, output, window, serve.monitor)
    )
    _print_windows(report)
    flagged = report["flagged_windows"]
    console.print(
        f"{flagged} of {len(report['windows'])} windows flagged; report in [bold]{output}[/bold]"
    )
    if flagged and fail_on_alert:
        console.print("[bold red]alerts fired[/bold red]")
        raise typer.Exit(1)
    if flagged:
        console.print("[yellow]alerts fired[/yellow] (exit code 0; --fail-on-alert exits 1)")


def _monitor_overrides(
    max_share_shift: float | None,
    label_share_max: list[str] | None,
    min_confidence: float | None,
    min_samples: int | None,
    webhook: str | None,
) -> list[str]:
    """Dotted `monitor.*` overrides of a serve config from the monitor command's options."""
    values = {
        "max_share_shift": max_share_shift,
        "min_mean_confidence": min_confidence,
        "min_samples": min_samples,
        "webhook_url": json.dumps(webhook) if webhook else None,  # quoted: YAML reads values
    }
    overrides = [f"monitor.{key}={value}" for key, value in values.items() if value is not None]
    for item in label_share_max or []:
        label, _, share = item.rpartition("=")
        if not label.strip() or not share.strip():
            fail(ValueError(f"--label-share-max {item!r} is not LABEL=SHARE (negative=0.4)"))
        overrides.append(f"monitor.label_share_max.{label.strip()}={share.strip()}")
    return overrides


def _print_windows(report: dict) -> None:
    from bridgetune.lifecycle.monitor_report import readable_time

    labels = list(report["windows"][0]["shares"])
    table = Table(title=f"label shares per {report['window']} window")
    table.add_column("window start (UTC)")
    table.add_column("count", justify="right")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("confidence", justify="right")
    table.add_column("flag")
    expected = report["expected"]
    table.add_row("training", "", *[_fraction(expected.get(x)) for x in labels], "", "")
    for window in report["windows"]:
        table.add_row(
            readable_time(window["start"]),
            str(window["count"]),
            *[_fraction(window["shares"].get(x)) for x in labels],
            _fraction(window["mean_confidence"]),
            "[bold red]ALERT[/bold red]" if window["flagged"] else "",
        )
    Console().print(table)


def _fraction(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"
