"""A run directory (`<output_dir>/<name>/`) is written as one unit.

While a run trains, everything it writes goes to a staging directory beside the run,
`.<name>.partial/` (its checkpoint, the best weights, then its reports and model); when the run
has finished, the staging directory and the run directory swap names in one exchange rename
(bridgetune.lifecycle.atomic). So `<name>/` always holds one whole finished run, reports
matching model, or nothing; a killed run leaves the previous run untouched.

- A finished run is replaced only when asked (`--overwrite`); otherwise starting a run into it
  is refused before any work.
- The staging directory records its writer (`.owner.json`: process id, host, start time). A
  fresh run removes what a killed writer left (saying so; `--resume` continues it instead) and
  refuses to start while a live process still writes it. After the swap the staging name holds
  the previous run, without an owner file, until it is deleted.
- Write points, each covered by a failpoint (bridgetune.lifecycle.failpoints) in the fault-injection
  test: checkpoint swaps, best weights, reports, the model directory, the run swap.
- Only a bridgetune run is ever replaced: a folder at `<name>/` that holds anything else (a
  user's files, another tool's output) is refused, with or without `--overwrite`.
- Claiming is atomic: `prepare` checks and claims while it holds an exclusive lock on the output
  directory (fcntl.flock; the kernel drops it when the process dies), so of two processes
  starting one run at the same moment exactly one claims it and the other is refused.
- The settings that shape the run (data fingerprint, labels, model, method, optimizer,
  schedule, epochs ...) are recorded beside the checkpoint; `--resume` with other settings is
  refused, listing what differs (`record_settings`, `check_settings`).
- Before training: the output directory must be writable and have room for the checkpoints and
  the model (`check_disk`); on resume the partial checkpoint already on disk counts as room.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bridgetune.lifecycle.atomic import pid_alive, remove_stale, replace_directory, writing
from bridgetune.lifecycle.failpoints import failpoint
from bridgetune.modeldir import META_FILE

OWNER_FILE = ".owner.json"
SETTINGS_FILE = "settings.json"  # in the staging directory: what a resume must match
MODEL_META = Path("model") / META_FILE


class RunDirectoryError(ValueError):
    """The run directory cannot be used as asked; the message says what to do."""


def finished_run(path: Path) -> dict[str, Any] | None:
    """What the finished run in `path` says of itself (its model's bridgetune.json), or None."""
    meta_path = path / MODEL_META
    if not meta_path.is_file():
        return None
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a model directory is there, whatever state its description is in


def describe(meta: dict[str, Any]) -> str:
    scores = meta.get("metrics", {}).get("dev") or {}
    score = ", ".join(f"dev {name} {value:.4g}" for name, value in list(scores.items())[:1])
    when = meta.get("created", "at an unknown time")
    return f"trained {when}" + (f", {score}" if score else "")


class RunDirectory:
    """The run directory `path` and its staging directory; see the module docstring."""

    def __init__(self, path: Path, announce: Callable[[str], None] = print) -> None:
        self.path = Path(path)
        self.staging = self.path.parent / f".{self.path.name}.partial"
        self.announce = announce
        self.created: Path | None = None  # the first folder `prepare` had to create

    @property
    def checkpoint(self) -> Path:
        """Where the loop writes checkpoints and best weights while the run trains."""
        return self.staging / "checkpoint"

    def prepare(self, resume: bool = False, overwrite: bool = False) -> None:
        """Check and claim the directory before any work (see the module docstring).

        Raises:
            RunDirectoryError: not writable, a finished run and no `overwrite`, or another
                process writing the run.
            FileNotFoundError: `resume` without an unfinished run to continue.
        """
        self._check_target()
        with locked(self.path.parent):
            self._prepare(resume, overwrite)

    def _prepare(self, resume: bool, overwrite: bool) -> None:
        remove_stale(self.path)  # a fallback swap's leftovers (bridgetune.lifecycle.atomic)
        # a run killed right after its swap left its owner file in place: it must not travel
        # back to the staging name with the next swap (it would look like an unfinished run)
        (self.path / OWNER_FILE).unlink(missing_ok=True)
        owner = self._owner()
        if owner and owner.get("host") == socket.gethostname() and owner["pid"] != os.getpid():
            if pid_alive(owner["pid"]):
                raise RunDirectoryError(
                    f"{self.path}: another bridgetune process (pid {owner['pid']}, started "
                    f"{owner.get('started', '?')}) is writing this run; wait for it, or choose "
                    "another name"
                )
        if resume:
            self._take_over(owner)
            return
        finished = finished_run(self.path)
        if finished is None and self.path.is_dir() and any(self.path.iterdir()):
            raise RunDirectoryError(
                f"{self.path} exists and is not a bridgetune run (it has no {MODEL_META}); "
                "bridgetune replaces only its own runs. Choose another name or output_dir, or "
                "move that folder away"
            )
        if finished is not None and not overwrite:
            raise RunDirectoryError(
                f"{self.path} holds a finished run ({describe(finished)}). Pass --overwrite "
                f"(Python: overwrite=True) to replace it (it stays until the new run has "
                f"finished), or choose another name (name={self.path.name}-2)"
            )
        if self.staging.exists():
            if owner and (self.checkpoint / "loop_state.json").is_file():
                self.announce(
                    f"removed the unfinished run that a stopped process left in {self.staging} "
                    "(--resume would have continued it)"
                )
            shutil.rmtree(self.staging)
        self._claim()

    def record_settings(self, settings: dict[str, Any]) -> None:
        """Keep the settings that shape this run for a later `--resume` to compare."""
        self.staging.mkdir(parents=True, exist_ok=True)
        text = json.dumps(settings, indent=1, ensure_ascii=False, sort_keys=True, default=str)
        (self.staging / SETTINGS_FILE).write_text(text, encoding="utf-8")

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Refuse to resume with settings other than the recorded ones.

        A checkpoint written before settings were recorded is resumed as before (nothing to
        compare with); the run then records the current settings.

        Raises:
            RunDirectoryError: what differs, the checkpoint's value and the one asked for now.
        """
        path = self.staging / SETTINGS_FILE
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.record_settings(settings)
            return
        except (OSError, ValueError) as error:
            raise RunDirectoryError(
                f"{path} is damaged ({error}); the run's settings cannot be checked. Start again "
                "without --resume"
            ) from None
        now = json.loads(json.dumps(settings, sort_keys=True, default=str))
        unset = "(unset)"
        differences = [
            f"{key}: {recorded.get(key, unset)!r} in the checkpoint, {now.get(key, unset)!r} now"
            for key in sorted(set(recorded) | set(now))
            if recorded.get(key) != now.get(key)
        ]
        if differences:
            shown = "; ".join(differences[:8]) + ("; ..." if len(differences) > 8 else "")
            raise RunDirectoryError(
                f"--resume: {self.path.name!r} was started with other settings ({shown}). Resume "
                "with the settings it started with, or start again without --resume "
                "(docs/reliability.md lists what may change on resume)"
            )

    def publish(self, write: Callable[[Path], None]) -> None:
        """`write(staging)` writes the run's results; then the whole run replaces `path`.

        The owner file stays until the swap, so a run killed before it can still `--resume`
        (its checkpoint is complete); after the swap the staging name holds the previous run,
        ownerless, for `prepare` to delete if this process dies before it does."""
        with writing(self.staging):
            write(self.staging)
        failpoint("before-swap:run")
        retired = replace_directory(self.staging, self.path)
        failpoint("after-swap:run")
        (self.path / OWNER_FILE).unlink(missing_ok=True)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)

    def abandon(self) -> None:
        """After a run failed: keep a checkpoint to resume from; otherwise leave no trace (the
        staging directory and the folders `prepare` created are removed)."""
        if (self.checkpoint / "loop_state.json").is_file():
            return
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.created is None:
            return
        for folder in (self.path.parent, *self.path.parent.parents):
            try:
                folder.rmdir()  # only while empty
            except OSError:
                return
            if folder == self.created:
                return

    def _check_target(self) -> None:
        for part in (self.path, *self.path.parents):
            if part.exists() and not part.is_dir():
                raise RunDirectoryError(
                    f"cannot write the run to {self.path}: {part} is a file, not a directory. "
                    "Choose another output_dir or name"
                )
        missing = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self.created = missing[-1] if missing else None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            probe = self.path.parent / f".{self.path.name}.{os.getpid()}.probe.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise RunDirectoryError(
                f"cannot write the run to {self.path}: {error.strerror or error} "
                f"({error.filename or self.path.parent}). Choose a writable output_dir"
            ) from error

    def _owner(self) -> dict[str, Any] | None:
        try:
            owner = json.loads((self.staging / OWNER_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None

    def _claim(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (self.staging / OWNER_FILE).write_text(json.dumps(owner), encoding="utf-8")

    def _take_over(self, owner: dict[str, Any] | None) -> None:
        if owner is None or not (self.checkpoint / "loop_state.json").is_file():
            raise FileNotFoundError(
                f"--resume: no unfinished run of {self.path.name!r} to continue (its checkpoint "
                f"would be in {self.checkpoint}; a run can be resumed after Ctrl-C or a crash "
                "during training). Run without --resume to start again"
            )
        self._claim()


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (where fcntl exists; elsewhere nothing is locked).

    Every claim of a run in `directory` takes it, so a check and the claim that follows are one
    step for other bridgetune processes; the kernel releases it if the process dies."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def folder_bytes(path: Path) -> int:
    """The bytes of the files under `path` (0 when it does not exist); a file linked twice (the
    best weights in the checkpoint) counts once."""
    if not path.is_dir():
        return 0
    sizes = {}
    for file in path.rglob("*"):
        if file.is_file() and not file.is_symlink():
            info = file.stat()
            sizes[(info.st_dev, info.st_ino)] = info.st_size
    return sum(sizes.values())


def check_disk(directory: Path, need: int, present: int = 0) -> None:
    """Raise RunDirectoryError when `directory`'s filesystem has less than `need` bytes free;
    `present`: what the run already has on disk (a partial checkpoint it will replace)."""
    free = shutil.disk_usage(directory).free + present
    if free < need:
        raise RunDirectoryError(
            f"{directory}: the run needs about {need / 1e9:.2f} GB for its checkpoints and "
            f"model, and {free / 1e9:.2f} GB are free"
            + (f" (counting the {present / 1e9:.2f} GB of its checkpoint)" if present else "")
            + ". Free some space or choose another output_dir"
        )
