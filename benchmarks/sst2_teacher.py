"""What benchmarks/distill.py and benchmarks/prune.py share: their SST-2 arguments, the run
overrides on the shared data, and the teacher (trained as benchmarks/inference.py trains its
model, 1 epoch on the first labelled sentences, or taken from `--teacher`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "configs" / "sst2.yaml"


def add_arguments(parser: argparse.ArgumentParser, output_dir: str) -> None:
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--quick", action="store_true", help="1,000 sentences, 300 dev")
    parser.add_argument("--teacher", help="a trained SST-2 model directory (default: train one)")
    parser.add_argument("--train_examples", type=int, help="labelled (8,000; quick 1,000)")
    parser.add_argument("--repeats", type=int, default=3, help="batch-32 passes (best kept)")
    parser.add_argument("--output_dir", default=output_dir)
    parser.add_argument("--output", help="also write the JSON here")


@dataclass
class Setup:
    folder: Path
    out: Path
    labelled: int
    dev_limit: int
    common: list[str]  # overrides of every run: output, data files, sizes, no mid-run evals

    @property
    def train_file(self) -> Path:
        return self.folder / "train.tsv"

    @property
    def dev_file(self) -> Path:
        return self.folder / "dev.tsv"


def setup(args: argparse.Namespace, benchmark: str) -> Setup | None:
    """The runs' setup, or None (printed as skipped) without the SST-2 folder."""
    folder = Path(args.data) / "sst2"
    if not (folder / "dev.tsv").is_file():
        print(f"{folder / 'dev.tsv'} not found: skipped")
        print(json.dumps({"benchmark": benchmark, "skipped": str(folder)}))
        return None
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    labelled = args.train_examples or (1000 if args.quick else 8000)
    dev_limit = 300 if args.quick else 100_000
    common = [f"output_dir={out}", f"data.train={folder / 'train.tsv'}",
              f"data.dev={folder / 'dev.tsv'}", f"data.max_train_examples={labelled}",
              f"data.max_eval_examples={dev_limit}", "train.eval_steps=100000"]  # fmt: skip
    return Setup(folder, out, labelled, dev_limit, common)


def teacher(args: argparse.Namespace, runs: Setup) -> Path:
    import bridgetune

    if args.teacher:
        return Path(args.teacher)
    trained = bridgetune.train(CONFIG, [*runs.common, "name=teacher", "train.epochs=1"],
                               overwrite=True)  # fmt: skip
    return trained.model_dir
