"""Host overhead per optimizer step: bridgetune's loop against the Hugging Face Trainer on a model
whose arithmetic is negligible (a 2-layer BERT of hidden size 64), in one process.

On a GPU most small and medium runs are bound by the host: what the framework does in Python
around each step (collating, copies, autocast, progress, logging, the scheduler) decides the
speed, not the kernels. On a CPU this benchmark is the stand-in: with a model this small, a
step's time is nearly all framework. Three runs over the same batches:

- bare:    a plain PyTorch loop (forward, backward, clip, AdamW, scheduler) over pre-collated
           batches: the arithmetic floor;
- ours:    ``bridgetune.train`` (its collate, length buckets, progress bar, loss logging);
- trainer: the Trainer, tuned for speed (dynamic padding, the fused AdamW, no tqdm, no
           logging, no saving, no evaluation during training).

Reported: the median microseconds per optimizer step of each (on a CPU all of it is host time),
ours' over the Trainer's (`host_time_ratio`), what each adds to the plain loop (negative where
it does less: ours uses the fused AdamW and a cheaper dropout on CPUs), and a torch.profiler
profile (host side) of where ours spends its step.

    python benchmarks/step_overhead.py --quick     # ~1 minute on 2 CPUs

Texts come from SST-2 in --data (sst2/train.tsv) when present, else synthetic sentences. The
last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
BATCH_SIZE = 32
MAX_LENGTH = 64
SKIP = 10  # the first steps of each run: allocation and kernel set-up, not steady state


def read_texts(data: Path, limit: int) -> tuple[list[tuple[str, int]], str]:
    """(text, label) rows: SST-2's first `limit`, or synthetic ones; and where they came from."""
    path = data / "sst2" / "train.tsv"
    if path.is_file():
        with path.open(encoding="utf-8", newline="") as stream:
            reader = csv.DictReader(stream, delimiter="\t")
            rows = [(r["sentence"], int(r["label"])) for _, r in zip(range(limit), reader)]
        return rows, str(path)
    rng = random.Random(0)
    words = [f"w{i}" for i in range(500)]
    rows = []
    for _ in range(limit):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(6, 30)))
        rows.append((text, int(text.count("w1") % 2)))
    return rows, "synthetic"


def tiny_bert(directory: Path, rows: list[tuple[str, int]]) -> Path:
    """A random 2-layer BERT (hidden 64) with a WordPiece vocabulary of the data's words."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    counts = collections.Counter(w for text, _ in rows for w in text.lower().split())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
        w for w, _ in counts.most_common(4000)
    ]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(directory / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128,
                        max_position_embeddings=MAX_LENGTH, num_labels=2)  # fmt: skip
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def per_step_us(stamps: list[float]) -> float:
    """Median microseconds between optimizer steps after the first SKIP."""
    gaps = [b - a for a, b in zip(stamps[SKIP:], stamps[SKIP + 1 :])]
    return round(statistics.median(gaps) * 1e6, 1) if gaps else float("nan")


# --- the three runs ------------------------------------------------------------------------------


def run_bare(model_dir: Path, rows: list[tuple[str, int]], precision: str) -> list[float]:
    """Plain PyTorch over pre-collated, length-sorted batches: the arithmetic of a step."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).train()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    batches = []
    for start in range(0, len(order), BATCH_SIZE):
        part = [rows[i] for i in order[start : start + BATCH_SIZE]]
        encoded = tokenizer([t for t, _ in part], truncation=True, max_length=MAX_LENGTH,
                            padding=True, pad_to_multiple_of=8, return_tensors="pt")  # fmt: skip
        batches.append({**encoded, "labels": torch.tensor([label for _, label in part])})
    random.Random(0).shuffle(batches)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    stamps = []
    for batch in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    return stamps


def run_ours(model_dir: Path, data: Path, workdir: Path, precision: str,
             profile_steps: int = 0) -> tuple[list[float], str]:  # fmt: skip
    """bridgetune.train with one evaluation (at the end); the stamps of its optimizer steps and,
    with `profile_steps`, a host-side profile of that many steps."""
    from bridgetune.recipes.train import train

    stamps: list[float] = []
    profiler = Profiled(profile_steps)
    config = {
        "name": f"ours-{precision}-{profile_steps}",
        "output_dir": str(workdir),
        "data": {"train": str(data), "dev": str(data), "max_eval_examples": 64},
        "model": {"name": str(model_dir), "max_length": MAX_LENGTH},
        "train": {
            "epochs": 1,
            "lr": 5e-4,
            "batch_size": BATCH_SIZE,
            "warmup_ratio": 0.0,
            "precision": precision,
            "device": "cpu",
        },  # fmt: skip
    }

    def on_step(state: Any) -> None:
        stamps.append(time.perf_counter())
        profiler.step(len(stamps))

    with profiler.annotated():
        train(config, on_step=on_step, overwrite=True)
    return stamps, profiler.table()


