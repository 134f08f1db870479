"""Ctrl-C saves a checkpoint; --resume ends with the same metrics and weights as one run."""

from __future__ import annotations

import os
import signal

import pytest
from conftest import tiny_config
from safetensors.torch import load_file

import bridgetune
from bridgetune.training.loop import TrainingInterrupted


def _config(tiny_bert, sentiment_csv, run_dir, **train):
    return tiny_config(
        tiny_bert,
        run_dir,
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
        train={"epochs": 4, "lr": 1e-3, "grad_accum": 2, "batch_size": 2, **train},
    )


def _interrupt_at(step: int):
    def on_step(state) -> None:
        if state.global_step == step:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, handled by the loop

    return on_step


@pytest.mark.parametrize("stop_step", [3, 5])  # mid-epoch and at an epoch boundary
def test_interrupted_then_resumed_equals_uninterrupted(
    tiny_bert, sentiment_csv, tmp_path, stop_step
):
    whole = bridgetune.train(_config(tiny_bert, sentiment_csv, tmp_path / "a"))
    config = _config(tiny_bert, sentiment_csv, tmp_path / "b")
    with pytest.raises(TrainingInterrupted) as stopped:
        bridgetune.train(config, on_step=_interrupt_at(stop_step))
    assert stopped.value.step == stop_step
    assert (tmp_path / "b" / ".tiny.partial" / "checkpoint" / "model.safetensors").is_file()
    assert not (tmp_path / "b" / "tiny" / "model").exists()  # nothing half-written
    resumed = bridgetune.train(config, resume=True)
    assert resumed.metrics["accuracy"] == whole.metrics["accuracy"]
    assert [h.get("loss") for h in resumed.history] == [h.get("loss") for h in whole.history]
    ours = load_file(resumed.model_dir / "model.safetensors")
    reference = load_file(whole.model_dir / "model.safetensors")
    assert all((ours[k] == reference[k]).all() for k in reference)


def test_resume_without_checkpoint_is_a_clear_error(tiny_bert, sentiment_csv, tmp_path):
    with pytest.raises(FileNotFoundError, match="no unfinished run"):
        bridgetune.train(_config(tiny_bert, sentiment_csv, tmp_path), resume=True)


def test_early_stopping_restores_best(tiny_bert, sentiment_csv, tmp_path):
    config = _config(
        tiny_bert, sentiment_csv, tmp_path, epochs=40, lr=5e-2, patience=2, grad_accum=1
    )
    result = bridgetune.train(config)
    evals = [h for h in result.history if "metric" in h]
    assert result.stopped_early and len(evals) < 40
    assert result.metrics["accuracy"] == max(h["metric"] for h in evals)


def test_precision_and_device_choices_on_cpu(monkeypatch):
    from bridgetune.config import TrainConfig
    from bridgetune.training.loop import resolve_precision

    monkeypatch.setenv("BRIDGETUNE_CPU_BF16", "0")  # a CPU without AMX/AVX512-BF16
    assert resolve_precision(TrainConfig()) == (True, "fp32")
    assert resolve_precision(TrainConfig(precision="bf16")) == (True, "bf16")
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        resolve_precision(TrainConfig(precision="fp16"))
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_precision(TrainConfig(device="cuda"))


def test_lora_with_fgm_resumes_to_the_same_run(tiny_bert, sentiment_csv, tmp_path):
    extra = {"method": {"name": "lora", "export": "adapter"}}
    whole_config = _config(tiny_bert, sentiment_csv, tmp_path / "a", adversarial="fgm")
    whole = bridgetune.train({**whole_config, **extra})
    config = {**_config(tiny_bert, sentiment_csv, tmp_path / "b", adversarial="fgm"), **extra}
    with pytest.raises(TrainingInterrupted):
        bridgetune.train(config, on_step=_interrupt_at(3))
    # the checkpoint holds what trains: the adapter and the head, not the frozen base model
    saved = load_file(tmp_path / "b" / ".tiny.partial" / "checkpoint" / "model.safetensors")
    assert saved and all("lora_" in k or "modules_to_save" in k for k in saved), list(saved)
    resumed = bridgetune.train(config, resume=True)
    assert [h.get("loss") for h in resumed.history] == [h.get("loss") for h in whole.history]
    assert resumed.metrics["accuracy"] == whole.metrics["accuracy"]


def test_packed_lora_sft_resumes_to_the_same_run(tiny_llama, tmp_path):
    from test_causal_lm import SUPPORT, write_jsonl

    data = write_jsonl(tmp_path / "chat.jsonl", SUPPORT * 2)

    def config(run_dir):
        return tiny_config(
            tiny_llama, run_dir, task="causal_lm",
            data={"train": str(data), "dev": str(data)},
            train={"epochs": 4, "lr": 1e-2, "batch_size": 2, "packing": True},
        )  # fmt: skip

    whole = bridgetune.train(config(tmp_path / "a"))
    with pytest.raises(TrainingInterrupted):
        bridgetune.train(config(tmp_path / "b"), on_step=_interrupt_at(5))
    saved = load_file(tmp_path / "b" / ".tiny.partial" / "checkpoint" / "model.safetensors")
    assert saved and all("lora_" in k for k in saved)  # only the adapter trains
    resumed = bridgetune.train(config(tmp_path / "b"), resume=True)
    assert [h.get("loss") for h in resumed.history] == [h.get("loss") for h in whole.history]
    assert resumed.metrics["loss"] == whole.metrics["loss"]
