"""Serving throughput and latency: `bridgetune serve` against a hand-written baseline.

Both servers run in their own process on 127.0.0.1 with the same model directory (the bundled
MiniLM fine-tuned for one epoch on the example support data, unless --model is given). They are
loaded one after the other, never at once. N clients on keep-alive connections send requests of
`--texts-per-request` SST-2 dev sentences as fast as answers come back for T seconds (after a
warm-up), and the script reports requests/s, texts/s, p50/p95/p99 latency and errors. The peer is
`benchmarks/serve_baseline.py`: a `transformers` pipeline inside a plain FastAPI endpoint.
Before the load, both servers label the same 200 sentences and the agreement is printed.

    python benchmarks/serve_load.py --quick                  # 32 clients x 15 s per server
    python benchmarks/serve_load.py --clients 32 --duration 60

The last line of output is one JSON object (DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true", help="15 s per server")
    parser.add_argument("--device", default="cpu", help="only cpu is measured here")
    parser.add_argument("--model", type=Path, help="model directory (default: train one)")
    parser.add_argument(
        "--serve",
        type=Path,
        help="the directory bridgetune serves instead of --model: an exported one (ONNX or "
        "OpenVINO, int8); the peer serves its PyTorch source (--model, or the export's source)",
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument(
        "--precision", default="auto", help="bridgetune's serve precision (auto|fp32|bf16)"
    )
    return parser.parse_args()


def load_texts(data: Path) -> tuple[list[str], str]:
    dev = data / "sst2" / "dev.tsv"
    if dev.is_file():
        with dev.open(encoding="utf-8") as stream:
            rows = csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
            return [(row.get("sentence") or row["content"]).strip() for row in rows], str(dev)
    print(f"{dev} not found: using the example support messages instead", file=sys.stderr)
    test = REPO / "examples" / "data" / "support" / "test.csv"
    with test.open(encoding="utf-8") as stream:
        return [row["text"] for row in csv.DictReader(stream)], str(test)


def train_model(directory: Path) -> Path:
    """The default model fine-tuned briefly (the head must exist; accuracy is not measured)."""
    import bridgetune

    config = REPO / "examples" / "configs" / "support_sentiment.yaml"
    overrides = ["train.epochs=1", f"output_dir={directory}", "name=serve-load"]
    return bridgetune.train(config, overrides).model_dir


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], port: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{command[:4]} exited with {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"{command[:4]} not ready after 180 s")


async def one_client(
    port: int, bodies: list[bytes], until: float, measure_from: float, log: list[tuple]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    number = 0
    try:
        while (now := time.perf_counter()) < until:
            body = bodies[number % len(bodies)]
            number += 1
            head = (
                f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                f"\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            try:
                writer.write(head + body)
                status, _ = await read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError) as error:
                log.append((now, time.perf_counter(), f"error {type(error).__name__}"))
                return
            if now >= measure_from:
                log.append((now, time.perf_counter(), status))
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = await reader.readuntil(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    match = re.search(rb"content-length:\s*(\d+)", header, re.IGNORECASE)
    return status, await reader.readexactly(int(match.group(1)) if match else 0)


async def run_load(port: int, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    per = args.texts_per_request
    bodies = [
        json.dumps({"texts": texts[i : i + per]}).encode()
        for i in range(0, len(texts) - per + 1, per)
    ]
    start_at = time.perf_counter()
    measure_from = start_at + args.warmup
    until = measure_from + args.duration
    log: list[tuple] = []
    clients = [
        one_client(port, bodies[i :: args.clients] or bodies, until, measure_from, log)
        for i in range(args.clients)
    ]
    await asyncio.gather(*clients)
    return summarize(log, args.duration, per)


def summarize(log: list[tuple], duration: float, per: int) -> dict[str, Any]:
    ok = sorted(end - begin for begin, end, status in log if status == 200)
    errors = sum(1 for *_, status in log if status != 200)

    def percentile(q: float) -> float:
        return round(1000 * ok[min(len(ok) - 1, int(q * len(ok)))], 1) if ok else float("nan")

    return {
        "requests_per_s": round(len(ok) / duration, 1),
        "texts_per_s": round(len(ok) * per / duration, 1),
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
        "p99_ms": percentile(0.99),
        "requests": len(ok),
        "errors": errors,
    }


def labels_of(port: int, texts: list[str]) -> list[str]:
    labels = []
    for i in range(0, len(texts), 25):
        body = {"texts": texts[i : i + 25]}
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json=body, timeout=60).json()
        labels.extend(p["label"] for p in answer["predictions"])
    return labels


def mean_batch(port: int) -> float | None:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    total = re.search(r"^bridgetune_batch_texts_sum (\S+)", text, re.MULTILINE)
    count = re.search(r"^bridgetune_batch_texts_count (\S+)", text, re.MULTILINE)
    if not total or not count or float(count.group(1)) == 0:
        return None
    return round(float(total.group(1)) / float(count.group(1)), 1)


def measure(name: str, command: list[str], port: int, texts: list[str], args) -> dict[str, Any]:
    print(f"{name}: starting {' '.join(command[1:3])} ...", file=sys.stderr)
    server = start(command, port)
    try:
        labels = labels_of(port, texts[:200])
        print(f"{name}: {args.clients} clients for {args.duration:.0f} s ...", file=sys.stderr)
        result = asyncio.run(run_load(port, texts, args))
        batch = mean_batch(port) if name == "ours" else None
    finally:
        server.terminate()
        server.wait(timeout=60)
    if batch is not None:
        result["mean_batch_texts"] = batch
    result["labels"] = labels
    return result


def main() -> None:
    args = parse_args()
    if args.quick:
        args.duration = 15.0
    texts, source = load_texts(args.data)
    with tempfile.TemporaryDirectory() as scratch:
        if args.serve and not args.model:  # the peer serves the export's PyTorch source
            meta = json.loads((args.serve / "bridgetune.json").read_text(encoding="utf-8"))
            args.model = Path(meta["runtime"]["source"])
        model = args.model or train_model(Path(scratch))
        served = args.serve or model
        ours_port, peer_port = free_port(), free_port()
        ours = measure(
            "ours",
            [sys.executable, "-m", "bridgetune.cli", "serve", str(served), "--port",
             str(ours_port), "--feedback-db", str(Path(scratch) / "fb.db"),
             f"precision={args.precision}"],
            ours_port, texts, args,
        )  # fmt: skip
        peer = measure(
            "peer",
            [sys.executable, str(REPO / "benchmarks" / "serve_baseline.py"), str(model),
             "--port", str(peer_port)],
            peer_port, texts, args,
        )  # fmt: skip
    same = sum(a == b for a, b in zip(ours.pop("labels"), peer.pop("labels")))
    report(args, source, ours, peer, same)


def report(args, source: str, ours: dict, peer: dict, same: int) -> None:
    print(f"\nagreement on 200 sentences: {same}/200 labels identical")
    print(f"{'':24}{'bridgetune':>14}{'hand-written':>14}")
    for key in ("requests_per_s", "texts_per_s", "p50_ms", "p95_ms", "p99_ms", "errors"):
        print(f"{key:24}{ours[key]:>14}{peer[key]:>14}")
    if "mean_batch_texts" in ours:
        print(f"{'mean micro-batch (texts)':24}{ours['mean_batch_texts']:>14}")
    speedup = round(ours["texts_per_s"] / peer["texts_per_s"], 2) if peer["texts_per_s"] else None
    print(f"texts/s ratio: {speedup}x")
    summary = {
        "benchmark": "serve_load",
        "device": f"cpu ({os.cpu_count()} cores)",
        "clients": args.clients,
        "duration_s": args.duration,
        "texts_per_request": args.texts_per_request,
        "precision": args.precision,
        "served": str(args.serve or args.model or "a 1-epoch support-sentiment model"),
        "data": source,
        "ours": ours,
        "peer": peer,
        "label_agreement": f"{same}/200",
        "speedup": speedup,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
