"""Few-shot classification: bridgetune's contrastive mode against the `setfit` library on SST-2.

Both systems train the same model (the bundled all-MiniLM-L6-v2) on the same k-shot samples of
the SST-2 train set (k examples per class, drawn by `bridgetune.data.fewshot.sample_k_shot` with
the run's seed; SetFit gets exactly the texts and labels of that sample) and are scored on the
whole SST-2 dev set (872 sentences). The settings are SetFit's defaults, for both:

- body: CosineSimilarityLoss on SetFit pairs, num_iterations 20 (every example gets one positive
  and one negative pair per iteration), batch size 16, 1 epoch over the pairs, learning rate 2e-5
  with 10% linear warmup, max_length 64 (weight decay: ours 0.0, SetFit's 0.01; see our_config);
- head: scikit-learn LogisticRegression on the (normalized, mean-pooled) embeddings.

Ours is `bridgetune.recipes.fewshot.train_contrastive` (our loop on the pairs, then the fitted
head); the peer is `setfit.Trainer.train()`. Training time is the wall time of that one call
(body and head); loading the model before it and predicting dev after it are outside. The two
systems run one after the other in this process, never at once, each after `set_seed(seed)`.

    python benchmarks/fewshot.py --quick               # k=8, 1 seed: ~2 min on a 2-core CPU
    python benchmarks/fewshot.py                       # k=8,16,64 x 5 seeds
    python benchmarks/fewshot.py --ks 8,16 --seeds 3   # a partial run

On a CPU shared with other work pass --threads 1: two torch threads on two busy cores made
single training steps 10-20x slower at random here, which swamps the comparison.

The last line of output is one JSON object (DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import os

# quiet the peer's libraries before they are imported (our own loop keeps its bar on stderr)
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
KS = (8, 16, 64)
SEEDS = 5
# SetFit's defaults (setfit.TrainingArguments), used by both systems
BATCH_SIZE = 16
EPOCHS = 1
ITERATIONS = 20
LR = 2e-5
WARMUP = 0.1
MAX_LENGTH = 64
EVAL_BATCH_SIZE = 64
COLUMN_MAP = {"sentence": "text", "content": "text"}


@dataclass
class Run:
    """One system on one (k, seed) sample."""

    k: int
    seed: int
    accuracy: float
    train_s: float
    load: float = 0.0  # the machine's 1-minute load average when the run ended

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "accuracy": round(self.accuracy, 4),
            "train_s": self.train_s,
            "load_average": self.load,
        }


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available; use --device cpu or auto")
    return name


def describe_device(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"


def load_average() -> float:
    """The 1-minute load average: other work on the machine makes the timings noisy."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0


def warn_if_busy() -> None:
    cpus = os.cpu_count() or 1
    if load_average() > cpus / 2:
        print(
            f"warning: the machine is busy (load average {load_average()} on {cpus} CPUs); "
            "timings will be noisy. Several torch threads on shared cores can slow a run "
            "10-20x at random (measured here); pass --threads 1",
            file=sys.stderr,
            flush=True,
        )


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def seed_all(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)  # python, numpy, torch (and CUDA)


# --- ours -------------------------------------------------------------------------------------


def our_config(args: argparse.Namespace, k: int, seed: int, workdir: Path) -> Any:
    from bridgetune.config import build_config

    return build_config(
        {
            "name": f"ours-k{k}-seed{seed}",
            "output_dir": str(workdir),
            "task": "classification",
            "data": {
                "train": str(args.sst2 / "train.tsv"),
                "dev": str(args.sst2 / "dev.tsv"),
                "column_map": COLUMN_MAP,
                "few_shot_k": k,
                "few_shot_seed": seed,
            },
            "model": {"name": "minilm", "max_length": MAX_LENGTH},
            "train": {
                "epochs": EPOCHS,
                "lr": LR,
                "batch_size": BATCH_SIZE,
                "warmup_ratio": WARMUP,
                # SetFit passes l2_weight=0.01 to its body trainer. With 0.01 here, plus SetFit's
                # self-pairs (a text paired with itself), k=64 x 5 seeds gave the same mean
                # accuracy (0.7821) as these settings: the table in docs/ keeps 0.0.
                "weight_decay": 0.0,
                "eval_batch_size": EVAL_BATCH_SIZE,
                "precision": args.precision,
                "seed": seed,
                "device": args.device,
            },
            "fewshot": {"mode": "contrastive", "iterations": ITERATIONS, "head": "logistic"},
        }
    )


@contextlib.contextmanager
def preloaded(encoder: torch.nn.Module) -> Iterator[None]:
    """`train_contrastive` loads its encoder itself; hand it the one loaded before the clock.

    The peer's model is loaded before its timed call too, so loading stays out of both timings.
    """
    from unittest import mock

    from transformers import AutoModel

    with mock.patch.object(AutoModel, "from_pretrained", lambda *_args, **_kwargs: encoder):
        yield


