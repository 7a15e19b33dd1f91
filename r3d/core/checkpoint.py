"""Atomic run checkpoints: LoRA adapter (safetensors, peft layout) + trainer state.

Layout of ``RUN/checkpoint/``: ``adapter_model.safetensors`` + ``adapter_config.json`` (loadable by
peft / ``r3d sample --adapter``) and ``trainer_state.pt`` (optimizer, RNG states, stat tracker,
iteration), read back with ``torch.load(weights_only=True)``. The folder is written beside the old
one and swapped in with renames, so an interruption leaves either the old or the new checkpoint
(between the two renames the old one sits in ``.checkpoint.old``, which loading falls back to).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file

from r3d.core.errors import R3DError

STATE_FILE = "trainer_state.pt"
ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"


def previous_copy(directory: str | Path) -> Path:
    """``.NAME.old`` beside ``directory``: the previous checkpoint while a save replaces it."""
    directory = Path(directory)
    return directory.with_name(f".{directory.name}.old")


def _complete(directory: Path) -> bool:
    return all((directory / f).is_file() for f in (STATE_FILE, ADAPTER_FILE, CONFIG_FILE))


def resolve_checkpoint(directory: str | Path) -> Path:
    """The folder to read a checkpoint from: ``directory``, or its previous copy when a save was killed
    between its two renames (``directory`` gone, the complete previous checkpoint in ``.NAME.old``).

    Read-only: safe while a run is saving. ``directory`` is returned when neither exists.
    """
    directory = Path(directory)
    old = previous_copy(directory)
    if not directory.is_dir() and _complete(old):
        return old
    return directory


def recover_checkpoint(directory: str | Path) -> bool:
    """Move a previous copy left by an interrupted save back to ``directory``; True if it did.

    Call only while holding the run's lock (it renames inside the run folder).
    """
    directory = Path(directory)
    if resolve_checkpoint(directory) == directory:
        return False
    previous_copy(directory).rename(directory)
    return True


def _fsync_tree(folder: Path) -> None:
    """Flush every file in ``folder`` and the folder itself, so a rename never exposes empty files."""
    for path in [*folder.iterdir(), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(directory: str | Path, peft_model: PeftModel, state: dict[str, Any]) -> Path:
    """Write adapter + trainer ``state`` into ``directory``, atomically (see :func:`write_folder`)."""

    def write(tmp: Path) -> None:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        torch.save(state, tmp / STATE_FILE)

    return write_folder(directory, write)


def write_folder(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """Fill a folder with ``write(tmp)`` and put it at ``directory`` atomically: always one complete copy.

    The new one is written and flushed in a temporary sibling; the previous one moves to
    :func:`previous_copy` and is deleted only after the new one is in place. A kill between the two
    renames leaves the previous copy, which :func:`resolve_checkpoint` reads and the next save or
    resume moves back.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write(tmp)
        _fsync_tree(tmp)
        recover_checkpoint(directory)
        old = previous_copy(directory)
        for stale in directory.parent.glob(f".{directory.name}.*"):  # temporaries of killed saves
            if stale not in (tmp, old) and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        if directory.exists():
            if old.exists():
                shutil.rmtree(old)
            directory.rename(old)
        tmp.rename(directory)
        _fsync_tree(directory.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_adapter_weights(peft_model: PeftModel, directory: str | Path) -> None:
    """Load ``adapter_model.safetensors`` from ``directory`` into ``peft_model``.

    Strict on LoRA tensors: a missing, unexpected or mis-shaped one is an R3DError (a partial load
    would silently leave the freshly initialised LoRA, i.e. the base model).
    """
    path = resolve_checkpoint(directory) / ADAPTER_FILE
    if not path.is_file():
        raise R3DError(f"no adapter weights at {path}")
    try:
        weights = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise R3DError(f"cannot read adapter {path}: {exc}") from None
    missing = sorted(set(get_peft_model_state_dict(peft_model)) - set(weights))
    if missing:
        raise R3DError(
            f"adapter {path} does not fit this model: {len(missing)} LoRA tensor(s) missing, e.g. {missing[:2]}"
        )
    try:
        result = set_peft_model_state_dict(peft_model, weights)
    except RuntimeError as exc:  # shape mismatches
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc))
        raise R3DError(f"adapter {path} does not fit this model: {detail}") from None
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise R3DError(f"adapter {path} does not fit this model: unexpected keys {unexpected[:3]}")


def load_state(directory: str | Path) -> dict[str, Any]:
    """The trainer state of the checkpoint in ``directory`` (or its previous copy, see above)."""
    path = resolve_checkpoint(directory) / STATE_FILE
    if not path.is_file():
        raise R3DError(f"no checkpoint at {Path(directory)} (missing {STATE_FILE})")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise R3DError(f"cannot read checkpoint {path}: {exc}") from None


def load_strict(module: torch.nn.Module, state: dict[str, Any], what: str, assign: bool = True) -> None:
    """``load_state_dict(strict=True)`` with a one-line R3DError naming missing / unexpected keys."""
    expected = set(module.state_dict().keys())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise R3DError(
            f"{what} weights do not match the architecture: {len(missing)} missing "
            f"({', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:3])}{' …' if len(unexpected) > 3 else ''})"
        )
    try:
        module.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:
        raise R3DError(
            f"{what} weights do not match the architecture: {str(exc).splitlines()[-1].strip()}"
        ) from None
