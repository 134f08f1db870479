"""`train.compile`: the training forward through torch.compile, over a few fixed batch shapes.

On a GPU the step of a small encoder is bound by the host (launching hundreds of kernels takes
longer than running them: docs/benchmarks.md, the first H100 run). CUDA graphs replay a whole
forward and backward in one launch, but a graph holds one shape, and length-bucketed batches
bring a new width every few steps (pytorch#188150: a 1.5x gain fell to nothing with 9 distinct
shapes). So while compiled, every batch is padded to the next of a few widths (powers of two from
16 up to the longest training example, rounded up to 8): at most ~6 widths, each compiled once.

- `on`: inductor; on CUDA mode `reduce-overhead` (CUDA graphs), on the CPU its default mode.
- `trace`: dynamo only, with the eager backend (no code generated): the same shapes and graph
  breaks as `on`, at no compile cost; what the tests run.

Only the forward of the module is compiled (the loss, R-Drop and the optimizer run eagerly; AdamW
is already one fused kernel). Evaluation runs the uncompiled module: its batches are sorted by
length and of every width. The compiled wrapper shares the module's parameters, so checkpoints
and the saved model are unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from bridgetune.data.batching import IGNORE, padded

SMALLEST = 16
# batch entries padded along the token axis, and with what
PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "labels": IGNORE}


def widths(longest: int) -> list[int]:
    """The padded widths a compiled run uses: 16, 32, 64 ... below `longest`, then `longest`
    rounded up to 8 (so no batch is padded past the longest training example)."""
    top = padded(max(longest, 1))
    sizes = []
    size = SMALLEST
    while size < top:
        sizes.append(size)
        size *= 2
    sizes.append(top)
    return sizes


def to_width(batch: dict[str, torch.Tensor], sizes: list[int], pad_id: int) -> dict[str, Any]:
    """`batch` padded along its token axis to the smallest of `sizes` that holds it.

    Pads input_ids with `pad_id`, the attention mask and token types with 0 and per-token labels
    with IGNORE (padding is masked from attention and from the loss, so the loss is unchanged).
    Any other entry as wide as the inputs is refused: its padding value is unknown."""
    width = batch["input_ids"].shape[-1]
    target = next((s for s in sizes if s >= width), width)
    if target == width:
        return batch
    out = {}
    for key, value in batch.items():
        if value.dim() < 2 or value.shape[-1] != width:
            out[key] = value  # per-row labels, QA start/end positions ...
            continue
        if key == "input_ids":
            fill = pad_id
        elif key in PAD_VALUES:
            fill = PAD_VALUES[key]
        else:
            raise ValueError(
                f"train.compile: the batch entry {key!r} runs along the tokens and has no "
                "known padding; set train.compile: off for this task"
            )
        out[key] = F.pad(value, (0, target - width), value=fill)
    return out


def compiled(model: torch.nn.Module, how: str, device: torch.device, shapes: int) -> Any:
    """`model` compiled for training (`how`: on | trace): a wrapper sharing its parameters.

    `shapes`: how many distinct batch shapes the run brings (widths x full and last batches);
    dynamo's recompile limit is raised to hold them all, so none falls back to eager silently."""
    import torch._dynamo

    config = torch._dynamo.config
    config.cache_size_limit = max(config.cache_size_limit, shapes + 2)
    if hasattr(config, "recompile_limit"):
        config.recompile_limit = max(config.recompile_limit, shapes + 2)
    if how == "trace":
        return torch.compile(model, backend="eager", dynamic=False)
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(model, mode=mode, dynamic=False)
