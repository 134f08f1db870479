"""Tuning methods and training craft on real data, with the bundled default model (MiniLM).

Two studies; every run is a separate `bridgetune.bridgetune.train` in a fresh process (so its peak
memory is its own), one after the other:

- `--study methods` (default): full fine-tuning, LoRA, IA3, prefix tuning, prompt tuning,
  head-only (linear probe) and BitFit on SST-2 (accuracy) and CoNLL-2003 (entity F1), scored on
  the whole dev sets. Full fine-tuning is the reference every method is read against. Each
  method keeps its usual learning rate (PEFT methods need far larger ones than full
  fine-tuning); everything else is the same for all.
- `--study lowdata`: SST-2 with 200 training examples (5 seeds: different samples and seeds),
  baseline against each offline augmentation and against FGM and PGD. Mean and std of dev
  accuracy. Contextual substitution and back-translation need a fill-mask model and two
  translation models; none is available offline here, so they run only when given
  (--fill-mask-model, --translation-models).

Columns: dev metric, trainable / total parameters, wall time of the run (tokenize, train, one
dev evaluation at the end, save) and peak resident memory of its process (CUDA: peak allocated).

    python benchmarks/methods.py --quick               # 2 methods x small subsets, ~3 min CPU
    python benchmarks/methods.py                       # the table in docs/methods.md
    python benchmarks/methods.py --study lowdata       # the low-data study in docs/methods.md

The last line of output is one JSON object (DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
# usual learning rates per method (full: the shipped configs' rates)
LR = {
    "full": {"sst2": 5e-5, "conll": 1e-4},
    "lora": 1e-3,
    "ia3": 5e-3,
    "prefix": 5e-3,
    "prompt": 3e-2,
    "head_only": 5e-3,
    "bitfit": 1e-3,
}
METHODS = list(LR)
AUGMENTATIONS = ["swap", "delete", "insert", "mask", "synonym"]
HIDDEN = ("one", "data", "output", "plot")  # arguments not repeated in the JSON settings


def dataset(name: str, data: Path, train_examples: int | None) -> dict[str, Any]:
    if name == "sst2":
        section = {
            "train": str(data / "sst2" / "train.tsv"),
            "dev": str(data / "sst2" / "dev.tsv"),
            "column_map": {"sentence": "text", "content": "text"},
        }
        task = "classification"
    else:
        section = {
            "train": str(data / "conll2003" / "train.txt"),
            "dev": str(data / "conll2003" / "dev.txt"),
            "tag_scheme": "IOB2",
        }
        task = "ner"
    if train_examples:
        section["max_train_examples"] = train_examples
    return {"task": task, "data": section}


def run_config(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """The bridgetune config of one run (spec: data, method, lr, epochs, seed, extras)."""
    config = dataset(spec["data"], Path(spec["data_dir"]), spec.get("train_examples"))
    config.update(name=spec["label"], output_dir=str(workdir))
    config["model"] = {"name": "minilm", "max_length": 128}
    config["method"] = {"name": spec["method"]}
    config["train"] = {
        "epochs": spec["epochs"],
        "lr": spec["lr"],
        "batch_size": spec.get("batch_size", 32),
        "seed": spec["seed"],
        "eval_steps": 10**9,  # one evaluation, at the end
        "device": spec["device"],
        "precision": spec.get("precision", "auto"),
        **spec.get("train", {}),
    }
    if spec.get("few_shot"):
        config["data"].pop("max_train_examples", None)
        config["data"].update(few_shot_k=spec["few_shot"] // 2, few_shot_seed=spec["seed"])
    if spec.get("augment"):
        config["augment"] = spec["augment"]
    from bridgetune.config import apply_overrides

    return apply_overrides(config, spec.get("overrides", []))


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One training run in this process; its numbers."""
    import torch

    import bridgetune
    from bridgetune.methods import count_parameters
    from bridgetune.recipes import train as recipe

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    counted: dict[str, int] = {}
    original = recipe.report_parameters

    def count(method: str, model: Any) -> None:
        counted["trainable"], counted["total"] = count_parameters(model)
        original(method, model)

    recipe.report_parameters = count
    with tempfile.TemporaryDirectory(prefix="bridgetune-methods-") as tmp:
        start = time.perf_counter()
        result = bridgetune.train(run_config(spec, Path(tmp)))
        wall = time.perf_counter() - start
    metric = "accuracy" if spec["data"] == "sst2" else "entity_f1"
    if spec["device"] == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        **{k: spec[k] for k in ("label", "data", "method", "lr", "seed")},
        "metric": metric,
        "value": round(float(result.metrics[metric]), 4),
        **counted,
        "overrides": spec.get("overrides", []),
        "run_s": round(wall, 1),
        "peak_mb": round(peak_mb),
    }


