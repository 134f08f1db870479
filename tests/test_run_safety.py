"""Run names and paths, the run-directory claim, resume with other settings, damaged checkpoints
and a full disk: nothing outside a run is touched, nothing is recorded falsely, no traceback."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import tiny_config, write_csv
from hypothesis import given, settings
from hypothesis import strategies as st

import bridgetune
from bridgetune.config import ConfigError
from bridgetune.config.base import plain_name
from bridgetune.lifecycle.atomic import DiskFull
from bridgetune.lifecycle.rundir import RunDirectory, RunDirectoryError, check_disk
from bridgetune.training.checkpoint import CheckpointMismatch
from bridgetune.training.loop import TrainingInterrupted

# --- names ---------------------------------------------------------------------------------

BAD_NAMES = ["", " ", ".", "..", "a/b", "../x", "/abs", "a\\b", ".hidden", "x\x00y", "tab\tname",
             " lead", "trail ", "x" * 201]  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_that_is_not_one_plain_folder_is_refused_before_any_work(name, tmp_path):
    (tmp_path / "keep.txt").write_text("a user's file")
    with pytest.raises(ConfigError, match="name"):
        bridgetune.train({"name": name, "output_dir": str(tmp_path), "data": {"train": "no.csv"}})
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_an_accepted_name_is_exactly_one_new_child_folder(name):
    try:
        plain_name(name, "name")
    except ValueError as error:
        assert "name" in str(error) and "plain folder name" in str(error)
        return
    parent = Path("/srv/runs")
    child = parent / name
    assert child.parent == parent and child.name == name  # not '.', '..', a path, or empty
    assert not name.startswith(".") and name == name.strip()


def test_chinese_and_punctuated_names_are_plain(tmp_path):
    for name in ("客服-v2", "sst2_lora.r16", "run (1)"):
        assert plain_name(name, "name") == name


def test_the_cli_refuses_a_dot_name_and_keeps_the_output_dir(tmp_path, tiny_bert, sentiment_csv):
    from typer.testing import CliRunner

    from bridgetune.cli import app

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "other-run.txt").write_text("keep me")
    config = tiny_config(tiny_bert, runs, data={"train": str(sentiment_csv)})
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    for name in (".", "''", ".."):
        result = CliRunner().invoke(app, ["train", str(path), f"name={name}"])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "name" in result.output
    assert sorted(p.name for p in runs.iterdir()) == ["other-run.txt"]


# --- the run directory ---------------------------------------------------------------------


def test_a_folder_that_is_not_a_run_is_never_replaced(tmp_path):
    target = tmp_path / "runs" / "mine"
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("a user's notes")
    for overwrite in (False, True):
        with pytest.raises(RunDirectoryError, match="not a bridgetune run"):
            RunDirectory(target).prepare(overwrite=overwrite)
    assert (target / "notes.txt").read_text() == "a user's notes"
    empty = tmp_path / "runs" / "empty"
    empty.mkdir()
    RunDirectory(empty).prepare()  # an empty folder the user made is fine


def _claim(path: str, barrier, outcomes, release) -> None:
    barrier.wait()
    try:
        RunDirectory(Path(path), announce=lambda text: None).prepare()
    except RunDirectoryError:
        outcomes.put("refused")
        return
    except Exception as error:  # anything else is a failure of the claim
        outcomes.put(f"error {type(error).__name__}: {error}")
        return
    outcomes.put("claimed")
    release.wait(30)  # stay alive (a live owner) until every other process has tried


def test_of_many_simultaneous_claims_exactly_one_wins(tmp_path):
    context = multiprocessing.get_context("fork")
    processes = 8
    for trial in range(6):
        path = tmp_path / f"trial{trial}" / "run"
        barrier, outcomes, release = (
            context.Barrier(processes),
            context.Queue(),
            context.Event(),
        )
        workers = [
            context.Process(target=_claim, args=(str(path), barrier, outcomes, release))
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        results = sorted(outcomes.get(timeout=60) for _ in workers)
        release.set()
        for worker in workers:
            worker.join(30)
        assert results == ["claimed"] + ["refused"] * (processes - 1), results


def test_check_disk_counts_the_checkpoint_a_resume_replaces(tmp_path):
    import shutil

    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(RunDirectoryError, match="GB are free"):
        check_disk(tmp_path, free + 10**9)
    check_disk(tmp_path, free + 10**9, present=2 * 10**9)  # the old checkpoint makes room


# --- resume --------------------------------------------------------------------------------


def _config(tiny_bert, data, run_dir, **train):
    return tiny_config(
        tiny_bert,
        run_dir,
        data={"train": str(data), "dev": str(data)},
        train={"epochs": 3, "lr": 1e-3, "batch_size": 2, **train},
    )


def _stopped(config) -> None:
    def on_step(state) -> None:
        if state.global_step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        bridgetune.train(config, on_step=on_step)


def test_resume_refuses_settings_that_shape_the_run(tiny_bert, sentiment_csv, tmp_path):
    config = _config(tiny_bert, sentiment_csv, tmp_path)
    _stopped(config)
    staging = tmp_path / ".tiny.partial"
    before = (staging / "settings.json").read_text()
    changes = {
        "train.lr": {**config, "train": {**config["train"], "lr": 5e-4}},
        "train.epochs": {**config, "train": {**config["train"], "epochs": 5}},
        "model.max_length": {**config, "model": {**config["model"], "max_length": 16}},
        "method.name": {**config, "method": {"name": "bitfit"}},
    }
    for key, changed in changes.items():
        with pytest.raises(RunDirectoryError, match=key.replace(".", r"\.")):
            bridgetune.train(changed, resume=True)
    other = write_csv(tmp_path / "other.csv", ["text", "label"],
                      [("fine", "good"), ("awful", "bad"), ("meh", "neutral")] * 3)  # fmt: skip
    with pytest.raises(RunDirectoryError, match="labels") as refused:
        bridgetune.train(_config(tiny_bert, other, tmp_path), resume=True)
    assert "data files" in str(refused.value)
    assert (staging / "settings.json").read_text() == before  # the record is unchanged
    # what only changes how the run reports and saves may differ
    relaxed = {**config, "train": {**config["train"], "log_every": 1, "eval_batch_size": 3}}
    result = bridgetune.train(relaxed, resume=True)
    assert result.model_dir.is_dir()


def test_resume_from_a_damaged_checkpoint_names_the_file(tiny_bert, sentiment_csv, tmp_path):
    config = _config(tiny_bert, sentiment_csv, tmp_path)
    _stopped(config)
    checkpoint = tmp_path / ".tiny.partial" / "checkpoint"
    for name, damage in (("training_state.pt", b"not a torch file"),
                         ("model.safetensors", b""),
                         ("loop_state.json", b"{")):  # fmt: skip
        saved = (checkpoint / name).read_bytes()
        (checkpoint / name).write_bytes(damage)
        with pytest.raises(CheckpointMismatch, match=name.replace(".", r"\.")) as refused:
            bridgetune.train(config, resume=True)
        assert "without --resume" in str(refused.value)
        (checkpoint / name).write_bytes(saved)
    assert bridgetune.train(config, resume=True).model_dir.is_dir()


def test_a_full_disk_says_so_and_the_run_resumes(tiny_bert, sentiment_csv, tmp_path, monkeypatch):
    from bridgetune.lifecycle import failpoints

    config = _config(tiny_bert, sentiment_csv, tmp_path)
    failpoints._hits.clear()
    monkeypatch.setenv("BRIDGETUNE_FAILPOINT", "checkpoint@2:enospc")  # the second epoch's
    with pytest.raises(DiskFull) as full:
        bridgetune.train(config)
    message = str(full.value)
    assert "no space left" in message and "--resume" in message and str(tmp_path) in message
    monkeypatch.delenv("BRIDGETUNE_FAILPOINT")
    assert bridgetune.train(config, resume=True).model_dir.is_dir()


# --- real processes (CI's slow step) ---------------------------------------------------------


def _cli(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    import sys

    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "OMP_NUM_THREADS": "1"}  # fmt: skip
    environment.pop("BRIDGETUNE_FAILPOINT", None)
    environment.update(env or {})
    command = [sys.executable, "-m", "bridgetune.cli", "train", str(config), *args]
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.slow
def test_simultaneous_cli_starts_of_one_run(tiny_bert, sentiment_csv, tmp_path):
    import yaml

    config = _config(tiny_bert, sentiment_csv, tmp_path / "runs")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    starts = [_cli(path) for _ in range(6)]
    results = [(p.wait(300), p.stderr.read()) for p in starts]
    codes = sorted(code for code, _ in results)
    assert codes == [0] + [2] * 5, results
    for code, stderr in results:
        assert "Traceback" not in stderr
        if code:
            assert "another bridgetune process" in stderr or "finished run" in stderr, stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny"]


@pytest.mark.slow
def test_a_full_disk_in_the_cli_is_one_line(tiny_bert, sentiment_csv, tmp_path):
    import yaml

    config = _config(tiny_bert, sentiment_csv, tmp_path / "runs")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    full = _cli(path, env={"BRIDGETUNE_FAILPOINT": "checkpoint@2:enospc"})
    code, stderr = full.wait(300), full.stderr.read()
    assert code == 2 and "Traceback" not in stderr, stderr
    assert "no space left" in stderr and "--resume" in stderr
    resumed = _cli(path, "--resume")
    assert resumed.wait(300) == 0, resumed.stderr.read()


def test_a_model_directory_replaces_only_a_model_directory(tmp_path):
    from bridgetune.export.model_dir import check_replaceable

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a bridgetune model directory"):
        bridgetune.zeroshot(["a", "b"], folder)
    assert (folder / "notes.txt").read_text() == "keep"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        check_replaceable(tmp_path / "file")
    assert check_replaceable(tmp_path / "new") == tmp_path / "new"


def test_output_dir_with_a_tilde_is_the_home_folder(monkeypatch, tmp_path):
    from bridgetune.config import RunConfig

    monkeypatch.setenv("HOME", str(tmp_path))
    config = RunConfig.model_validate({"output_dir": "~/runs", "data": {"train": "t.csv"}})
    assert config.run_dir == tmp_path / "runs" / "run"  # not a folder named '~' here
    data = RunConfig.model_validate({"data": {"train": "~/t.csv", "dev": "~/d.csv"}}).data
    assert (data.train, data.dev) == (str(tmp_path / "t.csv"), str(tmp_path / "d.csv"))


def test_zeroshot_replaces_only_a_zero_shot_model(tiny_bert, tmp_path):
    import json

    trained = tmp_path / "model"
    bridgetune.zeroshot(["a", "b"], trained, model=str(tiny_bert))
    bridgetune.zeroshot(["a", "b", "c"], trained, model=str(tiny_bert))  # rebuilt: fine
    meta = json.loads((trained / "bridgetune.json").read_text())
    (trained / "bridgetune.json").write_text(json.dumps({**meta, "method": "full"}))
    with pytest.raises(FileExistsError, match="trained with method 'full'"):
        bridgetune.zeroshot(["a", "b"], trained, model=str(tiny_bert))
    assert json.loads((trained / "bridgetune.json").read_text())["method"] == "full"


def test_outputs_are_never_a_folder_or_inside_the_model(tiny_bert, tmp_path):
    from typer.testing import CliRunner

    from bridgetune.cli import app
    from bridgetune.lifecycle.store import FeedbackStore

    model = tmp_path / "model"
    bridgetune.zeroshot(["a", "b"], model, model=str(tiny_bert))
    config = (model / "config.json").read_bytes()
    (tmp_path / "folder.csv").mkdir()
    data = tmp_path / "data.csv"
    data.write_text("text,label\nhi,a\n", "utf-8")
    database = tmp_path / "f.db"
    FeedbackStore(database).add(text="hi", label="a", task="classification", model_version="v")
    runs = [
        (["predict", str(model), "hi", "--output", str(tmp_path)], "is a folder"),
        (["predict", str(model), "hi", "--output", str(model / "config.json")], "inside the model"),
        (["feedback", "export", str(database), "--output", str(tmp_path / "folder.csv")],
         "is a folder"),
        (["feedback", "export", str(data), "--output", str(tmp_path / "x.csv")],
         "cannot be opened as a feedback database"),
        (["serve", str(model), "--feedback-db", str(data)], "cannot be opened"),
        (["serve", str(model), "--feedback-db", str(tmp_path)], "is a folder"),
    ]  # fmt: skip
    for args, words in runs:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert words in " ".join(result.output.split()) and "Traceback" not in result.output
    assert (model / "config.json").read_bytes() == config
    assert data.read_text("utf-8") == "text,label\nhi,a\n"


def test_failpoint_names_with_colons_still_match(monkeypatch):
    """`before-swap:checkpoint@1` is a point's name and count; only `:enospc` is an action."""
    import errno

    from bridgetune.lifecycle import failpoints

    failpoints._hits.clear()
    monkeypatch.setenv("BRIDGETUNE_FAILPOINT", "before-swap:checkpoint@2:enospc")
    failpoints.failpoint("before-swap:checkpoint")  # the first hit passes
    with pytest.raises(OSError) as full:
        failpoints.failpoint("before-swap:checkpoint")
    assert full.value.errno == errno.ENOSPC
    failpoints._hits.clear()
    killed = []
    monkeypatch.setattr(failpoints.os, "kill", lambda pid, sig: killed.append(sig))
    monkeypatch.setenv("BRIDGETUNE_FAILPOINT", "before-swap:checkpoint@1")
    failpoints.failpoint("before-swap:checkpoint")
    assert killed == [failpoints.signal.SIGKILL]
