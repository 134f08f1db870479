"""What the processor computes natively: bf16 on CPUs with AMX or AVX512-BF16, and on CUDA GPUs
that support it. Training (`train.precision: auto`) and serving (`serve.precision: auto`) pick
bf16 only there: on a CPU without those instructions bf16 is emulated and slower than fp32.

The CPU's instruction flags are read from /proc/cpuinfo (Linux); elsewhere no CPU is taken to
have them. `BRIDGETUNE_CPU_BF16=0` (or 1) overrides the detection, e.g. to compare both
precisions on one machine.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import torch

BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (empty where they cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    found = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return frozenset(found.group(1).split()) if found else frozenset()


def cpu_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AMX-BF16 or AVX512-BF16), or what
    BRIDGETUNE_CPU_BF16 says."""
    override = os.environ.get("BRIDGETUNE_CPU_BF16")
    if override in ("0", "1"):
        return override == "1"
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_bf16()