def run_ours(args: argparse.Namespace, k: int, seed: int, workdir: Path) -> tuple[Run, Any]:
    """Our contrastive few-shot on the (k, seed) sample; also returns the splits it used."""
    from transformers import AutoModel

    from bridgetune.data.splits import load_splits
    from bridgetune.inference.predictor import infer
    from bridgetune.recipes.check import prepare_task
    from bridgetune.recipes.fewshot import train_contrastive
    from bridgetune.tasks import reader_for

    cfg = our_config(args, k, seed, workdir)
    splits = load_splits(
        cfg.data, reader_for(cfg.task.name)
    )  # samples k per class with few_shot_seed
    counts = Counter(e.label for e in splits.train)
    if set(counts.values()) != {k}:
        raise RuntimeError(f"k={k} seed={seed}: the sample has {dict(counts)} examples per label")
    task, tokenizer, model_path = prepare_task(cfg, splits)
    encoder = AutoModel.from_pretrained(model_path).to(args.device)
    seed_all(seed)
    sync(args.device)
    start = time.perf_counter()
    with preloaded(encoder):
        model, _ = train_contrastive(cfg, task, tokenizer, model_path, splits.train, splits.dev)
    sync(args.device)
    train_s = time.perf_counter() - start
    device = next(model.parameters()).device
    features = task.encode(splits.dev, tokenizer, MAX_LENGTH)
    predictions = infer(
        model,
        task,
        features,
        splits.dev,
        tokenizer.pad_token_id,
        device,
        EVAL_BATCH_SIZE,
        precision="fp32",
    )
    gold = [e.label for e in splits.dev]
    accuracy = sum(p["label"] == g for p, g in zip(predictions, gold)) / len(gold)
    return Run(k, seed, accuracy, round(train_s, 2), load_average()), splits


# --- setfit -----------------------------------------------------------------------------------


