"""Predict, rank and generate with a saved model directory (the Predictor, bridgetune.inference)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridgetune.inference.predictor import Predictor


def load(model_dir: str | Path, device: str = "auto") -> Predictor:
    """Load a saved model directory for prediction."""
    return Predictor.load(model_dir, device=device)


def predict(
    model_dir: str | Path | Predictor, inputs: Sequence[str | tuple[str, str]]
) -> list[dict[str, Any]]:
    """Predictions for texts (or text pairs) with a saved model."""
    predictor = model_dir if isinstance(model_dir, Predictor) else load(model_dir)
    return predictor.predict(list(inputs))


def generate(
    model_dir: str | Path | Predictor,
    prompts: Sequence[str | list[dict[str, str]]],
    **decoding: Any,
) -> list[dict[str, Any]]:
    """Generations of a causal_lm model for prompts (a string, or a conversation as
    [{role, content}, ...]); `decoding`: max_new_tokens, do_sample, temperature, top_p,
    num_beams, repetition_penalty (greedy by default)."""
    predictor = model_dir if isinstance(model_dir, Predictor) else load(model_dir)
    return predictor.generate(prompts, **decoding)


def rank(
    model_dir: str | Path | Predictor,
    query: str,
    candidates: Sequence[str],
    top_k: int | None = None,
) -> list[dict[str, Any]]:
    """`candidates` sorted by a ranking model's score against `query`, best first:
    [{"index", "text", "score"}, ...] (the first `top_k`)."""
    predictor = model_dir if isinstance(model_dir, Predictor) else load(model_dir)
    return predictor.rank(query, candidates, top_k)
