"""Atomic run checkpoints: LoRA adapter (safetensors, peft layout) + trainer state.

Layout of ``RUN/checkpoint/``: ``adapter_model.safetensors`` + ``adapter_config.json`` (loadable by
peft / ``r3d sample --adapter``) and ``trainer_state.pt`` (optimizer, RNG states, stat tracker,
iteration), read back with ``torch.load(weights_only=True)``. The folder is written beside the old
one and swapped in with renames, so an interruption leaves either the old or the new checkpoint.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

from r3d.core.errors import R3DError

STATE_FILE = "trainer_state.pt"
ADAPTER_FILE = "adapter_model.safetensors"


def save_checkpoint(directory: str | Path, peft_model: PeftModel, state: dict[str, Any]) -> Path:
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        torch.save(state, tmp / STATE_FILE)
        old = directory.with_name(f".{directory.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_adapter_weights(peft_model: PeftModel, directory: str | Path) -> None:
    """Load ``adapter_model.safetensors`` from ``directory`` into ``peft_model`` (strict on LoRA keys)."""
    path = Path(directory) / ADAPTER_FILE
    if not path.is_file():
        raise R3DError(f"no adapter weights at {path}")
    try:
        weights = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise R3DError(f"cannot read adapter {path}: {exc}") from None
    result = set_peft_model_state_dict(peft_model, weights)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise R3DError(f"adapter {path} does not fit this model: unexpected keys {unexpected[:3]}")


def load_state(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise R3DError(f"no checkpoint at {Path(directory)} (missing {STATE_FILE})")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise R3DError(f"cannot read checkpoint {path}: {exc}") from None
