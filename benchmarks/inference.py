"""Inference on CPU: PyTorch fp32 and bf16 against the exports (ONNX, OpenVINO; fp32, int8).

Trains (or takes, `--model`) a model from a shipped config (`--dataset sst2`: the SST-2
classifier, metric accuracy; `conll`: CoNLL-2003 NER, entity F1), exports it with
`bridgetune export` (ONNX fp32, ONNX int8, ONNX int8 per channel, OpenVINO fp32, OpenVINO static
int8 calibrated by NNCF when openvino is installed; each with its parity check, recorded, not
enforced here) and measures every variant in one run on the dev sentences:
texts/s in length-sorted batches of 32 (the Predictor's path), the median and 99th-percentile
latency of one text, the dev metric and the size on disk. bf16 is measured only where the
processor computes it natively (AMX / AVX512-BF16: bridgetune.runtime.hardware).

Prints a table and ONE JSON object on its last line: {"benchmark": "inference", "variants":
{name: {texts_per_second_b32, latency_ms_p50_b1, latency_ms_p99_b1, metric, size_mb}},
"metric": its name, "speedup": best int8 texts/s over PyTorch fp32 at batch 32,
"accuracy_drop": fp32 metric minus that int8 model's, "speedup_over_bf16"}.

    python benchmarks/inference.py --quick            # 1,000 training sentences, 300 dev, ~4 min
    python benchmarks/inference.py --output inference.json
    python benchmarks/inference.py --model runs/sst2/model
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LATENCY_TEXTS = 200
DATASETS = {  # config, folder, dev file, training rows by default
    "sst2": ("sst2.yaml", "sst2", "dev.tsv", 8000),
    "conll": ("conll2003.yaml", "conll2003", "dev.txt", 4000),
}


def size_mb(directory: Path) -> float:
    files = [p for p in directory.iterdir() if p.suffix in (".onnx", ".safetensors", ".bin")]
    return round(sum(p.stat().st_size for p in files) / 1e6, 1)


def measure(model, task, features, examples, pad_id, precision: str, repeats: int) -> dict:
    import numpy as np
    import torch

    from bridgetune.data.batching import LOSS_KEYS
    from bridgetune.inference.predictor import autocast_for, infer

    device = torch.device("cpu")
    infer(model, task, features[:64], examples[:64], pad_id, device, 32, precision)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        predictions = infer(model, task, features, examples, pad_id, device, 32, precision)
        best = min(best, time.perf_counter() - started)
    seconds = []
    with torch.inference_mode(), autocast_for(device, precision):
        for feature in features[:LATENCY_TEXTS]:
            batch = {k: v for k, v in task.collate([feature], pad_id).items() if k not in LOSS_KEYS}
            started = time.perf_counter()
            model(**batch)
            seconds.append(time.perf_counter() - started)
    metrics = task.metrics(predictions, examples)
    return {
        "texts_per_second_b32": round(len(features) / best, 1),
        "latency_ms_p50_b1": round(1000 * float(np.median(seconds)), 2),
        "latency_ms_p99_b1": round(1000 * float(np.quantile(seconds, 0.99)), 2),
        "metric": round(metrics[task.default_metric], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="sst2")
    parser.add_argument("--model", help="a trained model directory (default: train one)")
    parser.add_argument("--train_examples", type=int, help="default: 8,000 (sst2), 4,000 (conll)")
    parser.add_argument("--quick", action="store_true", help="1,000 training sentences, 300 dev")
    parser.add_argument("--repeats", type=int, default=3, help="batch-32 passes (best kept)")
    parser.add_argument("--threads", type=int, help="torch, onnxruntime and OpenVINO threads")
    parser.add_argument("--output_dir", default="/tmp/bridgetune-inference-benchmark")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args()
    config, folder, dev_name, default_rows = DATASETS[args.dataset]
    folder = Path(args.data) / folder
    dev_file = folder / dev_name
    if not dev_file.is_file():
        print(f"{dev_file} not found: skipped")
        print(json.dumps({"benchmark": "inference", "skipped": str(folder)}))
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import bridgetune
    from bridgetune.inference.predictor import Predictor
    from bridgetune.recipes.export import read_parity_examples
    from bridgetune.runtime.hardware import cpu_bf16

    out = Path(args.output_dir)
    dev_limit = 300 if args.quick else 100_000
    if args.model:
        model_dir = Path(args.model)
    else:
        train = 1000 if args.quick else args.train_examples or default_rows
        train_file = next(p for p in sorted(folder.iterdir()) if p.name.startswith("train"))
        started = time.perf_counter()
        model_dir = bridgetune.train(
            ROOT / "examples" / "configs" / config,
            [f"output_dir={out}", f"data.train={train_file}", f"data.dev={dev_file}",
             f"data.max_train_examples={train}", "train.epochs=1", "train.eval_steps=100000"],
            overwrite=True,
        ).model_dir  # fmt: skip
        print(f"trained on {train:,} examples in {time.perf_counter() - started:.0f} s")
    exports = {
        "onnx_fp32": {},
        "onnx_int8": {"quantize": "int8"},
        "onnx_int8_per_channel": {"quantize": "int8", "per_channel": True},
    }
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"):
        exports["openvino_fp32"] = {"format": "openvino"}
        exports["openvino_int8"] = {"format": "openvino", "quantize": "int8"}
    parity = {}
    directories = {"pytorch_fp32": model_dir}
    for name, options in exports.items():
        result = bridgetune.export_model(
            model_dir, output=out / name, data=dev_file, max_examples=dev_limit,
            min_agreement=0.0, **options,
        )  # fmt: skip
        directories[name] = result.directory
        parity[name] = {k: result.parity[k] for k in
                        ("agreement", "max_logit_difference", "mean_logit_difference")}  # fmt: skip
    examples = read_parity_examples(model_dir, dev_file, True, dev_limit)
    variants: dict[str, dict] = {}
    runs = [("pytorch_fp32", "pytorch_fp32", "fp32")]
    if cpu_bf16():
        runs.append(("pytorch_bf16", "pytorch_fp32", "bf16"))
    runs += [(name, name, "fp32") for name in exports]
    for name, directory, precision in runs:
        predictor = Predictor.load(directories[directory], device="cpu")
        features = predictor.task.encode(examples, predictor.tokenizer, predictor.max_length)
        pad_id = predictor.tokenizer.pad_token_id
        variants[name] = measure(predictor.model, predictor.task, features, examples, pad_id,
                                 precision, args.repeats)  # fmt: skip
        variants[name]["size_mb"] = size_mb(directories[directory])
        variants[name].update(parity.get(name, {}))
        print(name, variants[name], flush=True)
    print(f"\n{'variant':24s}{'texts/s b32':>12s}{'p50 ms b1':>11s}{'p99 ms b1':>11s}"
          f"{'metric':>10s}{'MB':>8s}")  # fmt: skip
    for name, row in variants.items():
        print(f"{name:24s}{row['texts_per_second_b32']:12.1f}"
              f"{row['latency_ms_p50_b1']:11.2f}{row['latency_ms_p99_b1']:11.2f}"
              f"{row['metric']:10.4f}{row['size_mb']:8.1f}")  # fmt: skip
    int8 = max((n for n in variants if "int8" in n),
               key=lambda n: variants[n]["texts_per_second_b32"])  # fmt: skip
    base = variants["pytorch_fp32"]
    summary = {
        "benchmark": "inference",
        "dataset": args.dataset,
        "model": str(model_dir),
        "metric": predictor.task.default_metric,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "cpu_bf16": cpu_bf16(),
        "quick": args.quick,
        "dev_examples": len(examples),
        "load_average": os.getloadavg()[0],
        "variants": variants,
        "best_int8": int8,
        "speedup": round(variants[int8]["texts_per_second_b32"] / base["texts_per_second_b32"], 2),
        "accuracy_drop": round(base["metric"] - variants[int8]["metric"], 4),
    }
    if "pytorch_bf16" in variants:
        summary["speedup_over_bf16"] = round(
            variants[int8]["texts_per_second_b32"]
            / variants["pytorch_bf16"]["texts_per_second_b32"],
            2,
        )
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
