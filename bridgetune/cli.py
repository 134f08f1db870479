"""The `bridgetune` command line: each command is a thin shell over bridgetune.api."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
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


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _fail(error: Exception) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/bold red] {escape(str(error))}", highlight=False)
    raise typer.Exit(2)


def _run(action):
    """Run an action, turning user-fixable errors into one readable line and exit code 2."""
    from bridgetune.config import ConfigError
    from bridgetune.data.schema import DataError
    from bridgetune.models import ModelError

    try:
        return action()
    except (ConfigError, DataError, ModelError, FileNotFoundError, ValueError) as error:
        _fail(error)


@app.command()
def train(
    config: Path,
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = False,
) -> None:
    """Fine-tune a model as CONFIG says; writes reports and the model to the run directory."""
    from bridgetune import api

    _run_training(lambda: api.train(config, overrides or [], resume=resume))


def _run_training(action) -> None:
    """Run a training action; print dev/test metrics, or say how to resume after Ctrl-C."""
    from bridgetune.evaluate import headline
    from bridgetune.training.loop import TrainingInterrupted

    _quiet_libraries()
    try:
        result = _run(action)
    except TrainingInterrupted as stop:
        console.print(f"[yellow]{stop}[/yellow]")
        raise typer.Exit(130) from None
    _print_metrics("dev", headline(result.metrics))
    if result.test_metrics:
        _print_metrics("test", headline(result.test_metrics))
    console.print(f"model saved to [bold]{result.model_dir}[/bold]; report in {result.run_dir}")


def _print_metrics(split: str, metrics: dict[str, float]) -> None:
    table = Table(title=f"{split} metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    Console().print(table)


@app.command()
def fewshot(
    config: Path,
    overrides: Overrides = None,
) -> None:
    """Few-shot training as CONFIG's `fewshot` section says (contrastive or prompt-based)."""
    from bridgetune.fewshot import fewshot as run_fewshot

    _run_training(lambda: run_fewshot(config, overrides or []))


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
    from bridgetune import api
    from bridgetune.evaluate import headline
    from bridgetune.zeroshot import zeroshot as build

    _quiet_libraries()
    names = [label.strip() for label in labels.split(",") if label.strip()]
    descriptions = dict(_key_value(item, "--description") for item in description or [])
    words = {
        label: [w.strip() for w in value.split(",") if w.strip()]
        for label, value in (_key_value(item, "--verbalizer") for item in verbalizer or [])
    }
    directory = _run(
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
        metrics = _run(lambda: api.evaluate(directory, evaluate))
        _print_metrics(str(evaluate), headline(metrics))


def _key_value(item: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip():
        _fail(ValueError(f"{option} {item!r} is not LABEL=VALUE"))
    return key.strip(), value.strip()


@app.command()
def evaluate(
    model_dir: Path,
    data: Path,
    output: Annotated[Path | None, typer.Option(help="Write the report here.")] = None,
) -> None:
    """Evaluate a saved model on a labelled file; prints metrics, writes a report with --output."""
    from bridgetune import api
    from bridgetune.evaluate import headline

    _quiet_libraries()
    metrics = _run(lambda: api.evaluate(model_dir, data, output))
    _print_metrics(str(data), headline(metrics))
    typer.echo(json.dumps(headline(metrics)))


@app.command()
def predict(
    model_dir: Path,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[
        Path | None, typer.Option(help="TXT (a text per line), CSV, TSV, JSONL.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto|txt|csv|tsv|jsonl|conll")] = "auto",
    output: Annotated[Path | None, typer.Option(help="Write JSONL here (default stdout).")] = None,
    pair: Annotated[str | None, typer.Option(help="Second text for pair models.")] = None,
    batch_size: int = 64,
) -> None:
    """Predict with a saved model: texts as arguments, --file, or lines on stdin; writes JSONL."""
    from bridgetune import api
    from bridgetune.data.schema import Example

    _quiet_libraries()
    if texts:
        inputs = [Example(text=t, text_pair=pair) for t in texts]
    elif file is not None:
        inputs = _run(lambda: api.read_inputs(model_dir, file, fmt))
    elif not sys.stdin.isatty():
        inputs = [
            Example(text=line.rstrip("\n"), text_pair=pair) for line in sys.stdin if line.strip()
        ]
    else:
        inputs = []
    if not inputs:
        _fail(ValueError("no input: give texts as arguments, --file PATH, or pipe lines on stdin"))
    predictor = _run(lambda: api.load(model_dir))
    predictions = _run(lambda: predictor.predict(inputs, batch_size=batch_size))
    lines = [
        json.dumps(
            {"text": e.text, **({"text_pair": e.text_pair} if e.text_pair else {}), **p},
            ensure_ascii=False,
        )
        for e, p in zip(inputs, predictions)
    ]
    if output is None:
        typer.echo("\n".join(lines))
    else:
        from bridgetune.atomic import atomic_write_text

        atomic_write_text(output, "\n".join(lines) + "\n")
        console.print(f"{len(lines)} predictions written to {output}")


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
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    overrides: Overrides = None,
) -> None:
    """Serve a model directory over HTTP: /v1/predict, /v1/feedback, /metrics, playground at /."""
    from bridgetune.config import load_serve_config
    from bridgetune.predictor import read_meta

    _quiet_libraries()
    _run(lambda: read_meta(model_dir))
    options = {
        "host": host,
        "port": port,
        "workers": workers,
        "api_keys": api_key,
        "admin_keys": admin_key,
        "feedback_db": str(feedback_db) if feedback_db else None,
    }
    extra = [f"{key}={json.dumps(value)}" for key, value in options.items() if value]
    cfg = _run(lambda: load_serve_config(config, [*(overrides or []), *extra]))
    from bridgetune.monitor import check_labels

    _run(lambda: check_labels(cfg.monitor, read_meta(model_dir)["labels"]))
    from bridgetune.serve.run import run_server

    run_server(model_dir, cfg, access_log=access_log)


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
    from bridgetune import api

    count = _run(lambda: api.export_feedback(database, output, since, model_version))
    console.print(f"{count} feedback rows written to [bold]{output}[/bold]")


@app.command("validate-data")
def validate_data(config: Path, overrides: Overrides = None) -> None:
    """Check the data of CONFIG before training: counts, labels, duplicates, overlap, lengths."""
    from bridgetune import api

    _quiet_libraries()
    report = _run(lambda: api.validate_data(config, overrides or []))
    out = Console()
    table = Table(title=f"data of {config}")
    for column in (
        "split",
        "examples",
        "duplicates",
        "tokens mean",
        "p95",
        "max",
        f"> max_length {report['max_length']}",
    ):
        table.add_column(column, justify="right")
    for name, stats in report["splits"].items():
        tokens = stats["tokens"]
        table.add_row(
            name,
            str(stats["examples"]),
            str(stats["duplicates"]),
            f"{tokens['mean']:.1f}",
            str(tokens["p95"]),
            str(tokens["max"]),
            str(stats["truncated"]),
        )
    out.print(table)
    labels = Table(title="label distribution")
    labels.add_column("label")
    for name in report["splits"]:
        labels.add_column(name, justify="right")
    names = list(report["splits"]["train"]["labels"])
    for label in names:
        labels.add_row(label, *[str(s["labels"].get(label, 0)) for s in report["splits"].values()])
    out.print(labels)
    out.print(f"dev examples also in train: {report['dev_in_train']}")
    if "test_in_train" in report:
        out.print(f"test examples also in train: {report['test_in_train']}")


@app.command()
def augment(
    config: Path,
    overrides: Overrides = None,
    show: Annotated[int, typer.Option(help="How many augmented examples to show.")] = 10,
) -> None:
    """Preview the augmentation of CONFIG's training split (augment section): original,
    augmented copy and the op that made it, without training."""
    from bridgetune import api

    _quiet_libraries()
    rows = _run(lambda: api.augment_preview(config, overrides or [], show))
    table = Table(title=f"augmented training examples of {config}", show_lines=True)
    for column in ("op", "original", "augmented"):
        table.add_column(column)
    for original, augmented, op in rows:
        table.add_row(op, _shown(original), _shown(augmented))
    Console().print(table)
    if not rows:
        console.print("no example could be augmented with these ops (see docs/augmentation.md)")


def _shown(example) -> str:
    """Text (NER: words with their non-O tags) of an example, as the preview shows it."""
    if example.tags is None:
        return (
            example.text if example.text_pair is None else f"{example.text} || {example.text_pair}"
        )
    return " ".join(w if t == "O" else f"{w}/{t}" for w, t in zip(example.tokens, example.tags))


@app.command("config")
def show_config(
    config: Annotated[Path | None, typer.Argument(help="A config to validate and print.")] = None,
    overrides: Overrides = None,
    schema: Annotated[bool, typer.Option(help="List every config key.")] = False,
) -> None:
    """Print every config key with its default and description, or a validated config."""
    import yaml

    from bridgetune.config import load_config, schema_lines

    if schema or config is None:
        table = Table(title="bridgetune config keys")
        for column in ("key", "default", "description"):
            table.add_column(column)
        for key, default, description in schema_lines():
            table.add_row(key, default, description)
        Console(width=160).print(table)
        return
    cfg = _run(lambda: load_config(config, overrides or []))
    typer.echo(yaml.safe_dump(cfg.model_dump(), sort_keys=False))


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
    from bridgetune import api
    from bridgetune.config import load_serve_config

    _quiet_libraries()
    overrides = _monitor_overrides(
        max_share_shift, label_share_max, min_confidence, min_samples, webhook
    )
    serve = _run(lambda: load_serve_config(config, overrides))
    report = _run(lambda: api.monitor(model_dir, input_path, output, window, serve.monitor))
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
            _fail(ValueError(f"--label-share-max {item!r} is not LABEL=SHARE (negative=0.4)"))
        overrides.append(f"monitor.label_share_max.{label.strip()}={share.strip()}")
    return overrides


def _print_windows(report: dict) -> None:
    from bridgetune.monitor_report import readable_time

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


if __name__ == "__main__":
    app()
