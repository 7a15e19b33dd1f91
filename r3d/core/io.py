"""Atomic file writes: a crash or Ctrl-C never leaves a half-written checkpoint or report."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` (same directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give results the usual permissions
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON record and flush it to disk at once (crash loses at most this line).

    If the file ends in a torn line (a crash mid-write), a newline is written first, so the new
    record never glues onto the torn one; the record goes out in one ``write`` on an ``O_APPEND``
    descriptor, so processes appending to one file (bench-edit shards) do not interleave.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in order; [] when it does not exist.

    Lines that are not a JSON object in UTF-8 (a torn line left by a crash, stray binary bytes) are
    skipped and logged as a warning, never a traceback.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records, bad = [], 0
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    if bad:
        logging.getLogger("r3d").warning("%s: skipped %d unreadable line(s)", path, bad)
    return records


def read_text(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of ``path``; a binary / non-UTF-8 file is an R3DError naming ``what`` and the byte."""
    from r3d.core.errors import R3DError

    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise R3DError(
            f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})"
        ) from None
    if "\x00" in text:
        raise R3DError(f"{what} {path} is not text (it holds NUL bytes)")
    return text


def write_safetensors(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, Any]) -> Path:
    """Write ``tensors`` atomically to a safetensors file (folders made), every metadata value stored
    as JSON (read back with :func:`read_safetensors` and ``json.loads``)."""
    from safetensors.torch import save_file

    meta = {k: json.dumps(v) for k, v in metadata.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def read_safetensors(
    path: str | os.PathLike, what: str, recreate: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensors, string metadata) of a safetensors file.

    A missing file is an R3DError that names ``what`` and the command ``recreate`` that makes it;
    an unreadable one an R3DError ``PATH is not a WHAT file (reason)``.
    """
    from safetensors import SafetensorError, safe_open

    from r3d.core.errors import R3DError

    path = Path(path)
    if not path.is_file():
        raise R3DError(f"{what} not found at {path}; train them with `{recreate}`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (OSError, ValueError, SafetensorError) as exc:
        raise R3DError(f"{path} is not a {what} file ({exc})") from exc
    return tensors, meta