def launch(spec: dict[str, Any]) -> dict[str, Any]:
    """`run_one(spec)` in a fresh process (its own peak memory); its JSON line."""
    done = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if not spec.get("verbose") else None,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if done.returncode:
        raise RuntimeError(f"run {spec['label']} failed (exit {done.returncode}); rerun with -v")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)
    return row


def methods_study(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for data in args.datasets:
        for method in args.methods:
            lr = args.lr.get(method) or (
                LR[method][data] if isinstance(LR[method], dict) else LR[method]
            )
            spec = base_spec(args, f"{data}-{method}", data, method, lr, args.seed)
            spec["train_examples"] = args.sst2_examples if data == "sst2" else args.conll_examples
            rows.append(launch(spec))
    print(methods_table(rows))
    return {"study": "methods", "rows": rows, "table": methods_table(rows)}


def lowdata_study(args: argparse.Namespace) -> dict[str, Any]:
    variants: dict[str, dict[str, Any]] = {"baseline": {}}
    for op in args.augmentations:
        variants[op] = {"augment": {"ops": [op], "copies": 1, "seed": 0}}
    variants["fgm"] = {"train": {"adversarial": "fgm"}}
    variants["pgd"] = {"train": {"adversarial": "pgd"}}
    if args.variants:
        variants = {name: variants[name] for name in args.variants.split(",")}
    rows = []
    for name, extra in variants.items():
        for seed in range(args.seeds):
            spec = base_spec(args, f"lowdata-{name}-{seed}", "sst2", "full", args.lowdata_lr, seed)
            spec.update(few_shot=args.lowdata_examples, batch_size=16, **extra)
            if "augment" in spec:
                spec["augment"] = {**spec["augment"], "seed": seed}
            row = launch(spec)
            rows.append({**row, "variant": name})
    print(lowdata_table(rows))
    return {"study": "lowdata", "rows": rows, "table": lowdata_table(rows)}


def base_spec(args, label: str, data: str, method: str, lr: float, seed: int) -> dict[str, Any]:
    return {
        "label": label,
        "data": data,
        "data_dir": str(args.data),
        "method": method,
        "lr": lr,
        "epochs": args.lowdata_epochs if label.startswith("lowdata") else args.epochs,
        "seed": seed,
        "device": args.device,
        "precision": args.precision,
        "threads": args.threads,
        "verbose": args.verbose,
        "overrides": args.set,
    }


def methods_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| data | method | lr | dev metric | vs full | trainable params | run s | peak MB |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    full = {r["data"]: r["value"] for r in rows if r["method"] == "full"}
    for r in rows:
        delta = f"{100 * (r['value'] - full[r['data']]):+.1f}" if r["data"] in full else ""
        share = 100 * r["trainable"] / r["total"]
        lines.append(
            f"| {r['data']} | {name(r)} | {r['lr']:g} | {r['metric']} {r['value']:.4f} "
            f"| {delta} | {r['trainable']:,} ({share:.2f}%) | {r['run_s']:.0f} "
            f"| {r['peak_mb']:,} |"
        )
    return "\n".join(lines)


def name(row: dict[str, Any]) -> str:
    """The method, with the overrides of a variant run."""
    extra = row.get("overrides") or []
    return row["method"] + (f" ({', '.join(extra)})" if extra else "")


def lowdata_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | dev accuracy mean ± std | per seed | run s (mean) |",
        "|---|---|---|---:|",
    ]
    base = None  # the first variant listed is the reference of the deltas
    for variant in dict.fromkeys(r["variant"] for r in rows):
        values = [r["value"] for r in rows if r["variant"] == variant]
        mean = statistics.mean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        base = mean if base is None else base
        delta = "" if mean is base else f" ({100 * (mean - base):+.1f})"
        seconds = statistics.mean(r["run_s"] for r in rows if r["variant"] == variant)
        lines.append(
            f"| {variant} | {mean:.4f} ± {std:.4f}{delta} | "
            + ", ".join(f"{v:.3f}" for v in values)
            + f" | {seconds:.0f} |"
        )
    return "\n".join(lines)


