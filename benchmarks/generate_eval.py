"""Generations of generative models on a dev set, side by side: an untuned base model against
fine-tuned model directories, on the same prompts with the same decoding.

The dev examples come from a run config's dev data (`--config`: its column map, prompt template,
chat formatting, parallel files, ...) or from a JSONL file (`--dev`: messages, prompt/completion
or alpaca rows). A conversation is asked up to its last assistant turn; a prompt/completion row
is asked its prompt, and every reference it has scores. Each `--model` (a bridgetune model
directory, or a base model such as `smollm2`, asked with chat formatting when the config trains
through the chat template) generates greedily. Printed per model: ROUGE-1/2/L, sacreBLEU, chrF,
exact match (all 0-100; Chinese by characters), token-overlap F1 (SQuAD rules), the share of
generations that ended with EOS before `--max-new-tokens`, and a few examples. ONE JSON object
on the last line.

    python benchmarks/generate_eval.py --dev examples/data/support_chat/dev.jsonl \\
        --model smollm2 --model runs/support-assistant/model
    python benchmarks/generate_eval.py --config examples/configs/multi30k_en_de.yaml --limit 200 \\
        --model smollm2 --model runs/multi30k-en-de/model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_any(name: str, chat: bool, max_length: int):
    """A Predictor for a bridgetune model directory, or for a base causal model."""
    import bridgetune
    from bridgetune.inference.predictor import Predictor, pick_device
    from bridgetune.models import load_tokenizer, resolve_model
    from bridgetune.tasks import build_task

    if (Path(name) / "bridgetune.json").is_file():
        return bridgetune.load(name)
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    task = build_task("causal_lm", [], chat=chat)
    model = AutoModelForCausalLM.from_pretrained(path)
    meta = {"task": "causal_lm", "labels": [], "max_length": max_length}
    return Predictor(model, load_tokenizer(path), task, meta, pick_device("cpu"))


def dev_examples(args: argparse.Namespace):
    """(examples, chat formatting, max_length, language) from --config or --dev."""
    from bridgetune.config import DataConfig
    from bridgetune.data.io import read_file
    from bridgetune.recipes.check import as_config, task_reader
    from bridgetune.tasks.causal_lm import GenerationReader

    if args.config:
        cfg = as_config(args.config)
        data = cfg.data.model_copy(update={"train": cfg.data.dev or cfg.data.train})
        reader = task_reader(cfg)  # the config's prompt template and chat turns
        chat = reader.as_chat
        length, language = cfg.model.max_length, cfg.generate.language
    else:
        data, chat, length, language = DataConfig(train=args.dev), False, 512, "auto"
        reader = GenerationReader()
    examples = read_file(Path(data.train), data, reader)
    chat = chat or any(isinstance(e.label, dict) and "messages" in e.label for e in examples)
    return examples[: args.limit], chat, length, language


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="a run config: its dev data and formatting")
    source.add_argument("--dev", help="a JSONL file of generation rows")
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args()

    from bridgetune.inference.generation import prompt_and_references, shown_prompt, text_metrics
    from bridgetune.tasks.qa import answer_scores

    examples, chat, max_length, language = dev_examples(args)
    asked = [prompt_and_references(e) for e in examples]
    prompts = [prompt for prompt, _ in asked]
    references = [refs for _, refs in asked]
    results, devices = {}, set()
    for name in args.model:
        predictor = load_any(name, chat, max_length)
        devices.add(str(predictor.device))
        started = time.perf_counter()
        generated = predictor.generate(
            prompts, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
            do_sample=False, num_beams=1,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        texts = [g["text"] for g in generated]
        scores = text_metrics(texts, references, language)
        f1 = [max(answer_scores(t, r)[1] for r in refs) for t, refs in zip(texts, references)]
        results[name] = {
            **{k: round(v, 2) if isinstance(v, float) else v for k, v in scores.items()},
            "f1": round(100 * sum(f1) / len(f1), 2),
            "finished": round(100 * sum(g["finished"] for g in generated) / len(generated), 1),
            "seconds": round(seconds, 1),
            "examples": [
                {"prompt": shown_prompt(p)[-300:], "reference": r[0], "generated": t}
                for p, r, t in list(zip(prompts, references, texts))[:3]
            ],
        }
    columns = ("rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match", "f1", "finished")
    print(f"{'model':40s}" + "".join(f"{c[:8]:>9s}" for c in columns))
    for name, r in results.items():
        print(f"{name[-40:]:40s}" + "".join(f"{r[c]:9.2f}" for c in columns))
    line = {
        "benchmark": "generate_eval",
        "device": ",".join(sorted(devices)),
        "data": args.config or args.dev,
        "examples": len(prompts),
        "results": results,
    }
    if args.output:
        Path(args.output).write_text(json.dumps(line, indent=1, ensure_ascii=False), "utf-8")
    print(json.dumps(line, ensure_ascii=False))


if __name__ == "__main__":
    main()
