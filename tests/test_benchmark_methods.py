"""benchmarks/methods.py: its configs train with bridgetune, its tables and plots are right, and
it skips cleanly without the shared data (the real runs are in docs/methods.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("bench_methods", ROOT / "benchmarks/methods.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_configs_are_valid_bridgetune_configs(tmp_path) -> None:
    from bridgetune.config import build_config

    bench = _module()
    args = bench.parse_args(["--data", str(tmp_path)])
    spec = bench.base_spec(args, "sst2-lora", "sst2", "lora", 1e-3, 0)
    config = build_config(bench.run_config({**spec, "train_examples": 100}, tmp_path))
    assert config.method.name == "lora" and config.data.max_train_examples == 100
    low = bench.base_spec(args, "lowdata-fgm-0", "sst2", "full", 5e-5, 3)
    low.update(few_shot=200, train={"adversarial": "fgm"}, augment={"ops": ["swap"], "seed": 3})
    config = build_config(bench.run_config(low, tmp_path))
    assert (config.data.few_shot_k, config.data.few_shot_seed) == (100, 3)
    assert config.train.adversarial == "fgm" and config.augment.ops == ["swap"]


def test_tables_and_plots(tmp_path) -> None:
    bench = _module()
    rows = [
        {"data": "sst2", "method": m, "lr": 1e-3, "metric": "accuracy", "value": v,
         "trainable": t, "total": 100, "run_s": 10.0, "peak_mb": 900}
        for m, v, t in (("full", 0.85, 100), ("lora", 0.84, 1))
    ]  # fmt: skip
    assert "| sst2 | lora | 0.001 | accuracy 0.8400 | -1.0 | 1 (1.00%) |" in bench.methods_table(
        rows
    )
    low = [
        {"variant": v, "value": x, "run_s": 5.0} for v in ("baseline", "fgm") for x in (0.7, 0.8)
    ]
    assert "| fgm | 0.7500 ± 0.0707 (+0.0) | 0.700, 0.800 |" in bench.lowdata_table(low)
    bench.plot({"study": "methods", "rows": rows}, tmp_path / "m.png")
    bench.plot({"study": "lowdata", "rows": low}, tmp_path / "l.png")
    assert (tmp_path / "m.png").stat().st_size > 1000 and (tmp_path / "l.png").is_file()


def test_skips_without_data(tmp_path, capsys) -> None:
    assert _module().main(["--data", str(tmp_path)]) == 0
    assert "skipped" in capsys.readouterr().out
