"""Extractive QA: a bridgetune model against a lexical baseline on the same questions.

The peer is what a QA system scores without learning: the answer is the clause (split at
punctuation) of the context sharing the most words with the question (characters for Chinese),
the sliding-window baseline of the SQuAD/MCTest papers reduced to clauses. Both are scored by
bridgetune's exact match and F1 (SQuAD rules for English, CMRC 2018 rules for Chinese). Dev
data: `--dev` (SQuAD-style JSON, e.g. ../shared/data/cmrc2018/dev.json or the shipped
examples/data/support_qa/dev.json); the model: `--model DIR` (a trained qa model directory).
Prints a table and ONE JSON object on its last line: {"benchmark": "qa", "device", "ours"
(without --model: absent), "peer" (the lexical baseline), "f1_gain": ours - peer}.

    python benchmarks/qa.py --model runs/cmrc2018/model          # dev: DATA/cmrc2018/dev.json
    python benchmarks/qa.py --dev examples/data/support_qa/dev.json --model runs/support-qa/model
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLAUSE = re.compile(r"[^。！？；，,.!?;]+[。！？；，,.!?;]?")


def words(text: str) -> set[str]:
    from bridgetune.tasks.qa import CJK

    if CJK.search(text):
        return {c for c in text if CJK.match(c)}
    return {w for w in re.findall(r"\w+", text.lower()) if len(w) > 2}


def lexical_answer(question: str, context: str) -> str:
    clauses = [c.strip() for c in CLAUSE.findall(context) if c.strip()]
    asked = words(question)
    return max(clauses, key=lambda c: len(words(c) & asked), default="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--dev", help="SQuAD-style JSON (default: DATA/cmrc2018/dev.json)")
    parser.add_argument("--model", help="a trained qa model directory")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="the first 100 questions")
    args = parser.parse_args()
    dev = Path(args.dev) if args.dev else Path(args.data) / "cmrc2018" / "dev.json"
    if not dev.is_file():
        print(f"{dev} not found: skipped")
        print(json.dumps({"benchmark": "qa", "skipped": str(dev)}))
        return

    import bridgetune
    from bridgetune.config import DataConfig
    from bridgetune.tasks.qa import QAReader, qa_metrics

    examples = QAReader().read_file(dev, DataConfig(train=str(dev)), True)
    if args.quick:
        examples = examples[:100]
    references = [[a["text"] for a in e.label or []] for e in examples]
    results: dict = {}
    device = "cpu"
    guesses = [lexical_answer(e.text, e.text_pair or "") for e in examples]
    results["lexical overlap (best clause)"] = qa_metrics(references, guesses)
    if args.model:
        predictor = bridgetune.load(args.model, device=args.device)
        device = str(predictor.device)
        started = time.perf_counter()
        answers = [p["answer"] for p in predictor.predict(examples)]
        results["bridgetune"] = qa_metrics(references, answers)
        results["bridgetune"]["seconds"] = time.perf_counter() - started
    print(f"{'system':32s}{'EM':>9s}{'F1':>9s}")
    for system, metrics in results.items():
        print(f"{system:32s}{metrics['exact_match']:9.4f}{metrics['f1']:9.4f}")
    line = {
        "benchmark": "qa",
        "device": device,
        "dev": str(dev),
        "questions": len(examples),
        "peer": results["lexical overlap (best clause)"],
    }
    if "bridgetune" in results:
        line["ours"] = results["bridgetune"]
        line["f1_gain"] = line["ours"]["f1"] - line["peer"]["f1"]
    print(json.dumps(line))


if __name__ == "__main__":
    main()
