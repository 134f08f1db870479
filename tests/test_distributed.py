"""The same loop under `accelerate launch` with two CPU processes (DDP over gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import tiny_config, write_config


def test_two_process_training(tiny_bert, sentiment_csv, tmp_path):
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        train={"epochs": 20, "batch_size": 2},
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
    )
    path = write_config(config, tmp_path)
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
        str(path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": "29517"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    model_dir = tmp_path / "runs" / "tiny" / "model"
    meta = json.loads((model_dir / "bridgetune.json").read_text())
    assert meta["metrics"]["dev"]["accuracy"] >= 0.9
    history = json.loads((tmp_path / "runs" / "tiny" / "history.json").read_text())
    steps = max(h["step"] for h in history)
    assert steps == 20 * 2  # 5 batches per epoch sharded over 2 processes: 2 each (1 dropped)
