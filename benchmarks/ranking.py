"""Ranking: a bridgetune cross-encoder against the zero-shot peer on the same queries.

Peers, measured in the same run on the same dev queries (default: the shipped product_recs
set): random order (the floor), and the bundled MiniLM as a sentence-embedding bi-encoder
(cosine of mean-pooled embeddings of query and candidate, what a recommender built on an
off-the-shelf embedding model does without training). bridgetune: `--model DIR` (a trained
ranking model directory) or, without it, trains `examples/configs/product_recs.yaml` first.
Prints a table and ONE JSON object on its last line.

    python benchmarks/ranking.py [--model runs/product-recs/model] [--quick] [--device cpu]

`--quick` trains one epoch instead of the config's three (about 1.5 min on the 2-core CPU).
The JSON line: {"benchmark": "ranking", "device", "ours": {...}, "peer": {...} (the zero-shot
embeddings), "floor": {...} (random order), "ndcg10_gain": ours - peer}.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "examples/configs/product_recs.yaml"))
    parser.add_argument("--model", help="a trained ranking model directory")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="train one epoch")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--data", default=None, help="unused: the queries ship with the repo")
    args = parser.parse_args()

    import torch

    import bridgetune
    from bridgetune.data.splits import load_splits
    from bridgetune.heads.embedding import embed_texts
    from bridgetune.models import load_tokenizer, resolve_model
    from bridgetune.tasks import reader_for
    from bridgetune.tasks.ranking import ranking_metrics

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = bridgetune.as_config(args.config)
    dev = load_splits(cfg.data, reader_for("ranking")).dev
    relevance = [[float(v) for v in e.label] for e in dev]
    results = {}

    rng = random.Random(0)
    orders = [rng.sample(range(len(e.candidates)), len(e.candidates)) for e in dev]
    results["random order"] = ranking_metrics(relevance, orders)

    from transformers import AutoModel

    path = resolve_model("minilm")
    encoder, tokenizer = AutoModel.from_pretrained(path), load_tokenizer(path)
    started = time.perf_counter()
    orders = []
    for example in dev:
        vectors = embed_texts(encoder, tokenizer, [example.text, *example.candidates], 128)
        scores = (vectors[1:] @ vectors[0]).tolist()
        orders.append(sorted(range(len(scores)), key=lambda i: -scores[i]))
    results["MiniLM embeddings, zero-shot"] = ranking_metrics(relevance, orders)
    results["MiniLM embeddings, zero-shot"]["seconds"] = time.perf_counter() - started

    model_dir = args.model
    train_seconds = None
    if model_dir is None:
        started = time.perf_counter()
        overrides = [f"train.device={args.device}"] + (["train.epochs=1"] if args.quick else [])
        model_dir = bridgetune.train(args.config, overrides, overwrite=True).model_dir
        train_seconds = time.perf_counter() - started
    predictor = bridgetune.load(model_dir, device=args.device)
    started = time.perf_counter()
    predictions = predictor.predict(dev)
    orders = [[entry["index"] for entry in p["ranking"]] for p in predictions]
    results["bridgetune cross-encoder"] = ranking_metrics(relevance, orders)
    results["bridgetune cross-encoder"]["seconds"] = time.perf_counter() - started
    if train_seconds is not None:
        results["bridgetune cross-encoder"]["train_seconds"] = train_seconds

    names = ["ndcg@10", "ndcg@5", "mrr", "map", "auc"]
    print(f"{'system':34s}" + "".join(f"{n:>9s}" for n in names))
    for system, metrics in results.items():
        print(f"{system:34s}" + "".join(f"{metrics[n]:9.4f}" for n in names))
    summary = {
        system: {k: v for k, v in m.items() if not isinstance(v, dict)}
        for system, m in results.items()
    }
    ours = summary["bridgetune cross-encoder"]
    peer = summary["MiniLM embeddings, zero-shot"]
    line = {
        "benchmark": "ranking",
        "device": str(predictor.device),
        "queries": len(dev),
        "model": str(model_dir),
        "ours": ours,
        "peer": peer,
        "floor": summary["random order"],
        "ndcg10_gain": ours["ndcg@10"] - peer["ndcg@10"],
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
