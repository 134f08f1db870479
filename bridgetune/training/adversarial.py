"""Adversarial training on the input embeddings: FGM (Miyato et al., 2017) and PGD (Madry et
al., 2018), as used for fine-tuning (FreeLB-style NLP recipes).

The perturbation is added to the output of the model's input-embedding layer through a forward
hook, so it works whether the embeddings train or not (LoRA, prefix tuning, BitFit...). Each
example's perturbation has norm `epsilon` (FGM) or stays inside that ball (PGD, `steps` ascent
steps of norm `alpha`). The parameters get the gradients of the clean loss plus the adversarial
loss; PGD's intermediate steps only compute the gradient of the embeddings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from bridgetune.config import TrainConfig


class EmbeddingAttack:
    """One training step with an adversarial second pass; see the module docstring."""

    def __init__(self, embeddings: torch.nn.Module, cfg: TrainConfig) -> None:
        self.kind, self.epsilon = cfg.adversarial, cfg.adv_epsilon
        self.alpha, self.steps = cfg.adv_alpha, cfg.adv_steps
        self.delta: torch.Tensor | None = None
        self.captured: torch.Tensor | None = None
        self.capture = False
        embeddings.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if self.delta is not None:
            output = output + self.delta.to(output.dtype)
        if self.capture:
            if output.requires_grad:
                output.retain_grad()
            else:  # frozen embeddings: make the output a leaf that collects a gradient
                output.requires_grad_(True)
            self.captured = output
        return output

    def step(
        self,
        loss_of: Callable[[], torch.Tensor],
        backward: Callable[[torch.Tensor], None],
        no_sync: Callable[[], contextlib.AbstractContextManager],
    ) -> torch.Tensor:
        """Clean pass + backward, then the adversarial pass(es) + backward; the clean loss."""
        with no_sync(), self._capturing():
            loss = loss_of()
            backward(loss)
        gradient = self._gradient()
        delta = torch.zeros_like(gradient)
        for step in range(self.steps if self.kind == "pgd" else 1):
            if self.kind == "fgm":
                delta = self.epsilon * _unit(gradient)
            else:
                delta = _project(delta + self.alpha * _unit(gradient), self.epsilon)
            last = self.kind == "fgm" or step == self.steps - 1
            with self._perturbed(delta):
                if last:
                    backward(loss_of())
                else:  # no parameter gradients: keep DDP from expecting a reduction
                    with no_sync(), self._capturing():
                        adversarial = loss_of()
                        (gradient,) = torch.autograd.grad(adversarial, self.captured)
        return loss

    def _gradient(self) -> torch.Tensor:
        if self.captured is None or self.captured.grad is None:
            raise RuntimeError("adversarial training: no gradient reached the input embeddings")
        gradient = self.captured.grad.detach()
        self.captured = None
        return gradient

    @contextlib.contextmanager
    def _capturing(self) -> Iterator[None]:
        self.capture = True
        try:
            yield
        finally:
            self.capture = False

    @contextlib.contextmanager
    def _perturbed(self, delta: torch.Tensor) -> Iterator[None]:
        self.delta = delta.detach()
        try:
            yield
        finally:
            self.delta = None


def _norms(tensor: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm, shaped to broadcast over the example's dimensions."""
    flat = tensor.float().flatten(1).norm(dim=1)
    return flat.view(-1, *([1] * (tensor.dim() - 1)))


def _unit(gradient: torch.Tensor) -> torch.Tensor:
    return gradient / (_norms(gradient) + 1e-12)


def _project(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Scale each example's perturbation back into the ball of radius epsilon."""
    return delta * torch.clamp(epsilon / (_norms(delta) + 1e-12), max=1.0)
