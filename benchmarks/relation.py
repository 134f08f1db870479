"""Relation classification: the entity-start head against [CLS]-only pooling, same run otherwise.

Trains `task: relation` twice from the shipped config of a dataset, once with the head over the
two entity-start markers (`task.pooling: entity_start`, R-BERT / Matching the Blanks) and once
over [CLS] alone (`task.pooling: cls`, the markers still in the text): what reading the
markers' states buys. The peer for the official score is the published figure (R-BERT with
BERT-base, 89.25 macro-F1 on SemEval-2010 Task 8's test set). Datasets:
- `semeval` (examples/configs/semeval2010_task8.yaml): dev carved from the 8,000 training
  sentences; the official score is the task's scorer v1.2 (bridgetune.tasks.metrics);
- `finre` (examples/configs/finre.yaml): Chinese financial news, train / valid.

Prints a table and ONE JSON object on its last line: {"benchmark": "relation", "dataset",
"model", "device", "runs": {pooling: {macro_f1, micro_f1, accuracy, seconds, ...}},
"markers_gain": entity_start - cls (macro_f1)}.

    python benchmarks/relation.py --quick                          # 1,600 sentences, 1 epoch
    python benchmarks/relation.py --dataset semeval --output semeval.json
    python benchmarks/relation.py --dataset finre --pooling entity_start   # multilingual-e5
    python benchmarks/relation.py --dataset finre --model minilm --set model.prune_vocab=null
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {"semeval": "semeval2010_task8.yaml", "finre": "finre.yaml"}
FILES = {"semeval": "semeval2010_task8/train.tsv", "finre": "finre/train.txt"}
METRICS = ("macro_f1", "micro_f1", "macro_f1_directed", "accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--dataset", choices=sorted(CONFIGS), default="semeval")
    parser.add_argument("--model", help="model.name (default: the config's)")
    parser.add_argument("--pooling", action="append", choices=["entity_start", "cls"],
                        help="run only these (default: both)")  # fmt: skip
    parser.add_argument("--epochs", type=int, help="train.epochs (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="more config overrides (e.g. model.prune_vocab=null)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="1,600 train rows, 1 epoch")
    parser.add_argument("--threads", type=int, help="torch threads (a busy machine)")
    parser.add_argument("--output_dir", default="/tmp/bridgetune-relation-benchmark")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / FILES[args.dataset]).is_file():
        print(f"{data / FILES[args.dataset]} not found: skipped")
        print(json.dumps({"benchmark": "relation", "skipped": str(data / FILES[args.dataset])}))
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # as the CLI: no load reports between the figures
    hf_logging.disable_progress_bar()
    import bridgetune
    from bridgetune.config import load_config

    config = ROOT / "examples" / "configs" / CONFIGS[args.dataset]
    paths = load_config(config).data
    overrides = [f"output_dir={args.output_dir}", f"data.train={data / FILES[args.dataset]}"]
    if paths.dev:  # the config's dev file, found under --data
        overrides.append(f"data.dev={data / Path(paths.dev).parent.name / Path(paths.dev).name}")
    if args.model:
        overrides.append(f"model.name={args.model}")
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    if args.quick:
        overrides += ["data.max_train_examples=1600", "data.max_eval_examples=400",
                      "train.epochs=1"]  # fmt: skip
    runs: dict[str, dict] = {}
    model_name = args.model or load_config(config).model.name
    for pooling in args.pooling or ["entity_start", "cls"]:
        started = time.perf_counter()
        result = bridgetune.train(
            config,
            [*overrides, f"task.pooling={pooling}", f"name={args.dataset}-{pooling}", *args.set],
        )
        runs[pooling] = {key: result.metrics.get(key) for key in METRICS}
        runs[pooling]["seconds"] = round(time.perf_counter() - started, 1)
        runs[pooling]["run_dir"] = str(result.run_dir)
    print(f"\n{'pooling':16s}" + "".join(f"{k:>20s}" for k in (*METRICS, "seconds")))
    for pooling, row in runs.items():
        print(f"{pooling:16s}" + "".join(f"{row[k]:20.4f}" for k in (*METRICS, "seconds")))
    gain = None
    if {"entity_start", "cls"} <= set(runs):
        gain = runs["entity_start"]["macro_f1"] - runs["cls"]["macro_f1"]
    summary = {
        "benchmark": "relation",
        "dataset": args.dataset,
        "model": model_name,
        "device": "cpu",
        "quick": args.quick,
        "load_average": os.getloadavg()[0],
        "runs": runs,
        "markers_gain": gain,
        "published": {"semeval": "R-BERT (BERT-base) 0.8925 macro-F1, test"}.get(args.dataset),
    }
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
