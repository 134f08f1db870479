"""Work split across the processes of a distributed run (`accelerate launch`, torchrun).

Pure torch: `data` and `training` both use it (DESIGN: data never imports training).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def processes() -> tuple[int, int]:
    """(rank, number of processes) of an initialized process group, (0, 1) otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_sharded(model: Any) -> bool:
    """Whether FSDP shards `model` (bridgetune.training.sharding): its forwards then gather
    weights from every process, so all of them must run the same forwards together."""
    return any(is_sharded_tensor(p) for p in model.parameters())


def is_sharded_tensor(tensor: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def is_launch_main() -> bool:
    """Whether this is the first process of a launch (`accelerate launch`, torchrun set RANK),
    known before any process group exists, so set-up work happens once."""
    return os.environ.get("RANK", "0") == "0"


def shared(count: int, work: Callable[[slice], list[T]]) -> list[T]:
    """The results of `count` items, computed by the processes together.

    Every process calls `work(slice(rank, count, n))` (every n-th item, one result per item)
    and receives all results, in item order; alone, `work(slice(0, count, 1))`.
    """
    rank, n = processes()
    mine = work(slice(rank, count, n))
    if n == 1:
        return mine
    import torch.distributed as dist

    parts: list[Any] = [None] * n
    dist.all_gather_object(parts, mine)
    results: list[Any] = [None] * count
    for index, part in enumerate(parts):
        results[index::n] = part
    return results
