"""Procedural 3D shapes for the tiny-shapes generator and the semantic reward.

Every shape is an exact signed distance function (SDF; negative inside, world units) over the cube
[−1, 1]³, built from a class name, a size/aspect drawn at random, a random orientation and a small
random offset, all from one ``numpy.random.Generator`` so that a seed reproduces the data. Shapes fit
inside the ball of radius 0.85 so that a grid over [−1, 1]³ closes every surface.

Grids are *cell-centred*: ``resolution`` samples per axis at x_n = −1 + (2n + 1)/resolution, array
index order (x, y, z). :func:`grid_to_mesh` turns such a grid into a ``trimesh.Trimesh`` by marching
cubes at level 0, with outward-facing triangles and vertices in world units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import trimesh
from scipy.spatial import ConvexHull
from scipy.spatial.transform import Rotation
from skimage.measure import marching_cubes

from r3d.core.errors import R3DError

CLASSES: tuple[str, ...] = (
    "sphere",
    "cube",
    "torus",
    "cylinder",
    "cone",
    "capsule",
    "pyramid",
    "tube",
    "octahedron",
    "prism",
)

# Words that name a class in a prompt (singular; plurals are handled by _singular).
SYNONYMS: dict[str, str] = {
    **{c: c for c in CLASSES},
    "ball": "sphere",
    "orb": "sphere",
    "globe": "sphere",
    "box": "cube",
    "block": "cube",
    "cuboid": "cube",
    "brick": "cube",
    "donut": "torus",
    "doughnut": "torus",
    "can": "cylinder",
    "column": "cylinder",
    "disk": "cylinder",
    "disc": "cylinder",
    "pill": "capsule",
    "ring": "tube",
    "pipe": "tube",
    "diamond": "octahedron",
    "wedge": "prism",
}

MAX_RADIUS = 0.85  # every shape lies inside this ball (before the offset)
_RADIUS_RANGE = (0.55, MAX_RADIUS)  # bounding-ball radius drawn uniformly
_MAX_OFFSET = 0.05  # per-axis random translation
_CHUNK = 16384  # points per SDF evaluation block


def _singular(word: str) -> str:
    if word in SYNONYMS:
        return word
    if word == "tori":
        return "torus"
    for suffix, repl in (("es", ""), ("s", "")):
        if word.endswith(suffix) and word[: -len(suffix)] + repl in SYNONYMS:
            return word[: -len(suffix)] + repl
    return word


def parse_prompt(prompt: str) -> int:
    """Index into :data:`CLASSES` of the one shape class a prompt names ("a small torus" → 2).

    Synonyms (box, ball, donut, ...) and plurals are accepted; a prompt naming no class or several
    different classes raises ``R3DError``.
    """
    words = re.findall(r"[a-z]+", prompt.lower())
    found = sorted({CLASSES.index(SYNONYMS[w]) for w in map(_singular, words) if w in SYNONYMS})
    if not found:
        raise R3DError(f"unknown shape class in prompt {prompt!r}; known: {', '.join(CLASSES)}")
    if len(found) > 1:
        names = ", ".join(CLASSES[i] for i in found)
        raise R3DError(f"prompt {prompt!r} names several shape classes ({names}); name exactly one")
    return found[0]


# ----------------------------------------------------------------------------- exact SDF primitives


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from points p (N, D) to segments a→b (S, D): (N, S), through (N, S) matmuls only."""
    ab = b - a
    len2 = np.maximum((ab * ab).sum(-1), 1e-12)
    ap_ab = p @ ab.T - (a * ab).sum(-1)  # (p − a)·(b − a)
    ap2 = (p * p).sum(-1, keepdims=True) - 2.0 * (p @ a.T) + (a * a).sum(-1)  # |p − a|²
    t = np.clip(ap_ab / len2, 0.0, 1.0)
    return np.sqrt(np.maximum(ap2 - 2.0 * t * ap_ab + t * t * len2, 0.0))


