"""The one place a device name from a recipe or a command line becomes a ``torch.device``."""

from __future__ import annotations

import torch

from r3d.core.errors import R3DError

_HINT = "use auto, cpu, cuda or cuda:N"


def _available(dev: torch.device) -> str | None:
    """Why ``dev`` cannot be used on this machine, or None when it can."""
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    if dev.type == "mps" and not torch.backends.mps.is_available():
        return "MPS is not available on this machine"
    return None


def resolve_device(
    device: str | torch.device | None = "auto", *, require_available: bool = True
) -> torch.device:
    """``auto`` / None → ``cuda`` when CUDA is available, else ``cpu``; anything else as given.

    ``cuda`` stays ``cuda`` (no index: the current device, i.e. this rank's GPU once
    :func:`r3d.core.distributed.init_from_env` pinned it). An unknown name is an R3DError; so is a
    device this machine lacks (``cuda`` without CUDA, ``cuda:3`` on a 2-GPU machine) unless
    ``require_available`` is False (the dry run reports that itself and plans on the meta device).
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise R3DError(f"unknown device {device!r} ({_HINT})") from None
    problem = _available(dev) if require_available else None
    if problem is not None:
        raise R3DError(f"device {device} requested but {problem}; use --device cpu (or auto)")
    return dev
