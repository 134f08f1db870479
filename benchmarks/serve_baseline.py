"""The peer of benchmarks/serve_load.py: the service a user would write by hand.

A `transformers` pipeline inside a plain FastAPI endpoint, same model directory, same route and
request body as `bridgetune serve`:

    python benchmarks/serve_baseline.py MODEL_DIR --port 8001
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline


class PredictRequest(BaseModel):
    texts: list[str]


def build_app(model_dir: str) -> FastAPI:
    classify = pipeline("text-classification", model=model_dir, device="cpu")
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict:
        return {"ready": True}

    @app.post("/v1/predict")
    def predict(request: PredictRequest) -> dict:
        return {"predictions": classify(request.texts, truncation=True)}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(build_app(args.model_dir), host="127.0.0.1", port=args.port, access_log=False)


if __name__ == "__main__":
    main()
