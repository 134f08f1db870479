"""Training craft: class weights, label smoothing, R-Drop, FGM/PGD, layer-wise lr decay."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import bridgetune
from bridgetune.config import MethodConfig, TrainConfig
from bridgetune.methods import apply_method, head_modules
from bridgetune.tasks import build_task
from bridgetune.tasks.losses import class_weights
from bridgetune.training.adversarial import EmbeddingAttack
from bridgetune.training.objective import Objective
from bridgetune.training.optim import parameter_groups
from tests.conftest import tiny_config
from tests.test_methods import build, inputs


def test_balanced_class_weights_are_inverse_frequencies() -> None:
    features = [{"labels": 0}] * 6 + [{"labels": 1}] * 2
    weights = class_weights("balanced", ["a", "b", "c"], features)
    assert weights.tolist() == pytest.approx([8 / (2 * 6), 8 / (2 * 2), 1.0])
    tokens = [{"labels": [0, 0, -100, 1]}, {"labels": [0, -100]}]
    assert class_weights("balanced", ["O", "B"], tokens).tolist() == pytest.approx(
        [4 / (2 * 3), 4 / (2 * 1)]
    )
    multi = [{"labels": [1.0, 0.0]}, {"labels": [1.0, 1.0]}, {"labels": [1.0, 0.0]}]
    assert class_weights("balanced", ["x", "y"], multi, multilabel=True).tolist() == [0.0, 2.0]
    assert class_weights({"b": 3.0}, ["a", "b"], features).tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match=r"unknown labels \['z'\]; labels are: a, b"):
        class_weights({"z": 2.0}, ["a", "b"], features)


class Fixed(torch.nn.Module):
    """Returns fixed logits (plus dropout noise when asked), to check the losses by hand."""

    def __init__(self, logits: torch.Tensor, noise: float = 0.0) -> None:
        super().__init__()
        self.logits, self.noise = logits, noise

    def forward(self, input_ids: torch.Tensor, **_: torch.Tensor):
        rows = self.logits.repeat(
            len(input_ids) // len(self.logits), *[1] * (self.logits.dim() - 1)
        )
        if self.noise:
            rows = rows + self.noise * torch.randn_like(rows)
        return type("Out", (), {"logits": rows, "loss": None})()


CLASSES = build_task("classification", ["a", "b"])  # the task whose loss the objective uses
LOSS = Objective(CLASSES, TrainConfig())  # the loop's loss: the task's, from the logits


def test_weighted_and_smoothed_cross_entropy_matches_torch() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.5, 1.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 1])
    weights = torch.tensor([1.0, 4.0])
    objective = Objective(CLASSES, TrainConfig(label_smoothing=0.1), weights)
    loss = objective(Fixed(logits), {"input_ids": torch.zeros(3, 2), "labels": labels})
    expected = F.cross_entropy(logits, labels, weight=weights, label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item())


def test_rdrop_adds_the_symmetric_kl_of_two_passes() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.5, 1.0]])
    batch = {"input_ids": torch.zeros(2, 2), "labels": torch.tensor([0, 1])}
    plain = F.cross_entropy(logits, batch["labels"]).item()
    no_noise = Objective(CLASSES, TrainConfig(rdrop=1.0))(Fixed(logits), batch)
    assert no_noise.item() == pytest.approx(plain)  # identical passes: KL is 0
    torch.manual_seed(0)
    noisy = Objective(CLASSES, TrainConfig(rdrop=5.0))(Fixed(logits, noise=1.0), batch)
    torch.manual_seed(0)
    ce_only = Objective(CLASSES, TrainConfig(rdrop=1e-9))(Fixed(logits, noise=1.0), batch)
    assert noisy.item() > ce_only.item() + 0.05


def _embedding_grad_setup(tiny_bert, method: str):
    torch.manual_seed(0)
    model = apply_method(
        build(tiny_bert, "classification"), MethodConfig(name=method), "single", "x"
    )
    model.train()
    for module in model.modules():  # no dropout: passes are comparable by hand
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batch = {**inputs("classification"), "labels": torch.tensor([0, 1])}
    return model, batch


@pytest.mark.parametrize("method", ["full", "lora"])
def test_fgm_adds_the_gradient_of_a_perturbed_pass(tiny_bert, method) -> None:
    model, batch = _embedding_grad_setup(tiny_bert, method)
    cfg = TrainConfig(adversarial="fgm", adv_epsilon=0.5)
    attack = EmbeddingAttack(model.get_input_embeddings(), cfg)
    seen = []
    original = attack._perturbed

    def record(delta):
        seen.append(delta)
        return original(delta)

    attack._perturbed = record
    loss = attack.step(lambda: LOSS(model, batch), lambda value: value.backward(), _nothing)
    trained = [p for p in model.parameters() if p.requires_grad]
    combined = [p.grad.clone() for p in trained]
    norms = seen[0].flatten(1).norm(dim=1)
    assert norms.tolist() == pytest.approx([0.5, 0.5], abs=1e-4)  # per example, epsilon
    model.zero_grad()
    LOSS(model, batch).backward()
    clean = [p.grad.clone() for p in trained]
    assert loss.item() == pytest.approx(LOSS(model, batch).item())
    moved = sum((c - g).abs().sum().item() for c, g in zip(combined, clean))
    assert moved > 0  # the adversarial pass added gradients, also with frozen embeddings (lora)


def test_pgd_stays_inside_the_epsilon_ball(tiny_bert) -> None:
    model, batch = _embedding_grad_setup(tiny_bert, "full")
    cfg = TrainConfig(adversarial="pgd", adv_epsilon=0.3, adv_alpha=0.2, adv_steps=3)
    attack = EmbeddingAttack(model.get_input_embeddings(), cfg)
    seen = []
    original = attack._perturbed
    attack._perturbed = lambda delta: (seen.append(delta), original(delta))[1]
    attack.step(lambda: LOSS(model, batch), lambda value: value.backward(), _nothing)
    assert len(seen) == 3
    norms = [d.flatten(1).norm(dim=1) for d in seen]
    assert norms[0].tolist() == pytest.approx([0.2, 0.2], abs=1e-4)
    assert all(n.max().item() <= 0.3 + 1e-4 for n in norms)


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def test_layer_wise_lr_decay_and_head_lr(tiny_bert) -> None:
    model = build(tiny_bert, "classification")
    cfg = TrainConfig(lr=1.0, layer_lr_decay=0.5, head_lr=3.0, weight_decay=0.0)
    groups = parameter_groups(model, cfg, head_modules(model))
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == 0.5**3  # L=2: L+1
    assert lr_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == 0.5**2
    assert lr_of[id(named["bert.encoder.layer.1.output.dense.weight"])] == 0.5
    assert lr_of[id(named["bert.pooler.dense.weight"])] == 3.0  # part of the head
    assert lr_of[id(named["classifier.weight"])] == 3.0


@pytest.mark.parametrize(
    "train",
    [
        {"adversarial": "pgd", "adv_steps": 2, "class_weights": "balanced"},
        {"adversarial": "fgm", "rdrop": 1.0, "label_smoothing": 0.1, "layer_lr_decay": 0.8},
    ],
)
def test_craft_options_train_every_task(tiny_bert, sentiment_csv, ner_conll, tmp_path, train):
    for task, data in (("classification", sentiment_csv), ("ner", ner_conll)):
        config = tiny_config(
            tiny_bert,
            tmp_path / task,
            task=task,
            data={"train": str(data), "dev": str(data)},
            method={"name": "lora"},
            train={"epochs": 1, **train},
        )
        result = bridgetune.train(config)
        assert result.history and all(h["loss"] == h["loss"] for h in result.history if "loss" in h)
