"""Kill a real `bridgetune train` process at every write point of a run
(bridgetune.lifecycle.failpoints: SIGKILL, no cleanup) and check after each that the previous
finished run is intact and consistent, and that `--resume` (where a checkpoint was complete) or a
rerun finishes the run.

The rounds form a chain: round i kills a run with seed 1 + i into the run that round i - 1
finished, so each kill has a finished run to protect and each recovery is the next round's
previous run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bridgetune.inference.predictor import Predictor
from tests.conftest import tiny_config

NAME = "base"
# (failpoint, how the run is finished afterwards): "resume" where a complete checkpoint was on
# disk when the process died, "rerun" where none was, "none" where the new run was in place
POINTS = [
    ("best@1", "rerun"),  # first best weights, before any checkpoint
    ("before-swap:checkpoint@1", "rerun"),  # the first checkpoint, complete but not in place
    ("after-swap:checkpoint@1", "resume"),  # the first checkpoint in place, old one not removed
    ("reports", "resume"),  # reports written into staging, model not yet
    ("before-swap:model", "resume"),  # model directory complete in staging, not in place
    ("before-swap:run", "resume"),  # the whole new run complete, not yet swapped in
    ("after-swap:run", "none"),  # swapped in, the previous run not yet deleted
]


def train(config: Path, *args: str, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("BRIDGETUNE_FAILPOINT", None)
    if failpoint:
        env["BRIDGETUNE_FAILPOINT"] = failpoint
    command = [sys.executable, "-m", "bridgetune.cli", "train", str(config), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def check_consistent(run_dir: Path, seed: int) -> None:
    """One whole finished run of `seed`: config, reports and model agree; nothing left over."""
    meta = json.loads((run_dir / "model" / "bridgetune.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    dev = json.loads((run_dir / "dev_metrics.json").read_text())
    assert config["train"]["seed"] == meta["seed"] == seed
    assert meta["metrics"]["dev"]["accuracy"] == dev["accuracy"]
    assert json.loads((run_dir / "history.json").read_text())
    Predictor.load(run_dir / "model", device="cpu")  # loads


def leftovers(runs: Path) -> list[str]:
    """Staging directories, temporary files, owner files: none once a run has finished."""
    return sorted(str(p.relative_to(runs)) for p in runs.rglob(".*"))


@pytest.mark.slow
def test_a_kill_at_any_write_point_keeps_the_finished_run(tiny_bert, sentiment_csv, tmp_path):
    runs = tmp_path / "runs"
    config = tiny_config(
        tiny_bert,
        runs,
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
        train={"epochs": 2, "log_every": 1},
    )
    config["name"] = NAME
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    first = train(path, "train.seed=0")
    assert first.returncode == 0, first.stderr
    run_dir = runs / NAME
    check_consistent(run_dir, 0)
    for round_, (point, recovery) in enumerate(POINTS, start=1):
        seed = f"train.seed={round_}"
        killed = train(path, seed, "--overwrite", failpoint=point)
        assert killed.returncode == -9, (point, killed.stderr[-2000:])
        if recovery == "none":
            check_consistent(run_dir, round_)  # the new run is whole already
            continue
        check_consistent(run_dir, round_ - 1)  # the previous run, untouched
        if recovery == "resume":
            finished = train(path, seed, "--resume")
        else:
            refused = train(path, seed, "--resume")
            assert refused.returncode == 2 and "no unfinished run" in refused.stderr, point
            finished = train(path, seed, "--overwrite")
        assert finished.returncode == 0, (point, finished.stderr[-2000:])
        check_consistent(run_dir, round_)
        assert leftovers(runs) == [], point
    # the last round left the previous run at the staging name: the next start removes it
    again = train(path, "train.seed=0", "--overwrite")
    assert again.returncode == 0, again.stderr[-2000:]
    check_consistent(run_dir, 0)
    assert leftovers(runs) == []
