"""Compiled (numba) per-pixel terms of the ``normal`` reward (:func:`r3d.rewards.normal.normal_consistency`).

The same floating-point operations, in the same order, as the NumPy form on full images
(:func:`r3d.rewards.normal.normals_from_depth`: ``np.cross``, ``np.linalg.norm``, ``np.einsum``; numba
does not contract to fused multiply-adds without ``fastmath``), evaluated on the hit pixels only, so
every cosine is bit-identical to it. Compiled once per machine (``cache=True``).
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def _tangent(
    points: np.ndarray, index: np.ndarray, i: int, p: int, step: int, has_next: bool, has_prev: bool
) -> tuple[float, float, float, bool]:
    """One-sided difference at hit ``i`` (ray ``p``) towards ``p ± step``: the neighbour whose depth (z)
    differs least, forward on ties; and whether either neighbour is a hit. ``index`` maps rays to hits,
    ``len(points) − 1`` (a zero row) where there is none."""
    none = points.shape[0] - 1
    fwd = index[p + step] if has_next else none
    bwd = index[p - step] if has_prev else none
    fx, fy, fz = points[fwd, 0] - points[i, 0], points[fwd, 1] - points[i, 1], points[fwd, 2] - points[i, 2]
    bx, by, bz = points[i, 0] - points[bwd, 0], points[i, 1] - points[bwd, 1], points[i, 2] - points[bwd, 2]
    fwd_ok, bwd_ok = fwd != none, bwd != none
    if fwd_ok and (not bwd_ok or abs(fz) <= abs(bz)):
        return fx, fy, fz, True
    return bx, by, bz, bwd_ok


@numba.njit(cache=True, nogil=True)
def hit_cosines(
    hit: np.ndarray, t: np.ndarray, rays: np.ndarray, rendered: np.ndarray, n_views: int
) -> tuple[np.ndarray, np.ndarray]:
    """cos(n_depth, n_render) (N,) and valid (N,) for the hits of one render.

    hit (N,): ascending ray indices (view-major, row-major pixels); t (N,): their float64 ray lengths;
    rays (size², 3): unit camera-space pixel rays; rendered (N, 3): the hit faces' camera-space normals
    (float32 values). Camera points ``P = r · (t·(−r_z) / −r_z)``; tangents from the neighbour with the
    smaller depth jump along x and along y (downwards); ``n = t_x × (−t_y)`` normalised and turned
    towards the camera. Valid: a hit neighbour on both axes and a non-zero cross product.
    """
    n_pix = rays.shape[0]
    size = int(round(math.sqrt(n_pix)))
    n = hit.shape[0]
    index = np.full(n_views * n_pix, n, dtype=np.int64)
    points = np.zeros((n + 1, 3))
    inner = np.empty(n, dtype=np.uint8)  # bits: has a pixel to the left, right, above, below
    i = 0
    for k in range(n_views):  # hits are ascending: walk the pixels once
        for row in range(size):
            for col in range(size):
                p = (k * size + row) * size + col
                if i == n or hit[i] != p:
                    continue
                index[p] = i
                rx, ry, rz = rays[p - k * n_pix, 0], rays[p - k * n_pix, 1], rays[p - k * n_pix, 2]
                depth = t[i] * -rz
                points[i, 0] = rx * (depth / -rz)
                points[i, 1] = ry * (depth / -rz)
                points[i, 2] = rz * (depth / -rz)
                inner[i] = (col > 0) | (col < size - 1) << 1 | (row > 0) << 2 | (row < size - 1) << 3
                i += 1
    cos = np.zeros(n)
    valid = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        p, bits = hit[i], inner[i]
        tx, ty, tz, ok_x = _tangent(points, index, i, p, 1, bits & 2 != 0, bits & 1 != 0)
        dx, dy, dz, ok_y = _tangent(points, index, i, p, size, bits & 8 != 0, bits & 4 != 0)
        ux, uy, uz = -dx, -dy, -dz
        cx, cy, cz = ty * uz - tz * uy, tz * ux - tx * uz, tx * uy - ty * ux
        norm = math.sqrt((cx * cx + cy * cy) + cz * cz)
        if not (ok_x and ok_y and norm > 0):
            continue
        ex, ey, ez = cx / norm, cy / norm, cz / norm
        if (ex * -points[i, 0] + ez * -points[i, 2]) + ey * -points[i, 1] < 0:
            ex, ey, ez = -ex, -ey, -ez
        cos[i] = (ex * rendered[i, 0] + ez * rendered[i, 2]) + ey * rendered[i, 1]
        valid[i] = True
    return cos, valid
