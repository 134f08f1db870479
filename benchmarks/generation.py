"""Supervised fine-tuning speed: bridgetune's causal_lm against TRL's SFTTrainer, same work.

Both fine-tune the same model (default: the generative default SmolLM2-135M-Instruct, from
`bridgetune models pull smollm2`) with the same LoRA (r 16, alpha 32, dropout 0.05, every
linear layer), on the same prompt/completion examples (the support tickets of
examples/data/support_tickets, prompt -> one-line summary; loss on the completion and its EOS),
same max_length, batch size, epochs, learning rate and schedule (linear, no warmup, no weight
decay), same precision (`--precision`; default as bridgetune's `auto` for generative tasks:
bf16 autocast on CUDA GPUs that support it, else fp32; on CPUs bf16 cost dev loss), no
packing unless `--packing` (then both pack), and gradient checkpointing off
on both (TRL's SFTConfig turns it on by default; it trades speed for memory).

Measured, each system in its own process (peak memory is per process): training time without
evaluation, training throughput in non-padding tokens per second (the tokens of every training
example, counted from each system's own tokenization, x epochs / training seconds), peak memory
(CPU: the process's maximum resident set; CUDA: torch's peak allocated), and the dev loss of
the trained model on the same dev examples computed by the same code (mean next-token loss of
the completion tokens and EOS). ONE JSON object on the last line.

    python benchmarks/generation.py --quick          # 128 examples, 1 epoch (~4 min, 2-core CPU)
    python benchmarks/generation.py --device cuda    # all 400 examples, 3 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "Summarize this support ticket in one line.\n\n{ticket}\n\nSummary:"
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}


def rows(path: Path, limit: int | None) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()[:limit]
    return [
        {"prompt": PROMPT.format(ticket=row["ticket"]), "completion": " " + row["summary"]}
        for row in map(json.loads, lines)
    ]


def write_jsonl(path: Path, data: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    return path


def peak_memory_mib(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def dev_loss(model: Any, tokenizer: Any, dev: list[dict], device: str, max_length: int) -> float:
    """The same dev loss for both systems: bridgetune's causal_lm scoring (completion + EOS)."""
    import torch

    from bridgetune.data.schema import Example
    from bridgetune.inference.predictor import infer
    from bridgetune.tasks import build_task

    model.to(device)  # ours reloads the merged model on the CPU
    task = build_task("causal_lm", [])
    examples = [Example(text=r["prompt"], label={"completion": r["completion"]}) for r in dev]
    features = task.encode(examples, tokenizer, max_length)
    predictions = infer(
        model, task, features, examples, tokenizer.pad_token_id, torch.device(device), 8, "fp32"
    )
    return task.metrics(predictions, examples)["loss"]


def run_ours(args: argparse.Namespace, train: Path, dev: Path, work: Path) -> dict[str, Any]:
    import bridgetune
    from bridgetune.training.loop import Loop

    timing = {"train": 0.0, "eval": 0.0}
    run, evaluate = Loop.run, Loop.evaluate

    def timed_evaluate(self: Loop, *a: Any, **k: Any) -> dict:
        began = time.perf_counter()
        result = evaluate(self, *a, **k)
        timing["eval"] += time.perf_counter() - began
        return result

    def timed_run(self: Loop, *a: Any, **k: Any) -> Any:
        began = time.perf_counter()
        result = run(self, *a, **k)
        sync(args.device)
        timing["train"] += time.perf_counter() - began
        return result

    config = {
        "name": "sft-bench",
        "output_dir": str(work / "runs"),
        "task": "causal_lm",
        "data": {"train": str(train), "dev": str(dev)},
        "model": {"name": args.model, "max_length": args.max_length},
        "method": {"name": "lora", **LORA},
        "train": {
            "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
            "warmup_ratio": 0.0, "weight_decay": 0.0, "seed": args.seed, "eval_batch_size": 8,
            "device": args.device, "precision": args.precision,
            "packing": args.packing,
        },
        "generate": {"eval_examples": 0},
    }  # fmt: skip
    Loop.run, Loop.evaluate = timed_run, timed_evaluate
    try:
        result = bridgetune.train(config, overwrite=True)
    finally:
        Loop.run, Loop.evaluate = run, evaluate
    from bridgetune.data.io import read_file
    from bridgetune.models import load_tokenizer
    from bridgetune.tasks.causal_lm import GenerationReader

    cfg = bridgetune.as_config(config)
    tokenizer = load_tokenizer(str(result.model_dir))
    examples = read_file(train, cfg.data, GenerationReader())
    from bridgetune.tasks import build_task

    features = build_task("causal_lm", []).encode(examples, tokenizer, args.max_length)
    tokens = sum(len(f["input_ids"]) for f in features) * args.epochs
    seconds = timing["train"] - timing["eval"]
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(result.model_dir)  # merged LoRA
    dev_rows = [json.loads(line) for line in dev.read_text(encoding="utf-8").splitlines()]
    return {
        "train_s": round(seconds, 1),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "peak_memory_mib": round(peak_memory_mib(args.device)),
        "dev_loss": round(dev_loss(trained, tokenizer, dev_rows, args.device, args.max_length), 4),
    }


