"""Training speed and time-to-accuracy: bridgetune against the Hugging Face Trainer on SST-2.

Three runs in one process, same model (the bundled MiniLM), data, epochs, learning rate, batch
size (32) and seed:

- ours:       ``bridgetune.train`` with its defaults (length-bucketed batches; ``precision: auto``,
              bf16 autocast where the device computes bf16 natively: GPUs that support it, CPUs
              with AMX-BF16 or AVX512-BF16);
- ours_fp32:  the same in fp32, where ours ran in bf16 (what bf16 brings);
- ours_compiled: the same with ``train.compile: on`` (on CUDA: inductor with CUDA graphs over a
              few fixed batch widths; its compile time counts in its time), on CUDA by default
              (``--compile on|off`` to choose);
- hf_default: the Trainer with run_glue's defaults (padded to max_length 128, fp32);
- hf_tuned:   the Trainer with dynamic padding (to a multiple of 8) and ``bf16=True`` where the
              device computes bf16 natively (on those CPUs too: the peer gets the same chance).

Each run evaluates on dev several times while it trains, and a wall-clock stamp of every
evaluation gives its time to the target accuracy (the final dev accuracy of hf_tuned).
Training time runs from the first step to the end of the final evaluation; tokenizing and
loading the model are outside it, and on a GPU untimed warm-up steps come before the first run
(CUDA's start-up and first kernel loads are the process's, not the first run's). Samples/s
divides the training examples processed by that time less the time spent in evaluations (for
ours including the save of its best weights), so the number of evaluations does not change it.
Ours ends on its best evaluated weights, the Trainer on its last ones.

    python benchmarks/train_speed.py --quick            # ~4 minutes on a free 2-core CPU
    python benchmarks/train_speed.py --device cuda      # full train set, 3 epochs

The last line of output is one JSON object (DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
BATCH_SIZE = 32
MAX_LENGTH = 128
EVAL_BATCH_SIZE = 64
# Quick: 63 steps, about the fewest after which MiniLM at lr 5e-5 is clearly past chance (~0.77
# dev accuracy; at 1,000 examples all three runs stay near 0.5 and the target means nothing).
# Most of its time is hf_default, padded to 128.
QUICK = {"train_examples": 2000, "dev_examples": 300, "epochs": 1.0, "evals": 4}
FULL_CUDA = {"train_examples": None, "dev_examples": None, "epochs": 3.0, "evals": 10}
# Full mode on a CPU: the whole train set padded to 128 would take hours per epoch.
FULL_CPU = {"train_examples": 8000, "dev_examples": None, "epochs": 1.0, "evals": 8}


@dataclass
class Timeline:
    """Wall-clock record of one training run."""

    examples: int = 0  # training examples processed
    start: float = 0.0
    end: float = 0.0
    eval_s: float = 0.0  # part of the training time spent evaluating
    evals: list[tuple[float, int, float]] = field(default_factory=list)  # (s, step, accuracy)
    accuracy: float = 0.0  # final dev accuracy
    notes: dict[str, str] = field(default_factory=dict)

    def record_eval(self, step: int, accuracy: float, seconds: float) -> None:
        self.evals.append((round(time.perf_counter() - self.start, 3), step, round(accuracy, 4)))
        self.eval_s += seconds

    @property
    def train_s(self) -> float:
        return self.end - self.start

    def time_to(self, target: float) -> float | None:
        return next((t for t, _, accuracy in self.evals if accuracy >= target), None)

    def summary(self, target: float) -> dict[str, Any]:
        compute_s = max(self.train_s - self.eval_s, 1e-9)
        return {
            "samples_per_s": round(self.examples / compute_s, 2),
            "accuracy": round(self.accuracy, 4),
            "train_s": round(self.train_s, 2),
            "eval_s": round(self.eval_s, 2),
            "time_to_target_s": self.time_to(target),
            "evals": [list(e) for e in self.evals],
            **self.notes,
        }


def read_sst2(path: Path, text_column: str, limit: int | None) -> list[tuple[str, int]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [(r[text_column], int(r["label"])) for r in csv.DictReader(handle, delimiter="\t")]
    return rows[:limit] if limit else rows


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available; use --device cpu or auto")
    return name


def describe_device(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"cpu ({torch.get_num_threads()} threads)"


def load_average() -> float:
    """The 1-minute load average: other work on the machine makes the timings noisy."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0