def run_trainer(model_dir: Path, rows: list[tuple[str, int]], workdir: Path,
                precision: str) -> list[float]:  # fmt: skip
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoded = tokenizer([t for t, _ in rows], truncation=True, max_length=MAX_LENGTH)
    dataset = [{"input_ids": ids, "attention_mask": mask, "labels": label}
               for ids, mask, (_, label) in zip(encoded["input_ids"], encoded["attention_mask"],
                                                rows)]  # fmt: skip
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            stamps.append(time.perf_counter())

    arguments = TrainingArguments(
        output_dir=str(workdir / "trainer"), num_train_epochs=1, learning_rate=5e-4,
        per_device_train_batch_size=BATCH_SIZE, lr_scheduler_type="constant",
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
        disable_tqdm=True, use_cpu=True, bf16=precision == "bf16", seed=42,
        dataloader_num_workers=0, optim="adamw_torch_fused",  # fused, as ours is on CPUs
    )  # fmt: skip
    trainer = Trainer(
        model=AutoModelForSequenceClassification.from_pretrained(model_dir),
        args=arguments,
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8),
        callbacks=[Stamp()],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return stamps


class Profiled:
    """torch.profiler (CPU, host side) over steps SKIP .. SKIP + steps of ours, with the loop's
    parts marked: collate, forward+backward, optimizer step, loss logging."""

    METHODS = ("forward_backward", "optimizer_step", "log_loss")

    def __init__(self, steps: int) -> None:
        self.steps, self.running, self.result = steps, None, None

    @contextlib.contextmanager
    def annotated(self) -> Iterator[None]:
        from bridgetune.training.loop import Loop

        if not self.steps:
            yield
            return
        originals = {name: getattr(Loop, name) for name in (*self.METHODS, "__init__")}
        for name in self.METHODS:
            setattr(Loop, name, marked(name, originals[name]))

        def init(loop: Any, *args: Any, **kwargs: Any) -> None:
            originals["__init__"](loop, *args, **kwargs)
            loop.collate_train = marked("collate", loop.collate_train)

        Loop.__init__ = init
        try:
            yield
        finally:
            for name, original in originals.items():
                setattr(Loop, name, original)
            if self.running is not None:  # the run ended before the last profiled step
                self.running.__exit__(None, None, None)

    def step(self, done: int) -> None:
        from torch.profiler import ProfilerActivity, profile

        if self.steps and done == SKIP:
            self.running = profile(activities=[ProfilerActivity.CPU])
            self.running.__enter__()
        elif self.running is not None and done == SKIP + self.steps:
            self.running.__exit__(None, None, None)
            self.result, self.running = self.running, None

    def table(self) -> str:
        if self.result is None:
            return ""
        return self.result.key_averages().table(sort_by="cpu_time_total", row_limit=18)


def marked(name: str, function: Callable) -> Callable:
    """`function` inside a profiler range named bridgetune.<name>."""
    from torch.profiler import record_function

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with record_function(f"bridgetune.{name}"):
            return function(*args, **kwargs)

    return wrapper


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder holding sst2/train.tsv (else synthetic texts)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="fewer steps (~1 minute)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default 150; quick 60)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="of all three runs (default fp32)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: tiny matrices)")  # fmt: skip
    parser.add_argument("--output", type=Path, help="also write the JSON result here")
    args = parser.parse_args(argv)
    args.steps = args.steps or (60 if args.quick else 150)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    rows, source = read_texts(args.data, args.steps * BATCH_SIZE)
    with tempfile.TemporaryDirectory(prefix="bridgetune-overhead-") as tmp:
        workdir = Path(tmp)
        (workdir / "model").mkdir()
        model_dir = tiny_bert(workdir / "model", rows)
        data = workdir / "train.csv"
        with data.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        run_ours(model_dir, data, workdir, args.precision)  # warm-up: imports, first kernels
        bare = run_bare(model_dir, rows, args.precision)
        ours, _ = run_ours(model_dir, data, workdir, args.precision)
        trainer = run_trainer(model_dir, rows, workdir, args.precision)
        _, profile = run_ours(model_dir, data, workdir, args.precision, profile_steps=20)
    steps = {"bare": per_step_us(bare), "ours": per_step_us(ours), "trainer": per_step_us(trainer)}
    # on a CPU all of a step is host time; with arithmetic this small, nearly all of it is what
    # the framework does around the kernels. `beyond`: what a run adds to the plain loop.
    beyond = {name: round(steps[name] - steps["bare"], 1) for name in ("ours", "trainer")}
    ratio = round(steps["ours"] / steps["trainer"], 3)
    print(f"step_overhead: {len(rows)} texts ({source}), batch {BATCH_SIZE}, max_length "
          f"{MAX_LENGTH}, {args.precision}, {torch.get_num_threads()} thread(s)")  # fmt: skip
    print(f"{'run':<8} {'us/step':>9} {'beyond plain PyTorch':>21}")
    for name, value in steps.items():
        extra = f"{beyond[name]:>21.1f}" if name in beyond else f"{'(the plain loop)':>21}"
        print(f"{name:<8} {value:>9.1f} {extra}")
    print(f"host time per step, ours / the Trainer's: {ratio}")
    print("where ours spends 20 steps (host, torch.profiler):")
    print(profile)
    result = {
        "benchmark": "step_overhead",
        "quick": args.quick,
        "steps": args.steps,
        "texts": source,
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "us_per_step": steps,
        "beyond_plain_us": beyond,
        "host_time_ratio": ratio,
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    line = json.dumps(result)
    if args.output:
        args.output.write_text(line + "\n", encoding="utf-8")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
