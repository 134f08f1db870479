"""Atomic writes: a crash never leaves a half-written file or model where a good one was.

A directory is replaced by an exchange rename (Linux `renameat2(RENAME_EXCHANGE)`): the old and
the new directory swap names in one step, so there is no moment when the path does not exist.
Where the kernel or filesystem cannot exchange, two renames do it, with a moment between them
that `replace_directory` keeps as short as two system calls.

Temporary names carry the writer's process id, so a later writer removes what a killed one left
(and never what a live one is still writing).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from bridgetune.lifecycle.failpoints import failpoint

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_CANNOT_EXCHANGE = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM}


def _umask() -> int:
    """The process's file-creation mask (read once: setting it back and forth races threads)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


# what a file created the usual way gets; mkstemp and mkdtemp use 0600/0700 whatever the mask
UMASK = _umask()


_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT}


class DiskFull(OSError):
    """A write failed because the filesystem (or the user's quota) is full."""

    def __str__(self) -> str:
        return str(self.strerror)


def out_of_space(error: BaseException) -> bool:
    """Whether `error` (or an error it came from) is a full disk: OSError ENOSPC/EDQUOT, or the
    messages of the writers that do not raise OSError (torch.save, safetensors)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _OUT_OF_SPACE:
            return True
        text = str(seen)
        if "No space left on device" in text or "file write failed" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def writing(directory: Path) -> Iterator[None]:
    """Writes into `directory`: a full disk becomes one DiskFull error that says where and what
    to do (what is already on disk is intact: every write here is atomic)."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as error:
        if not out_of_space(error):
            raise
        try:
            free = f"{shutil.disk_usage(directory).free / 1e6:,.0f} MB free now"
        except OSError:
            free = "free space unknown"
        raise DiskFull(
            errno.ENOSPC,
            f"no space left on the disk while writing {directory} ({free}). What was saved "
            "before is intact: free some space (or choose another output_dir), then run the "
            "same command again with --resume to continue from the last checkpoint",
        ) from None


@contextlib.contextmanager
def atomic_file(path: Path, text: bool = False) -> Iterator[IO[Any]]:
    """A stream into a temporary file beside `path` (UTF-8 with LF line ends if `text`), fsynced
    and renamed into place when the block ends; removed on an exception (the old `path` stays).
    The temporary name carries the process id, so `remove_stale` clears what a killed writer
    left.

    Raises:
        IsADirectoryError: `path` is a folder (a rename onto it would fail only after the write,
            with the temporary name in the message).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the path of a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
    )
    try:
        os.fchmod(handle, 0o666 & ~UMASK)  # mkstemp's 0600 would hide it from other users
        mode = {"mode": "w", "encoding": "utf-8", "newline": "\n"} if text else {"mode": "wb"}
        with os.fdopen(handle, **mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (atomic_file)."""
    with atomic_file(path) as stream:
        stream.write(data)


@contextlib.contextmanager
def atomic_lines(path: Path) -> Iterator[Callable[[str], None]]:
    """A `write(line)` that adds lines to `path` atomically, streamed (atomic_file)."""
    with atomic_file(path, text=True) as stream:
        yield lambda line: stream.write(line + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step; False where the system cannot (then nothing moved)."""
    try:
        rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except (OSError, TypeError):  # no C library to open this way (Windows)
        return False
    if rename is None:  # not Linux, or a C library without it
        return False
    rename.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    done = rename(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in _CANNOT_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def replace_directory(staging: Path, path: Path) -> Path | None:
    """Put `staging` at `path`; returns where the old `path` went (to delete), or None."""
    if not path.exists():
        os.replace(staging, path)
        return None
    if exchange(staging, path):
        return staging
    retired = path.with_name(f".{path.name}.{os.getpid()}.old")
    shutil.rmtree(retired, ignore_errors=True)
    os.replace(path, retired)
    os.replace(staging, path)
    return retired


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (on this host). On Windows always True: there `os.kill`
    terminates the process instead of probing it, so nothing is ever taken for stale."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(path: Path) -> None:
    """Delete the temporary siblings of `path` that killed processes left behind."""
    if not path.parent.is_dir():
        return
    for sibling in path.parent.glob(glob.escape(f".{path.name}.") + "*"):
        parts = sibling.name[len(path.name) + 2 :].split(".")
        if parts[-1] in ("tmp", "old") and parts[0].isdigit() and not pid_alive(int(parts[0])):
            if sibling.is_dir():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `path` (old contents removed).

    On an exception the temporary directory is deleted and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    staging = Path(
        tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    )
    staging.chmod(0o777 & ~UMASK)  # mkdtemp's 0700 would hide the directory from other users
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    failpoint(f"before-swap:{path.name}")
    retired = replace_directory(staging, path)
    failpoint(f"after-swap:{path.name}")
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
