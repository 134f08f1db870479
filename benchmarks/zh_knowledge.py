"""Chinese NER on the multilingual encoder: which knowledge features still help on top.

MiniLM's Chinese recipe needed vocabulary extension, continued pre-training, the CRF and a
dictionary (docs/chinese.md). With multilingual-e5-small, an encoder that reads Chinese, each of
them is measured again here, one at a time, in one run on the same data and seed:

- `encoder`: the shipped config's encoder and alignment, no CRF (`--set task.split_pieces=true`
  splits multi-character pieces, as cluener.yaml does);
- `crf`: + the CRF (`task.crf: true`: the shipped recipe);
- `crf+dictionary`: + `knowledge.gazetteers` from jieba's bundled dictionary (person `nr`,
  place `ns`, organization `nt`, other proper nouns `nz`);
- `pretrain+crf`: continued masked-LM pre-training (`bridgetune pretrain`, jieba whole-word
  masking) on the training set's own text, labels dropped, then the `crf` run from it. e5 ships
  no masked-LM head: its transform layer starts from random, the decoder is the tied embeddings.

Datasets: `weibo` (examples/configs/weibo_ner.yaml; 1,350 messages) and `cluener`
(examples/configs/cluener.yaml; 10,748 sentences, ~35 min a run on 2 cores).

Prints a table and ONE JSON object on its last line: {"benchmark": "zh_knowledge", "dataset",
"runs": {variant: {f1, precision, recall, best_epoch, per_epoch, seconds}}, "gains": {variant:
f1 - the `crf` run's f1}}.

    python benchmarks/zh_knowledge.py --quick                  # 300 messages, 1 epoch, ~4 min
    python benchmarks/zh_knowledge.py --dataset weibo --set task.split_pieces=true
    python benchmarks/zh_knowledge.py --dataset cluener --variant encoder --variant crf
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

CONFIGS = {"weibo": "weibo_ner.yaml", "cluener": "cluener.yaml"}
FILES = {"weibo": "weibo_ner", "cluener": "cluener2020"}
VARIANTS = ("encoder", "crf", "crf+dictionary", "pretrain+crf")
DICTIONARY = [
    f"knowledge.gazetteers.{kind}=jieba:{tag}"
    for kind, tag in (("person", "nr"), ("place", "ns"), ("org", "nt"), ("other", "nz"))
]


def per_epoch(history: list[dict]) -> list[float]:
    """The dev entity F1 of every evaluation of a run, in order."""
    return [round(row["entity_f1"], 4) for row in history if "entity_f1" in row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--dataset", choices=sorted(CONFIGS), default="weibo")
    parser.add_argument("--variant", action="append", choices=VARIANTS,
                        help="run only these (default: all four)")  # fmt: skip
    parser.add_argument("--epochs", type=int, help="train.epochs (default: the config's)")
    parser.add_argument("--pretrain_epochs", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="more overrides for every fine-tuning run")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="300 train rows, 1 epoch")
    parser.add_argument("--threads", type=int, help="torch threads (a busy machine)")
    parser.add_argument("--output_dir", default="/tmp/bridgetune-zh-knowledge-benchmark")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args()
    config = ROOT / "examples" / "configs" / CONFIGS[args.dataset]
    data = Path(args.data) / FILES[args.dataset]
    if not data.is_dir():
        print(f"{data} not found: skipped")
        print(json.dumps({"benchmark": "zh_knowledge", "skipped": str(data)}))
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # as the CLI: no load reports between the figures
    hf_logging.disable_progress_bar()
    import bridgetune
    from bridgetune.config import load_config

    paths = load_config(config).data
    common = [f"output_dir={args.output_dir}", f"data.train={data / Path(paths.train).name}"]
    if paths.dev:
        common.append(f"data.dev={data / Path(paths.dev).name}")
    if args.quick:
        common += ["data.max_train_examples=300", "data.max_eval_examples=200"]
    tune = []
    if args.epochs or args.quick:
        tune.append(f"train.epochs={1 if args.quick else args.epochs}")
    variants = args.variant or list(VARIANTS)
    runs: dict[str, dict] = {}
    for variant in variants:
        started = time.perf_counter()
        extra = [f"task.crf={variant != 'encoder'}"]
        if variant == "crf+dictionary":
            extra += DICTIONARY
        if variant == "pretrain+crf":
            # the training text without its labels, read as the config reads it
            pretrained = bridgetune.pretrain(
                config,
                [*common, f"name={args.dataset}-pretrain", "pretrain.masking=whole_word",
                 f"train.epochs={1 if args.quick else args.pretrain_epochs}", "train.lr=5e-5"],
                overwrite=True,
            )  # fmt: skip
            saved = json.loads((pretrained.model_dir / "bridgetune.json").read_text("utf-8"))
            runs["pretrain"] = {
                "perplexity_before": (saved.get("before_training") or {}).get("perplexity"),
                "perplexity_after": pretrained.metrics.get("perplexity"),
                "seconds": round(time.perf_counter() - started, 1),
            }
            extra.append(f"model.name={pretrained.model_dir}")
            started = time.perf_counter()  # the fine-tuning's own time below
        result = bridgetune.train(
            config,
            [*common, *tune, *extra, f"name={args.dataset}-{variant.replace('+', '-')}",
             *args.set],
            overwrite=True,
        )  # fmt: skip
        epochs = per_epoch(result.history)
        runs[variant] = {
            "f1": result.metrics["entity_f1"],
            "precision": result.metrics["entity_precision"],
            "recall": result.metrics["entity_recall"],
            "per_epoch": epochs,
            "best_epoch": epochs.index(max(epochs)) + 1 if epochs else None,
            "seconds": round(time.perf_counter() - started, 1),
            "run_dir": str(result.run_dir),
        }
    if "pretrain" in runs:
        print(
            f"\npre-training: dev perplexity {runs['pretrain']['perplexity_before']:.1f} -> "
            f"{runs['pretrain']['perplexity_after']:.1f} ({runs['pretrain']['seconds']:.0f} s)"
        )
    print(f"\n{'variant':18s}{'F1':>8s}{'P':>8s}{'R':>8s}{'seconds':>10s}  per epoch")
    for variant in variants:
        row = runs[variant]
        print(f"{variant:18s}{row['f1']:8.4f}{row['precision']:8.4f}{row['recall']:8.4f}"
              f"{row['seconds']:10.1f}  {row['per_epoch']}")  # fmt: skip
    base = runs.get("crf", {}).get("f1")
    gains = {v: round(runs[v]["f1"] - base, 4) for v in variants if v != "crf" and base is not None}
    summary = {
        "benchmark": "zh_knowledge",
        "dataset": args.dataset,
        "model": load_config(config).model.name,
        "device": "cpu",
        "quick": args.quick,
        "load_average": os.getloadavg()[0],
        "runs": runs,
        "gains": gains,
    }
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
