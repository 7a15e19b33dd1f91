"""The rich progress bar of r3d's training and data scripts (one task line with an ``info`` field)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def task_progress(console: Console) -> Progress:
    """A bar showing ``description  ━━━  done/total  info  remaining``; add tasks with ``info=...``."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console,
    )
