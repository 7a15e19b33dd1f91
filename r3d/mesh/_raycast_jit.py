"""Compiled (numba) pre-pass of :func:`r3d.mesh.render._first_hits`: the rays whose first hit is certain.

Embree decides hits in float32; this kernel redoes its geometry in float64 on exactly embree's inputs
(the float32 scaled vertices, ray origins and unit directions) and keeps only the answers that no
float32 rounding can change. Per (face, pixel) pair, with ``a, b, c`` the corners relative to the ray
origin and ``D`` the direction, the line meets the face iff the three edge functions ``D·(a×b)``,
``D·(b×c)``, ``D·(c×a)`` share a sign. Each is compared with a margin of ``TOL·s·L`` (``s`` the largest
corner distance, ``L`` the perimeter): embree's own rounding (Möller–Trumbore or Plücker on float32
operands) is a few float32 ulps of ``s·L``, ``TOL`` is about 170 ulps. A pair is

* a certain miss when two edge functions have opposite signs beyond the margin;
* a certain hit when all three share a sign beyond it and the distance ``t`` exceeds its own margin
  (``TOL·s·(|N| / |N·D| + 1)``, larger for grazing rays); it may be hit anywhere in ``[t − m, t + m]``;
* otherwise uncertain: it may be hit anywhere from ``min(D·a, D·b, D·c) − TOL·s`` on.

A pixel's first hit is certain when its nearest certain hit ends before any other face can begin;
a pixel with no face that may be hit is a certain miss; every other pixel is left to embree (−2).
Only pixels inside a face's projected box (padded by :data:`PAD` pixels) are tested: the ray of a
pixel whose centre is outside the projection of a face in front of the camera cannot hit it.

:func:`hit_geometry` then turns the first-hit faces into ray lengths and normals. Compiled once per
machine (``cache=True``, as :mod:`r3d.mesh._voxel_jit`).
"""

from __future__ import annotations

import math

import numba
import numpy as np

TOL = 1e-5  # relative margin: ~170 float32 ulps (2⁻²⁴ ≈ 6e-8)
PAD = 0.05  # pixels added around each face's projected box (directions are float32-rounded)
UNDECIDED = -2


