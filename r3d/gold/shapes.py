"""Analytic gold measures of tiny-shapes meshes: best-fit volumetric IoU per class family and mesh sanity.

No learned model is involved. A mesh is turned into an occupancy grid (``resolution``³ cell centres of
[−1, 1]³, inside by ray parity along the three axes, majority vote), and each of the 10 procedural
families of :mod:`r3d.mesh.shapes` is fitted to it over its shape parameters and pose:

1. candidate frames: the principal axes of the occupied cells and the minimum-volume oriented bounding
   box of the mesh, each of their three axes in turn as the family's symmetry axis (local z), plus the
   upright frame and six frames tilted 15° from it (the generator's poses: any yaw, tilt ≤ 20°);
2. for families without rotational symmetry, a yaw about that axis every 15° over the family's period
   (cube, pyramid, octahedron 90°, prism 120°); cones and pyramids also try the axis flipped;
3. in each pose the parameters come from the occupied cells' extents in that frame (a cube's half
   sides are the half extents, a cylinder's radius the mean radial half extent, a tube's inner radius
   from the occupied volume, ...), kept within the family's aspect ranges (:data:`_RATIOS`); the
   centre from the occupied cells' centroid;
4. the best families' three best poses are refined by a greedy coordinate search over parameter
   scales, small rotations and shifts at a coarse grid (16³), then polished at ``resolution``.

The fitted family of the highest IoU is the *analytic class*; a sample is analytically correct when it
is the prompt's class. Clean procedural shapes of every class fit their own family best (50 of 50 in a
check, 2 per class in tests/test_gold.py), at about 0.3 s of CPU per mesh on one core.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import trimesh
from scipy.spatial.transform import Rotation

from r3d.core.errors import R3DError
from r3d.mesh.shapes import (
    CLASSES,
    Shape,
    _local_sdf,
    grid_coords,
    grid_points,
    parse_prompt,
    random_shape,
)

#: Yaw period (degrees) of the families whose cross-section is not a circle.
_YAW_PERIOD = {"cube": 90.0, "pyramid": 90.0, "octahedron": 90.0, "prism": 120.0}
_FLIP = ("cone", "pyramid")  # apex up or down
_GENUS_ONE = ("torus", "tube")
# column offsets along the two ray-normal axes, unequal so that a column never sits exactly on a
# diagonal edge x − y = const of a marching-cubes mesh
_JITTER = (1.2345e-4, 2.7183e-4)


# ----------------------------------------------------------------------------- occupancy


def mesh_occupancy(mesh: trimesh.Trimesh | None, resolution: int = 24) -> np.ndarray:
    """Inside/outside of ``mesh`` at the cell-centred ``resolution``³ grid of [−1, 1]³: bool (R, R, R).

    Along each axis, a cell is inside when the rays from it in both directions each cross the surface an
    odd number of times; the cell is inside when at least two of the three axes say so. Exact for closed
    meshes; a ray that grazes an edge (a missed or doubled crossing) spoils one column of one axis,
    which the other two outvote. None/empty → all False.
    """
    r = resolution
    if mesh is None or len(mesh.faces) == 0:
        return np.zeros((r, r, r), dtype=bool)
    tri = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces)]  # (T, 3, 3)
    if not np.isfinite(tri).all():
        return np.zeros((r, r, r), dtype=bool)
    votes = np.zeros((r, r, r), dtype=np.int8)
    for axes in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):  # the ray axis is the last one
        votes += np.transpose(_z_parity(tri[..., list(axes)], r), np.argsort(axes))
    return votes >= 2


def _z_parity(tri: np.ndarray, r: int) -> np.ndarray:
    """Cells of the r³ grid inside triangles ``tri`` (T, 3, 3) by parity of rays along ±z: bool (r, r, r).

    Both rays (towards −z and +z) must cross an odd number of times, so a column with a missed
    crossing loses cells rather than filling everything above it.
    """
    occ = np.zeros((r, r, r), dtype=bool)
    cx, cy = grid_coords(r) + _JITTER[0], grid_coords(r) + _JITTER[1]
    a, b, d = tri[:, 0], tri[:, 1], tri[:, 2]
    lo, hi = tri[..., :2].min(1), tri[..., :2].max(1)
    # columns whose (x, y) lies in the triangle's projection: candidate pairs from the bounding boxes
    i0 = np.searchsorted(cx, lo[:, 0]).clip(0, r)
    i1 = np.searchsorted(cx, hi[:, 0], side="right").clip(0, r)
    j0 = np.searchsorted(cy, lo[:, 1]).clip(0, r)
    j1 = np.searchsorted(cy, hi[:, 1], side="right").clip(0, r)
    ni, nj = i1 - i0, j1 - j0
    counts = ni * nj
    keep = counts > 0
    if not keep.any():
        return occ
    t_idx = np.repeat(np.flatnonzero(keep), counts[keep])
    offs = np.arange(len(t_idx)) - np.repeat(np.cumsum(counts[keep]) - counts[keep], counts[keep])
    ii = i0[t_idx] + offs // nj[t_idx]
    jj = j0[t_idx] + offs % nj[t_idx]
    px, py = cx[ii], cy[jj]
    ax, ay, bx, by, dx, dy = a[t_idx, 0], a[t_idx, 1], b[t_idx, 0], b[t_idx, 1], d[t_idx, 0], d[t_idx, 1]
    den = (by - dy) * (ax - dx) + (dx - bx) * (ay - dy)
    ok = np.abs(den) > 1e-14
    den = np.where(ok, den, 1.0)
    w0 = ((by - dy) * (px - dx) + (dx - bx) * (py - dy)) / den
    w1 = ((dy - ay) * (px - dx) + (ax - dx) * (py - dy)) / den
    w2 = 1.0 - w0 - w1
    inside = ok & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    z = w0 * a[t_idx, 2] + w1 * b[t_idx, 2] + w2 * d[t_idx, 2]
    # a column through an edge shared by two triangles hits both at the same z: count it once
    hit = np.unique(np.stack([ii[inside], jj[inside], np.round(z[inside], 9)], axis=1), axis=0)
    ii, jj, z = hit[:, 0].astype(np.int64), hit[:, 1].astype(np.int64), hit[:, 2]
    k = np.searchsorted(grid_coords(r), z)  # hit between cell k−1 and k: cells ≥ k lie above it
    hits = np.zeros((r, r, r + 1), dtype=np.int32)
    np.add.at(hits, (ii, jj, k), 1)
    below = np.cumsum(hits[..., :r], axis=2)
    above = hits.sum(axis=2, keepdims=True) - below
    # both parities must agree: a column with a missed or doubled hit (a ray grazing an edge) does not
    # fill everything above or below it
    return ((below % 2) & (above % 2)).astype(bool)


_PRISM_NORMALS = np.array([[math.cos(a), math.sin(a)] for a in np.radians([30.0, 150.0, 270.0])])


def family_occupancy(name: str, params: dict[str, float], local: np.ndarray) -> np.ndarray:
    """Inside test of family ``name`` at points (N, 3) in its local frame: bool (N,).

    The same solids as :func:`r3d.mesh.shapes._local_sdf` < 0 (checked in tests/test_gold.py),
    written as direct inequalities for the polyhedra and solids of revolution, which the fit evaluates
    thousands of times; the round families use the SDF itself.
    """
    x, y, z = local[:, 0], local[:, 1], local[:, 2]
    k = params
    if name == "cube":
        return (np.abs(x) <= k["ax"]) & (np.abs(y) <= k["ay"]) & (np.abs(z) <= k["az"])
    if name == "octahedron":
        return np.abs(x) / k["ax"] + np.abs(y) / k["ay"] + np.abs(z) / k["az"] <= 1.0
    if name == "pyramid":
        w = k["half_w"] * (k["half_h"] - z) / (2 * k["half_h"])
        return (z >= -k["half_h"]) & (np.abs(x) <= w) & (np.abs(y) <= w)
    if name == "prism":  # triangle of circumradius r: every edge at the inradius r/2 from the axis
        return (np.abs(z) <= k["half_h"]) & ((local[:, :2] @ _PRISM_NORMALS.T).max(axis=1) <= k["r"] / 2)
    rho = np.hypot(x, y)
    if name == "cylinder":
        return (np.abs(z) <= k["half_h"]) & (rho <= k["r"])
    if name == "cone":
        return (np.abs(z) <= k["half_h"]) & (rho <= k["r"] * (k["half_h"] - z) / (2 * k["half_h"]))
    if name == "tube":
        return (np.abs(z) <= k["half_h"]) & (rho >= k["r_in"]) & (rho <= k["r_out"])
    return _local_sdf(name, k, local) < 0


# ----------------------------------------------------------------------------- parameters from extents


def _params_from_extents(name: str, h: np.ndarray, volume: float) -> dict[str, float]:
    """Family parameters from half extents h = (hx, hy, hz) of the occupied cells in the family's frame
    (z = symmetry axis, apex up) and the occupied volume (world units³)."""
    hx, hy, hz = (max(float(v), 1e-3) for v in h)
    rad = (hx + hy) / 2
    if name == "sphere":
        return {"r": (hx + hy + hz) / 3}
    if name in ("cube", "octahedron"):
        return {"ax": hx, "ay": hy, "az": hz}
    if name == "torus":
        minor = min(hz, 0.9 * rad)
        return {"major": rad - minor, "minor": minor}
    if name in ("cylinder", "cone"):
        return {"r": rad, "half_h": hz}
    if name == "capsule":
        return {"r": rad, "half_len": max(hz - rad, 0.0)}
    if name == "tube":
        hole = rad**2 - volume / (2 * math.pi * hz)
        r_in = float(np.clip(math.sqrt(max(hole, 0.0)), 0.2 * rad, 0.95 * rad))
        return {"r_out": rad, "r_in": r_in, "half_h": hz}
    if name == "pyramid":
        return {"half_w": rad, "half_h": hz}
    if name == "prism":  # triangle apex on +y: x extent r·cos30°, y from −r/2 to r
        r = (hx / math.cos(math.pi / 6) + hy / 0.75) / 2
        return {"r": r, "half_h": hz}
    raise ValueError(f"unknown class {name}")


def _upright_frames(tilt_deg: float = 15.0, n: int = 6) -> list[np.ndarray]:
    """The world frame and ``n`` frames tilted by ``tilt_deg`` around it (z up, as tiny-shapes poses
    are drawn: any yaw, a tilt of at most 20°)."""
    out = [np.eye(3)]
    for phi in np.arange(n) * 2 * math.pi / n:
        axis = np.array([math.cos(phi), math.sin(phi), 0.0])
        out.append(Rotation.from_rotvec(axis * math.radians(tilt_deg)).as_matrix())
    return out


def _frames(points: np.ndarray, mesh: trimesh.Trimesh | None) -> list[np.ndarray]:
    """Candidate orthonormal frames (3, 3) (columns = axes): principal axes and the oriented box."""
    frames = []
    cov = np.cov((points - points.mean(0)).T) if len(points) > 3 else np.eye(3)
    frames.append(np.linalg.eigh(cov)[1])
    if mesh is not None and len(mesh.vertices) >= 4:
        try:
            transform, _ = trimesh.bounds.oriented_bounds(mesh)
            frames.append(np.asarray(transform)[:3, :3].T)
        except Exception:  # noqa: BLE001 — a degenerate hull leaves only the principal axes
            pass
    return frames


def _axis_frames(frame: np.ndarray) -> list[np.ndarray]:
    """The frame with each of its axes in turn as local z (right-handed)."""
    out = []
    for k in range(3):
        z = frame[:, k]
        x = frame[:, (k + 1) % 3]
        out.append(np.stack([x, np.cross(z, x), z], axis=1))
    return out


@dataclass
class Fit:
    """Best fit of one family: IoU, parameters, rotation (3, 3) local → world and offset (3,)."""

    name: str
    iou: float
    params: dict[str, float]
    rotation: np.ndarray
    offset: np.ndarray

    def shape(self) -> Shape:
        return Shape(CLASSES.index(self.name), self.params, self.rotation, self.offset)


#: Family aspect limits: (parameter, reference parameter, low, high) with low ≤ p / ref ≤ high — the
#: procedural ranges of r3d.mesh.shapes._local_params widened by 20 % either side, so that a family cannot
#: turn into another (a capsule of length 0 is a sphere, a flat cylinder a disc, ...).
_RATIOS: dict[str, tuple[tuple[str, str, float, float], ...]] = {
    "cube": (("ax", "az", 0.6, 1.67), ("ay", "az", 0.6, 1.67)),
    "octahedron": (("ax", "az", 0.6, 1.67), ("ay", "az", 0.6, 1.67)),
    "torus": (("minor", "major", 0.2, 0.54),),
    "cylinder": (("half_h", "r", 0.4, 1.92),),
    "cone": (("half_h", "r", 0.4, 1.2),),
    "capsule": (("half_len", "r", 0.48, 1.8),),
    "pyramid": (("half_h", "half_w", 0.48, 1.2),),
    "tube": (("half_h", "r_out", 0.24, 0.96), ("r_in", "r_out", 0.4, 0.9)),
    "prism": (("half_h", "r", 0.48, 1.68),),
}


def _clamp(name: str, params: dict[str, float]) -> dict[str, float]:
    """``params`` with every aspect ratio of the family moved into its range (:data:`_RATIOS`)."""
    out = dict(params)
    for key, ref, low, high in _RATIOS.get(name, ()):
        out[key] = float(np.clip(out[key], low * out[ref], high * out[ref]))
    return out


class _Target:
    """The occupancy to fit, at a coarse search resolution and at the reported resolution."""

    def __init__(self, mesh: trimesh.Trimesh | None, resolution: int, search_resolution: int) -> None:
        self.levels = {}
        for r in dict.fromkeys((search_resolution, resolution)):
            occ = mesh_occupancy(mesh, r).reshape(-1)
            self.levels[r] = (grid_points(r), occ, int(np.count_nonzero(occ)))
        points, occ, n = self.levels[resolution]
        self.inside = points[occ]
        self.n_occ = n
        self.volume = n * (2.0 / resolution) ** 3

    def iou(self, fit: Fit, resolution: int) -> float:
        """Volumetric IoU of the fitted shape with the mesh's occupancy at ``resolution``."""
        points, occ, n = self.levels[resolution]
        pred = family_occupancy(fit.name, fit.params, (points - fit.offset) @ fit.rotation)
        inter = int(np.count_nonzero(pred & occ))
        union = n + int(np.count_nonzero(pred)) - inter
        return inter / union if union else 0.0


