"""train.precision: `auto` is bf16 autocast on CPUs that compute bf16 natively (AMX-BF16 or
AVX512-BF16) and fp32 elsewhere; bf16 training converges with fp32 master weights; and the
training step makes no host sync (the loss is read every log_every steps only)."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import tiny_config

import bridgetune
from bridgetune.config import TrainConfig
from bridgetune.runtime import hardware
from bridgetune.training.loop import Loop, resolve_precision


@pytest.mark.parametrize(
    "flags,expected",
    [
        ({"fpu", "avx2", "amx_bf16", "amx_tile"}, "bf16"),  # Sapphire Rapids and later
        ({"fpu", "avx512f", "avx512_bf16"}, "bf16"),  # Cooper Lake, Zen 4
        ({"fpu", "avx2", "avx512f"}, "fp32"),  # bf16 would be emulated: slower than fp32
        (set(), "fp32"),  # flags unreadable (not Linux)
    ],
)
def test_auto_precision_follows_the_cpus_instructions(flags, expected, monkeypatch):
    monkeypatch.delenv("BRIDGETUNE_CPU_BF16", raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    assert resolve_precision(TrainConfig(device="cpu")) == (True, expected)
    assert resolve_precision(TrainConfig(device="cpu", precision="fp32")) == (True, "fp32")
    assert resolve_precision(TrainConfig(device="cpu", precision="bf16")) == (True, "bf16")


def test_auto_keeps_generative_tasks_in_fp32_on_a_cpu(monkeypatch):
    """bf16 cost SmolLM2 LoRA SFT 0.046 dev loss on an AMX CPU (docs/benchmarks.md)."""
    monkeypatch.setenv("BRIDGETUNE_CPU_BF16", "1")
    assert resolve_precision(TrainConfig(device="cpu"), generative=True) == (True, "fp32")
    assert resolve_precision(TrainConfig(device="cpu"), generative=False) == (True, "bf16")
    bf16 = TrainConfig(device="cpu", precision="bf16")
    assert resolve_precision(bf16, generative=True) == (True, "bf16")


def test_the_override_wins_over_detection(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    monkeypatch.setenv("BRIDGETUNE_CPU_BF16", "0")
    assert resolve_precision(TrainConfig(device="cpu")) == (True, "fp32")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset())
    monkeypatch.setenv("BRIDGETUNE_CPU_BF16", "1")
    assert resolve_precision(TrainConfig(device="cpu")) == (True, "bf16")


def test_cpu_flags_are_read_from_cpuinfo():
    flags = hardware.cpu_flags()
    assert isinstance(flags, frozenset)
    if flags:  # Linux: the flags line of the first processor
        assert "fpu" in flags or "fp" in flags or "neon" in flags or len(flags) > 5


def test_bf16_training_converges_with_fp32_master_weights(tiny_bert, sentiment_csv, tmp_path,
                                                          monkeypatch):  # fmt: skip
    seen: dict[str, object] = {}
    original = Loop.optimizer_step

    def record(self: Loop) -> None:
        original(self)
        seen["param"] = next(self.unwrapped.parameters()).dtype
        state = next(iter(self.optimizer.state.values()), {})
        seen["moment"] = state.get("exp_avg", torch.zeros(())).dtype

    monkeypatch.setattr(Loop, "optimizer_step", record)
    config = tiny_config(tiny_bert, tmp_path, data={"train": str(sentiment_csv),
                         "dev": str(sentiment_csv)}, train={"precision": "bf16"})  # fmt: skip
    result = bridgetune.train(config)
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0]
    assert result.metrics["accuracy"] == 1.0  # the tiny set, overfit
    assert seen == {"param": torch.float32, "moment": torch.float32}


# Allowed: the sparse dropout draws positions on the host; it replaces nn.Dropout on CPUs only,
# where a tensor read is no wait for a device queue (methods/dropout.py; GPUs keep nn.Dropout).
# And transformers' own check whether an encoder's padding mask can be skipped
# (`padding_mask.all()` in masking_utils): a sync on GPUs that only a prepared 4D mask avoids,
# left to the GPU work of docs/benchmarks.md.
CPU_ONLY = ("bridgetune/methods/dropout.py", "transformers/masking_utils.py")
SYNCING = ("item", "tolist", "__bool__", "__float__", "__int__", "nonzero", "cpu", "numpy")


def test_the_training_step_does_not_wait_for_the_device(tiny_bert, sentiment_csv, tmp_path,
                                                         monkeypatch):  # fmt: skip
    """No `.item()` and the like inside forward, backward and the optimizer step: each would
    stall a GPU's queue (the host waits for the device) on every step."""
    inside = {"step": False}
    calls: list[str] = []
    for name in SYNCING:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if inside["step"] and not caller.endswith(CPU_ONLY):
                calls.append(f"{_name} in {caller}:{sys._getframe(1).f_lineno}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    for method in ("forward_backward", "optimizer_step"):
        original = getattr(Loop, method)

        def flagged(self, *args, _original=original, **kwargs):
            inside["step"] = True
            try:
                return _original(self, *args, **kwargs)
            finally:
                inside["step"] = False

        monkeypatch.setattr(Loop, method, flagged)
    for precision in ("fp32", "bf16"):
        config = tiny_config(tiny_bert, tmp_path / precision, data={"train": str(sentiment_csv),
                             "dev": str(sentiment_csv)},
                             train={"epochs": 2, "precision": precision})  # fmt: skip
        bridgetune.train(config)
    assert calls == []
