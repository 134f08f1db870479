"""Golden behaviour: the loss values of short tiny-model runs, recorded before the package
redesign (#24) and asserted after it, so a refactor that changes numbers is caught (torchtune's
recipe tests do the same). Re-record only for a change that means to alter training:
BRIDGETUNE_RECORD_GOLDEN=1 pytest tests/test_golden.py, and say why in the commit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import bridgetune
from tests.conftest import tiny_config, write_csv

GOLDEN = Path(__file__).parent / "golden" / "losses.json"
RECORD = os.environ.get("BRIDGETUNE_RECORD_GOLDEN") == "1"
CHAT = [
    {"messages": [{"role": "user", "content": "where is my order"},
                  {"role": "assistant", "content": "it ships tomorrow"}]},
    {"prompt": "refund", "completion": "the money is back in five days"},
    {"messages": [{"role": "user", "content": "what colour"},
                  {"role": "assistant", "content": "black and white"}]},
]  # fmt: skip


def losses(config: dict) -> list[float]:
    result = bridgetune.train(config)
    return [round(h["loss"], 5) for h in result.history if "loss" in h]


def check(name: str, values: list[float]) -> None:
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if RECORD:
        recorded[name] = values
        GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        return
    assert name in recorded, f"no golden losses for {name}: record them (see the docstring)"
    assert values == pytest.approx(recorded[name], rel=1e-4, abs=1e-5)


def run(base: Path, tmp_path: Path, data: Path, epochs: int, crf: bool = False,
        **sections: dict) -> list[float]:  # fmt: skip
    config = tiny_config(base, tmp_path / "runs", data={"train": str(data), "dev": str(data)},
                         **sections)  # fmt: skip
    # recorded in fp32: `auto` is bf16 on CPUs with AMX/AVX512-BF16 (tests/test_precision.py)
    config["train"].update(epochs=epochs, log_every=2, precision="fp32")
    if crf:
        config["model"]["crf"] = True
    return losses(config)


def test_classification_losses_hold(tiny_bert, sentiment_csv, tmp_path):
    check("classification", run(tiny_bert, tmp_path, sentiment_csv, 3))


def test_classification_with_rdrop_and_class_weights_losses_hold(tiny_bert, sentiment_csv,
                                                                 tmp_path):  # fmt: skip
    values = run(
        tiny_bert,
        tmp_path,
        sentiment_csv,
        3,
        train={"rdrop": 1.0, "class_weights": "balanced", "label_smoothing": 0.1},
    )
    check("classification_rdrop", values)


def test_ner_losses_hold(tiny_bert, ner_conll, tmp_path):
    check("ner", run(tiny_bert, tmp_path, ner_conll, 4, task="ner"))


def test_ner_crf_losses_hold(tiny_bert, ner_conll, tmp_path):
    check("ner_crf", run(tiny_bert, tmp_path, ner_conll, 4, crf=True, task="ner"))


def test_regression_losses_hold(tiny_bert, tmp_path):
    rows = [("great service thanks", 4.5), ("terrible slow delivery", 1.0),
            ("fast and helpful", 4.0), ("package arrived broken", 1.5)]  # fmt: skip
    data = write_csv(tmp_path / "ratings.csv", ["text", "label"], rows)
    check("regression", run(tiny_bert, tmp_path, data, 8, task="regression"))


def test_causal_lm_lora_losses_hold(tiny_llama, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in CHAT), encoding="utf-8")
    check("causal_lm_lora", run(tiny_llama, tmp_path, data, 4, task="causal_lm",
                                train={"lr": 3e-2}))  # fmt: skip
