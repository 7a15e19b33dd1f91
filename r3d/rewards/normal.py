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

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import trimesh

from r3d.core.errors import R3DError
from r3d.mesh.render import (
    Camera,
    RayHits,
    RenderedView,
    _camera_rays,
    camera_points,
    cast_rays,
    normalize_unit_sphere,
    orbit_cameras,
)


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


def _normals_from_points(points: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit depth normals (H, W, 3) and valid mask (H, W) from camera points (H, W, 3) and hit ``mask``."""
    tx, ok_x = _one_sided(points, mask, axis=1)
    t_down, ok_y = _one_sided(points, mask, axis=0)
    normals = np.cross(tx, -t_down)  # image x (right) × image y (up) points towards the camera (+z)
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    valid = ok_x & ok_y & (norm[..., 0] > 0)
    normals = np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 0)
    facing_away = np.einsum("ijk,ijk->ij", normals, -points) < 0
    normals[facing_away] *= -1.0
    return normals, valid


def normals_from_depth(view: RenderedView) -> tuple[np.ndarray, np.ndarray]:
    """Camera-space unit normals (H, W, 3) estimated from ``view.depth``, and the (H, W) valid mask."""
    return _normals_from_points(camera_points(view), view.mask)


def _hit_window(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box (rows, columns) of a (H, W) mask's True pixels, None if there are none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def normal_consistency(views: Sequence[RenderedView]) -> float:
    """max(0, mean cos(n_depth, n_render)) over the valid pixels of all ``views``; 0 if none is valid.

    Each view is evaluated on the bounding box of its hit pixels only: outside it no pixel is valid and
    no valid pixel has a neighbour, so the values (and their summation order) are those of the full image.
    """
    total, count = 0.0, 0
    for view in views:
        window = _hit_window(view.mask)
        if window is None:
            continue
        est, valid = _normals_from_points(
            camera_points(view, window), np.ascontiguousarray(view.mask[window])
        )
        rendered = np.ascontiguousarray(view.normals_cam[window], dtype=np.float64)
        cos = np.einsum("ijk,ijk->ij", est, rendered)[valid]
        total += float(cos.sum())
        count += int(cos.size)
    return max(0.0, total / count) if count else 0.0


def _hit_consistency(hits: RayHits, cameras: Sequence[Camera]) -> float:
    """:func:`normal_consistency` of the views of ``hits``, computed on the hit pixels only.

    Pixel by pixel the same arithmetic as :func:`normals_from_depth` on full images (the compiled
    :func:`r3d.rewards._normal_jit.hit_cosines`), and each view's cosines summed by NumPy in pixel
    order, so the value is bit-identical to rendering the views and calling :func:`normal_consistency`.
    """
    size, n_pix = cameras[0].size, cameras[0].size ** 2
    bounds = np.searchsorted(hits.hit, np.arange(len(cameras) + 1) * n_pix)
    rendered = np.empty_like(hits.normals)
    for k, cam in enumerate(cameras):
        sl = slice(bounds[k], bounds[k + 1])
        rendered[sl] = (hits.normals[sl] @ cam.rotation).astype(np.float32)
    cos, valid = _cosines()(hits.hit, hits.t, _camera_rays(size, cameras[0].fov_deg), rendered, len(cameras))
    total, count = 0.0, 0
    for k in range(len(cameras)):
        view_cos = cos[bounds[k] : bounds[k + 1]][valid[bounds[k] : bounds[k + 1]]]
        total += float(view_cos.sum())
        count += int(view_cos.size)
    return max(0.0, total / count) if count else 0.0


@functools.cache
def _cosines() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """:func:`r3d.rewards._normal_jit.hit_cosines`, imported (with numba) on first use."""
    from r3d.rewards._normal_jit import hit_cosines

    return hit_cosines


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
            mesh = normalize_unit_sphere(mesh)
        except R3DError:  # no faces / non-finite vertices: a failed generation, not a user error
            return 0.0
        return _hit_consistency(cast_rays(mesh, self.cameras), self.cameras)

    def __call__(
        self, artifacts: Sequence[Any], prompts: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """``{normal: float32 (B,)}``."""
        return {self.name: torch.tensor([self.score_one(m) for m in artifacts], dtype=torch.float32)}
