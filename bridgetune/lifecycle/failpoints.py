"""Named points where a test can kill the process, to prove that a crash at any write leaves
every run directory consistent (tests/test_fault_injection.py).

`BRIDGETUNE_FAILPOINT=NAME` (or `NAME@N` for the N-th time the point is reached) makes the process
SIGKILL itself there: no cleanup, no `finally`, as a power cut or the OOM killer would.
`NAME@N:enospc` raises the error of a full disk there instead (OSError ENOSPC), to prove that
the run says what ran out and resumes once there is room. Unset, a failpoint costs one
dictionary look-up.
"""

from __future__ import annotations

import errno
import os
import signal

_hits: dict[str, int] = {}
ENOSPC = ":enospc"


def failpoint(name: str) -> None:
    """Kill this process here if BRIDGETUNE_FAILPOINT names this point (and this hit)."""
    wanted = os.environ.get("BRIDGETUNE_FAILPOINT")
    if not wanted:
        return
    action = ""
    if wanted.endswith(ENOSPC):  # point names hold colons too (before-swap:checkpoint)
        wanted, action = wanted[: -len(ENOSPC)], "enospc"
    point, _, count = wanted.partition("@")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(count or 1):
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
    os.kill(os.getpid(), signal.SIGKILL)
