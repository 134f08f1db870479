"""Run directories as a unit: no silent overwrite, problems found before training, swaps with
no moment without a directory, and what killed runs leave behind is cleaned or refused."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bridgetune
from bridgetune.lifecycle.atomic import atomic_directory, exchange, replace_directory
from bridgetune.lifecycle.rundir import OWNER_FILE, RunDirectory, RunDirectoryError
from tests.conftest import tiny_config


def _config(tiny_bert: Path, sentiment_csv: Path, runs: Path, **train) -> dict:
    return tiny_config(
        tiny_bert,
        runs,
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
        train={"epochs": 2, **train},
    )


def test_a_finished_run_is_replaced_only_with_overwrite(tiny_bert, sentiment_csv, tmp_path):
    config = _config(tiny_bert, sentiment_csv, tmp_path / "runs")
    first = bridgetune.train(config)
    weights = (first.model_dir / "model.safetensors").read_bytes()
    steps = []
    with pytest.raises(RunDirectoryError, match=r"holds a finished run .*--overwrite"):
        bridgetune.train(config, ["train.seed=7"], on_step=steps.append)
    assert steps == []  # refused before any training
    assert (first.model_dir / "model.safetensors").read_bytes() == weights
    second = bridgetune.train(config, ["train.seed=7"], overwrite=True)
    meta = json.loads((second.model_dir / "bridgetune.json").read_text())
    assert meta["seed"] == 7
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny"]  # no staging left


def test_an_output_dir_that_is_a_file_fails_before_reading_data(tiny_bert, tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("not a directory")
    config = tiny_config(tiny_bert, blocker, data={"train": str(tmp_path / "missing.csv")})
    with pytest.raises(RunDirectoryError, match=r"runs is a file, not a directory"):
        bridgetune.train(config)


def test_a_read_only_output_dir_fails_before_reading_data(tiny_bert, tmp_path, monkeypatch):
    def read_only(self: Path, data: bytes) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "write_bytes", read_only)
    config = tiny_config(tiny_bert, tmp_path / "runs", data={"train": str(tmp_path / "x.csv")})
    with pytest.raises(RunDirectoryError, match="Read-only file system.*writable output_dir"):
        bridgetune.train(config)


def test_too_little_disk_fails_before_training(tiny_bert, sentiment_csv, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: usage._replace(free=1000)
    )  # fmt: skip
    steps = []
    with pytest.raises(RunDirectoryError, match=r"needs about .* GB .* are free"):
        bridgetune.train(_config(tiny_bert, sentiment_csv, tmp_path / "runs"), on_step=steps.append)
    assert steps == []
    assert not (tmp_path / "runs").exists()  # a refused run leaves nothing behind


def test_a_run_written_by_a_live_process_is_refused(tmp_path):
    run = RunDirectory(tmp_path / "runs" / "x")
    run.staging.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        owner = {"pid": sleeper.pid, "host": os.uname().nodename, "started": "now"}
        (run.staging / OWNER_FILE).write_text(json.dumps(owner))
        with pytest.raises(RunDirectoryError, match=f"pid {sleeper.pid}.*is writing this run"):
            run.prepare()
    finally:
        sleeper.kill()
        sleeper.wait()
    run.prepare()  # its writer is gone: the staging directory is taken over


def test_what_a_killed_run_left_is_removed_with_a_notice(tmp_path):
    notices = []
    run = RunDirectory(tmp_path / "runs" / "x", announce=notices.append)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    (run.checkpoint).mkdir(parents=True)
    (run.checkpoint / "loop_state.json").write_text("{}")
    (run.staging / OWNER_FILE).write_text(json.dumps({"pid": int(dead), "host": "h"}))
    run.prepare()
    assert "--resume would have continued it" in notices[0]
    assert not run.checkpoint.exists()
    assert json.loads((run.staging / OWNER_FILE).read_text())["pid"] == os.getpid()


def test_resume_without_an_unfinished_run_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="no unfinished run of 'x'.*without --resume"):
        RunDirectory(tmp_path / "x").prepare(resume=True)


def test_exchange_swaps_two_directories_in_one_step(tmp_path):
    old, new = tmp_path / "model", tmp_path / ".model.new"
    old.mkdir()
    new.mkdir()
    (old / "v").write_text("old")
    (new / "v").write_text("new")
    if not exchange(new, old):
        pytest.skip("this kernel or filesystem cannot exchange; the fallback is tested below")
    assert (old / "v").read_text() == "new" and (new / "v").read_text() == "old"


def test_replace_directory_falls_back_to_two_renames(tmp_path, monkeypatch):
    monkeypatch.setattr("bridgetune.lifecycle.atomic.exchange", lambda a, b: False)
    path, staging = tmp_path / "model", tmp_path / "staging"
    path.mkdir()
    staging.mkdir()
    (staging / "v").write_text("new")
    retired = replace_directory(staging, path)
    assert (path / "v").read_text() == "new" and retired is not None and retired.is_dir()


def test_atomic_directory_removes_what_dead_writers_left(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = tmp_path / f".model.{dead}.abc123.tmp"
    stale.mkdir()
    mine = tmp_path / f".model.{os.getpid()}.zzz.tmp"
    mine.mkdir()
    with atomic_directory(tmp_path / "model") as staging:
        (staging / "v").write_text("x")
    assert not stale.exists() and mine.exists()  # a live writer's folder is left alone
    assert (tmp_path / "model" / "v").read_text() == "x"


def test_atomic_files_and_directories_get_the_permissions_of_the_umask(tmp_path):
    """mkstemp/mkdtemp create 0600/0700: a report, graph or model directory written that way
    could not be read by another user (a service account, a Neo4j import)."""
    import stat

    from bridgetune.lifecycle.atomic import UMASK, atomic_directory, atomic_write_text

    atomic_write_text(tmp_path / "report.md", "x")
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o666 & ~UMASK
    with atomic_directory(tmp_path / "model") as staging:
        (staging / "config.json").write_text("{}")
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~UMASK
