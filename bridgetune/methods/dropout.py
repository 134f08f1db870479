"""Dropout drawn by its dropped positions: the same distribution as `nn.Dropout`, a fraction of
its cost on the CPU when few elements drop.

`nn.Dropout` draws one random number per element (torch's bernoulli); a LoRA layer drops its
input before the low-rank product, so every adapted linear layer pays for a random number per
element of its input: a quarter of a LoRA fine-tuning step of SmolLM2 on two CPU cores
(profiled), for p = 0.05. In an i.i.d. Bernoulli(p) sequence the gaps between dropped positions
are i.i.d. Geometric(p), so drawing about p x n gaps gives exactly the same dropped set
distribution; the kept elements are scaled by 1/(1-p) as usual. The training loop swaps it in
for every dropout module when it trains on the CPU; on GPUs, where bernoulli is cheap and the
sparse draw would sync with the host, `SparseDropout` is `nn.Dropout`.
"""

from __future__ import annotations

import math

import torch


def dropped_positions(
    count: int, p: float, generator: torch.Generator | None = None, draw: int | None = None
) -> torch.Tensor:
    """Positions in [0, count) each dropped with probability p, independently (int64, sorted).
    `draw`: gaps drawn at a time (default: enough in all but ~1e-9 of calls)."""
    expected = count * p
    draw = draw or int(expected + 6 * math.sqrt(expected) + 16)
    ends = torch.empty(draw, dtype=torch.float64).geometric_(p, generator=generator).cumsum_(0)
    while ends[-1] < count:  # rarely: the draw ended early, draw on from where it stopped
        more = torch.empty(draw, dtype=torch.float64).geometric_(p, generator=generator)
        ends = torch.cat([ends, more.cumsum_(0) + ends[-1]])
    return ends[ends <= count].long() - 1  # the k-th success is trial ends[k] (1-based)


class SparseDropout(torch.nn.Dropout):
    """`nn.Dropout(p)` that draws the dropped positions only (see the module doc) on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not 0 < self.p < 1 or x.device.type != "cpu":
            return super().forward(x)
        out = (x * (1 / (1 - self.p))).contiguous()
        out.view(-1).index_fill_(0, dropped_positions(out.numel(), self.p), 0.0)
        return out


def sparse_dropouts(model: torch.nn.Module) -> int:
    """Every `nn.Dropout` module of `model` (LoRA's, an encoder's hidden dropout) becomes a
    `SparseDropout` of the same p; returns how many. Weights and saved models are unchanged."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Dropout and child.p > 0:
                setattr(module, name, SparseDropout(child.p))  # ModuleDict entries too
                swapped += 1
    return swapped
