"""The peer of benchmarks/serve_generate.py: the chat service a user would write by hand.

FastAPI and `model.generate` as transformers' documentation shows streaming: each request
starts `model.generate` in a thread with a `TextIteratorStreamer` and returns its text as
OpenAI chat.completion.chunk server-sent events (the route and body `bridgetune serve` takes,
so one client measures both). Greedy decoding; same model directory (merged weights).

    python benchmarks/serve_generate_baseline.py MODEL_DIR --port 8001 [--serial]

`--serial` runs one generation at a time behind a lock (the other common hand-written choice).
"""

from __future__ import annotations

import argparse
import json
import threading

import torch
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer


class ChatRequest(BaseModel):
    messages: list[dict]
    max_tokens: int = 64
    stream: bool = True


def build_app(model_dir: str, serial: bool) -> FastAPI:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    lock = threading.Lock() if serial else None
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict:
        return {"ready": True}

    @app.post("/v1/chat/completions")
    def chat(request: ChatRequest) -> StreamingResponse:
        text = tokenizer.apply_chat_template(
            request.messages, tokenize=False, add_generation_prompt=True
        )
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run() -> None:
            with torch.inference_mode():
                if lock is not None:
                    lock.acquire()
                try:
                    model.generate(
                        **inputs,
                        streamer=streamer,
                        max_new_tokens=request.max_tokens,
                        do_sample=False,
                        pad_token_id=tokenizer.pad_token_id,
                    )
                finally:
                    if lock is not None:
                        lock.release()

        threading.Thread(target=run, daemon=True).start()

        def events():
            for piece in streamer:
                if piece:
                    chunk = {"object": "chat.completion.chunk",
                             "choices": [{"index": 0, "delta": {"content": piece}}]}  # fmt: skip
                    yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--serial", action="store_true", help="one generation at a time")
    args = parser.parse_args()
    app = build_app(args.model_dir, args.serial)
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