def _pose_fit(target: _Target, name: str, rot: np.ndarray, half_voxel: float, res: int) -> Fit:
    """Parameters of ``name`` in the frame ``rot`` (columns = local axes in world) from extents."""
    q = target.inside @ rot
    lo, hi = q.min(0), q.max(0)
    params = _params_from_extents(name, (hi - lo) / 2 + half_voxel, target.volume)
    params = _clamp(name, params)
    # the centre from the occupied cells' centroid (robust to a stray cell), less the family's own
    # centroid in its frame (cones and pyramids: a quarter of the height above the base)
    apex = name in _FLIP
    fit = Fit(
        name, 0.0, params, rot, rot @ (q.mean(0) + np.array([0, 0, params.get("half_h", 0) / 2 * apex]))
    )
    fit.iou = target.iou(fit, res)
    return fit


def _moves(fit: Fit, step: float) -> list[Fit]:
    """Neighbours of ``fit``: each parameter scaled by 1 ± step, rotations of ±step·60° about each
    local axis, shifts of ±step·0.5 (world units) along each local axis."""
    out = []
    for key in fit.params:
        for f in (1 - step, 1 + step):
            params = _clamp(fit.name, {**fit.params, key: fit.params[key] * f})
            out.append(Fit(fit.name, 0.0, params, fit.rotation, fit.offset))
    for axis in range(3):
        for sign in (-1.0, 1.0):
            turn = Rotation.from_rotvec(np.eye(3)[axis] * sign * step * math.pi / 3).as_matrix()
            out.append(Fit(fit.name, 0.0, fit.params, fit.rotation @ turn, fit.offset))
            shift = fit.rotation[:, axis] * sign * step * 0.5
            out.append(Fit(fit.name, 0.0, fit.params, fit.rotation, fit.offset + shift))
    return out


