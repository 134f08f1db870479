"""Semantic search: bridgetune's `task: embedding` against sentence-transformers'
SentenceTransformerTrainer with MultipleNegativesRankingLoss, same model, data, batch, epochs,
learning rate and precision, in one run; and both against the untuned encoder.

Two retrieval sets built from the shared data (held-out queries ranked among every passage):
- cmrc (Chinese): a CMRC 2018 question -> its passage. Train: the 2,719 training questions and
  their passages; held out: the 500 dev questions, ranked among all 848 passages (train + dev).
  Model: multilingual-e5-small with its "query: " / "passage: " prefixes.
- scitldr (English): a SciTLDR TL;DR (the authors' own) -> its paper's abstract. Train: the
  1,992 training papers; held out: the 500 dev TL;DRs, ranked among all 2,492 abstracts.
  Model: the bundled MiniLM (no prefixes).

Training speed is examples (query-passage pairs) per second of training, evaluations left out
(the peer runs none). Retrieval: recall@1/10 and MRR@10 by the same function
(bridgetune.tasks.embedding.retrieval_metrics) over normalized embeddings of each side's model.
Prints a table per set and ONE JSON object on its last line.

    python benchmarks/embedding.py --data ../shared/data [--dataset cmrc|scitldr|both] [--quick]

`--quick`: 256 training pairs, 100 held-out queries, max_length 128 (a few minutes). `--set
KEY=VALUE` overrides our config (e.g. `model.prune_vocab=auto`: multilingual-e5-small's 250k
pieces cut to those the data uses, which the peer cannot do); `--skip-peer` runs ours only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {"cmrc": "multilingual", "scitldr": "minilm"}
PREFIXES = {"cmrc": ("query: ", "passage: "), "scitldr": ("", "")}


def cmrc_pairs(folder: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[str]]:
    """(question, passage) pairs of train and dev, and every passage (train + dev)."""

    def read(name: str) -> list[tuple[str, str]]:
        data = json.loads((folder / name).read_text(encoding="utf-8"))["data"]
        return [(qa["question"], paragraph["context"]) for article in data
                for paragraph in article["paragraphs"] for qa in paragraph["qas"]]  # fmt: skip

    train, dev = read("train.json"), read("dev.json")
    return train, dev, list(dict.fromkeys(p for _, p in train + dev))


def scitldr_pairs(folder: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[str]]:
    """(TL;DR, abstract) pairs: the first TL;DR of each paper (the authors' own)."""

    def read(name: str) -> list[tuple[str, str]]:
        rows = [json.loads(line) for line in (folder / name).open(encoding="utf-8") if line.strip()]
        return [(row["target"][0], " ".join(row["source"])) for row in rows]

    train, dev = read("train.jsonl"), read("dev.jsonl")
    return train, dev, list(dict.fromkeys(p for _, p in train + dev))


def evaluate(queries: Any, passages: Any, dev: list[tuple[str, str]], corpus: list[str]) -> dict:
    """Retrieval metrics of the held-out queries (their vectors `queries`) over `corpus`."""
    import numpy as np

    from bridgetune.tasks.embedding import retrieval_metrics

    index = {text: i for i, text in enumerate(corpus)}
    relevant = [{index[passage]} for _, passage in dev]

    def unit(vectors: Any) -> Any:
        vectors = np.asarray(vectors, np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)

    metrics = retrieval_metrics(unit(queries), unit(passages), relevant)
    return {k: round(metrics[k], 4) for k in ("recall@1", "recall@10", "mrr@10")}


def untuned(model: str, prefixes: tuple[str, str], max_length: int, dev: list, corpus: list):
    """The encoder as pretrained: mean-pooled, normalized, with the same prefixes."""
    import torch

    from bridgetune.inference.predictor import Predictor
    from bridgetune.models import load_tokenizer, resolve_model
    from bridgetune.tasks import build_task

    path = resolve_model(model)
    task = build_task("embedding", ["relevance"], query_prefix=prefixes[0],
                      passage_prefix=prefixes[1])  # fmt: skip
    predictor = Predictor(task.build_model(path), load_tokenizer(path), task,
                          {"max_length": max_length}, torch.device("cpu"))  # fmt: skip
    queries = predictor.embed([q for q, _ in dev], "query")
    return evaluate(queries, predictor.embed(corpus, "passage"), dev, corpus)


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for query, passage in pairs:
            out.write(json.dumps({"text": query, "positive": passage}, ensure_ascii=False) + "\n")
    return path


def run_ours(args: argparse.Namespace, name: str, train: list, dev: list, corpus: list,
             work: Path) -> dict:  # fmt: skip
    import bridgetune
    from bridgetune.training.loop import Loop

    prefixes = PREFIXES[name]
    config = {
        "name": f"{name}-ours",
        "output_dir": str(work / "runs"),
        "task": {"name": "embedding", "query_prefix": prefixes[0], "passage_prefix": prefixes[1]},
        "data": {
            "train": str(write_pairs(work / "train.jsonl", train)),
            "dev": str(write_pairs(work / "dev.jsonl", dev)),
        },  # fmt: skip
        "model": {"name": MODELS[name], "max_length": args.max_length},
        "train": {
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "warmup_ratio": 0.1,
            "seed": 42,
            "log_every": 50,
        },  # fmt: skip
    }
    spent = {"run": 0.0, "evaluations": 0.0}
    run, evaluate_loop = Loop.run, Loop.evaluate

    def timed_run(self: Loop, *a: Any, **k: Any) -> Any:
        began = time.perf_counter()
        try:
            return run(self, *a, **k)
        finally:
            spent["run"] += time.perf_counter() - began

    def timed_evaluate(self: Loop, *a: Any, **k: Any) -> Any:
        began = time.perf_counter()
        try:
            return evaluate_loop(self, *a, **k)
        finally:
            spent["evaluations"] += time.perf_counter() - began

    Loop.run, Loop.evaluate = timed_run, timed_evaluate
    try:
        result = bridgetune.train(config, args.set, overwrite=True)
    finally:
        Loop.run, Loop.evaluate = run, evaluate_loop
    seconds = spent["run"] - spent["evaluations"]
    queries = bridgetune.embed(result.model_dir, [q for q, _ in dev], "query")
    passages = bridgetune.embed(result.model_dir, corpus, "passage")
    return {**evaluate(queries, passages, dev, corpus), "train_seconds": round(seconds, 1),
            "examples_per_s": round(len(train) * args.epochs / seconds, 2)}  # fmt: skip


def run_peer(args: argparse.Namespace, name: str, train: list, dev: list, corpus: list,
             work: Path) -> dict:  # fmt: skip
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers import set_seed

    from bridgetune.models import resolve_model
    from bridgetune.runtime.hardware import native_bf16

    set_seed(42)
    model = SentenceTransformer(resolve_model(MODELS[name]), device="cpu")
    model.max_seq_length = args.max_length
    prefixes = PREFIXES[name]
    data = Dataset.from_dict({"anchor": [q for q, _ in train], "positive": [p for _, p in train]})
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(work / "st"), num_train_epochs=args.epochs, learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size, warmup_ratio=0.1, seed=42,
        bf16=native_bf16(torch.device("cpu")), use_cpu=True, save_strategy="no",
        logging_strategy="no", report_to="none", disable_tqdm=True,
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # its documented setting for this loss
        prompts={"anchor": prefixes[0], "positive": prefixes[1]} if prefixes[0] else None,
    )  # fmt: skip
    loss = MultipleNegativesRankingLoss(model, scale=20.0)
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=data,
                                         loss=loss)  # fmt: skip
    began = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - began
    model.eval()
    queries = model.encode([prefixes[0] + q for q, _ in dev], batch_size=64)
    passages = model.encode([prefixes[1] + p for p in corpus], batch_size=64)
    return {**evaluate(queries, passages, dev, corpus), "train_seconds": round(seconds, 1),
            "examples_per_s": round(len(train) * args.epochs / seconds, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    parser.add_argument("--dataset", choices=["cmrc", "scitldr", "both"], default="both")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override of our config (model.prune_vocab=auto), repeatable",
    )
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.quick:
        args.max_length = min(args.max_length, 128)

    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    results: dict[str, Any] = {"benchmark": "embedding", "device": "cpu", "ours_set": args.set,
                               "threads": torch.get_num_threads(), "sets": {}}  # fmt: skip
    names = ["cmrc", "scitldr"] if args.dataset == "both" else [args.dataset]
    readers = {"cmrc": cmrc_pairs, "scitldr": scitldr_pairs}
    folders = {"cmrc": "cmrc2018", "scitldr": "scitldr"}
    for name in names:
        train, dev, corpus = readers[name](Path(args.data) / folders[name])
        if args.quick:
            train = random.Random(0).sample(train, min(256, len(train)))
            dev = dev[:100]
            keep = {p for _, p in train + dev}
            corpus = [p for p in corpus if p in keep]
        row: dict[str, Any] = {"model": MODELS[name], "train_pairs": len(train),
                               "held_out_queries": len(dev), "corpus": len(corpus)}  # fmt: skip
        row["untuned"] = untuned(MODELS[name], PREFIXES[name], args.max_length, dev, corpus)
        print(f"{name}: untuned {row['untuned']}", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"bench-embedding-{name}-") as folder:
            row["ours"] = run_ours(args, name, train, dev, corpus, Path(folder))
            print(f"{name}: ours {row['ours']}", flush=True)
            if not args.skip_peer:
                row["sentence_transformers"] = run_peer(args, name, train, dev, corpus,
                                                        Path(folder))  # fmt: skip
                print(f"{name}: sentence-transformers {row['sentence_transformers']}", flush=True)
                peer = row["sentence_transformers"]["examples_per_s"]
                row["speedup"] = round(row["ours"]["examples_per_s"] / peer, 2)
        results["sets"][name] = row
    for name, row in results["sets"].items():
        print(f"\n{name} ({row['model']}; {row['train_pairs']} train pairs, "
              f"{row['held_out_queries']} queries over {row['corpus']} passages)")  # fmt: skip
        print(f"{'':24} {'recall@1':>9} {'recall@10':>10} {'MRR@10':>8} {'ex/s':>8}")
        for side in ("untuned", "ours", "sentence_transformers"):
            if side in row:
                r = row[side]
                print(f"{side:24} {r['recall@1']:9.4f} {r['recall@10']:10.4f} {r['mrr@10']:8.4f} "
                      f"{r.get('examples_per_s', float('nan')):8.2f}")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
