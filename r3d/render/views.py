"""Rendered views shared by every renderer and by the 2D rewards; and the ray-cast path for meshes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from r3d.core.errors import R3DError
from r3d.render.cameras import Cameras


@dataclass
class Views:
    """B objects × V views, maps (H, W) = (size, size), row 0 on top.

    alpha: (B, V, H, W) opacity in [0, 1] (a hard 0/1 mask for ray-cast meshes).
    depth: (B, V, H, W) z-depth of the surface, expected over the ray weights and normalised by alpha;
    0 where alpha is 0. normals: (B, V, H, W, 3) camera-space unit normals facing the camera (0 where
    alpha is 0). rgb: optional (B, V, H, W, 3) colours in [0, 1] composited on ``background``.
    """

    alpha: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    cameras: Cameras
    rgb: torch.Tensor | None = None


def safe_normalize(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """v / |v| along the last axis with a smooth floor: differentiable at v = 0 (returns ~0 there)."""
    return v / torch.sqrt((v * v).sum(-1, keepdim=True) + eps)


def render_meshes(meshes: Sequence, cameras: Cameras) -> Views:
    """Ray-cast meshes (``trimesh.Trimesh`` in world units, or None) with ``cameras`` (B = len(meshes)).

    Uses :func:`r3d.mesh.render.render_views` without normalisation, so a mesh and the field it was
    extracted from are seen at the same place in the image. Not differentiable. A None or invalid mesh
    renders empty (alpha 0).
    """
    from r3d.mesh.render import render_views

    if len(meshes) != cameras.batch:
        raise ValueError(f"{len(meshes)} meshes for {cameras.batch} camera rigs")
    n, v, s = cameras.batch, cameras.views, cameras.size
    alpha = np.zeros((n, v, s, s), dtype=np.float32)
    depth = np.zeros((n, v, s, s), dtype=np.float32)
    normals = np.zeros((n, v, s, s, 3), dtype=np.float32)
    for b, mesh in enumerate(meshes):
        if mesh is None or len(getattr(mesh, "faces", ())) == 0:
            continue
        try:
            rendered = render_views(mesh, normalize=False, cameras=cameras.mesh_cameras(b))
        except R3DError:  # non-finite vertices and the like: a failed generation renders empty
            continue
        for k, view in enumerate(rendered):
            alpha[b, k] = view.mask
            depth[b, k] = view.depth
            normals[b, k] = view.normals_cam
    return Views(torch.from_numpy(alpha), torch.from_numpy(depth), torch.from_numpy(normals), cameras)