def run_setfit(args: argparse.Namespace, splits: Any, k: int, seed: int, workdir: Path) -> Run:
    """SetFit on exactly the texts and labels our run trained on."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from transformers import PrinterCallback

    train = [(e.text, e.label) for e in splits.train]
    seed_all(seed)
    model = SetFitModel.from_pretrained(args.model_path, device=args.device)
    model.model_body.max_seq_length = MAX_LENGTH
    dataset = Dataset.from_dict({"text": [t for t, _ in train], "label": [y for _, y in train]})
    training_args = TrainingArguments(
        output_dir=str(workdir / f"setfit-k{k}-seed{seed}"),
        batch_size=BATCH_SIZE,
        num_epochs=EPOCHS,
        num_iterations=ITERATIONS,
        body_learning_rate=LR,
        warmup_proportion=WARMUP,
        max_length=MAX_LENGTH,
        seed=seed,
        show_progress_bar=False,
        report_to="none",
        logging_strategy="no",
        logging_first_step=False,
        save_strategy="no",
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset)
    trainer.st_trainer.remove_callback(PrinterCallback)  # keep stdout for the table and JSON
    seed_all(seed)
    sync(args.device)
    start = time.perf_counter()
    trainer.train()
    sync(args.device)
    train_s = time.perf_counter() - start
    texts = [e.text for e in splits.dev]
    predicted = model.predict(texts, batch_size=EVAL_BATCH_SIZE, show_progress_bar=False)
    gold = [e.label for e in splits.dev]
    accuracy = sum(str(p) == g for p, g in zip(list(predicted), gold)) / len(gold)
    return Run(k, seed, accuracy, round(train_s, 2), load_average())


# --- report -----------------------------------------------------------------------------------


def summarize(runs: list[Run]) -> dict[str, Any]:
    accuracies = [r.accuracy for r in runs]
    times = [r.train_s for r in runs]
    return {
        "accuracy_mean": round(statistics.mean(accuracies), 4),
        "accuracy_std": round(statistics.stdev(accuracies), 4) if len(runs) > 1 else 0.0,
        "train_s_mean": round(statistics.mean(times), 2),
        "runs": [r.as_dict() for r in runs],
    }


def table(ours: dict[str, dict], peer: dict[str, dict]) -> str:
    lines = [
        "| k | seeds | ours acc | setfit acc | ours train s | setfit train s | speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in ours:
        o, p = ours[key], peer[key]
        lines.append(
            f"| {key} | {len(o['runs'])} "
            f"| {o['accuracy_mean']:.4f} ± {o['accuracy_std']:.4f} "
            f"| {p['accuracy_mean']:.4f} ± {p['accuracy_std']:.4f} "
            f"| {o['train_s_mean']:.1f} | {p['train_s_mean']:.1f} "
            f"| {p['train_s_mean'] / o['train_s_mean']:.2f}x |"
        )
    return "\n".join(lines)


def report(args: argparse.Namespace, ours: list[Run], peer: list[Run]) -> dict[str, Any]:
    import setfit

    by_k_ours = {str(k): summarize([r for r in ours if r.k == k]) for k in args.ks}
    by_k_peer = {str(k): summarize([r for r in peer if r.k == k]) for k in args.ks}
    print(table(by_k_ours, by_k_peer))
    ours_s = statistics.mean(r.train_s for r in ours)
    peer_s = statistics.mean(r.train_s for r in peer)
    return {
        "benchmark": "fewshot",
        "device": describe_device(args.device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "model": "all-MiniLM-L6-v2 (bundled)",
        "data": "SST-2: k per class sampled from train, scored on the whole dev set",
        "dev_examples": args.n_dev,
        "ks": list(args.ks),
        "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
        "settings": {
            "batch_size": BATCH_SIZE,
            "epochs": EPOCHS,
            "iterations": ITERATIONS,
            "lr": LR,
            "warmup": WARMUP,
            "max_length": MAX_LENGTH,
            "head": "logistic regression",
            "precision": {"ours": args.precision, "peer": "fp32 (use_amp=False)"},
            "accuracy_std": "sample standard deviation over seeds",
        },
        "load_average": {"start": args.load_start, "end": load_average()},
        "ours": by_k_ours,
        "peer": {"name": f"setfit {setfit.__version__}", **by_k_peer},
        "speedup": round(peer_s / ours_s, 3),
        "accuracy_delta": {
            key: round(by_k_ours[key]["accuracy_mean"] - by_k_peer[key]["accuracy_mean"], 4)
            for key in by_k_ours
        },
    }


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder holding sst2/train.tsv, dev.tsv"
    )
    parser.add_argument("--quick", action="store_true", help="k=8, one seed (~2 min on 2 CPUs)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--ks", help="examples per class, comma-separated (default: 8,16,64; quick: 8)"
    )
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 per k (default: 5; quick: 1)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first..first+N-1 (more seeds later)"
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="our training precision (auto: bf16 on GPUs that have it; SetFit trains in fp32)",
    )
    parser.add_argument("--output", type=Path, help="also write the JSON result here")
    parser.add_argument(
        "--threads", type=int, help="CPU threads of torch (default: its own); 1 on a busy machine"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = pick_device(args.device)
    if args.ks:
        args.ks = tuple(int(k) for k in args.ks.split(","))
    else:
        args.ks = (KS[0],) if args.quick else KS
    if args.seeds is None:
        args.seeds = 1 if args.quick else SEEDS
    if args.seeds < 1 or any(k < 1 for k in args.ks):
        parser.error("--ks and --seeds must be positive")
    return args


def quiet_libraries() -> None:
    import datasets
    from setfit import logging as setfit_logging
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    setfit_logging.set_verbosity_error()
    setfit_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    # the peer's DataLoader asks for pinned memory even on a CPU
    warnings.filterwarnings("ignore", message=".*pin_memory.*")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.sst2 = args.data / "sst2"
    if not (args.sst2 / "train.tsv").is_file() or not (args.sst2 / "dev.tsv").is_file():
        print(
            f"fewshot: skipped, no SST-2 data in {args.sst2} (expected train.tsv and dev.tsv; "
            "pass --data DIR)"
        )
        return 0
    import importlib.util

    if importlib.util.find_spec("setfit") is None:
        print("fewshot: skipped, the peer is not installed (pip install setfit)")
        return 0
    quiet_libraries()
    from bridgetune.models import resolve_model

    args.model_path = resolve_model("minilm")
    print(
        f"fewshot: k={','.join(map(str, args.ks))} per class x {args.seeds} seed(s), "
        f"{ITERATIONS} iterations, batch {BATCH_SIZE}, lr {LR:g}, max_length {MAX_LENGTH}, "
        f"device {describe_device(args.device)}",
        flush=True,
    )
    warn_if_busy()
    args.load_start = load_average()
    ours: list[Run] = []
    peer: list[Run] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bridgetune-bench-") as tmp:
        workdir = Path(tmp)
        for k in args.ks:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                mine, splits = run_ours(args, k, seed, workdir)
                theirs = run_setfit(args, splits, k, seed, workdir)
                ours.append(mine)
                peer.append(theirs)
                args.n_dev = len(splits.dev)
                print(
                    f"k={k} seed={seed}: ours acc {mine.accuracy:.4f} in {mine.train_s:.1f} s | "
                    f"setfit acc {theirs.accuracy:.4f} in {theirs.train_s:.1f} s "
                    f"(load average {theirs.load})",
                    file=sys.stderr,
                    flush=True,
                )
    result = report(args, ours, peer)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    line = json.dumps(result)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(line + "\n", encoding="utf-8")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
