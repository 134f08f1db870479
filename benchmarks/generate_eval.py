"""Generations of causal_lm models on a dev set of conversations, side by side.

For every dev conversation of `--dev` (messages JSONL), the prompt is the conversation up to its
first assistant turn and the reference is that turn. Each `--model` (a fine-tuned model
directory, or a base model such as `smollm2`, read with the chat template) generates greedily;
printed per model: exact match with the reference, token-overlap F1 (SQuAD rules), the share of
generations that ended with EOS before `--max-new-tokens`, and a few examples. ONE JSON object
on the last line.

    python benchmarks/generate_eval.py --dev examples/data/support_chat/dev.jsonl \\
        --model smollm2 --model runs/support-assistant/model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_any(name: str):
    """A Predictor for a bridgetune model directory, or for a base model (chat formatting)."""
    from bridgetune import api
    from bridgetune.models import load_tokenizer, resolve_model
    from bridgetune.predictor import Predictor, pick_device
    from bridgetune.tasks import build_task

    if (Path(name) / "bridgetune.json").is_file():
        return api.load(name)
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    task = build_task("causal_lm", [], chat=True)
    model = AutoModelForCausalLM.from_pretrained(path)
    meta = {"task": "causal_lm", "labels": [], "max_length": 512}
    return Predictor(model, load_tokenizer(path), task, meta, pick_device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dev", required=True)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    from bridgetune.tasks.qa import answer_scores

    prompts, references = [], []
    for line in Path(args.dev).read_text(encoding="utf-8").splitlines()[: args.limit]:
        messages = json.loads(line)["messages"]
        first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append(messages[:first])
        references.append(messages[first]["content"])
    results, devices = {}, set()
    for name in args.model:
        predictor = load_any(name)
        devices.add(str(predictor.device))
        started = time.perf_counter()
        generated = predictor.generate(prompts, max_new_tokens=args.max_new_tokens)
        seconds = time.perf_counter() - started
        scores = [answer_scores(g["text"], ref) for g, ref in zip(generated, references)]
        results[name] = {
            "exact_match": sum(s[0] for s in scores) / len(scores),
            "f1": sum(s[1] for s in scores) / len(scores),
            "finished": sum(g["finished"] for g in generated) / len(generated),
            "seconds": round(seconds, 1),
            "examples": [
                {"prompt": p[-1]["content"], "reference": r, "generated": g["text"]}
                for p, r, g in list(zip(prompts, references, generated))[:3]
            ],
        }
    print(f"{'model':44s}{'EM':>8s}{'F1':>8s}{'EOS':>8s}")
    for name, r in results.items():
        print(f"{name[-44:]:44s}{r['exact_match']:8.3f}{r['f1']:8.3f}{r['finished']:8.3f}")
    line = {"benchmark": "generate_eval", "device": ",".join(sorted(devices)), "dev": args.dev,
            "conversations": len(prompts), "results": results}  # fmt: skip
    print(json.dumps(line, ensure_ascii=False))


if __name__ == "__main__":
    main()