def plot(study: dict[str, Any], path: Path) -> None:
    """Methods: dev metric against trainable parameters; low data: mean ± std per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = study["rows"]
    if study["study"] == "methods":
        datasets = list(dict.fromkeys(r["data"] for r in rows))
        figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4))
        for axis, data in zip(list(getattr(axes, "flat", [axes])), datasets):
            for r in (r for r in rows if r["data"] == data):
                axis.scatter(r["trainable"], r["value"])
                axis.annotate(r["method"], (r["trainable"], r["value"]), fontsize=8)
            axis.set_xscale("log")
            axis.set_xlabel("trainable parameters")
            axis.set_ylabel(f"dev {rows[0]['metric'] if data == 'sst2' else 'entity_f1'}")
            axis.set_title(data)
    else:
        variants = list(dict.fromkeys(r["variant"] for r in rows))
        values = [[r["value"] for r in rows if r["variant"] == v] for v in variants]
        figure, axis = plt.subplots(figsize=(1.1 * len(variants) + 2, 4))
        means = [statistics.mean(v) for v in values]
        stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        axis.bar(variants, means, yerr=stds, capsize=4)
        axis.set_ylim(min(means) - 3 * max(stds + [0.01]), max(means) + 3 * max(stds + [0.01]))
        axis.set_ylabel("SST-2 dev accuracy (mean ± std over seeds)")
        axis.set_title(f"SST-2, {len(values[0])} seeds")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", choices=["methods", "lowdata"], default="methods")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true", help="full and lora on small subsets")
    parser.add_argument("--datasets", default="sst2,conll")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--sst2-examples", type=int, default=6000, help="0: all 67,349")
    parser.add_argument("--conll-examples", type=int, default=4000, help="0: all 14,041")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, default=5, help="low-data study: seeds")
    parser.add_argument("--lowdata-examples", type=int, default=200)
    parser.add_argument("--lowdata-epochs", type=float, default=8.0)
    parser.add_argument("--lowdata-lr", type=float, default=5e-5)
    parser.add_argument("--augmentations", default=",".join(AUGMENTATIONS))
    parser.add_argument("--variants", help="low-data study: only these (e.g. baseline,fgm)")
    parser.add_argument(
        "--lr", action="append", default=[], help="METHOD=LR: another rate than the table's"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="dotted config override for every run, e.g. method.r=16",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--precision", choices=["auto", "fp32", "bf16"], default="auto",
        help="train.precision of every run (auto: bf16 where the device computes it natively)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch CPU threads per run")
    parser.add_argument("--output", type=Path, help="also write the JSON result here")
    parser.add_argument("--plot", type=Path, help="also draw the result into this PNG")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the runs' progress")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.lr = {k: float(v) for k, v in (item.split("=", 1) for item in args.lr)}
    args.datasets = args.datasets.split(",")
    args.methods = args.methods.split(",")
    args.augmentations = [a for a in args.augmentations.split(",") if a]
    if args.quick:
        args.methods, args.sst2_examples, args.conll_examples = ["full", "lora"], 1000, 500
        args.epochs, args.seeds, args.augmentations = 1.0, 1, ["swap"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0
    needed = {"sst2": "sst2/train.tsv", "conll": "conll2003/train.txt"}
    missing = [p for d, p in needed.items() if d in args.datasets and not (args.data / p).is_file()]
    if missing:
        print(f"methods: skipped, no data at {args.data} ({', '.join(missing)}); pass --data DIR")
        return 0
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    study = methods_study(args) if args.study == "methods" else lowdata_study(args)
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu x{os.cpu_count()}"
    result = {
        "benchmark": f"methods/{study['study']}",
        "device": device,
        "threads": args.threads,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {k: v for k, v in vars(args).items() if k not in HIDDEN},
        "total_s": round(time.perf_counter() - started),
        **study,
    }
    if args.plot:
        plot(study, args.plot)
    if args.output:
        args.output.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
