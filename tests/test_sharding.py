"""FSDP settings and the errors before any work (the sharded runs: tests/test_distributed.py)."""

from __future__ import annotations

import pytest
from conftest import tiny_config

import bridgetune
from bridgetune.config import ConfigError, TrainConfig
from bridgetune.training import sharding


def test_accelerate_launch_settings_are_read(monkeypatch):
    assert sharding.requested(TrainConfig()) is None
    assert sharding.requested(TrainConfig(fsdp=True)) == sharding.Sharding((), True)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate launch --use_fsdp
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "LlamaDecoderLayer, MistralDecoderLayer")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    found = sharding.requested(TrainConfig())
    assert found == sharding.Sharding(("LlamaDecoderLayer", "MistralDecoderLayer"), False)
    assert not sharding.activation_checkpointing()
    monkeypatch.setenv("FSDP_ACTIVATION_CHECKPOINTING", "true")
    assert sharding.activation_checkpointing()


@pytest.mark.parametrize(
    ("train", "env", "message"),
    [
        ({"precision": "fp16"}, {}, "not fp16: set train.precision: bf16"),
        ({"adversarial": "fgm"}, {}, "set train.adversarial: none to train with FSDP"),
        ({}, {"FSDP_OFFLOAD_PARAMS": "true"}, "offloaded to the CPU is not supported"),
    ],
)
def test_settings_fsdp_cannot_honour_stop_the_config(
    tiny_bert, sentiment_csv, tmp_path, monkeypatch, train, env, message
):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = tiny_config(
        tiny_bert, tmp_path / "runs", data={"train": str(sentiment_csv)},
        train={"fsdp": True, **train},
    )  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        bridgetune.as_config(config)


def test_fsdp_and_qlora_exclude_each_other(tiny_llama, tmp_path):
    from tests.test_causal_lm import SUPPORT, write_jsonl

    data = write_jsonl(tmp_path / "chat.jsonl", SUPPORT)
    config = tiny_config(
        tiny_llama, tmp_path / "runs", task="causal_lm", data={"train": str(data)},
        train={"fsdp": True},
    )  # fmt: skip
    config["model"]["quantization"] = "4bit"
    with pytest.raises(ConfigError, match="choose train.fsdp .* or model.quantization"):
        bridgetune.as_config(config)


def test_fsdp_in_one_process_says_how_to_launch(tiny_bert, sentiment_csv, tmp_path):
    config = tiny_config(
        tiny_bert, tmp_path / "runs", data={"train": str(sentiment_csv)}, train={"fsdp": True}
    )
    with pytest.raises(ConfigError, match="launch with accelerate launch --use_fsdp"):
        bridgetune.train(config)
    assert not (tmp_path / "runs" / "tiny" / "model").exists()


def test_fewshot_refuses_fsdp(tiny_bert, sentiment_csv, tmp_path):
    from bridgetune.recipes.fewshot import fewshot

    config = tiny_config(
        tiny_bert, tmp_path / "runs", data={"train": str(sentiment_csv)}, train={"fsdp": True}
    )
    with pytest.raises(ConfigError, match="does not apply train.fsdp"):
        fewshot(config)