def _convex_polygon_sdf(q: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Exact SDF of a convex 2D polygon (V, 2), vertices counter-clockwise, at points q (N, 2).

    Inside: the largest signed edge-line distance. Outside: that same value when the projection onto
    the line of largest distance falls within its edge, else the distance to the nearest vertex.
    """
    a, b = verts, np.roll(verts, -1, axis=0)
    edge = b - a
    length = np.linalg.norm(edge, axis=1)
    normal = np.stack([edge[:, 1], -edge[:, 0]], axis=1) / length[:, None]
    line = q @ normal.T - (a * normal).sum(-1)  # (N, E)
    best = line.argmax(axis=1)
    value = np.take_along_axis(line, best[:, None], axis=1)[:, 0]
    along = ((q - a[best]) * edge[best]).sum(-1) / length[best] ** 2
    corner = (value > 0) & ((along < 0) | (along > 1))
    if corner.any():
        value = value.copy()
        value[corner] = np.linalg.norm(q[corner, None, :] - verts[None], axis=-1).min(axis=1)
    return value


def _convex_polytope_sdf(p: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Exact SDF of the convex hull of ``verts`` (V, 3) at points p (N, 3).

    Inside: the largest signed plane distance. Outside: if the nearest point lies inside a face, that
    face is the one of largest plane distance f and the distance is that plane distance; this holds
    iff the projection onto f satisfies every other face's half-space (tested through the Gram matrix
    of the normals). Otherwise the nearest point is on an edge.
    """
    eq = ConvexHull(verts).equations  # (T, 4): n·x + d ≤ 0 inside, |n| = 1
    eq = eq[np.unique(np.round(eq, 9), axis=0, return_index=True)[1]]  # one plane per face
    normal, d = eq[:, :3], eq[:, 3]
    plane = p @ normal.T + d  # (N, F)
    best = plane.argmax(axis=1)
    value = np.take_along_axis(plane, best[:, None], axis=1)[:, 0]
    # plane_g at the projection onto face f: plane_g(p) − plane_f(p)·(n_g·n_f)
    on_face = (plane - value[:, None] * (normal @ normal.T)[best] <= 1e-7).all(axis=1)
    need_edge = (value > 0) & ~on_face
    if need_edge.any():
        member = np.abs(verts @ normal.T + d) < 1e-7  # (V, F)
        i, j = np.triu_indices(len(verts), k=1)
        is_edge = (member[i] & member[j]).sum(axis=1) >= 2
        value = value.copy()
        value[need_edge] = _segment_distance(p[need_edge], verts[i[is_edge]], verts[j[is_edge]]).min(axis=1)
    return value


def _revolved(p: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """SDF of the solid of revolution about z of a convex polygon in the (r, z) plane, symmetric in r."""
    r = np.linalg.norm(p[:, :2], axis=1)
    return _convex_polygon_sdf(np.stack([r, p[:, 2]], axis=1), polygon)


def _rect(half_r: float, half_z: float, centre_r: float = 0.0) -> np.ndarray:
    return np.array(
        [
            [centre_r - half_r, -half_z],
            [centre_r + half_r, -half_z],
            [centre_r + half_r, half_z],
            [centre_r - half_r, half_z],
        ]
    )


# ----------------------------------------------------------------------------- shape classes


@dataclass
class Shape:
    """One procedural shape: class, local parameters, orientation (3, 3) and offset (3,).

    ``sdf(points)`` evaluates the exact signed distance (world units, negative inside) at (N, 3).
    """

    cls: int
    params: dict[str, float]
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def name(self) -> str:
        return CLASSES[self.cls]

    def sdf(self, points: np.ndarray) -> np.ndarray:
        local = (np.asarray(points, dtype=np.float64) - self.offset) @ self.rotation  # R^T (p − o)
        chunks = [local[i : i + _CHUNK] for i in range(0, len(local), _CHUNK)]  # bounds memory
        return (
            np.concatenate([_local_sdf(self.name, self.params, c) for c in chunks]) if chunks else local[:, 0]
        )


def _local_sdf(name: str, k: dict[str, float], p: np.ndarray) -> np.ndarray:
    """SDF in the shape's own frame (axis of symmetry along z, centred at the origin)."""
    if name == "sphere":
        return np.linalg.norm(p, axis=1) - k["r"]
    if name == "torus":
        q = np.stack([np.linalg.norm(p[:, :2], axis=1) - k["major"], p[:, 2]], axis=1)
        return np.linalg.norm(q, axis=1) - k["minor"]
    if name == "capsule":
        z = np.maximum(np.abs(p[:, 2]) - k["half_len"], 0.0)
        return np.sqrt((p[:, :2] ** 2).sum(1) + z**2) - k["r"]
    if name == "cylinder":
        return _revolved(p, _rect(k["r"], k["half_h"]))
    if name == "tube":
        wall = (k["r_out"] - k["r_in"]) / 2
        return _revolved(p, _rect(wall, k["half_h"], centre_r=(k["r_out"] + k["r_in"]) / 2))
    if name == "cone":
        h, r = k["half_h"], k["r"]
        return _revolved(p, np.array([[-r, -h], [r, -h], [0.0, h]]))
    return _convex_polytope_sdf(p, polytope_vertices(name, k))


def polytope_vertices(name: str, k: dict[str, float]) -> np.ndarray:
    """Vertices (V, 3) of the polyhedral classes in their local frame."""
    if name == "cube":
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
        return signs * np.array([k["ax"], k["ay"], k["az"]])
    if name == "pyramid":
        w, h = k["half_w"], k["half_h"]
        return np.array([[-w, -w, -h], [w, -w, -h], [w, w, -h], [-w, w, -h], [0, 0, h]], dtype=float)
    if name == "octahedron":
        a = np.array([k["ax"], k["ay"], k["az"]])
        return np.concatenate([np.diag(a), -np.diag(a)])
    if name == "prism":
        ang = np.pi / 2 + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
        tri = np.stack([np.cos(ang), np.sin(ang)], axis=1) * k["r"]
        return np.concatenate([np.c_[tri, np.full(3, -k["half_h"])], np.c_[tri, np.full(3, k["half_h"])]])
    raise ValueError(f"not a polyhedral class: {name}")


def _local_params(name: str, rng: np.random.Generator) -> dict[str, float]:
    """Size and aspect of one shape, scaled so that its bounding ball has a random radius."""
    b = rng.uniform(*_RADIUS_RANGE)
    u = rng.uniform
    if name == "sphere":
        return {"r": b * 0.95}
    if name in ("cube", "octahedron"):
        a = u(0.75, 1.0, size=3)
        a = a / (np.linalg.norm(a) if name == "cube" else a.max()) * b
        return {"ax": a[0], "ay": a[1], "az": a[2]}
    if name == "torus":
        ratio = u(0.25, 0.45)  # minor / major
        major = b / (1 + ratio)
        return {"major": major, "minor": ratio * major}
    if name == "cylinder":
        aspect = u(0.5, 1.6)  # half-height / radius
        r = b / np.sqrt(1 + aspect**2)
        return {"r": r, "half_h": aspect * r}
    if name == "cone":
        aspect = u(1.0, 2.0)  # height / base radius
        r = b / np.sqrt(1 + (aspect / 2) ** 2)
        return {"r": r, "half_h": aspect * r / 2}
    if name == "capsule":
        aspect = u(0.6, 1.5)  # half segment length / radius
        r = b / (1 + aspect)
        return {"r": r, "half_len": aspect * r}
    if name == "pyramid":
        aspect = u(1.2, 2.0)  # height / base half-width
        w = b / np.sqrt(2 + (aspect / 2) ** 2)
        return {"half_w": w, "half_h": aspect * w / 2}
    if name == "tube":
        aspect = u(0.3, 0.8)  # half-height / outer radius
        r_out = b / np.sqrt(1 + aspect**2)
        return {"r_out": r_out, "r_in": r_out * u(0.5, 0.75), "half_h": aspect * r_out}
    if name == "prism":
        aspect = u(0.6, 1.4)  # half-length / circumradius
        r = b / np.sqrt(1 + aspect**2)
        return {"r": r, "half_h": aspect * r}
    raise ValueError(f"unknown class {name}")


def random_rotation(rng: np.random.Generator, max_tilt_deg: float | None) -> np.ndarray:
    """A (3, 3) rotation: uniform yaw about z then a tilt ≤ ``max_tilt_deg`` about a random horizontal
    axis; ``None`` draws uniformly over all of SO(3)."""
    if max_tilt_deg is None:
        return Rotation.random(random_state=rng).as_matrix()
    yaw = Rotation.from_euler("z", rng.uniform(0, 2 * np.pi))
    phi = rng.uniform(0, 2 * np.pi)
    tilt = Rotation.from_rotvec(
        np.array([np.cos(phi), np.sin(phi), 0.0]) * np.radians(rng.uniform(0, max_tilt_deg))
    )
    return (tilt * yaw).as_matrix()


def random_shape(cls: int, rng: np.random.Generator, max_tilt_deg: float | None = 20.0) -> Shape:
    """A random shape of class index ``cls`` (size, aspect, orientation, offset drawn from ``rng``)."""
    if not 0 <= cls < len(CLASSES):
        raise ValueError(f"class index {cls} out of range 0..{len(CLASSES) - 1}")
    params = _local_params(CLASSES[cls], rng)
    rotation = random_rotation(rng, max_tilt_deg)
    offset = rng.uniform(-_MAX_OFFSET, _MAX_OFFSET, size=3)
    return Shape(cls, {k: float(v) for k, v in params.items()}, rotation, offset)


# ----------------------------------------------------------------------------- grids and meshes


def grid_coords(resolution: int) -> np.ndarray:
    """Cell-centred sample positions along one axis of [−1, 1]: (resolution,)."""
    return -1.0 + (2.0 * np.arange(resolution) + 1.0) / resolution


def grid_points(resolution: int) -> np.ndarray:
    """All grid sample positions, (resolution³, 3), index order (x, y, z)."""
    c = grid_coords(resolution)
    return np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1).reshape(-1, 3)


def sdf_grid(shape: Shape, resolution: int) -> np.ndarray:
    """The shape's SDF sampled on the cell-centred grid: (resolution,)*3 float32."""
    return shape.sdf(grid_points(resolution)).reshape((resolution,) * 3).astype(np.float32)


def grid_to_mesh(grid: np.ndarray) -> trimesh.Trimesh | None:
    """Marching cubes at level 0 of a cell-centred SDF grid over [−1, 1]³ (negative inside).

    Returns a mesh in world units with outward normals, or None when the grid has no zero crossing.
    A surface that reaches the grid border stays open there.
    """
    grid = np.asarray(grid, dtype=np.float32)
    if not np.isfinite(grid).all():
        return None
    if grid.min() >= 0.0 or grid.max() <= 0.0:
        return None
    n = grid.shape[0]
    spacing = 2.0 / n
    verts, faces, _, _ = marching_cubes(grid, level=0.0, spacing=(spacing,) * 3, gradient_direction="descent")
    verts = verts - 1.0 + spacing / 2
    if len(faces) == 0:
        return None
    return trimesh.Trimesh(vertices=verts, faces=faces, process=True)


def shape_mesh(shape: Shape, resolution: int = 64) -> trimesh.Trimesh:
    """The shape's surface as a mesh, by marching cubes of its SDF at ``resolution``³."""
    mesh = grid_to_mesh(sdf_grid(shape, resolution))
    if mesh is None:  # cannot happen for shapes inside the grid; guard against bad parameters
        raise ValueError(f"shape {shape.name} has no surface at resolution {resolution}")
    return mesh


def is_clean(mesh: trimesh.Trimesh | None) -> bool:
    """Watertight and a single connected component."""
    if mesh is None or len(mesh.faces) == 0 or not mesh.is_watertight:
        return False
    return len(mesh.split(only_watertight=False)) == 1
