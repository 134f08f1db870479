"""train.compile: batches padded to a few fixed widths, the forward through torch.compile (the
eager backend here: dynamo traces, nothing is generated), the same losses as an uncompiled run,
and a clear refusal of what it cannot compile. The GPU path (inductor, CUDA graphs) is the same
code with another backend; it is measured by benchmarks/train_speed.py --device cuda."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

import bridgetune
from bridgetune.data.batching import IGNORE
from bridgetune.training import compiled
from bridgetune.training.loop import Loop


def test_widths_are_powers_of_two_up_to_the_longest_rounded_to_eight():
    assert compiled.widths(100) == [16, 32, 64, 104]
    assert compiled.widths(64) == [16, 32, 64]
    assert compiled.widths(5) == [8]
    assert compiled.widths(512) == [16, 32, 64, 128, 256, 512]


def test_to_width_pads_inputs_mask_types_and_token_labels():
    batch = {
        "input_ids": torch.tensor([[5, 6, 7], [5, 6, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
        "token_type_ids": torch.zeros(2, 3, dtype=torch.long),
        "labels": torch.tensor([[1, 2, 3], [1, IGNORE, IGNORE]]),
    }
    out = compiled.to_width(batch, [4, 8], pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7, 0], [5, 6, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert out["labels"][:, 3].tolist() == [IGNORE, IGNORE]
    per_row = {"input_ids": batch["input_ids"], "labels": torch.tensor([0, 1])}
    assert compiled.to_width(per_row, [8], pad_id=0)["labels"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="'offsets'.*train.compile: off"):
        compiled.to_width({**batch, "offsets": torch.zeros(2, 3)}, [8], pad_id=0)


def _run(model, data, tmp_path, name, task="classification", **train):
    config = tiny_config(model, tmp_path / name, task=task, data=data,
                         train={"epochs": 10, "seed": 3, "log_every": 1, **train})  # fmt: skip
    return bridgetune.train(config)


@pytest.mark.slow  # traced and eager trainings side by side (~15 s for both tasks)
@pytest.mark.filterwarnings("ignore:Dynamo does not know how to trace")  # CPU sparse dropout
@pytest.mark.parametrize("task", ["classification", "ner"])
def test_a_traced_run_learns_the_same_as_an_uncompiled_one(
    task, tiny_bert, sentiment_csv, ner_conll, tmp_path, monkeypatch
):
    path = sentiment_csv if task == "classification" else ner_conll
    data = {"train": str(path), "dev": str(path)}
    shapes: set[tuple[int, int]] = set()
    allowed: set[int] = set()
    original = compiled.to_width

    def record(batch, sizes, pad_id):
        out = original(batch, sizes, pad_id)
        shapes.add(tuple(out["input_ids"].shape))
        allowed.update(sizes)
        return out

    monkeypatch.setattr(compiled, "to_width", record)
    plain = _run(tiny_bert, data, tmp_path, "plain", task)
    traced = _run(tiny_bert, data, tmp_path, "traced", task, compile="trace")
    assert shapes and all(width in allowed for _, width in shapes)
    plain_losses = [h["loss"] for h in plain.history if "loss" in h]
    traced_losses = [h["loss"] for h in traced.history if "loss" in h]
    assert traced_losses == pytest.approx(plain_losses, rel=1e-4, abs=1e-5)
    assert plain_losses[-1] < 0.95 * plain_losses[0]  # it learnt something to compare
    metric = [h["metric"] for h in traced.history if "metric" in h]
    assert metric == pytest.approx([h["metric"] for h in plain.history if "metric" in h])


def test_what_cannot_be_compiled_is_refused_before_training(tiny_bert, sentiment_csv, tmp_path,
                                                            monkeypatch):  # fmt: skip
    built = []
    monkeypatch.setattr(Loop, "run", lambda self, *a, **k: built.append(self))
    data = {"train": str(sentiment_csv), "dev": str(sentiment_csv)}
    with pytest.raises(ValueError, match="train.compile=on does not support train.batch_tokens"):
        _run(tiny_bert, data, tmp_path, "tokens", compile="on", batch_tokens=256)
    with pytest.raises(ValueError, match="train.adversarial.*set train.compile: off"):
        _run(tiny_bert, data, tmp_path, "fgm", compile="on", adversarial="fgm")
    assert not built
