"""Geometry measures of triangle meshes, as pure functions; each score lies in [0, 1], 1 = clean.

All topology is computed on the *welded* mesh (vertices with identical positions merged, so UV or
normal seams in a file do not count as holes). Edges are undirected vertex pairs; each face
contributes three half-edges.

* ``watertight``  = (#edges with exactly 2 incident faces) / #edges. 1 iff the surface is closed.
* ``manifold``    = (#manifold edges) / #edges, where an edge is manifold when it has 1 incident face
  (a boundary) or 2 incident faces traversing it in opposite directions (consistent winding). Edges
  of 3+ faces or of 2 faces with clashing winding are non-manifold.
* ``components``  = area of the largest edge-connected component / total area (floaters lower it).
* ``smoothness``  = Σ_e ℓ_e·[θ_e < θ₀] / Σ_e ℓ_e over interior edges (2 faces, both non-degenerate),
  ℓ_e the edge length and θ_e the angle between the two faces' normals (after flipping one normal if
  the pair's winding clashes), θ₀ = 30° by default. Noise and staircase artefacts raise θ_e.
* ``degenerate``  = 1 − (#faces with quality q < q₀) / #faces, q = 4√3·A / (a² + b² + c²) (1 for an
  equilateral triangle, 0 for zero area), q₀ = 0.01 by default (zero-area faces and extreme slivers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse
import trimesh
from scipy.sparse.csgraph import connected_components

#: Names of the [0, 1] sub-scores produced by :func:`measure`.
SCORE_NAMES: tuple[str, ...] = ("watertight", "components", "manifold", "smoothness", "degenerate")


@dataclass(frozen=True)
class EdgeTopology:
    """Undirected edges of a mesh and how faces use them.

    edges: (E, 2) int64 sorted vertex pairs. counts: (E,) incident faces per edge. pairs: (P, 2) the
    two faces of every edge with exactly two faces; pair_edge: (P,) that edge's index; pair_consistent:
    (P,) True when the two faces traverse the edge in opposite directions. edge_of_halfedge: (3F,) edge
    index of face f's half-edges 3f, 3f+1, 3f+2.
    """

    edges: np.ndarray
    counts: np.ndarray
    pairs: np.ndarray
    pair_edge: np.ndarray
    pair_consistent: np.ndarray
    edge_of_halfedge: np.ndarray


@dataclass(frozen=True)
class MeshMeasures:
    """Scores in [0, 1] (see module docstring) plus raw counts of the welded mesh."""

    watertight: float
    components: float
    manifold: float
    smoothness: float
    degenerate: float
    n_vertices: int
    n_faces: int
    n_components: int
    n_boundary_edges: int
    n_nonmanifold_edges: int
    n_degenerate_faces: int

    def scores(self) -> dict[str, float]:
        """The five [0, 1] sub-scores by name."""
        return {k: getattr(self, k) for k in SCORE_NAMES}

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def weld(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Geometry-only copy of ``mesh`` with coincident vertices merged and unused vertices dropped."""
    welded = trimesh.Trimesh(
        np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces), process=False
    )
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    welded.remove_unreferenced_vertices()
    return welded


