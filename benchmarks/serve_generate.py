"""Serving a generative model: `bridgetune serve` (continuous batching) against a hand-written
FastAPI + `model.generate` service, at 1, 8 and 32 concurrent chat clients.

Both servers run in their own process on 127.0.0.1 with the same model directory: the default
generative model (SmolLM2-135M-Instruct, `bridgetune models pull smollm2`) LoRA-tuned for a few
steps on the example support conversations and exported merged, so plain transformers loads it
too (or --model DIR). They run one after the other, never at once. Each client sends
`--requests` streamed chat completions in a row (support questions from
examples/data/support_chat/dev.jsonl, or the conversations of --prompts; greedy, at most
--max-tokens tokens) with OpenAI's request body. Measured: generated tokens/s over the whole
load (answers re-tokenized by the model's tokenizer, the same for both servers), time to the
first generated text (p50/p95) and errors. The peer is benchmarks/serve_generate_baseline.py:
a thread per request with a TextIteratorStreamer, as transformers' docs show (`--peer-serial`:
one generation at a time behind a lock).

    python benchmarks/serve_generate.py --quick        # 1 request per client
    python benchmarks/serve_generate.py --clients 1 8 32 --requests 2

The last line of output is one JSON object (DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
DEV = REPO / "examples" / "data" / "support_chat" / "dev.jsonl"

from serve_load import free_port, start  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="merged model directory (default: tune one)")
    parser.add_argument(
        "--prompts", type=Path, default=DEV, help="JSONL of chat `messages` (default: %(default)s)"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=2, help="requests per client, in a row")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="one request per client")
    parser.add_argument("--peer-serial", action="store_true", help="peer: one at a time")
    parser.add_argument("--device", default="cpu", help="only cpu is measured here")
    return parser.parse_args()


def questions(path: Path) -> list[list[dict[str, str]]]:
    """Every conversation of `path` up to its last user turn."""
    prompts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "user")
        prompts.append(messages[: last + 1])
    return prompts


def tune_model(directory: Path) -> Path:
    """The default generative model after a few LoRA steps, merged."""
    import bridgetune

    config = REPO / "examples" / "configs" / "support_assistant.yaml"
    overrides = ["train.epochs=0.07", "method.export=merged", f"output_dir={directory}",
                 "name=serve-generate", "generate.eval_examples=0"]  # fmt: skip
    return bridgetune.train(config, overrides).model_dir


async def one_request(
    client: httpx.AsyncClient, messages: list[dict], max_tokens: int
) -> tuple[str, float | None, float, bool]:
    """(answer, seconds to its first text, seconds in all, ok)."""
    body = {"model": "m", "messages": messages, "max_tokens": max_tokens, "stream": True}
    began, first, pieces, ok = time.perf_counter(), None, [], False
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return "", None, time.perf_counter() - began, False
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    ok = True
                elif line.startswith("data: {"):
                    piece = json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                    if piece and first is None:
                        first = time.perf_counter() - began
                    pieces.append(piece)
    except httpx.HTTPError:
        ok = False
    return "".join(pieces), first, time.perf_counter() - began, ok


async def load(
    port: int, clients: int, requests: int, max_tokens: int, prompts: list[list[dict]]
) -> dict[str, Any]:
    log: list[tuple[str, float | None, float, bool]] = []

    async def client(index: int) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
            for turn in range(requests):
                messages = prompts[(index * requests + turn) % len(prompts)]
                log.append(await one_request(http, messages, max_tokens))

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"seconds": time.perf_counter() - began, "log": log}


def summarize(run: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    ok = [entry for entry in run["log"] if entry[3]]
    tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text, *_ in ok)
    firsts = sorted(entry[1] for entry in ok if entry[1] is not None)

    def percentile(q: float) -> float | None:
        if not firsts:
            return None
        return round(firsts[min(len(firsts) - 1, int(q * len(firsts)))], 2)

    return {
        "tokens_per_s": round(tokens / run["seconds"], 1),
        "ttft_p50_s": percentile(0.5),
        "ttft_p95_s": percentile(0.95),
        "mean_request_s": round(statistics.mean(e[2] for e in ok), 2) if ok else None,
        "tokens": tokens,
        "requests": len(ok),
        "errors": len(run["log"]) - len(ok),
        "seconds": round(run["seconds"], 1),
    }


def measure(name: str, command: list[str], port: int, args, tokenizer) -> dict[int, dict]:
    print(f"{name}: starting ...", file=sys.stderr)
    server = start(command, port)
    results = {}
    try:
        prompts = questions(args.prompts)
        asyncio.run(load(port, 1, 1, 8, prompts))  # warm-up
        for clients in args.clients:
            print(f"{name}: {clients} clients x {args.requests} requests ...", file=sys.stderr)
            run = asyncio.run(load(port, clients, args.requests, args.max_tokens, prompts))
            results[clients] = summarize(run, tokenizer)
            print(f"{name}: {clients} clients: {results[clients]}", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return results


def main() -> None:
    args = parse_args()
    if args.quick:
        args.requests = 1
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or tune_model(Path(scratch))
        tokenizer = AutoTokenizer.from_pretrained(model)
        ours_port, peer_port = free_port(), free_port()
        ours = measure(
            "ours",
            [sys.executable, "-m", "bridgetune.cli", "serve", str(model), "--port",
             str(ours_port), "--feedback-db", str(Path(scratch) / "fb.db")],
            ours_port, args, tokenizer,
        )  # fmt: skip
        peer_command = [sys.executable, str(REPO / "benchmarks" / "serve_generate_baseline.py"),
                        str(model), "--port", str(peer_port)]  # fmt: skip
        if args.peer_serial:
            peer_command.append("--serial")
        peer = measure("peer", peer_command, peer_port, args, tokenizer)
    report(args, ours, peer)


def report(args, ours: dict[int, dict], peer: dict[int, dict]) -> None:
    print(f"\n{'':10}{'tokens/s':>22}{'TTFT p50 s':>22}{'TTFT p95 s':>22}{'errors':>14}")
    print(f"{'clients':10}" + f"{'ours':>11}{'peer':>11}" * 3 + f"{'ours':>7}{'peer':>7}")
    speedups = {}
    for clients in args.clients:
        a, b = ours[clients], peer[clients]
        row = f"{clients:<10}"
        for key in ("tokens_per_s", "ttft_p50_s", "ttft_p95_s"):
            row += f"{a[key]!s:>11}{b[key]!s:>11}"
        print(row + f"{a['errors']:>7}{b['errors']:>7}")
        rate = b["tokens_per_s"]
        speedups[clients] = round(a["tokens_per_s"] / rate, 2) if rate else None
    print("tokens/s ratio by clients:", speedups)
    summary = {
        "benchmark": "serve_generate",
        "device": f"cpu ({os.cpu_count()} cores)",
        "requests_per_client": args.requests,
        "max_tokens": args.max_tokens,
        "peer": "serial" if args.peer_serial else "thread per request",
        "ours": ours,
        "peer_results": peer,
        "speedup": speedups,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