@numba.njit(cache=True, nogil=True)
def vertex_pixels(
    vertices: np.ndarray, position: np.ndarray, rotation: np.ndarray, focal: float, size: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Continuous pixel coordinates (column, row), each (V,), of the vertices (V, 3) seen by a camera
    at ``position`` with camera-to-world ``rotation`` (3, 3) and ``focal`` length in pixels: pixel
    centres at integers, clipped to [−2, size + 1]; and whether every vertex lies in front of the
    camera (otherwise the projection says nothing about which rays can hit)."""
    n = vertices.shape[0]
    cam = np.empty((n, 3))
    largest = 0.0
    for v in range(n):
        for j in range(3):
            cam[v, j] = (
                (vertices[v, 0] - position[0]) * rotation[0, j]
                + (vertices[v, 1] - position[1]) * rotation[1, j]
                + (vertices[v, 2] - position[2]) * rotation[2, j]
            )
            largest = max(largest, abs(cam[v, j]))
    col = np.empty(n)
    row = np.empty(n)
    centre = size / 2.0 - 0.5
    for v in range(n):
        depth = -cam[v, 2]
        if not depth > 1e-9 * (1.0 + largest):
            return col, row, False
        col[v] = min(max(cam[v, 0] / depth * focal + centre, -2.0), size + 1.0)
        row[v] = min(max(centre - cam[v, 1] / depth * focal, -2.0), size + 1.0)
    return col, row, True


@numba.njit(cache=True, nogil=True)
def certain_hits(
    vertices: np.ndarray,
    faces: np.ndarray,
    origins: np.ndarray,
    directions: np.ndarray,
    world: np.ndarray,
    positions: np.ndarray,
    rotations: np.ndarray,
    focal: float,
) -> np.ndarray:
    """(n·size²,) int64: the certain first-hit face of each ray, −1 for a certain miss, −2 undecided.

    vertices (V, 3), faces (F, 3): the scene as embree has it (float32 values). origins (n, 3): per
    view; directions (n·size², 3): unit float32 directions, view-major then row-major pixels. world
    (V, 3), positions (n, 3), rotations (n, 3, 3), focal: the unscaled vertices and the cameras, for
    the faces' pixel boxes (:func:`vertex_pixels`; a view with a vertex not in front of its camera is
    undecided).
    """
    n_views = origins.shape[0]
    n_pix = directions.shape[0] // n_views
    size = int(round(math.sqrt(n_pix)))
    out = np.full(n_views * n_pix, -1, dtype=np.int64)
    best_hi = np.empty(n_pix)
    best_face = np.empty(n_pix, dtype=np.int64)
    lo1 = np.empty(n_pix)
    lo1_face = np.empty(n_pix, dtype=np.int64)
    lo2 = np.empty(n_pix)
    for k in range(n_views):
        base = k * n_pix
        col, row, in_front = vertex_pixels(world, positions[k], rotations[k], focal, size)
        if not in_front:
            out[base : base + n_pix] = UNDECIDED
            continue
        best_hi[:] = np.inf
        best_face[:] = -1
        lo1[:] = np.inf
        lo1_face[:] = -1
        lo2[:] = np.inf
        ox, oy, oz = origins[k, 0], origins[k, 1], origins[k, 2]
        for f in range(faces.shape[0]):
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            c_lo = min(min(col[i0], col[i1]), col[i2]) - PAD
            c_hi = max(max(col[i0], col[i1]), col[i2]) + PAD
            r_lo = min(min(row[i0], row[i1]), row[i2]) - PAD
            r_hi = max(max(row[i0], row[i1]), row[i2]) + PAD
            j0, j1 = max(int(math.ceil(c_lo)), 0), min(int(math.floor(c_hi)), size - 1)
            r0, r1 = max(int(math.ceil(r_lo)), 0), min(int(math.floor(r_hi)), size - 1)
            if j0 > j1 or r0 > r1:
                continue
            ax, ay, az = vertices[i0, 0] - ox, vertices[i0, 1] - oy, vertices[i0, 2] - oz
            bx, by, bz = vertices[i1, 0] - ox, vertices[i1, 1] - oy, vertices[i1, 2] - oz
            cx, cy, cz = vertices[i2, 0] - ox, vertices[i2, 1] - oy, vertices[i2, 2] - oz
            # edge planes through the origin: a×b, b×c, c×a; the face normal (b−a)×(c−a)
            abx, aby, abz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
            bcx, bcy, bcz = by * cz - bz * cy, bz * cx - bx * cz, bx * cy - by * cx
            cax, cay, caz = cy * az - cz * ay, cz * ax - cx * az, cx * ay - cy * ax
            ux, uy, uz = bx - ax, by - ay, bz - az
            vx, vy, vz = cx - ax, cy - ay, cz - az
            nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
            n_len = math.sqrt(nx * nx + ny * ny + nz * nz)
            plane = nx * ax + ny * ay + nz * az
            s = math.sqrt(
                max(
                    max(ax * ax + ay * ay + az * az, bx * bx + by * by + bz * bz), cx * cx + cy * cy + cz * cz
                )
            )
            perimeter = (
                math.sqrt(ux * ux + uy * uy + uz * uz)
                + math.sqrt(vx * vx + vy * vy + vz * vz)
                + math.sqrt((cx - bx) ** 2 + (cy - by) ** 2 + (cz - bz) ** 2)
            )
            m = TOL * s * perimeter + 1e-12 * s * s  # the second term: float64 rounding of a×b
            for r in range(r0, r1 + 1):
                for j in range(j0, j1 + 1):
                    p = r * size + j
                    dx, dy, dz = directions[base + p, 0], directions[base + p, 1], directions[base + p, 2]
                    w0 = dx * abx + dy * aby + dz * abz
                    w1 = dx * bcx + dy * bcy + dz * bcz
                    w2 = dx * cax + dy * cay + dz * caz
                    pos = (w0 > m) + (w1 > m) + (w2 > m)
                    neg = (w0 < -m) + (w1 < -m) + (w2 < -m)
                    if pos > 0 and neg > 0:
                        continue  # certain miss
                    hi = np.inf
                    lo = -np.inf
                    if pos == 3 or neg == 3:
                        den = dx * nx + dy * ny + dz * nz
                        t = plane / den
                        mt = TOL * s * (n_len / abs(den) + 1.0)
                        if t - mt > 0.0:
                            hi, lo = t + mt, t - mt
                    if hi == np.inf and lo == -np.inf:
                        lo = min(
                            min(dx * ax + dy * ay + dz * az, dx * bx + dy * by + dz * bz),
                            dx * cx + dy * cy + dz * cz,
                        )
                        lo -= TOL * s
                    if hi < best_hi[p]:
                        best_hi[p] = hi
                        best_face[p] = f
                    if lo < lo1[p]:
                        lo2[p] = lo1[p]
                        lo1[p] = lo
                        lo1_face[p] = f
                    elif lo < lo2[p]:
                        lo2[p] = lo
        for p in range(n_pix):
            if lo1[p] == np.inf:
                continue  # no face may be hit: −1
            if best_face[p] < 0:
                out[base + p] = UNDECIDED
                continue
            other = lo2[p] if lo1_face[p] == best_face[p] else lo1[p]
            out[base + p] = best_face[p] if other > best_hi[p] else UNDECIDED
    return out


@numba.njit(cache=True, nogil=True)
def hit_geometry(
    tri: np.ndarray,
    faces: np.ndarray,
    vertices: np.ndarray,
    positions: np.ndarray,
    directions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rays that hit (ascending indices), their float64 ray lengths, unit normals turned towards the
    camera (N, 3) and front-facing flags, from the first-hit faces ``tri`` (n·size²,) (−1: none).

    vertices (V, 3) and positions (n, 3) unscaled float64, directions (n·size², 3) float64 unit rays.
    Per hit: the face's edge cross product ``N``, ``t = N·(v0 − o) / N·d`` and ``±N / |N|``, each sum in
    the order of :func:`r3d.mesh.render.cast_rays`' NumPy form (``(x + z) + y`` for dot products,
    ``(x² + y²) + z²`` for the norm), so the values are bit-identical to it. A hit on a face whose
    ``N·d`` underflows (|·| ≤ 1e-300) is dropped.
    """
    n_pix = tri.shape[0] // positions.shape[0]
    count = 0
    for r in range(tri.shape[0]):
        count += tri[r] >= 0
    hit = np.empty(count, dtype=np.int64)
    t = np.empty(count)
    normals = np.empty((count, 3))
    front = np.empty(count, dtype=np.bool_)
    n = 0
    for r in range(tri.shape[0]):
        f = tri[r]
        if f < 0:
            continue
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        v0x, v0y, v0z = vertices[i0, 0], vertices[i0, 1], vertices[i0, 2]
        ax, ay, az = vertices[i1, 0] - v0x, vertices[i1, 1] - v0y, vertices[i1, 2] - v0z
        bx, by, bz = vertices[i2, 0] - v0x, vertices[i2, 1] - v0y, vertices[i2, 2] - v0z
        cx, cy, cz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
        dx, dy, dz = directions[r, 0], directions[r, 1], directions[r, 2]
        denom = (cx * dx + cz * dz) + cy * dy
        if not abs(denom) > 1e-300:
            continue
        k = r // n_pix
        wx, wy, wz = v0x - positions[k, 0], v0y - positions[k, 1], v0z - positions[k, 2]
        norm = math.sqrt((cx * cx + cy * cy) + cz * cz)
        sign = 1.0 if denom < 0 else -1.0
        hit[n] = r
        t[n] = ((cx * wx + cz * wz) + cy * wy) / denom
        normals[n, 0] = sign * (cx / norm)
        normals[n, 1] = sign * (cy / norm)
        normals[n, 2] = sign * (cz / norm)
        front[n] = denom < 0
        n += 1
    return hit[:n], t[:n], normals[:n], front[:n]
