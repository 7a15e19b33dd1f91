"""Default output folders: a new timestamped run folder, and the latest one to resume."""

from __future__ import annotations

import time
from pathlib import Path


def new_run_dir(root: str | Path) -> Path:
    """``root/YYYYmmdd-HHMMSS`` (local time), suffixed ``-2``, ``-3`` … if that name is taken; not created."""
    root = Path(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = root / stamp, 1
    while path.exists():
        n += 1
        path = root / f"{stamp}-{n}"
    return path


def latest_run_dir(root: str | Path, marker: str) -> Path | None:
    """The most recently started run folder under ``root`` that holds ``marker``, or None.

    Runs are ordered by the time their folder was created by :func:`new_run_dir` (its name),
    so the answer does not depend on which run was written to last.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if p.is_dir() and (p / marker).exists()]
    return max(runs, key=_start_key, default=None)


def _start_key(path: Path) -> tuple[str, int]:
    """("YYYYmmdd-HHMMSS", n) for a folder named by new_run_dir (n = 1 without a suffix)."""
    parts = path.name.split("-")
    suffix = parts[2] if len(parts) > 2 else ""
    return ("-".join(parts[:2]), int(suffix) if suffix.isdigit() else 1)
