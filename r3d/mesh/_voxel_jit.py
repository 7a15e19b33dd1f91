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

    Along the axis ``w`` where the triangle's normal is largest, each column of candidate cells is cut
    to the cells within one cell of the triangle's plane slab ``|n·(centre − a)| ≤ h·Σ|n|`` (computed
    in real arithmetic, then widened by one cell each way). A cell cut off is at least ``|n_w|/R ≥
    Σ|n|/(3R)`` outside the slab, 10¹² times the rounding error of the exact test's plane check, so the
    exact test would reject it too: the set is unchanged, big triangles get much cheaper.
    """
    R = resolution
    voxel_size = 1.0 / R
    h = voxel_size / 2.0
    min_bound = -0.5
    first_centre = min_bound + h
    lo = np.empty(3, np.int64)
    hi = np.empty(3, np.int64)
    n = np.empty(3, np.float64)
    cell = np.empty(3, np.int64)
    centre = np.empty(3, np.float64)
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
        n[0] = (b[1] - a[1]) * (c[2] - b[2]) - (b[2] - a[2]) * (c[1] - b[1])
        n[1] = (b[2] - a[2]) * (c[0] - b[0]) - (b[0] - a[0]) * (c[2] - b[2])
        n[2] = (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0])
        slab = h * (abs(n[0]) + abs(n[1]) + abs(n[2]))
        w = 0
        for d in (1, 2):
            if abs(n[d]) > abs(n[w]):
                w = d
        u, v = (1, 2) if w == 0 else ((0, 2) if w == 1 else (0, 1))
        for p in range(lo[u], hi[u] + 1):
            cell[u] = p
            centre[u] = first_centre + p * voxel_size
            for q in range(lo[v], hi[v] + 1):
                cell[v] = q
                centre[v] = first_centre + q * voxel_size
                w_lo, w_hi = lo[w], hi[w]
                if n[w] != 0.0:
                    rest = n[u] * (centre[u] - a[u]) + n[v] * (centre[v] - a[v])
                    z1 = a[w] + (-rest - slab) / n[w]
                    z2 = a[w] + (-rest + slab) / n[w]
                    w_lo = max(w_lo, int(np.floor((min(z1, z2) - first_centre) / voxel_size)) - 1)
                    w_hi = min(w_hi, int(np.ceil((max(z1, z2) - first_centre) / voxel_size)) + 1)
                for r in range(w_lo, w_hi + 1):
                    cell[w] = r
                    flat = (cell[0] * R + cell[1]) * R + cell[2]
                    if occupied[flat]:
                        continue
                    centre[w] = first_centre + r * voxel_size
                    cx, cy, cz = centre[0], centre[1], centre[2]
                    if tri_box_overlap_one(
                        a[0] - cx, a[1] - cy, a[2] - cz, b[0] - cx, b[1] - cy, b[2] - cz,
                        c[0] - cx, c[1] - cy, c[2] - cz, h,
                    ):  # fmt: skip
                        occupied[flat] = True