def run_trl(args: argparse.Namespace, train: Path, dev: Path, work: Path) -> dict[str, Any]:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from bridgetune.models import resolve_model

    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    config = SFTConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs, learning_rate=args.lr, lr_scheduler_type="linear",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, max_length=args.max_length,
        packing=args.packing, completion_only_loss=True, gradient_checkpointing=False,
        bf16=args.precision == "bf16", use_cpu=args.device == "cpu", seed=args.seed,
        logging_steps=10,
        report_to="none", save_strategy="no", eval_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    lora = LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
        target_modules="all-linear", task_type="CAUSAL_LM",
    )  # fmt: skip
    dataset = load_dataset("json", data_files=str(train), split="train")
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
        peft_config=lora,
    )  # fmt: skip
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * args.epochs
    began = time.perf_counter()
    trainer.train()
    sync(args.device)
    seconds = time.perf_counter() - began
    dev_rows = [json.loads(line) for line in dev.read_text(encoding="utf-8").splitlines()]
    loss = dev_loss(trainer.model, tokenizer, dev_rows, args.device, args.max_length)
    return {
        "train_s": round(seconds, 1),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "peak_memory_mib": round(peak_memory_mib(args.device)),
        "dev_loss": round(loss, 4),
    }


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", default=str(ROOT / "examples" / "data" / "support_tickets"))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="128 examples, 1 epoch")
    parser.add_argument("--train-examples", type=int, default=None)
    parser.add_argument("--dev-examples", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--packing", action="store_true", help="pack examples (both systems)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=42, help="seed of both systems")
    parser.add_argument(
        "--precision", choices=["fp32", "bf16"], default=None,
        help="mixed precision of both (default: bf16 on CUDA GPUs that support it, else fp32: "
        "bridgetune's `auto` for generative tasks)",
    )  # fmt: skip
    parser.add_argument("--only", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args()
    args.epochs = args.epochs or (1 if args.quick else 3)
    if args.precision is None:  # bridgetune's `auto` for generative tasks: bf16 on CUDA only
        import torch

        from bridgetune.runtime.hardware import native_bf16

        native = args.device == "cuda" and native_bf16(torch.device(args.device))
        args.precision = "bf16" if native else "fp32"
    limit = args.train_examples or (128 if args.quick else None)
    data = Path(args.data)
    if not (data / "train.jsonl").is_file():
        print(f"{data}: no train.jsonl; nothing to benchmark")
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    train = write_jsonl(work / "train.jsonl", rows(data / "train.jsonl", limit))
    dev = write_jsonl(work / "dev.jsonl", rows(data / "dev.jsonl", args.dev_examples))
    if args.only:
        run = run_ours if args.only == "ours" else run_trl
        print(json.dumps(run(args, train, dev, work)))
        return
    results = {}
    for system in ("ours", "trl"):
        command = [sys.executable, __file__, *sys.argv[1:], "--only", system]
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"{system} failed (exit {done.returncode})")
        results[system] = json.loads(done.stdout.strip().splitlines()[-1])
    ours, trl = results["ours"], results["trl"]
    print(f"{'':8s}{'train s':>10s}{'tokens/s':>12s}{'peak MiB':>10s}{'dev loss':>10s}")
    for name, r in (("bridgetune", ours), ("TRL", trl)):
        print(f"{name:10s}{r['train_s']:8.1f}{r['tokens_per_s']:12.1f}"
              f"{r['peak_memory_mib']:10d}{r['dev_loss']:10.4f}")  # fmt: skip
    line = {
        "benchmark": "generation_sft", "device": args.device, "model": args.model,
        "train_examples": limit, "epochs": args.epochs, "max_length": args.max_length,
        "batch_size": args.batch_size, "packing": args.packing, "seed": args.seed,
        "precision": args.precision,
        "ours": ours, "peer": trl,
        "speedup": round(ours["tokens_per_s"] / trl["tokens_per_s"], 2),
    }  # fmt: skip
    if args.output:
        Path(args.output).write_text(json.dumps(line, indent=1), encoding="utf-8")
    print(json.dumps(line))


if __name__ == "__main__":
    main()