def warn_if_busy() -> None:
    cpus = os.cpu_count() or 1
    if load_average() > cpus / 2:
        print(
            f"warning: the machine is busy (load average {load_average()} on {cpus} CPUs); "
            "timings will be noisy",
            flush=True,
        )


def bf16_supported(device: str) -> bool:
    """Whether `device` computes bf16 natively (the rule of ``train.precision: auto``)."""
    from bridgetune.runtime.hardware import native_bf16

    return native_bf16(torch.device(device))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def warm_up(model_path: str, device: str) -> None:
    """Untimed training steps before the first run, at every padded length and both precisions.

    The first run in a process would otherwise pay alone for what the process does once: CUDA's
    context, library handles and the lazy loading of each kernel at its first use (on an H100
    that put ~10 s into the first run's first evaluation interval); on a CPU, oneDNN's kernels
    for each shape and precision.
    """
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-9, fused=device == "cuda")
    for dtype in (torch.float32, torch.bfloat16) if bf16_supported(device) else (torch.float32,):
        for length in range(8, MAX_LENGTH + 1, 8):
            ids = torch.randint(0, model.config.vocab_size, (BATCH_SIZE, length), device=device)
            labels = torch.randint(0, 2, (BATCH_SIZE,), device=device)
            with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
                loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    sync(device)
    del model, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()


def eval_every(train_examples: int, epochs: float, evals: int) -> int:
    """Optimizer steps between evaluations: `evals` evenly spaced ones (the last at the end)."""
    total_steps = max(1, math.ceil(math.ceil(train_examples / BATCH_SIZE) * epochs))
    return max(1, math.ceil(total_steps / evals))


# --- ours -------------------------------------------------------------------------------------


@contextlib.contextmanager
def timed_loop(timeline: Timeline, device: str) -> Iterator[None]:
    """Stamp the start and end of `Loop.run` and every evaluation in it.

    `on_step` alone would miss the final evaluation (after the last step) and the time spent
    inside evaluations, so the loop's two methods are wrapped for the duration of the run.
    """
    from bridgetune.training.loop import Loop

    run, evaluate = Loop.run, Loop.evaluate

    def timed_run(self: Loop, *args: Any, **kwargs: Any) -> Any:
        timeline.start = time.perf_counter()
        result = run(self, *args, **kwargs)
        sync(device)
        timeline.end = time.perf_counter()
        return result

    def timed_evaluate(self: Loop, *args: Any, **kwargs: Any) -> dict:
        began = time.perf_counter()
        metrics = evaluate(self, *args, **kwargs)
        timeline.record_eval(
            self.state.global_step, metrics["accuracy"], time.perf_counter() - began
        )
        return metrics

    Loop.run, Loop.evaluate = timed_run, timed_evaluate
    try:
        yield
    finally:
        Loop.run, Loop.evaluate = run, evaluate


def run_ours(
    args: argparse.Namespace,
    sst2: Path,
    workdir: Path,
    precision: str = "auto",
    compile: str = "off",
) -> Timeline:
    from bridgetune.recipes.train import train

    config = {
        "name": f"ours-{precision}-{compile}",
        "output_dir": str(workdir),
        "task": "classification",
        "data": {
            "train": str(sst2 / "train.tsv"),
            "dev": str(sst2 / "dev.tsv"),
            "column_map": {"sentence": "text", "content": "text"},
            "max_train_examples": args.train_examples,
            "max_eval_examples": args.dev_examples,
        },
        "model": {"name": args.model_path, "max_length": MAX_LENGTH},
        "train": {
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": BATCH_SIZE,
            "eval_batch_size": EVAL_BATCH_SIZE,
            "seed": args.seed,
            "device": args.device,
            "eval_steps": args.eval_steps,
            "precision": precision,
            "compile": compile,
        },
    }
    timeline = Timeline()
    with timed_loop(timeline, args.device):
        result = train(config)
    timeline.examples = round(args.n_train * args.epochs)
    timeline.accuracy = float(result.metrics["accuracy"])
    if precision == "auto":
        precision = "bf16" if bf16_supported(args.device) else "fp32"
    timeline.notes = {
        "precision": precision,
        "padding": "length-bucketed, multiple of 8"
        if compile == "off"
        else "length-bucketed, powers of two (compiled: its compile time is in its time)",
        "weights": "best dev evaluation",  # the loop restores its best checkpoint at the end
    }
    return timeline