def edge_topology(faces: np.ndarray) -> EdgeTopology:
    """Edge incidence of (F, 3) triangle ``faces`` (indices into an already welded vertex array)."""
    faces = np.asarray(faces, dtype=np.int64)
    half = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)  # half-edge k of face f is row 3f + k
    lo, hi = half.min(axis=1), half.max(axis=1)
    key = lo * (int(faces.max()) + 1) + hi
    order = np.argsort(key, kind="stable")  # one sort gives unique edges, counts and each edge's half-edges
    sorted_key = key[order]
    is_start = np.concatenate([[True], sorted_key[1:] != sorted_key[:-1]])
    starts = np.flatnonzero(is_start)
    counts = np.diff(np.append(starts, len(key)))
    inverse = np.empty(len(key), dtype=np.int64)
    inverse[order] = np.cumsum(is_start) - 1
    edges = np.stack([lo[order[starts]], hi[order[starts]]], axis=1)
    two = np.flatnonzero(counts == 2)
    h0, h1 = order[starts[two]], order[starts[two] + 1]
    pairs = np.stack([h0 // 3, h1 // 3], axis=1)
    consistent = half[h0, 0] != half[h1, 0]  # opposite directions: a→b in one face, b→a in the other
    return EdgeTopology(edges, counts, pairs, two, consistent, inverse)


def face_geometry(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-face area (F,), quality q = 4√3·A / Σ edge² ∈ [0, 1] (F,) and unit normal (F, 3) (0 if A = 0)."""
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(cross, axis=1)
    area = 0.5 * norm
    sq = ((tri[:, [1, 2, 0]] - tri) ** 2).sum(axis=(1, 2))
    quality = np.divide(4.0 * np.sqrt(3.0) * area, sq, out=np.zeros_like(area), where=sq > 0)
    normals = np.divide(cross, norm[:, None], out=np.zeros_like(cross), where=norm[:, None] > 0)
    return area, np.clip(quality, 0.0, 1.0), normals


def measure(
    mesh: trimesh.Trimesh,
    smooth_angle_deg: float = 30.0,
    sliver_quality: float = 0.01,
) -> MeshMeasures:
    """Compute every measure of the module docstring for one mesh (welded first).

    A mesh with no faces or any non-finite vertex scores 0 everywhere.
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if len(mesh.faces) == 0 or len(vertices) == 0 or not np.isfinite(vertices).all():
        return MeshMeasures(0.0, 0.0, 0.0, 0.0, 0.0, len(vertices), len(mesh.faces), 0, 0, 0, len(mesh.faces))
    welded = weld(mesh)
    vertices, faces = np.asarray(welded.vertices), np.asarray(welded.faces, dtype=np.int64)
    n_faces = len(faces)
    topo = edge_topology(faces)
    n_edges = len(topo.edges)

    watertight = float((topo.counts == 2).sum() / n_edges)
    n_boundary = int((topo.counts == 1).sum())
    manifold_edges = n_boundary + int(topo.pair_consistent.sum())
    manifold = manifold_edges / n_edges

    area, quality, normals = face_geometry(vertices, faces)
    # components: faces and edges as nodes of one bipartite graph; faces sharing any edge are connected
    graph = scipy.sparse.coo_matrix(
        (
            np.ones(3 * n_faces, dtype=np.int8),
            (np.repeat(np.arange(n_faces), 3), n_faces + topo.edge_of_halfedge),
        ),
        shape=(n_faces + n_edges, n_faces + n_edges),
    )
    n_comp, labels = connected_components(graph, directed=False)
    comp_area = np.bincount(labels[:n_faces], weights=area, minlength=n_comp)
    total_area = float(comp_area.sum())
    components = min(1.0, float(comp_area.max()) / total_area) if total_area > 0 else 0.0
    n_components = int((np.bincount(labels[:n_faces], minlength=n_comp) > 0).sum())

    degenerate_faces = quality < sliver_quality
    degenerate = 1.0 - float(degenerate_faces.mean())

    smoothness = _smoothness(vertices, normals, topo, area, smooth_angle_deg)
    return MeshMeasures(
        watertight=watertight,
        components=components,
        manifold=float(manifold),
        smoothness=smoothness,
        degenerate=degenerate,
        n_vertices=len(vertices),
        n_faces=n_faces,
        n_components=n_components,
        n_boundary_edges=n_boundary,
        n_nonmanifold_edges=n_edges - manifold_edges,
        n_degenerate_faces=int(degenerate_faces.sum()),
    )


def _smoothness(
    vertices: np.ndarray, normals: np.ndarray, topo: EdgeTopology, area: np.ndarray, smooth_angle_deg: float
) -> float:
    """Length-weighted fraction of interior edges whose dihedral deviation is below the threshold."""
    f0, f1 = topo.pairs[:, 0], topo.pairs[:, 1]
    keep = (area[f0] > 0) & (area[f1] > 0)
    sign = np.where(topo.pair_consistent, 1.0, -1.0)
    cos = np.einsum("ij,ij->i", normals[f0], normals[f1]) * sign
    edges = topo.edges[topo.pair_edge]
    length = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1) * keep
    total = float(length.sum())
    if total <= 0:
        return 0.0
    smooth = cos > np.cos(np.radians(smooth_angle_deg))
    return float((length * smooth).sum() / total)
