"""``normal`` reward: agreement between rendered normals and normals recomputed from rendered depth.

For each of K views (CPU ray casting, :func:`r3d.mesh.render.render_views`, mesh normalised to the
unit sphere) the camera-space points P(i, j) are back-projected from the depth map. Per pixel, the
tangents are one-sided finite differences of P along x and y, taking on each axis the neighbour whose
depth differs least (so differences do not straddle occlusion boundaries); the depth normal is their
cross product, oriented towards the camera. Score, over all hit pixels with a hit neighbour on both
axes, pooled across views:

    normal = max(0, mean_pixels cos(n_depth, n_render))

n_render being the hit face's geometric normal (also camera-facing). On a surface that is smooth at
pixel scale the two agree (cos → 1); noise, jagged facets and staircases make the finite differences
straddle faces of different orientation and lower the score. Both normals face the camera, so the mean
is ≥ 0 in practice; the clamp only guards the range. A None mesh, an invalid one, or one no ray hits
scores 0. Not differentiable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import trimesh

from r3d.core.errors import R3DError
from r3d.mesh.render import RenderedView, camera_points, orbit_cameras, render_views


def _one_sided(points: np.ndarray, mask: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Tangent along ``axis`` (1 = +x / columns, 0 = rows, downwards) from the neighbour with the
    smaller depth jump; returns (tangent (H, W, 3), valid (H, W))."""
    size = mask.shape[axis]
    fwd = np.zeros_like(points)
    bwd = np.zeros_like(points)
    fwd_ok = np.zeros_like(mask)
    bwd_ok = np.zeros_like(mask)
    lead = [slice(None)] * 2
    trail = [slice(None)] * 2
    lead[axis], trail[axis] = slice(0, size - 1), slice(1, size)
    lead_t, trail_t = tuple(lead), tuple(trail)
    diff = points[trail_t] - points[lead_t]  # P[k+1] − P[k]
    both = mask[trail_t] & mask[lead_t]
    fwd[lead_t], fwd_ok[lead_t] = diff, both  # at k: forward difference
    bwd[trail_t], bwd_ok[trail_t] = diff, both  # at k+1: backward difference
    use_fwd = fwd_ok & (~bwd_ok | (np.abs(fwd[..., 2]) <= np.abs(bwd[..., 2])))
    tangent = np.where(use_fwd[..., None], fwd, bwd)
    return tangent, mask & (fwd_ok | bwd_ok)


def normals_from_depth(view: RenderedView) -> tuple[np.ndarray, np.ndarray]:
    """Camera-space unit normals (H, W, 3) estimated from ``view.depth``, and the (H, W) valid mask."""
    points = camera_points(view)
    tx, ok_x = _one_sided(points, view.mask, axis=1)
    t_down, ok_y = _one_sided(points, view.mask, axis=0)
    normals = np.cross(tx, -t_down)  # image x (right) × image y (up) points towards the camera (+z)
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    valid = ok_x & ok_y & (norm[..., 0] > 0)
    normals = np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 0)
    facing_away = np.einsum("ijk,ijk->ij", normals, -points) < 0
    normals[facing_away] *= -1.0
    return normals, valid


def normal_consistency(views: Sequence[RenderedView]) -> float:
    """max(0, mean cos(n_depth, n_render)) over the valid pixels of all ``views``; 0 if none is valid."""
    total, count = 0.0, 0
    for view in views:
        est, valid = normals_from_depth(view)
        cos = np.einsum("ijk,ijk->ij", est, view.normals_cam.astype(np.float64))[valid]
        total += float(cos.sum())
        count += int(cos.size)
    return max(0.0, total / count) if count else 0.0


class NormalReward:
    """Render-based normal-consistency reward (see module docstring).

    Args:
        n_views: views per mesh, evenly spaced in azimuth from ``azimuth_offset_deg``.
        size: square render resolution in pixels.
        elevation_deg, fov_deg: camera elevation and vertical field of view.
    """

    name = "normal"
    higher_is_better = True
    value_range = (0.0, 1.0)
    differentiable = False

    def __init__(
        self,
        n_views: int = 4,
        size: int = 128,
        elevation_deg: float = 20.0,
        azimuth_offset_deg: float = 0.0,
        fov_deg: float = 40.0,
    ) -> None:
        if n_views < 1 or size < 8:
            raise R3DError(f"normal reward: need n_views >= 1 and size >= 8, got {n_views} and {size}")
        if not 0.0 < fov_deg < 180.0:
            raise R3DError(f"normal reward: fov_deg must be in (0, 180), got {fov_deg}")
        self.cameras = orbit_cameras(n_views, size, elevation_deg, azimuth_offset_deg, fov_deg)

    def score_one(self, mesh: trimesh.Trimesh | None) -> float:
        """Normal consistency of one mesh in [0, 1] (0 for None or an invalid mesh)."""
        if mesh is None:
            return 0.0
        if not isinstance(mesh, trimesh.Trimesh):
            raise TypeError(f"normal reward scores trimesh.Trimesh or None, got {type(mesh).__name__}")
        try:
            views = render_views(mesh, cameras=self.cameras)
        except R3DError:  # no faces / non-finite vertices: a failed generation, not a user error
            return 0.0
        return normal_consistency(views)

    def __call__(
        self, artifacts: Sequence[Any], prompts: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """``{normal: float32 (B,)}``."""
        return {self.name: torch.tensor([self.score_one(m) for m in artifacts], dtype=torch.float32)}
