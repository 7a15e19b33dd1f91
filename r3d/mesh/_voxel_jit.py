"""Compiled (numba) kernel of :func:`r3d.mesh.voxelize.voxelize_triangles`; imported on first use only.

The same candidate cells and the same floating-point operations as the NumPy reference
(``r3d.mesh.voxelize._voxelize_triangles_numpy``, itself open3d's ``tribox3`` term by term, double
precision, no fused multiply-add: numba only contracts with ``fastmath``), so the voxel set is bit
for bit the reference's. It is faster because it tests one (triangle, cell) pair at a time: a cell
already occupied is not tested again, and the test stops at the first separating axis.

Compiled once per machine: ``cache=True`` stores the machine code next to this file (or in
``$NUMBA_CACHE_DIR``); later processes load it in a fraction of a second.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def _edge_separates(
    pa: float, pb: float, qa: float, qb: float, a: float, b: float, fa: float, fb: float, h: float
) -> bool:
    """One ``AXISTEST_*``: projections ``a*p_a − b*p_b`` of the two vertices against ``(fa + fb) h``."""
    p = a * pa - b * pb
    q = a * qa - b * qb
    rad = fa * h + fb * h
    return min(p, q) > rad or max(p, q) < -rad


@numba.njit(cache=True, nogil=True, inline="always")
def _edge_separates_y(
    pa: float, pb: float, qa: float, qb: float, a: float, b: float, fa: float, fb: float, h: float
) -> bool:
    """``AXISTEST_Y*``: projections ``−a*p_x + b*p_z`` (tribox3's sign convention for the y tests)."""
    p = -a * pa + b * pb
    q = -a * qa + b * qb
    rad = fa * h + fb * h
    return min(p, q) > rad or max(p, q) < -rad


@numba.njit(cache=True, nogil=True)
def tri_box_overlap_one(
    ax: float,
    ay: float,
    az: float,
    bx: float,
    by: float,
    bz: float,
    cx: float,
    cy: float,
    cz: float,
    h: float,
) -> bool:
    """Akenine-Möller triangle/box test for one triangle ``a, b, c`` relative to the box centre.

    Cheapest and most selective axes first (box axes, triangle plane, then the 9 edge axes); each axis
    is computed exactly as the vectorised reference computes it, so only the order of the (independent)
    rejections differs.
    """
    # the 3 box axes: the triangle's bounding box against [−h, h]
    if min(min(ax, bx), cx) > h or max(max(ax, bx), cx) < -h:
        return False
    if min(min(ay, by), cy) > h or max(max(ay, by), cy) < -h:
        return False
    if min(min(az, bz), cz) > h or max(max(az, bz), cz) < -h:
        return False
    e0x, e0y, e0z = bx - ax, by - ay, bz - az
    e1x, e1y, e1z = cx - bx, cy - by, cz - bz
    # the triangle plane: planeBoxOverlap(cross(e0, e1), a, h)
    nx = e0y * e1z - e0z * e1y
    ny = e0z * e1x - e0x * e1z
    nz = e0x * e1y - e0y * e1x
    vminx, vmaxx = (-h - ax, h - ax) if nx > 0.0 else (h - ax, -h - ax)
    vminy, vmaxy = (-h - ay, h - ay) if ny > 0.0 else (h - ay, -h - ay)
    vminz, vmaxz = (-h - az, h - az) if nz > 0.0 else (h - az, -h - az)
    if nx * vminx + ny * vminy + nz * vminz > 0.0:
        return False
    if not (nx * vmaxx + ny * vmaxy + nz * vmaxz >= 0.0):
        return False
    # the 9 edge-cross axes with tribox3's vertex choices (X: y/z, Y: x/z, Z: x/y components)
    e2x, e2y, e2z = ax - cx, ay - cy, az - cz
    for ex, ey, ez, pxy, pxz, qxy, qxz, pyx, pyz, qyx, qyz, pzx, pzy, qzx, qzy in (
        (e0x, e0y, e0z, ay, az, cy, cz, ax, az, cx, cz, bx, by, cx, cy),
        (e1x, e1y, e1z, ay, az, cy, cz, ax, az, cx, cz, ax, ay, bx, by),
        (e2x, e2y, e2z, ay, az, by, bz, ax, az, bx, bz, bx, by, cx, cy),
    ):
        fex, fey, fez = abs(ex), abs(ey), abs(ez)
        if _edge_separates(pxy, pxz, qxy, qxz, ez, ey, fez, fey, h):
            return False
        if _edge_separates_y(pyx, pyz, qyx, qyz, ez, ex, fez, fex, h):
            return False
        if _edge_separates(pzx, pzy, qzx, qzy, ey, ex, fey, fex, h):
            return False
    return True


@numba.njit(cache=True, nogil=True)
def occupy(vertices: np.ndarray, faces: np.ndarray, resolution: int, occupied: np.ndarray) -> None:
    """Set ``occupied[(i·R + j)·R + k]`` for every cell some triangle overlaps (open3d's candidates).

    vertices: (N, 3) float64 C-contiguous, faces: (M, 3) int64 with valid indices (unchecked),
    occupied: (R³,) bool, updated in place.
    """
    R = resolution
    voxel_size = 1.0 / R
    h = voxel_size / 2.0
    min_bound = -0.5
    first_centre = min_bound + h
    lo = np.empty(3, np.int64)
    hi = np.empty(3, np.int64)
    for t in range(faces.shape[0]):
        a = vertices[faces[t, 0]]
        b = vertices[faces[t, 1]]
        c = vertices[faces[t, 2]]
        empty = False
        for d in range(3):
            tmin = min(min(a[d], b[d]), c[d])
            tmax = max(max(a[d], b[d]), c[d])
            first = np.floor((tmin - min_bound) / voxel_size)
            span = (tmax - tmin) / voxel_size
            whole = np.floor(span)
            last = first + whole + (1.0 if span - whole >= 0.5 else 0.0) + 1.0
            if last < 0.0 or first > R - 1:
                empty = True
                break
            lo[d] = int(max(first, 0.0))
            hi[d] = int(min(last, R - 1.0))
        if empty:
            continue
        for i in range(lo[0], hi[0] + 1):
            cx = first_centre + i * voxel_size
            for j in range(lo[1], hi[1] + 1):
                cy = first_centre + j * voxel_size
                row = (i * R + j) * R
                for k in range(lo[2], hi[2] + 1):
                    if occupied[row + k]:
                        continue
                    cz = first_centre + k * voxel_size
                    if tri_box_overlap_one(
                        a[0] - cx, a[1] - cy, a[2] - cz, b[0] - cx, b[1] - cy, b[2] - cz,
                        c[0] - cx, c[1] - cy, c[2] - cz, h,
                    ):  # fmt: skip
                        occupied[row + k] = True