def _refine(
    target: _Target, fit: Fit, res: int, steps: Sequence[float] = (0.1, 0.04), passes: int = 3
) -> Fit:
    """Greedy coordinate search over parameters and pose (:func:`_moves`): up to ``passes`` passes
    per step size, until a pass improves nothing."""
    best = fit
    for step in steps:
        for _ in range(passes):
            start = best
            for move in _moves(best, step):
                move.iou = target.iou(move, res)
                if move.iou > best.iou:
                    best = move
            if best is start:
                break
    return best


def fit_families(
    mesh: trimesh.Trimesh | None,
    resolution: int = 24,
    search_resolution: int = 16,
    refine: int = 4,
    always: str | None = None,
    n_starts: int = 3,
) -> dict[str, Fit]:
    """Best-fit volumetric IoU (and pose, parameters) of each family to ``mesh``.

    The pose search runs at ``search_resolution``; the ``refine`` families of highest IoU (and
    ``always``, e.g. the prompt's class) get the coordinate search from their ``n_starts`` best
    poses; every IoU is then measured at
    ``resolution``. A None/empty mesh fits nothing (IoU 0).
    """
    target = _Target(mesh, resolution, search_resolution)
    if target.n_occ < 8:
        return {n: Fit(n, 0.0, {}, np.eye(3), np.zeros(3)) for n in CLASSES}
    # extremal occupied centres of a tilted shape lie close to its surface: a quarter cell of slack
    half_voxel = 0.5 / resolution
    poses = [f for frame in _frames(target.inside, mesh) for f in _axis_frames(frame)] + _upright_frames()
    flip = Rotation.from_euler("x", 180, degrees=True).as_matrix()
    starts: dict[str, list[Fit]] = {}
    for name in CLASSES:
        yaws = np.arange(0.0, _YAW_PERIOD[name], 15.0) if name in _YAW_PERIOD else [0.0]
        turns = [Rotation.from_euler("z", y, degrees=True).as_matrix() for y in yaws]
        for base in poses[:1] if name == "sphere" else poses:
            for turn in turns:
                rot = base @ turn
                for r in (rot, rot @ flip) if name in _FLIP else (rot,):
                    starts.setdefault(name, []).append(
                        _pose_fit(target, name, r, half_voxel, search_resolution)
                    )
    for name in starts:
        starts[name].sort(key=lambda f: -f.iou)
    fits = {name: found[0] for name, found in starts.items()}
    ranked = sorted(fits, key=lambda n: -fits[n].iou)
    for name in dict.fromkeys([*ranked[:refine], *([always] if always else [])]):
        refined = [_refine(target, start, search_resolution) for start in starts[name][:n_starts]]
        best = max(refined, key=lambda f: f.iou)
        best.iou = target.iou(best, resolution)
        fits[name] = _refine(target, best, resolution, steps=(0.06, 0.02))  # polish at full resolution
    for fit in fits.values():
        fit.iou = target.iou(fit, resolution)
    return fits


