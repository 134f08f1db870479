"""Training, evaluation, prediction and the data/config commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bridgetune.cli.common import (
    Overrides,
    Overwrite,
    Resume,
    app,
    console,
    fail,
    print_metrics,
    quiet_libraries,
    run_action,
    run_training,
)


@app.command()
def train(
    config: Path,
    overrides: Overrides = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Fine-tune a model as CONFIG says; writes reports and the model to the run directory."""
    import bridgetune

    run_training(
        lambda: bridgetune.train(config, overrides or [], resume=resume, overwrite=overwrite)
    )


@app.command()
def pretrain(
    config: Path,
    overrides: Overrides = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Continue masked-LM pre-training on unlabelled text (CONFIG's data; task mlm): a model
    directory any task config can name as model.name."""
    import bridgetune

    run_training(
        lambda: bridgetune.pretrain(config, overrides or [], resume=resume, overwrite=overwrite)
    )


@app.command()
def distill(
    config: Path,
    overrides: Overrides = None,
    teacher: Annotated[
        Path | None, typer.Option(help="The teacher model directory (distill.teacher).")
    ] = None,
    layers: Annotated[
        int | None,
        typer.Option(
            help="Student = the teacher cut to this many layers (distill.student_layers)."
        ),
    ] = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Train a smaller student on a teacher's soft labels mixed with CONFIG's labels (the
    config's `distill:` section); evaluates and saves it like `train`."""
    import bridgetune

    extra = [f"distill.teacher={teacher}"] if teacher is not None else []
    extra += [f"distill.student_layers={layers}"] if layers is not None else []
    run_training(
        lambda: bridgetune.distill(
            config, [*(overrides or []), *extra], resume=resume, overwrite=overwrite
        )
    )


@app.command()
def evaluate(
    model_dir: Path,
    data: Path,
    output: Annotated[Path | None, typer.Option(help="Write the report here.")] = None,
) -> None:
    """Evaluate a saved model on a labelled file; prints metrics, writes a report with --output."""
    import bridgetune
    from bridgetune.lifecycle.reports import headline

    quiet_libraries()
    metrics = run_action(lambda: bridgetune.evaluate(model_dir, data, output))
    print_metrics(str(data), headline(metrics))
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
    import bridgetune
    from bridgetune.data.io import decode_utf8, iter_lines
    from bridgetune.data.schema import Example
    from bridgetune.recipes.evaluate import read_inputs

    quiet_libraries()
    check_output(output, model_dir)
    if texts:
        inputs = [Example(text=t, text_pair=pair) for t in texts]
    elif file is not None:
        inputs = run_action(lambda: read_inputs(model_dir, file, fmt))
    elif not sys.stdin.isatty():
        text = run_action(lambda: decode_utf8(sys.stdin.buffer.read(), "stdin"))
        lines = iter_lines(text)  # every kind of line end; not splitlines(): U+2028 is text
        inputs = [Example(text=line, text_pair=pair) for line in lines if line.strip()]
    else:
        inputs = []
    if not inputs:
        fail(ValueError("no input: give texts as arguments, --file PATH, or pipe lines on stdin"))
    predictor = run_action(lambda: bridgetune.load(model_dir))
    predictions = run_action(lambda: predictor.predict(inputs, batch_size=batch_size))
    lines = [
        json.dumps(
            {
                **({"id": e.id} if e.id else {}),
                "text": e.text,
                **({"text_pair": e.text_pair} if e.text_pair else {}),
                **p,
            },
            ensure_ascii=False,
        )
        for e, p in zip(inputs, predictions)
    ]
    write_lines(lines, output, "predictions")


def check_output(output: Path | None, model_dir: Path) -> None:
    """Refuse an --output that is a folder or inside `model_dir` (`--output MODEL/config.json`
    would replace a file of the model), before any work."""
    if output is None:
        return
    if output.is_dir():
        fail(ValueError(f"--output {output} is a folder; give the path of a JSONL file"))
    if output.resolve().is_relative_to(model_dir.resolve()):
        fail(ValueError(f"--output {output} is inside the model directory {model_dir}; write "
                        "the results somewhere else"))  # fmt: skip


def write_lines(lines: list[str], output: Path | None, what: str) -> None:
    """JSONL lines to stdout, or atomically to `output` (check_output) with a summary."""
    if output is None:
        typer.echo("\n".join(lines))
        return
    from bridgetune.lifecycle.atomic import atomic_write_text

    run_action(lambda: atomic_write_text(output, "\n".join(lines) + "\n"))
    console.print(f"{len(lines)} {what} written to {output}")


@app.command()
def generate(
    model_dir: Path,
    prompts: Annotated[list[str] | None, typer.Argument(help="Prompts.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(help="JSONL of prompts (prompt, messages or instruction rows), or TXT."),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Write JSONL here (default stdout).")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Most tokens generated per prompt (default: the model's).")
    ] = None,
    sample: Annotated[
        bool | None,
        typer.Option("--sample/--greedy", help="Sample or decode greedily (default: the model's)"),
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass.")] = None,
    beams: Annotated[int | None, typer.Option(help="Beam search width (1: none).")] = None,
    repetition_penalty: Annotated[
        float | None, typer.Option(help=">1 discourages repeats.")
    ] = None,
    batch_size: int = 8,
) -> None:
    """Generate text with a causal_lm or seq2seq model: prompts as arguments or --file; writes
    JSONL. Decoding defaults to the model's generation config (the run's `generate:` section)."""
    import bridgetune
    from bridgetune.modeldir import read_meta, saved_task_options
    from bridgetune.recipes.evaluate import read_inputs
    from bridgetune.tasks.prompts import fill_template

    quiet_libraries()
    check_output(output, model_dir)
    if prompts:  # as rows of the training data: the run's task.prompt_template applies
        meta = run_action(lambda: read_meta(model_dir))
        template = saved_task_options(meta).get("prompt_template")
        inputs: list = [fill_template(template, p) for p in prompts]
    elif file is not None:
        inputs = run_action(lambda: [prompt_of(e) for e in read_inputs(model_dir, file)])
    else:
        inputs = []
    if not inputs:
        fail(ValueError("no prompt: give prompts as arguments or --file PATH"))
    decoding = {"do_sample": sample, "num_beams": beams}
    for key, value in (
        ("temperature", temperature), ("top_p", top_p), ("repetition_penalty", repetition_penalty)
    ):  # fmt: skip
        if value is not None:
            decoding[key] = value
    predictor = run_action(lambda: bridgetune.load(model_dir))
    chunks = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
    generated = []
    with Progress(*Progress.get_default_columns(), console=Console(stderr=True),
                  disable=len(chunks) < 2) as progress:  # fmt: skip
        task = progress.add_task("generating", total=len(inputs))
        for chunk in chunks:
            generated += run_action(
                lambda chunk=chunk: predictor.generate(
                    chunk, batch_size=batch_size, max_new_tokens=max_new_tokens, **decoding
                )
            )
            progress.advance(task, len(chunk))
    lines = [
        json.dumps({"prompt": prompt, **result}, ensure_ascii=False)
        for prompt, result in zip(inputs, generated)
    ]
    write_lines(lines, output, "generations")


@app.command()
def chat(
    model_dir: Path,
    system: Annotated[str | None, typer.Option(help="A system message to start with.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 256,
    sample: Annotated[
        bool | None,
        typer.Option("--sample/--greedy", help="Sample or decode greedily (default: the model's)"),
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
) -> None:
    """Chat with a causal_lm model in the terminal; answers stream as they are generated.
    The conversation is kept (its oldest turns dropped when it outgrows the model's
    max_length); /reset starts over, /exit or Ctrl-D ends."""
    import bridgetune

    quiet_libraries()
    predictor = run_action(lambda: bridgetune.load(model_dir))
    run_action(predictor._check_generative)
    decoding = {"do_sample": sample}
    if temperature is not None:
        decoding["temperature"] = temperature
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    console.print(f"[dim]{model_dir}: /reset starts over, /exit ends[/dim]")
    while True:
        try:
            line = input("you> ")
        except EOFError:
            break
        if line.strip() in ("/exit", "/quit"):
            break
        if line.strip() == "/reset":
            history = list(start)
            continue
        if not line.strip():
            continue
        history = predictor.fit_history(
            [*history, {"role": "user", "content": line}], room=max_new_tokens
        )
        typer.echo("bot> ", nl=False)
        pieces = []
        for piece in predictor.stream(history, max_new_tokens=max_new_tokens, **decoding):
            pieces.append(piece)
            typer.echo(piece, nl=False)
        typer.echo("")
        history.append({"role": "assistant", "content": "".join(pieces).strip()})


def prompt_of(example) -> str | list[dict[str, str]]:
    """What to generate from for an input row: its conversation up to the last assistant turn
    (a messages row), else its prompt."""
    target = example.label if isinstance(example.label, dict) else {}
    messages = target.get("messages")
    if not messages:
        return example.text
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    return messages[:last] if last else messages


@app.command()
def rank(
    model_dir: Path,
    query: Annotated[str, typer.Option(help="The query, or a user's profile text.")],
    candidates: Annotated[
        Path, typer.Option(help="Candidate texts: TXT (one per line), or CSV/TSV/JSONL.")
    ],
    column: Annotated[str, typer.Option(help="Candidate text column of CSV/TSV/JSONL.")] = "text",
    top_k: Annotated[int | None, typer.Option(help="Show only the best K.")] = None,
    output: Annotated[Path | None, typer.Option(help="Write JSONL here (default stdout).")] = None,
) -> None:
    """Rank candidate texts against a query with a ranking model; JSONL, best first."""
    import bridgetune

    quiet_libraries()
    check_output(output, model_dir)
    texts = run_action(lambda: read_candidates(candidates, column))
    if not texts:
        fail(ValueError(f"{candidates}: no candidates in the file"))
    ranked = run_action(lambda: bridgetune.rank(model_dir, query, texts, top_k))
    lines = [
        json.dumps({"rank": i + 1, **entry}, ensure_ascii=False) for i, entry in enumerate(ranked)
    ]
    write_lines(lines, output, "ranked candidates")


def read_candidates(path: Path, column: str) -> list[str]:
    """Candidate texts of a TXT file (a line each) or of `column` in CSV/TSV/JSONL rows."""
    from bridgetune.data.io import column as named
    from bridgetune.data.io import detect_format, iter_lines, read_records, read_text

    if path.suffix.lower() in (".txt", ".text"):
        return [line.strip() for line in iter_lines(read_text(path)) if line.strip()]
    fmt = detect_format(path, "auto", tagged=False)
    return [str(named(row, column, path, number)) for number, row in read_records(path, fmt)]


@app.command("validate-data")
def validate_data(config: Path, overrides: Overrides = None) -> None:
    """Check the data of CONFIG before training: counts, labels, duplicates, overlap, lengths."""
    import bridgetune

    quiet_libraries()
    report = run_action(lambda: bridgetune.validate_data(config, overrides or []))
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
    if names:  # generative data has no labels
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
    """Preview CONFIG's augmentation without training: original, copy and the op that made it."""
    import bridgetune

    quiet_libraries()
    rows = run_action(lambda: bridgetune.augment_preview(config, overrides or [], show))
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

    import bridgetune
    from bridgetune.recipes.reference import reference_rows

    if schema or config is None:
        table = Table(title="bridgetune config keys")
        for column in ("key", "default", "description"):
            table.add_column(column)
        for key, default, description in reference_rows():
            table.add_row(key, default, description)
        Console(width=160).print(table)
        return
    cfg = run_action(lambda: bridgetune.as_config(config, overrides or []))
    typer.echo(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
