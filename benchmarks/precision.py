"""bf16 against fp32 training: the same final dev figures, and how much faster, per task and
method, over several seeds.

`train.precision: auto` trains with bf16 autocast where the processor computes bf16 natively (a
CPU with AMX-BF16 or AVX512-BF16, a GPU that supports it). This benchmark is the evidence that
it learns the same: every (dataset, method) of `benchmarks/methods.py` (SST-2 accuracy and
CoNLL-2003 entity F1; full fine-tuning and LoRA) is trained once per seed in fp32
and once in bf16, each in its own process, and the table gives the mean and standard deviation
of the dev metric and the wall time of each precision, the mean difference (bf16 - fp32) and
the speed-up. A difference inside the seeds' spread is parity.

    python benchmarks/precision.py --quick                 # 3 seeds, ~25 minutes on 2 CPUs
    python benchmarks/precision.py --seeds 5 --datasets sst2

The generative tasks' parity is `benchmarks/generation.py --precision fp32|bf16` (dev loss of
the same SFT run). The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
PRECISIONS = ("fp32", "bf16")


def run_methods(args: argparse.Namespace, precision: str, seed: int) -> list[dict[str, Any]]:
    """benchmarks/methods.py (quick or not) at one precision and seed; its rows."""
    command = [sys.executable, str(REPO / "benchmarks" / "methods.py"), "--data", str(args.data),
               "--precision", precision, "--seed", str(seed), "--datasets", args.datasets,
               "--methods", args.methods, "--sst2-examples", str(args.sst2_examples),
               "--conll-examples", str(args.conll_examples),
               "--epochs", str(args.epochs)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode or not last.startswith("{"):
        sys.exit(f"precision: methods.py failed ({precision}, seed {seed}):\n{done.stderr[-2000:]}")
    return json.loads(last)["rows"]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.mean(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
    }


def compare(rows: dict[str, dict[int, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Per (dataset, method): each precision's metric and time over the seeds, and the gap."""
    table = []
    runs = {(r["data"], r["method"]) for by_seed in rows["fp32"].values() for r in by_seed}
    for data, method in sorted(runs):
        entry: dict[str, Any] = {"data": data, "method": method}
        for precision in PRECISIONS:
            found = [r for by_seed in rows[precision].values() for r in by_seed
                     if (r["data"], r["method"]) == (data, method)]  # fmt: skip
            entry[precision] = {
                "metric": found[0]["metric"],
                "values": [r["value"] for r in found],
                **{k: v for k, v in summary([r["value"] for r in found]).items()},
                "seconds": summary([r["run_s"] for r in found]),  # tokenize, train, evaluate, save
            }
        gaps = [b - a for a, b in zip(entry["fp32"]["values"], entry["bf16"]["values"])]
        entry["bf16_minus_fp32"] = summary(gaps)
        entry["speedup"] = round(entry["fp32"]["seconds"]["mean"]
                                 / entry["bf16"]["seconds"]["mean"], 3)  # fmt: skip
        table.append(entry)
    return table


def print_table(table: list[dict[str, Any]], seeds: list[int]) -> None:
    print(f"bf16 against fp32, seeds {seeds} (mean ± sd of the dev metric; wall s of a run)")
    print(f"{'data':<7}{'method':<7}{'metric':<10}{'fp32':>16}{'bf16':>16}{'bf16-fp32':>16}"
          f"{'fp32 s':>9}{'bf16 s':>9}{'speed-up':>9}")  # fmt: skip
    for e in table:
        cells = [f"{e[p]['mean']:.4f} ± {e[p]['sd']:.4f}" for p in PRECISIONS]
        gap = e["bf16_minus_fp32"]
        print(f"{e['data']:<7}{e['method']:<7}{e['fp32']['metric']:<10}{cells[0]:>16}"
              f"{cells[1]:>16}{gap['mean']:>+9.4f} ± {gap['sd']:.4f}"
              f"{e['fp32']['seconds']['mean']:>9.1f}{e['bf16']['seconds']['mean']:>9.1f}"
              f"{e['speedup']:>8.2f}x")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--quick", action="store_true",
        help="3,000 SST-2 and 2,000 CoNLL examples, 1 epoch (methods.py's own quick mode is too "
        "short to learn CoNLL: F1 0 in both precisions says nothing)",
    )  # fmt: skip
    parser.add_argument("--sst2-examples", type=int, help="default 6000; quick 3000")
    parser.add_argument("--conll-examples", type=int, help="default 4000; quick 2000")
    parser.add_argument("--epochs", type=float, help="default 2; quick 1")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", default="sst2,conll")
    parser.add_argument("--methods", default="full,lora")
    parser.add_argument("--output", type=Path, help="also write the JSON result here")
    args = parser.parse_args(argv)
    quick = {"sst2_examples": 3000, "conll_examples": 2000, "epochs": 1.0}
    full = {"sst2_examples": 6000, "conll_examples": 4000, "epochs": 2.0}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not (args.data / "sst2" / "train.tsv").is_file():
        print(f"precision: skipped, no SST-2 in {args.data}; pass --data DIR")
        return 0
    from bridgetune.runtime.hardware import cpu_bf16

    seeds = list(range(1, args.seeds + 1))
    rows: dict[str, dict[int, list[dict[str, Any]]]] = {p: {} for p in PRECISIONS}
    for seed in seeds:
        for precision in PRECISIONS:
            print(f"precision: {precision}, seed {seed}", flush=True)
            rows[precision][seed] = run_methods(args, precision, seed)
    table = compare(rows)
    print_table(table, seeds)
    result = {"benchmark": "precision", "quick": args.quick, "seeds": seeds,
              "cpu_native_bf16": cpu_bf16(), "table": table}  # fmt: skip
    line = json.dumps(result)
    if args.output:
        args.output.write_text(line + "\n", encoding="utf-8")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
