"""Checkpoint weight files: partial (trainable only) when part of the model is frozen."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from transformers import BertConfig, BertForMaskedLM

from bridgetune.training.checkpoint import CheckpointMismatch, load_weights, save_weights


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    return BertForMaskedLM(config)  # its decoder weight is tied to the word embeddings


def _freeze_body(model: torch.nn.Module) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith("bert.encoder.layer.0"))


def _keys(path) -> set[str]:
    with safe_open(str(path), framework="pt") as handle:
        return set(handle.keys())


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_fully_trainable_model_is_saved_whole(tmp_path):
    model = _model()
    save_weights(model, tmp_path / "w.safetensors")
    other = _model(seed=1)
    load_weights(other, tmp_path / "w.safetensors")
    assert _same(model, other)


def test_frozen_weights_are_left_out_and_the_rest_round_trips(tmp_path):
    model = _model()
    _freeze_body(model)
    with torch.no_grad():  # training moved the trainable weights (tied embeddings included)
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.5)
    save_weights(model, tmp_path / "w.safetensors")
    saved = _keys(tmp_path / "w.safetensors")
    assert saved and not any(k.startswith("bert.encoder.layer.0.") for k in saved)
    # the tied decoder/embedding matrix is stored once
    tied = {"bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.weight"}
    assert len(saved & tied) == 1
    fresh = _model()
    _freeze_body(fresh)
    load_weights(fresh, tmp_path / "w.safetensors")
    assert _same(model, fresh)


def test_changed_frozen_weights_are_refused(tmp_path):
    model = _model()
    _freeze_body(model)
    save_weights(model, tmp_path / "w.safetensors")
    other = _model(seed=1)  # another "base model": its frozen layer differs
    _freeze_body(other)
    with pytest.raises(CheckpointMismatch, match="frozen weights differ.*without --resume"):
        load_weights(other, tmp_path / "w.safetensors")
    unfrozen = _model()  # another method: nothing frozen any more
    with pytest.raises(CheckpointMismatch, match="did the method or the model change"):
        load_weights(unfrozen, tmp_path / "w.safetensors")
