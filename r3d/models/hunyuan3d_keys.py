"""Hunyuan3D-2.1 checkpoint key names shared by r3d's modules and the official-code wrapper."""

from __future__ import annotations

import torch
from torch import nn

#: DINOv2 attention keys: transformers 4.x name (the checkpoint's) → transformers 5 name.
DINO_KEY_RENAMES = {
    ".attention.attention.query.": ".attention.q_proj.",
    ".attention.attention.key.": ".attention.k_proj.",
    ".attention.attention.value.": ".attention.v_proj.",
    ".attention.output.dense.": ".attention.o_proj.",
}


def map_dino_keys(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Rename the conditioner's DINOv2 attention keys to the installed transformers' naming (4.x ↔ 5)."""
    expected = set(module.state_dict().keys())
    if set(state) <= expected:
        return state
    renames = DINO_KEY_RENAMES
    if not any(new in k for k in expected for new in renames.values()):
        renames = {new: old for old, new in renames.items()}
    out = {}
    for key, value in state.items():
        for old, new in renames.items():
            key = key.replace(old, new)
        out[key] = value
    return out
