"""Exported models run by another runtime than PyTorch (`bridgetune export`): the Predictor,
the CLI and the service run them through the same `infer` as a PyTorch model.

`OnnxModel` (onnxruntime) and `OpenVinoModel` (OpenVINO) are modules with the call interface of
our models (`model(**tensors).logits`) around a runtime's session: the tensors the task collates
go in (those the graph takes), the logits the graph computes come out as a torch tensor, and
the task decodes them exactly as it decodes PyTorch's (CRF Viterbi, QA span search, rules stay
in Python around the runtime). Threads: the session takes torch's thread count when it is
created (the service sets it from the cores and workers before it loads a model), one thread
between operators (onnxruntime) or one stream (OpenVINO's latency mode, fp32 wherever the graph
is not int8: its bf16 default would change the outputs the parity check proved).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bridgetune.heads import HeadOutput
from bridgetune.modeldir import CONFIG_FILE, RUNTIME_FILES


class RuntimeConfig:
    """The parts of a transformers config the inference path reads (hidden size, labels)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


class RuntimeModel(torch.nn.Module):
    """What every runtime's model shares: the graph's inputs taken from the task's batch by
    name, the logits back as a torch tensor. Subclasses set `inputs` and `run(feeds)`."""

    inputs: list[str]

    def __init__(self, path: Path, config: Any = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.config = config

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def forward(self, **tensors: torch.Tensor) -> HeadOutput:
        missing = [name for name in self.inputs if name not in tensors]
        if missing:
            raise ValueError(
                f"{self.path}: the graph takes {', '.join(missing)}, which this task's batches "
                "do not have: the directory was exported for another task or tokenizer"
            )
        feeds = {name: tensors[name].detach().cpu().numpy() for name in self.inputs}
        return HeadOutput(torch.from_numpy(np.ascontiguousarray(self.run(feeds))))


class OnnxModel(RuntimeModel):
    """An onnxruntime session with the call interface of a bridgetune model."""

    def __init__(self, path: Path, threads: int | None = None, config: Any = None) -> None:
        super().__init__(path, config)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: no per-session graph notes
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [item.name for item in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feeds)[0]


class OpenVinoModel(RuntimeModel):
    """An OpenVINO compiled model (IR: model.xml + model.bin) with the call interface of a
    bridgetune model; one inference at a time (its request is reused)."""

    def __init__(self, path: Path, threads: int | None = None, config: Any = None) -> None:
        super().__init__(path, config)
        import openvino as ov

        self.compiled = ov.Core().compile_model(
            str(path),
            "CPU",
            {
                "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
                "INFERENCE_PRECISION_HINT": "f32",
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        self.request = self.compiled.create_infer_request()
        self.inputs = [item.get_any_name() for item in self.compiled.inputs]
        self.lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self.lock:
            result = self.request.infer(feeds)
            return np.array(result[self.compiled.output(0)])  # a copy: the buffer is reused


RUNTIMES = {"onnx": OnnxModel, "openvino": OpenVinoModel}


def load_runtime(directory: Path, runtime: dict[str, Any]) -> torch.nn.Module:
    """The runtime model of an exported directory (bridgetune.json "runtime")."""
    import json

    config_path = Path(directory) / CONFIG_FILE
    config = None
    if config_path.is_file():
        config = RuntimeConfig(json.loads(config_path.read_text(encoding="utf-8")))
    model = RUNTIMES[runtime["name"]]
    return model(Path(directory) / RUNTIME_FILES[runtime["name"]], config=config)
