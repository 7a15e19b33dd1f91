"""``prior_preservation``: how close the samples stay to the base model's samples from the same noise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import trimesh

from r3d.core.gold import EvalContext
from r3d.gold.shapes import mesh_occupancy


class PriorPreservationGold:
    """Distance of each evaluation sample to the base model's (adapter disabled) sample at the same noise.

    Components (B,): ``latent_rms`` = RMS difference of the clean latents (latent units); for meshes
    ``iou`` = volumetric IoU of the two meshes' occupancies (``resolution``³ over [−1, 1]³). The headline
    ``prior_preservation`` is ``iou`` for meshes, else exp(−latent_rms): 1 at the start of a run, lower
    as the policy moves away from its prior. Logged, not guarded: every useful update lowers it.
    """

    name = "prior_preservation"
    higher_is_better = True
    value_range = (0.0, 1.0)
    guarded = False
    needs_context = True

    def __init__(self, resolution: int = 24) -> None:
        self.resolution = int(resolution)

    def __call__(
        self, artifacts: Sequence[Any], prompts: Sequence[str], context: EvalContext
    ) -> dict[str, torch.Tensor]:
        """``prior_preservation``, ``latent_rms`` and (meshes) ``iou``, float32 (B,)."""
        ref_latents, ref_artifacts = context.reference()
        diff = (context.latents.float() - ref_latents.float().to(context.latents.device)).flatten(1)
        rms = diff.pow(2).mean(1).sqrt().cpu()
        out = {"latent_rms": rms}
        if all(a is None or isinstance(a, trimesh.Trimesh) for a in [*artifacts, *ref_artifacts]):
            iou = []
            for a, b in zip(artifacts, ref_artifacts, strict=True):
                occ_a, occ_b = mesh_occupancy(a, self.resolution), mesh_occupancy(b, self.resolution)
                union = np.count_nonzero(occ_a | occ_b)
                iou.append(np.count_nonzero(occ_a & occ_b) / union if union else 1.0)
            out["iou"] = torch.tensor(iou, dtype=torch.float32)
            head = out["iou"]
        else:
            head = torch.exp(-rms)
        return {self.name: head.float(), **out}
