"""Progress bar of the loop (rich): steps, loss, throughput, time left; messages above it."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PLAIN_INTERVAL_S = 30


class TrainProgress:
    """A rich progress bar on the main process; a no-op elsewhere."""

    def __init__(self, total_steps: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]} ex/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
        )
        self.task = self.progress.add_task("training", total=total_steps, loss="-", speed="-")
        self.plain = enabled and not self.console.is_terminal  # logs, CI: print lines instead
        self.last_line = 0.0

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def describe(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def advance_to(self, step: int) -> None:
        self.progress.update(self.task, completed=step)

    def step(self, examples_per_second: float) -> None:
        self.progress.update(self.task, advance=1, speed=f"{examples_per_second:,.0f}")

    def show_loss(self, loss: float) -> None:
        self.progress.update(self.task, loss=f"{loss:.4f}")
        if self.plain and time.monotonic() - self.last_line > PLAIN_INTERVAL_S:
            self.last_line = time.monotonic()
            task = self.progress.tasks[0]
            self.console.print(
                f"{task.description}: step {int(task.completed)}/{int(task.total)} "
                f"loss {loss:.4f} {task.fields['speed']} ex/s"
            )

    def note(self, message: str) -> None:
        if self.enabled:
            self.progress.console.print(message)
