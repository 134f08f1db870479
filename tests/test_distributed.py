"""The same loop under `accelerate launch` with two CPU processes (DDP over gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import tiny_config, write_config


def launch(config: Path, port: str) -> subprocess.CompletedProcess:
    """`bridgetune train CONFIG` under `accelerate launch` with two CPU processes."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "bridgetune.cli",
        "train",
        str(config),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": port}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_two_process_training(tiny_bert, sentiment_csv, tmp_path):
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        train={"epochs": 20, "batch_size": 2},
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
    )
    path = write_config(config, tmp_path)
    done = launch(path, "29517")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    model_dir = tmp_path / "runs" / "tiny" / "model"
    meta = json.loads((model_dir / "bridgetune.json").read_text())
    assert meta["metrics"]["dev"]["accuracy"] >= 0.9
    # dev was predicted in two shards and gathered: the metrics are those of one process
    from bridgetune import api

    alone = api.evaluate(model_dir, sentiment_csv)
    assert {k: alone[k] for k in meta["metrics"]["dev"]} == meta["metrics"]["dev"]
    history = json.loads((tmp_path / "runs" / "tiny" / "history.json").read_text())
    steps = max(h["step"] for h in history)
    assert steps == 20 * 2  # 5 batches per epoch sharded over 2 processes: 2 each (1 dropped)


def test_two_process_lora_with_pgd_and_accumulation(tiny_bert, sentiment_csv, tmp_path):
    """Adversarial passes and peft models under DDP: extra forwards must not upset its reducer."""
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        method={"name": "lora"},
        train={"epochs": 2, "batch_size": 2, "grad_accum": 2, "adversarial": "pgd", "adv_steps": 2},
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
    )
    path = write_config(config, tmp_path)
    done = launch(path, "29518")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    meta = json.loads((tmp_path / "runs" / "tiny" / "model" / "bridgetune.json").read_text())
    assert meta["method"] == "lora"
