"""LoRA's dropout drawn by dropped positions: nn.Dropout's distribution, cheaper on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from bridgetune.methods.dropout import SparseDropout, dropped_positions, sparse_dropouts


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_positions_are_independent_bernoulli_draws(p):
    generator = torch.Generator().manual_seed(0)
    count, rounds = 2_000, 400
    hits = torch.zeros(count)
    runs = []
    for _ in range(rounds):
        found = dropped_positions(count, p, generator)
        assert found.dtype == torch.int64 and bool((found[1:] > found[:-1]).all())
        assert found.numel() == 0 or (found.min() >= 0 and found.max() < count)
        hits[found] += 1
        runs.append(found.numel())
    # every position drops at rate p (first and last too: no edge bias)
    rate = hits / rounds
    assert abs(rate.mean().item() - p) < 0.005
    spread = math.sqrt(p * (1 - p) / rounds)
    assert abs(rate[:50].mean().item() - p) < 6 * spread / math.sqrt(50)
    assert abs(rate[-50:].mean().item() - p) < 6 * spread / math.sqrt(50)
    # the count per draw is Binomial(count, p)
    counts = torch.tensor(runs, dtype=torch.float64)
    assert abs(counts.var().item() / (count * p * (1 - p)) - 1) < 0.25
    # neighbours drop independently: P(i and i+1) = p^2
    pairs = dropped_positions(200_000, p, generator)
    both = torch.isin(pairs + 1, pairs).double().sum().item() / 200_000
    assert both == pytest.approx(p * p, rel=0.15)


def test_a_draw_that_ends_early_is_extended():
    """Gaps drawn a few at a time (the rare case of a first draw that ends before the last
    position): the same rate, no position twice, none out of range."""
    generator = torch.Generator().manual_seed(1)
    found = [dropped_positions(1_000, 0.1, generator, draw=3) for _ in range(300)]
    assert all(f.unique().numel() == f.numel() and f.max() < 1_000 for f in found)
    assert sum(f.numel() for f in found) / 300_000 == pytest.approx(0.1, rel=0.05)


def test_sparse_dropout_scales_kept_values_and_gradients_like_nn_dropout():
    torch.manual_seed(0)
    x = torch.randn(16, 24, 32, requires_grad=True)
    dropout = SparseDropout(0.1)
    y = dropout(x)
    dropped = y == 0
    assert 0.07 < dropped.float().mean().item() < 0.13
    assert torch.allclose(y[~dropped], x[~dropped] / 0.9)
    (y * 3).sum().backward()
    assert torch.allclose(x.grad[~dropped], torch.full_like(x.grad[~dropped], 3 / 0.9))
    assert bool((x.grad[dropped] == 0).all())
    dropout.eval()
    assert dropout(x) is x  # evaluation: identity, as nn.Dropout
    strided = torch.randn(32, 24).t()  # a non-contiguous input
    assert SparseDropout(0.5)(strided).shape == (24, 32)


def test_same_seed_same_drops():
    x = torch.randn(64, 64)
    torch.manual_seed(3)
    first = SparseDropout(0.2)(x)
    torch.manual_seed(3)
    assert torch.equal(first, SparseDropout(0.2)(x))


def test_every_dropout_module_is_swapped_lora_and_encoder_alike(tiny_llama, tiny_bert):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from bridgetune.config import MethodConfig
    from bridgetune.methods import apply_method

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    adapted = apply_method(model, MethodConfig(name="lora", dropout=0.05), "lm", "x")
    assert sparse_dropouts(adapted) == 14  # 7 adapted layers x 2 decoder layers
    kinds = {
        type(d) for m in adapted.modules() if hasattr(m, "lora_dropout")
        for d in m.lora_dropout.values()
    }  # fmt: skip
    assert kinds == {SparseDropout}
    encoder = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    assert sparse_dropouts(encoder) > 0
    assert not any(type(m) is torch.nn.Dropout for m in encoder.modules())
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    plain = apply_method(
        AutoModelForCausalLM.from_pretrained(tiny_llama), MethodConfig(name="lora", dropout=0.0),
        "lm", "x",
    )  # fmt: skip
    assert sparse_dropouts(plain) == 0  # p = 0: peft's Identity stays


def test_the_loop_swaps_dropout_when_it_trains_on_the_cpu(
    tiny_bert, sentiment_csv, tmp_path, monkeypatch
):
    from conftest import tiny_config

    import bridgetune
    import bridgetune.training.loop as loop

    swapped = []
    monkeypatch.setattr(loop, "sparse_dropouts", lambda m: swapped.append(sparse_dropouts(m)))
    config = tiny_config(
        tiny_bert, tmp_path / "runs", data={"train": str(sentiment_csv)}, train={"epochs": 1}
    )
    bridgetune.train(config)
    assert swapped and swapped[0] > 0
