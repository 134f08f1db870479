"""`bridgetune export`: a model directory to ONNX or OpenVINO (optionally int8), after a parity
check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bridgetune.cli.common import app, console, quiet_libraries, run_action


@app.command()
def export(
    model_dir: Path,
    format: Annotated[
        str, typer.Option("--format", help="onnx (onnxruntime) or openvino.")
    ] = "onnx",
    quantize: Annotated[
        str | None,
        typer.Option(help="int8: onnxruntime's dynamic or (openvino) NNCF's static quantization."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="The exported directory (default: beside MODEL_DIR).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Parity-check data: labelled (as evaluate reads) or a .txt of texts "
            "(default: the run's dev file)."
        ),  # fmt: skip
    ] = None,
    max_examples: Annotated[int, typer.Option(help="Examples the parity check runs.")] = 500,
    min_agreement: Annotated[
        float, typer.Option(help="Refuse the export when fewer predictions agree (0-1).")
    ] = 0.99,
    per_channel: Annotated[
        bool, typer.Option(help="onnx int8: scales per output channel.")
    ] = False,
) -> None:
    """Export a model for a lighter runtime (ONNX, OpenVINO, int8), proven by a parity check against
    the PyTorch model on real data; refused, writing nothing, when they disagree."""
    import bridgetune

    quiet_libraries()
    with console.status(f"exporting {model_dir} and checking parity"):
        result = run_action(lambda: bridgetune.export_model(
            model_dir, format, quantize, output, data, max_examples, min_agreement, per_channel
        ))  # fmt: skip
    parity = result.parity
    table = Table(title=f"parity on {parity['examples']} examples of {parity['data']}")
    table.add_column("")
    table.add_column("PyTorch", justify="right")
    table.add_column(f"{format}{' ' + quantize if quantize else ''}", justify="right")
    if "metric" in parity:
        shown = [parity["metric_pytorch"], parity["metric_exported"]]
        table.add_row(parity["metric"], *(f"{v:.4f}" if isinstance(v, float) else str(v)
                                          for v in shown))  # fmt: skip
    speed = parity["texts_per_second"]
    table.add_row("texts/s (batches of 32)", f"{speed['pytorch']:.1f}", f"{speed['exported']:.1f}")
    for name in ("latency_ms_p50", "latency_ms_p99"):
        row = parity[name]
        table.add_row(
            f"{name[11:]} ms, one text", f"{row['pytorch']:.2f}", f"{row['exported']:.2f}"
        )
    console.print(table)
    console.print(
        f"agreement {parity['agreement']:.2%} ({parity['disagreements']} differ), largest logit "
        f"difference {parity['max_logit_difference']:.3g}, mean "
        f"{parity['mean_logit_difference']:.3g}\nwritten: {result.directory}"
    )
