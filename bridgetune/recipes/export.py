"""`export_model` (`bridgetune export`; the package face cannot call it `export`, the name of
the export layer's package): a model directory to a lighter runtime (ONNX with onnxruntime,
optionally dynamic int8; OpenVINO, optionally static int8 calibrated by NNCF),
proven by a parity check on real data before the exported directory is written
(bridgetune.export.parity).

The exported directory is a model directory: the tokenizer, config.json, the task's files
(gazetteers, ...) and bridgetune.json with a "runtime" entry (runtime, graph file, quantization,
the source directory, the parity results), the graph beside them, parity.json. It is written
to a temporary directory and renamed into place only when the check passes: a refused export
leaves nothing behind (and an earlier export where it was).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridgetune._version import __version__
from bridgetune.data.batching import LOSS_KEYS, feature_length
from bridgetune.data.io import read_file
from bridgetune.data.schema import Example
from bridgetune.export.model_dir import check_replaceable
from bridgetune.export.onnx import export_onnx, head_products, quantize_int8
from bridgetune.export.openvino import (
    CALIBRATION_EXAMPLES,
    calibration_samples,
    convert,
    quantize_static,
)
from bridgetune.export.parity import ParityError, check_parity
from bridgetune.inference.predictor import Predictor
from bridgetune.inference.runtimes import RUNTIMES
from bridgetune.lifecycle.atomic import atomic_directory
from bridgetune.modeldir import PARITY_FILE, RUNTIME_FILES, copy_for_runtime, saved_task_options
from bridgetune.recipes.evaluate import read_inputs, saved_data_config
from bridgetune.tasks import reader_of

FORMATS = ("onnx", "openvino")
QUANTIZATIONS = ("int8",)
# what each format imports, and the extra that installs it
REQUIRES = {
    "onnx": (("onnx", "onnxscript", "onnxruntime"), "export"),
    "openvino": (("onnx", "onnxscript", "openvino", "nncf"), "openvino"),
}
HEAD_LAYERS = 2  # matrix products at the graph's end kept in fp32 by the last int8 attempt
RUN_CONFIG = "config.yaml"  # a run directory's config, beside its model directory


@dataclass
class ExportResult:
    """An exported model directory and the parity check that let it be written."""

    directory: Path
    parity: dict[str, Any]


def parity_data(model_dir: Path, data: str | Path | None) -> tuple[Path, bool]:
    """The file the parity check reads, and whether it is labelled: `data`, or the dev file of
    the run the model directory belongs to.

    Raises:
        ValueError: no file given and none recorded with the model.
    """
    if data is not None:
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file for the parity check (--data)")
        return path, path.suffix.lower() not in (".txt", ".text")
    config = model_dir.parent / RUN_CONFIG
    if config.is_file():
        import yaml

        dev = ((yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("data") or {}).get(
            "dev"
        )
        if dev and Path(dev).is_file():
            return Path(dev), True
    raise ValueError(
        f"{model_dir}: no dev file recorded with the model (its run's {RUN_CONFIG} names none "
        "that exists); give the data the parity check runs on: --data FILE (labelled, as for "
        "evaluate, or a .txt with a text per line)"
    )


def read_parity_examples(model_dir: Path, path: Path, labelled: bool, limit: int) -> list[Example]:
    meta = json.loads((model_dir / "bridgetune.json").read_text(encoding="utf-8"))
    if labelled:
        cfg = saved_data_config(meta, str(path))
        examples = read_file(path, cfg, reader_of(meta["task"], saved_task_options(meta)))
    else:
        examples = read_inputs(model_dir, path)
    if not examples:
        raise ValueError(f"{path}: no examples for the parity check")
    return examples[:limit]


def export_model(
    model_dir: str | Path,
    format: str = "onnx",
    quantize: str | None = None,
    output: str | Path | None = None,
    data: str | Path | None = None,
    max_examples: int = 500,
    min_agreement: float = 0.99,
    per_channel: bool = False,
) -> ExportResult:
    """Export `model_dir` to `format` ("onnx": onnxruntime; "openvino") into `output`
    (default: beside it, `<name>-<format>` or `<name>-<format>-int8`), after the parity check
    on `data` (default: the run's dev file; the first `max_examples`) passes `min_agreement`.
    `quantize="int8"`: onnxruntime's dynamic quantization (ONNX) or NNCF's static
    quantization calibrated on the first examples of `data` (OpenVINO). int8 tries
    per-channel scales (ONNX), then the task head's last layers in fp32, when the settings
    asked for do not pass (`quantization_ladder`); parity.json lists every attempt.

    Raises:
        ValueError: an unknown format, a model that cannot be exported (generative, already
            exported), no parity data, or a ParityError: agreement under `min_agreement`.
    """
    if format not in FORMATS:
        raise ValueError(f"format {format!r}: choose one of {', '.join(FORMATS)}")
    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"quantize {quantize!r}: choose {', '.join(QUANTIZATIONS)} or none")
    if per_channel and format != "onnx":
        raise ValueError(
            "per_channel is onnxruntime's int8 option; OpenVINO's static int8 scales weights "
            "per channel already"
        )
    if not 0.0 <= min_agreement <= 1.0:
        raise ValueError(f"min_agreement {min_agreement}: a share between 0 and 1")
    check_installed(format)
    model_dir = Path(model_dir)
    predictor = Predictor.load(model_dir, device="cpu")
    task = predictor.task
    if predictor.meta.get("runtime"):
        source = predictor.meta["runtime"].get("source")
        raise ValueError(f"{model_dir} is an export already; export its source ({source})")
    if task.generative:
        raise ValueError(
            f"{model_dir}: a {task.name} model generates text; ONNX export covers the encoder "
            "tasks. A generative model's deployable form is its merged transformers directory"
        )
    target = check_replaceable(
        Path(output) if output else model_dir.with_name(f"{model_dir.name}-{format}"
                                                       + (f"-{quantize}" if quantize else ""))
    )  # fmt: skip
    if target.resolve() == model_dir.resolve():
        raise ValueError(f"--output {target} is the model directory itself; choose a new folder")
    path, labelled = parity_data(model_dir, data)
    examples = read_parity_examples(model_dir, path, labelled, max_examples)
    features = task.encode(examples, predictor.tokenizer, predictor.max_length)
    pad_id = predictor.tokenizer.pad_token_id
    model = predictor.model.float().eval()
    graph = RUNTIME_FILES[format]
    with atomic_directory(target) as staging:
        fp32 = staging / "model.fp32.onnx"
        inputs = export_onnx(model, trace_sample(task, features, pad_id), fp32)
        cache: dict[str, Any] = {}  # the PyTorch side of the check, run once
        attempts: list[dict[str, Any]] = []
        static = format == "openvino" and quantize
        samples = (calibration_samples(task, features, pad_id, inputs, CALIBRATION_EXAMPLES)
                   if static else [])  # fmt: skip
        for attempt in quantization_ladder(quantize, per_channel, format):
            fp32_nodes = head_products(fp32, attempt.get("fp32_head_layers", 0))
            if static:
                quantize_static(fp32, staging / graph, samples, fp32_nodes)
            elif format == "openvino":
                convert(fp32, staging / graph)
            elif quantize:
                quantize_int8(fp32, staging / graph, attempt["per_channel"], fp32_nodes)
            else:
                shutil.copyfile(fp32, staging / graph)
            exported = RUNTIMES[format](staging / graph)
            parity = check_parity(model, exported, task, features, examples, pad_id, labelled,
                                  cache=cache)  # fmt: skip
            del exported  # its session holds the graph's files open
            attempts.append({**attempt, "agreement": parity["agreement"]})
            if parity["agreement"] >= min_agreement:
                break
        else:
            tried = "; ".join(f"{describe(a)}: {a['agreement']:.2%}" for a in attempts)
            raise ParityError(
                f"the {format}{' int8' if quantize else ''} export of {model_dir} agrees with "
                f"the PyTorch model on {parity['agreement']:.2%} of {parity['examples']} "
                f"examples of {path} (floor {min_agreement:.2%}; tried {tried}; largest logit "
                f"difference {parity['max_logit_difference']:.4g}); nothing was written. "
                + ("Export without --quantize, or lower --min-agreement knowingly"
                   if quantize else "Report this model's architecture as a bug")
            )  # fmt: skip
        fp32.unlink()
        parity.update(data=str(path), min_agreement=min_agreement, attempts=attempts)
        runtime = {
            "name": format,
            "file": graph,
            "inputs": inputs,
            "quantization": quantize,
            "scheme": ("static" if format == "openvino" else "dynamic") if quantize else None,
            "calibration_examples": len(samples) or None,
            "per_channel": attempts[-1].get("per_channel"),
            "fp32_head_layers": attempts[-1].get("fp32_head_layers"),
            "source": str(model_dir.resolve()),
            "exported_by": __version__,
            "parity": {k: v for k, v in parity.items() if not isinstance(v, (dict, list))},
        }
        copy_for_runtime(model_dir, staging, runtime)
        (staging / PARITY_FILE).write_text(json.dumps(parity, indent=2), encoding="utf-8")
    return ExportResult(target, parity)


def check_installed(format: str) -> None:
    """The packages `format` needs are importable.

    Raises:
        ValueError: one is missing; the message names the extra that installs them.
    """
    import importlib.util

    modules, extra = REQUIRES[format]
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(
            f"the {format} export needs {', '.join(missing)}: pip install 'bridgetune[{extra}]'"
        )


def quantization_ladder(
    quantize: str | None, per_channel: bool, format: str = "onnx"
) -> list[dict[str, Any]]:
    """The int8 settings tried in turn until one passes the parity floor: as asked, then
    per-channel scales, then per-channel with the task head's two last layers in fp32
    (OpenVINO's static int8: as calibrated, then with the head's two last layers in fp32)."""
    if not quantize:
        return [{}]
    if format == "openvino":
        return [{"static": True, "fp32_head_layers": 0},
                {"static": True, "fp32_head_layers": HEAD_LAYERS}]  # fmt: skip
    ladder = [{"per_channel": per_channel, "fp32_head_layers": 0}]
    if not per_channel:
        ladder.append({"per_channel": True, "fp32_head_layers": 0})
    ladder.append({"per_channel": True, "fp32_head_layers": HEAD_LAYERS})
    return ladder


def describe(attempt: dict[str, Any]) -> str:
    if "static" in attempt:
        parts = ["static int8"]
    elif "per_channel" not in attempt:
        return "fp32"
    else:
        parts = ["int8 per channel" if attempt["per_channel"] else "int8 per tensor"]
    if attempt["fp32_head_layers"]:
        parts.append(f"the last {attempt['fp32_head_layers']} layers in fp32")
    return ", ".join(parts)


def trace_sample(task: Any, features: list[dict], pad_id: int) -> dict[str, Any]:
    """The batch the graph is traced on: the longest feature and the shortest, so no axis is
    1 and the padding mask is not all ones (features * 2 when there is only one)."""
    ordered = sorted(features, key=feature_length)
    traced = [ordered[0], ordered[-1]] if len(ordered) >= 2 else ordered * 2
    return {k: v for k, v in task.collate(traced, pad_id).items() if k not in LOSS_KEYS}
