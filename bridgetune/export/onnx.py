"""A model to an ONNX graph, and the graph to int8 (onnxruntime dynamic quantization).

The graph is the whole model call the Predictor makes: the tensors a task collates in (input
ids, attention mask, token types, and what a head adds: gazetteer features ...), the logits out
(a CRF's transition rows, a QA model's start/end pair, an embedding model's pooled vectors, as
PyTorch returns them), so the task's decoding runs unchanged around the runtime. Exported with
torch.export (`torch.onnx.export(dynamo=True)`: the TorchScript exporter is deprecated and
prints a page of warnings) from a batch of at least two examples of different lengths, with the
batch and sequence axes of every input dynamic: a graph traced at one size and run at another
is one of the exports' known silent failures, and the parity check runs other sizes.

int8: `onnxruntime.quantization.quantize_dynamic`: weights of the matrix products (and the
embedding table) stored as int8, activations quantized per batch at run time; `per_channel`
scales each output channel of a weight on its own (slower to build, sometimes closer).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from bridgetune.heads import output_logits


class GraphCall(torch.nn.Module):
    """`model(**inputs)` with positional inputs in `names`' order and the logits as output."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return output_logits(self.model(**dict(zip(self.names, tensors))))


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """torch.onnx's progress lines, its notes on torchvision ops it skips, and the deprecation
    notes transformers' modules raise while traced: nothing a user can act on."""
    names = ("torch.onnx", "torch.export", "onnxscript", None)  # None: onnxruntime.quantization's
    loggers = [logging.getLogger(name) for name in names]  # advice goes to the root logger
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_onnx(model: torch.nn.Module, sample: dict[str, torch.Tensor], path: Path) -> list[str]:
    """Write `model`'s call on `sample` (a collated batch) to `path` as ONNX with dynamic batch
    and sequence axes; the graph's input names (inputs the model ignores are left out).

    Raises:
        ValueError: `sample` has fewer than two rows (a size-1 axis would be fixed at 1).
    """
    names = list(sample)
    first = sample[names[0]]
    if first.shape[0] < 2 or first.dim() < 2 or first.shape[1] < 2:
        raise ValueError("an ONNX export needs a sample batch of at least 2 rows of 2 tokens")
    dynamic = {
        name: {axis: torch.export.Dim.DYNAMIC for axis in range(min(tensor.dim(), 2))}
        for name, tensor in sample.items()
    }
    model = model.eval()
    with torch.no_grad(), quiet_export():
        try:
            program = torch.onnx.export(
                GraphCall(model, names).eval(),
                tuple(sample[name] for name in names),
                input_names=names,
                output_names=["logits"],
                dynamic_shapes=(tuple(dynamic[name] for name in names),),
                dynamo=True,
                verbose=False,
                optimize=True,
            )
        except Exception as error:  # noqa: BLE001 - torch.export's and the translation's errors
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ValueError(
                f"the model ({type(model).__name__}) cannot be exported to ONNX: {reason[:300]}; "
                "report it with this line (the PyTorch model directory serves as it is)"
            ) from error
        program.save(str(path))
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [item.name for item in graph.input]


def head_products(path: Path, count: int) -> list[str]:
    """The names of the graph's last `count` matrix products (the task head's layers: the
    layers a parity check most often asks to keep in fp32)."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    return [n.name for n in nodes if n.op_type in ("MatMul", "Gemm")][-count:] if count else []


def quantize_int8(
    source: Path, target: Path, per_channel: bool = False, fp32_nodes: list[str] | None = None
) -> None:
    """`source`'s matrix-product weights as int8 in `target` (dynamic quantization), but for
    the nodes named in `fp32_nodes`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_export():
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            nodes_to_exclude=fp32_nodes or [],
        )
