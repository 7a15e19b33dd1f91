"""Advisory locks on output folders, so that two r3d processes never write one run at once.

A lock is ``flock`` on a small file inside the folder (``.r3d.lock`` or a named variant) that holds
the holder's pid. The kernel drops it when the process exits, however it exits (SIGKILL included),
so a stale lock file never blocks a later run. A second process that asks for a held lock gets a
one-line :class:`R3DError` naming the holder's pid. Shared mode lets several processes hold a lock
together (bench-edit shards writing into one folder) while an exclusive holder keeps them all out.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from r3d.core.errors import R3DError

LOCK_FILE = ".r3d.lock"

# Locks this process holds for its lifetime, by (lock file, shared): taking one again is a no-op.
_HELD: dict[tuple[Path, bool], FolderLock] = {}


class FolderLock:
    """An ``flock`` on ``folder/name`` (created with the folder); release it or let the process end."""

    def __init__(self, folder: str | os.PathLike, name: str = LOCK_FILE, shared: bool = False) -> None:
        self.path = Path(folder) / name
        self.shared = shared
        self._fd: int | None = None

    def acquire(self, what: str) -> FolderLock:
        """Take the lock without waiting; if another process holds it, raise an R3DError naming it.

        ``what``: how the folder is named in the message (e.g. ``run folder``).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "pid unknown"
            raise R3DError(
                f"{what} {self.path.parent} is in use by another r3d process ({who}); "
                "wait for it to finish or choose another folder"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)  # shared holders leave it empty: a pid found there is a live exclusive holder
        if not self.shared:
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; it holds no state)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def hold(folder: str | os.PathLike, what: str, name: str = LOCK_FILE, shared: bool = False) -> FolderLock:
    """Take ``folder``'s lock for the rest of this process (idempotent within the process).

    For commands whose outputs are written after the main work returns (reports, summaries): the
    lock is released only when the process exits.
    """
    key = ((Path(folder) / name).resolve(), shared)
    if key not in _HELD:
        _HELD[key] = FolderLock(folder, name, shared).acquire(what)
    return _HELD[key]


def drop(folder: str | os.PathLike, name: str = LOCK_FILE, shared: bool = False) -> None:
    """Release a lock taken with :func:`hold` and delete its file, and ``folder`` if that leaves it empty
    (for a command that failed before writing anything into a folder it created)."""
    held = _HELD.pop(((Path(folder) / name).resolve(), shared), None)
    if held is None:
        return
    held.path.unlink(missing_ok=True)
    held.release()
    try:
        held.path.parent.rmdir()
    except OSError:  # not empty: keep it
        pass
