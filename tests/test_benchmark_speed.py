"""benchmarks/precision.py and benchmarks/step_overhead.py: their arithmetic and their JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / f"benchmarks/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_precision_compares_each_run_across_seeds(capsys):
    precision = bench("precision")

    def row(value: float, seconds: float) -> dict:
        return {"data": "sst2", "method": "full", "metric": "accuracy", "value": value,
                "run_s": seconds}  # fmt: skip

    rows = {
        "fp32": {1: [row(0.80, 30.0)], 2: [row(0.82, 32.0)]},
        "bf16": {1: [row(0.81, 20.0)], 2: [row(0.82, 20.0)]},
    }
    [entry] = precision.compare(rows)
    assert entry["fp32"]["mean"] == pytest.approx(0.81) and entry["bf16"]["mean"] == 0.815
    assert entry["bf16_minus_fp32"]["mean"] == pytest.approx(0.005)
    assert entry["speedup"] == pytest.approx(31.0 / 20.0, rel=1e-3)
    precision.print_table([entry], [1, 2])
    assert "sst2" in capsys.readouterr().out


def test_precision_skips_without_data(tmp_path, capsys):
    assert bench("precision").main(["--data", str(tmp_path), "--quick"]) == 0
    assert "skipped" in capsys.readouterr().out


def test_step_overhead_reads_medians_and_falls_back_to_synthetic_texts(tmp_path):
    overhead = bench("step_overhead")
    stamps = [i * 0.01 for i in range(overhead.SKIP)] + [1.0, 1.002, 1.005, 1.007]
    assert overhead.per_step_us(stamps) == pytest.approx(2000.0)
    rows, source = overhead.read_texts(tmp_path, 40)
    assert source == "synthetic" and len(rows) == 40 and {label for _, label in rows} <= {0, 1}


@pytest.mark.slow  # four short trainings of a tiny BERT and the Trainer in this process (~20 s)
def test_step_overhead_prints_its_json_last(tmp_path, capsys):
    overhead = bench("step_overhead")
    assert overhead.main(["--data", str(tmp_path), "--steps", "30"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["benchmark"] == "step_overhead" and result["texts"] == "synthetic"
    assert set(result["us_per_step"]) == {"bare", "ours", "trainer"}
    assert result["host_time_ratio"] > 0
