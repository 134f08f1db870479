"""An ONNX graph (bridgetune.export.onnx) to OpenVINO's IR, in fp32 or statically quantized to
int8 by NNCF on real batches.

Static int8 (`nncf.quantize`, the transformer preset): the weights and the activations of the
matrix products in int8 with scales calibrated once on real examples (the parity data), so no
activation is quantized at run time. On a 2-core AVX512-VNNI CPU this ran SST-2's MiniLM at
710 texts/s against onnxruntime's dynamic int8 at 418 and PyTorch fp32 at 214
(docs/benchmarks.md). The IR is `model.xml` (the graph) and `model.bin` (its weights), saved
uncompressed (fp32 stays fp32; int8 weights are int8).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CALIBRATION_EXAMPLES = 300  # nncf's default subset size; one example per calibration item


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """nncf's progress bars, its statistics notes and its warnings about layers it skips:
    nothing a user can act on (the parity check reports what matters)."""
    os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")  # nothing leaves the machine
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), open(os.devnull, "w") as sink:
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(sink):
                yield
    finally:
        logger.setLevel(level)


def convert(onnx_path: Path, target: Path) -> None:
    """The ONNX graph as OpenVINO IR (`target` = model.xml, with model.bin beside it), fp32."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(target), compress_to_fp16=False)


def quantize_static(
    onnx_path: Path,
    target: Path,
    samples: list[dict[str, np.ndarray]],
    fp32_nodes: list[str] | None = None,
) -> None:
    """The ONNX graph as OpenVINO IR with int8 weights and activations (NNCF post-training
    quantization, transformer preset), calibrated on `samples` (feeds of one example each);
    `fp32_nodes`: matrix products kept in fp32 (the task head's last layers)."""
    import nncf
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    ignored = nncf.IgnoredScope(names=fp32_nodes, validate=False) if fp32_nodes else None
    with quiet_nncf():
        nncf.set_log_level(logging.ERROR)
        quantized = nncf.quantize(
            model,
            nncf.Dataset(samples),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(samples),
            **({"ignored_scope": ignored} if ignored else {}),
        )
    ov.save_model(quantized, str(target), compress_to_fp16=False)


def calibration_samples(
    task: Any, features: list[dict], pad_id: int, inputs: list[str], count: int
) -> list[dict[str, np.ndarray]]:
    """The first `count` features as single-example feeds of the graph's `inputs`."""
    samples = []
    for feature in features[:count]:
        batch = task.collate([feature], pad_id)
        samples.append({name: batch[name].numpy() for name in inputs})
    return samples