# --- the Hugging Face Trainer -----------------------------------------------------------------


class Encoded(torch.utils.data.Dataset):
    """Tokenized rows as the Trainer's plain map-style dataset."""

    def __init__(self, encoded: dict[str, list], labels: list[int]) -> None:
        self.encoded, self.labels = encoded, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = {key: values[index] for key, values in self.encoded.items()}
        return {**row, "labels": self.labels[index]}


def encode(tokenizer: Any, rows: list[tuple[str, int]], pad_to_max: bool) -> Encoded:
    padding = "max_length" if pad_to_max else False
    texts = [text for text, _ in rows]
    encoded = tokenizer(texts, padding=padding, max_length=MAX_LENGTH, truncation=True)
    return Encoded(dict(encoded), [label for _, label in rows])


def accuracy(prediction: Any) -> dict[str, float]:
    logits = (
        prediction.predictions[0]
        if isinstance(prediction.predictions, tuple)
        else prediction.predictions
    )
    return {"accuracy": float((logits.argmax(-1) == prediction.label_ids).mean())}


def eval_clock(timeline: Timeline) -> Any:
    from transformers import TrainerCallback

    class EvalClock(TrainerCallback):
        """Stamps the start of training and every evaluation (with its accuracy and duration)."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            timeline.start = time.perf_counter()

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any
        ) -> None:
            metrics = metrics or {}
            timeline.record_eval(
                state.global_step, metrics["eval_accuracy"], metrics.get("eval_runtime", 0.0)
            )

    return EvalClock()


def run_hf(args: argparse.Namespace, data: dict[str, list], workdir: Path, tuned: bool) -> Timeline:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    bf16 = tuned and bf16_supported(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    train_set = encode(tokenizer, data["train"], pad_to_max=not tuned)
    dev_set = encode(tokenizer, data["dev"], pad_to_max=not tuned)
    collator = (
        DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8) if tuned else default_data_collator
    )
    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(args.model_path, num_labels=2)
    training_args = TrainingArguments(
        output_dir=str(workdir / ("hf_tuned" if tuned else "hf_default")),
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        per_device_train_batch_size=BATCH_SIZE,
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        bf16=bf16,
        use_cpu=args.device == "cpu",
        seed=args.seed,
    )
    timeline = Timeline()
    trainer = Trainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_set,
        eval_dataset=dev_set,
        compute_metrics=accuracy,
        callbacks=[eval_clock(timeline)],
    )
    trainer.remove_callback(PrinterCallback)  # keep stdout for the table and the JSON line
    trainer.train()
    if not timeline.evals or timeline.evals[-1][1] != trainer.state.global_step:
        trainer.evaluate()  # the final weights, as part of the run (ours evaluates them too)
    sync(args.device)
    timeline.end = time.perf_counter()
    timeline.examples = round(len(train_set) * args.epochs)
    timeline.accuracy = timeline.evals[-1][2]
    padding = "dynamic, multiple of 8" if tuned else f"max_length {MAX_LENGTH}"
    timeline.notes = {
        "precision": "bf16" if bf16 else "fp32",
        "padding": padding,
        "weights": "last",
    }
    if tuned and not bf16:
        timeline.notes["note"] = f"bf16 unsupported on {args.device}: ran in fp32"
    return timeline


# --- report -----------------------------------------------------------------------------------


def table(results: dict[str, dict[str, Any]], target: float) -> str:
    def seconds(value: float | None) -> str:
        return "not reached" if value is None else f"{value:.1f}"

    lines = [
        f"target accuracy (hf_tuned final): {target:.4f}",
        f"{'run':<13} {'samples/s':>10} {'train s':>8} {'eval s':>7} {'dev acc':>8} "
        f"{'to target s':>12}  precision / padding",
    ]
    for name, r in results.items():
        lines.append(
            f"{name:<13} {r['samples_per_s']:>10.1f} {r['train_s']:>8.1f} "
            f"{r['eval_s']:>7.1f} {r['accuracy']:>8.4f} "
            f"{seconds(r['time_to_target_s']):>12}  {r['precision']} / {r['padding']}"
        )
    return "\n".join(lines)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def report(args: argparse.Namespace, runs: dict[str, Timeline]) -> dict[str, Any]:
    target = runs["hf_tuned"].accuracy
    results = {name: timeline.summary(target) for name, timeline in runs.items()}
    print(table(results, target))
    ours, tuned = results["ours"], results["hf_tuned"]
    return {
        "benchmark": "train_speed",
        "device": describe_device(args.device),
        "quick": args.quick,
        "train_examples": args.n_train,
        "dev_examples": args.n_dev,
        "epochs": int(args.epochs) if args.epochs.is_integer() else args.epochs,
        "lr": args.lr,
        "batch_size": BATCH_SIZE,
        "seed": args.seed,
        "load_average": {"start": args.load_start, "end": load_average()},
        "ours": ours,
        **{key: results[key] for key in ("ours_fp32", "ours_compiled") if key in results},
        "peer": {"hf_default": results["hf_default"], "hf_tuned": tuned},
        "target_accuracy": round(target, 4),
        "speedup": ratio(ours["samples_per_s"], tuned["samples_per_s"]),
        "time_to_accuracy_speedup": ratio(tuned["time_to_target_s"], ours["time_to_target_s"]),
    }


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="folder holding sst2/train.tsv and sst2/dev.tsv",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a reduced run (~4 min on 2 free CPUs)"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--epochs", type=float, help="default: 1 (quick, CPU), 3 (CUDA)")
    parser.add_argument(
        "--train-examples",
        type=int,
        help="first N training examples; default: all on CUDA, fewer on CPU",
    )
    parser.add_argument("--dev-examples", type=int, help="first N dev examples")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument(
        "--model", default="minilm", help="model of all three runs (default: the bundled MiniLM)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path, help="also write the JSON result here")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads of torch (default: its own); 1 helps on a busy machine",
    )
    parser.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="also run ours with train.compile: on (CUDA graphs on GPUs); auto: on CUDA only",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = pick_device(args.device)
    defaults = QUICK if args.quick else FULL_CUDA if args.device == "cuda" else FULL_CPU
    for key in ("train_examples", "dev_examples", "epochs"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    args.evals = defaults["evals"]
    args.compile = args.compile == "on" or (args.compile == "auto" and args.device == "cuda")
    return args


def seeded(seed: int, run: Callable[[], Timeline]) -> Timeline:
    from transformers import set_seed

    set_seed(seed)
    return run()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sst2 = args.data / "sst2"
    if not (sst2 / "train.tsv").is_file() or not (sst2 / "dev.tsv").is_file():
        print(
            f"train_speed: skipped, no SST-2 data in {sst2} (expected train.tsv and dev.tsv; "
            "pass --data DIR)"
        )
        return 0
    from transformers.utils import logging as hf_logging

    from bridgetune.models import resolve_model

    hf_logging.set_verbosity_error()
    args.model_path = resolve_model(args.model)
    data = {
        "train": read_sst2(sst2 / "train.tsv", "sentence", args.train_examples),
        "dev": read_sst2(sst2 / "dev.tsv", "content", args.dev_examples),
    }
    args.n_train, args.n_dev = len(data["train"]), len(data["dev"])
    args.eval_steps = eval_every(args.n_train, args.epochs, args.evals)
    print(
        f"train_speed: {args.n_train} train / {args.n_dev} dev examples, {args.epochs:g} "
        f"epoch(s), lr {args.lr:g}, batch {BATCH_SIZE}, evaluation every {args.eval_steps} "
        f"steps, device {describe_device(args.device)}",
        flush=True,
    )
    if not bf16_supported(args.device):
        print(f"note: no bf16 on {args.device}; every run is fp32", flush=True)
    warn_if_busy()
    warm_up(args.model_path, args.device)
    args.load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="bridgetune-bench-") as tmp:
        workdir = Path(tmp)
        runs = {
            "ours": seeded(args.seed, lambda: run_ours(args, sst2, workdir)),
            **(
                {"ours_fp32": seeded(args.seed, lambda: run_ours(args, sst2, workdir, "fp32"))}
                if bf16_supported(args.device)
                else {}
            ),
            **(
                {
                    "ours_compiled": seeded(
                        args.seed, lambda: run_ours(args, sst2, workdir, compile="on")
                    )
                }
                if args.compile
                else {}
            ),
            "hf_default": seeded(args.seed, lambda: run_hf(args, data, workdir, tuned=False)),
            "hf_tuned": seeded(args.seed, lambda: run_hf(args, data, workdir, tuned=True)),
        }
    result = report(args, runs)
    line = json.dumps(result)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(line + "\n", encoding="utf-8")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