# ----------------------------------------------------------------------------- gold measures


def _prompt_classes(prompts: Sequence[str], what: str) -> list[int]:
    try:
        return [parse_prompt(p) for p in prompts]
    except R3DError as exc:
        raise R3DError(f"gold measure {what} needs tiny-shapes prompts: {exc}") from None


class ShapeFitGold:
    """``shape_fit``: best-fit IoU to the prompt's family and analytic class accuracy (no learned model).

    Components (B,): ``shape_fit`` = IoU of the best fit of the prompt's family; ``analytic_acc`` = 1
    when that family fits best of all 10; ``best_iou`` = the best IoU of any family; and
    ``acc/<class>`` (NaN for samples of other classes, so their mean is the per-class accuracy).
    """

    name = "shape_fit"
    higher_is_better = True
    value_range = (0.0, 1.0)
    guarded = True

    def __init__(self, resolution: int = 24) -> None:
        if not 8 <= resolution <= 64:
            raise R3DError(f"shape_fit: resolution must be in [8, 64], got {resolution}")
        self.resolution = int(resolution)

    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Per-sample components (see the class docstring), float32 (B,)."""
        classes = _prompt_classes(prompts, self.name)
        fit_iou, correct, best_iou = [], [], []
        for mesh, cls in zip(artifacts, classes, strict=True):
            fits = fit_families(mesh, self.resolution, always=CLASSES[cls])
            ious = np.array([fits[n].iou for n in CLASSES])
            fit_iou.append(ious[cls])
            best_iou.append(ious.max())
            correct.append(float(ious.max() > 0 and int(ious.argmax()) == cls))
        out = {
            self.name: torch.tensor(fit_iou, dtype=torch.float32),
            "analytic_acc": torch.tensor(correct, dtype=torch.float32),
            "best_iou": torch.tensor(best_iou, dtype=torch.float32),
        }
        for cls in sorted(set(classes)):
            mask = torch.tensor([c == cls for c in classes])
            out[f"acc/{CLASSES[cls]}"] = torch.where(mask, out["analytic_acc"], torch.nan)
        return out


@lru_cache(maxsize=4)
def family_volume_range(resolution: int = 24, n: int = 48) -> dict[str, tuple[float, float]]:
    """(min, max) occupied volume (world units³) of ``n`` procedural shapes per family at ``resolution``."""
    rng = np.random.default_rng(0)
    points = grid_points(resolution)
    cell = (2.0 / resolution) ** 3
    out = {}
    for cls, name in enumerate(CLASSES):
        vols = [float((random_shape(cls, rng).sdf(points) < 0).sum()) * cell for _ in range(n)]
        out[name] = (min(vols), max(vols))
    return out


class MeshSanityGold:
    """``mesh_sanity``: cheap checks not in the geometry reward, each 1 (pass) or 0 per mesh.

    - ``orientation``: the divergence-theorem volume of the mesh agrees (within 10 % + 2 cells) with
      the volume it encloses by ray parity: no inverted or self-overlapping sheets, outward normals;
    - ``aspect``: the oriented bounding box's longest / shortest side ≤ ``max_aspect`` (no needles or
      pancakes);
    - ``genus`` (tiny-shapes prompts): the Euler characteristic is the class's (0 for torus and tube,
      2 otherwise);
    - ``volume`` (tiny-shapes prompts): the enclosed volume lies within the class's procedural range
      widened by ``volume_slack`` (a sample cannot win by growing or shrinking).

    The headline is the mean of the checks that apply. None/empty meshes fail every check.
    """

    name = "mesh_sanity"
    higher_is_better = True
    value_range = (0.0, 1.0)
    guarded = True

    def __init__(
        self, resolution: int = 24, max_aspect: float = 8.0, volume_slack: float = 0.25, classes: bool = True
    ) -> None:
        if max_aspect <= 1 or not 0 <= volume_slack < 1:
            raise R3DError("mesh_sanity: need max_aspect > 1 and volume_slack in [0, 1)")
        self.resolution, self.max_aspect, self.slack, self.classes = (
            resolution,
            max_aspect,
            volume_slack,
            classes,
        )

    def check(self, mesh: Any, cls: int | None) -> dict[str, float]:
        """The checks of one mesh (class index ``cls`` or None for a mesh without a tiny-shapes class)."""
        keys = ["orientation", "aspect"] + (["genus", "volume"] if cls is not None else [])
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            return dict.fromkeys(keys, 0.0)
        if cls is None:  # any backend's mesh: scaled into the occupancy grid's cube first
            scale = 0.95 / max(float(np.abs(mesh.bounds - mesh.bounds.mean(0)).max()), 1e-9)
            mesh = mesh.copy()
            mesh.apply_translation(-mesh.bounds.mean(0))
            mesh.apply_scale(scale)
        cell = (2.0 / self.resolution) ** 3
        enclosed = float(mesh_occupancy(mesh, self.resolution).sum()) * cell
        signed = float(mesh.volume)
        out = {"orientation": float(enclosed > 0 and abs(signed - enclosed) <= 0.1 * enclosed + 2 * cell)}
        try:
            extents = np.sort(trimesh.bounds.oriented_bounds(mesh)[1])
            out["aspect"] = float(extents[0] > 0 and extents[-1] / extents[0] <= self.max_aspect)
        except Exception:  # noqa: BLE001 — a flat/degenerate hull fails the check
            out["aspect"] = 0.0
        if cls is not None:
            name = CLASSES[cls]
            out["genus"] = float(mesh.euler_number == (0 if name in _GENUS_ONE else 2))
            lo, hi = family_volume_range(self.resolution)[name]
            out["volume"] = float((1 - self.slack) * lo <= enclosed <= (1 + self.slack) * hi)
        return out

    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``mesh_sanity`` and each check, float32 (B,)."""
        classes: list[int | None] = [None] * len(prompts)
        if self.classes:
            try:
                classes = [parse_prompt(p) for p in prompts]
            except R3DError:
                pass  # not tiny-shapes prompts: the class-free checks only
        rows = [self.check(m, c) for m, c in zip(artifacts, classes, strict=True)]
        keys = list(rows[0]) if rows else []
        out = {k: torch.tensor([r[k] for r in rows], dtype=torch.float32) for k in keys}
        headline = torch.stack(list(out.values())).mean(0) if out else torch.zeros(0)
        return {self.name: headline, **out}
