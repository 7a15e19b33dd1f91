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

:func:`measure_many` measures a batch in vectorised chunks (welding by a checked hash, edges by one
packed integer sort, components over a face graph); every value is bit-identical to measuring each
mesh alone, and to the previous per-mesh trimesh implementation (tests/test_reward_speed_equivalence.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse
import trimesh
from scipy.sparse.csgraph import connected_components

from r3d.core.errors import R3DError

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


#: Faces measured together in one vectorised pass (bounds its memory); a larger mesh is measured alone.
CHUNK_FACES = 1 << 14
#: Odd 64-bit multipliers hashing (mesh, x, y, z) rows of quantised vertices; collisions are detected.
_HASH = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93], np.uint64)


def _first_occurrence_groups(
    order: np.ndarray, same_as_previous: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Group N rows given a sort ``order`` and which sorted rows equal their predecessor (N − 1,).

    Returns (first, inverse): ``first`` (G,) each group's first row, groups ranked by it; ``inverse``
    (N,) each row's group rank — trimesh's ``unique_rows(keep_order=True)``.
    """
    is_start = np.concatenate([[True], ~same_as_previous])
    starts = np.flatnonzero(is_start)
    first = np.minimum.reduceat(order, starts)
    by_first = np.argsort(first)
    rank = np.empty(len(first), dtype=np.int64)
    rank[by_first] = np.arange(len(first))
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = rank[np.cumsum(is_start) - 1]
    return first[by_first], inverse


def _weld_arrays(
    vertices: np.ndarray, faces: np.ndarray, owner: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge vertices whose positions round to one 1e-8 grid point (within one owner mesh) and drop
    unreferenced ones: trimesh's ``merge_vertices(merge_tex=True, merge_norm=True)`` then
    ``remove_unreferenced_vertices``, with the same kept vertex per group and the same order.

    vertices (V, 3) float64, faces (F, 3) int64 into them, owner (V,) int64 mesh index → the same, welded.
    """
    referenced = np.zeros(len(vertices), dtype=bool)
    referenced[faces] = True
    used = np.flatnonzero(referenced)
    rows = (vertices[used] * 1e8).round().astype(np.int64)  # trimesh's grid: 8 digits for tol.merge
    keys = np.column_stack([owner[used], rows]).view(np.uint64)
    hashed = keys @ _HASH  # uint64 arithmetic wraps
    sorted_hash = np.sort(hashed)
    if (sorted_hash[1:] == sorted_hash[:-1]).any():  # some rows may repeat: group them
        order = np.argsort(hashed)
        same = hashed[order[1:]] == hashed[order[:-1]]
        if not (keys[order[1:][same]] == keys[order[:-1][same]]).all():  # a collision: sort exactly
            order = np.lexsort(keys.T[::-1])
            same = (keys[order[1:]] == keys[order[:-1]]).all(axis=1)
        first, inverse = _first_occurrence_groups(order, same)
        kept = used[first]
    else:
        kept, inverse = used, np.arange(len(used))
    if len(kept) < len(vertices):
        remap = np.zeros(len(vertices), dtype=np.int64)
        remap[used] = inverse
        faces = remap[faces]
    return vertices[kept], faces, owner[kept]


def weld(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Geometry-only copy of ``mesh`` with coincident vertices merged and unused vertices dropped."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if len(faces) == 0:  # nothing is referenced: trimesh's merge then drops every vertex
        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), process=False)
    vertices, faces, _ = _weld_arrays(vertices, faces, np.zeros(len(vertices), dtype=np.int64))
    return trimesh.Trimesh(vertices, faces, process=False)


def _sort_with_index(key: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """``order = argsort(key, kind="stable")`` and ``key[order]``, for int64 keys in [0, bound).

    Sorts (key, index) packed into one int64 when they fit: several times faster than a stable argsort.
    """
    bits = max(1, (len(key) - 1).bit_length())
    if (bound - 1).bit_length() + bits > 63:
        order = np.argsort(key, kind="stable")
        return order, key[order]
    packed = (key << bits) | np.arange(len(key), dtype=np.int64)
    packed.sort()
    return packed & ((1 << bits) - 1), packed >> bits


@dataclass(frozen=True)
class _Edges:
    """Lean edge incidence used by :func:`_measure_chunk` (fields as in :class:`EdgeTopology`).

    first: (E,) each edge's first half-edge (face order); lo, hi: (3F,) sorted vertex pair of each
    half-edge; two: edges with exactly two faces; second: (P,) their second half-edge.
    """

    lo: np.ndarray
    hi: np.ndarray
    counts: np.ndarray
    first: np.ndarray
    two: np.ndarray
    second: np.ndarray
    consistent: np.ndarray
    edge_of_halfedge: np.ndarray


def _edges(faces: np.ndarray) -> _Edges:
    """Undirected edges of (F, 3) int64 ``faces`` sorted by (low, high) vertex, faces of an edge in face order."""
    following = np.empty_like(faces)  # half-edge k of face f (row 3f + k) runs faces[f, k] → following[f, k]
    following[:, :2], following[:, 2] = faces[:, 1:], faces[:, 0]
    lo, hi = np.minimum(faces, following).ravel(), np.maximum(faces, following).ravel()
    n_vertices = int(faces.max()) + 1
    order, sorted_key = _sort_with_index(lo * n_vertices + hi, n_vertices * n_vertices)
    is_start = np.empty(len(sorted_key), dtype=bool)
    is_start[0] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=is_start[1:])
    starts = np.flatnonzero(is_start)
    counts = np.diff(starts, append=len(sorted_key))
    inverse = np.empty(len(sorted_key), dtype=np.int64)
    inverse[order] = np.cumsum(is_start) - 1
    two = np.flatnonzero(counts == 2)
    first, second = order[starts], order[starts[two] + 1]
    source = faces.ravel()  # a half-edge's start vertex: opposite directions when the starts differ
    return _Edges(lo, hi, counts, first, two, second, source[first[two]] != source[second], inverse)


def edge_topology(faces: np.ndarray) -> EdgeTopology:
    """Edge incidence of (F, 3) triangle ``faces`` (indices into an already welded vertex array);
    edges sorted by (low, high) vertex index, the faces of an edge in face order."""
    e = _edges(np.asarray(faces, dtype=np.int64))
    edges = np.stack([e.lo[e.first], e.hi[e.first]], axis=1)
    pairs = np.stack([e.first[e.two] // 3, e.second // 3], axis=1)
    return EdgeTopology(edges, e.counts, pairs, e.two, e.consistent, e.edge_of_halfedge)


def _face_terms(coords: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Area (F,), unclipped quality (F,) and unit normal components [nx, ny, nz] of faces, from (3, V) ``coords``.

    Coordinate by coordinate, with every sum ordered as in the (F, 3)-array form (``np.cross``,
    ``np.linalg.norm``'s ((x² + y²) + z²), numpy's pairwise sum of the nine squared edge components),
    so the values are bit-identical to it.
    """
    corner = [[c[faces[:, k]] for c in coords] for k in range(3)]  # corner[k][axis], (F,) each
    u = [corner[1][i] - corner[0][i] for i in range(3)]
    v = [corner[2][i] - corner[0][i] for i in range(3)]
    cross = [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]]
    norm = np.sqrt((cross[0] * cross[0] + cross[1] * cross[1]) + cross[2] * cross[2])
    area = 0.5 * norm
    w = [corner[2][i] - corner[1][i] for i in range(3)]
    r = [u[0] * u[0], u[1] * u[1], u[2] * u[2], w[0] * w[0], w[1] * w[1], w[2] * w[2]]
    r += [v[0] * v[0], v[1] * v[1], v[2] * v[2]]  # (c0 − c2)² = v² exactly
    sq = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7])) + r[8]
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 where a face has no extent: set to 0
        quality = 4.0 * np.sqrt(3.0) * area / sq
        normals = [c / norm for c in cross]
    if not (sq > 0).all():
        quality[~(sq > 0)] = 0.0
    flat = ~(norm > 0)
    if flat.any():
        for c in normals:
            c[flat] = 0.0
    return area, quality, normals


def face_geometry(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-face area (F,), quality q = 4√3·A / Σ edge² ∈ [0, 1] (F,) and unit normal (F, 3) (0 if A = 0)."""
    coords = np.ascontiguousarray(np.asarray(vertices, dtype=np.float64).T)
    area, quality, normals = _face_terms(coords, np.asarray(faces))
    return area, np.clip(quality, 0.0, 1.0), np.stack(normals, axis=1)


def _components(n_faces: int, edge_of_halfedge: np.ndarray, first_face: np.ndarray) -> tuple[int, np.ndarray]:
    """Edge-connected components of the faces: (count, (F,) labels numbered by their lowest face).

    Each face is linked to the ``first_face`` (E,) of each of its three edges (a star per edge), which
    gives the CSR rows in face order without a sort.
    """
    links = first_face[edge_of_halfedge].astype(np.int32)
    indptr = np.arange(0, len(links) + 1, 3, dtype=np.int32)
    graph = scipy.sparse.csr_matrix((np.ones(len(links)), links, indptr), shape=(n_faces, n_faces))
    return connected_components(graph, directed=False)


def _empty(n_vertices: int, n_faces: int) -> MeshMeasures:
    return MeshMeasures(0.0, 0.0, 0.0, 0.0, 0.0, n_vertices, n_faces, 0, 0, 0, n_faces)


def _measure_chunk(
    items: Sequence[tuple[np.ndarray, np.ndarray]], smooth_angle_deg: float, sliver_quality: float
) -> list[MeshMeasures]:
    """Measures of several (vertices, faces) meshes in one vectorised pass over their concatenation.

    Meshes stay apart (welding never merges across them; their edges, pairs and components come out
    contiguous and in per-mesh order), and every per-mesh sum runs over that mesh's own slice, so each
    result is bit-identical to measuring the mesh alone.
    """
    n = len(items)
    sizes = [len(v) for v, _ in items]
    offsets = np.cumsum([0, *sizes[:-1]])
    vertices = np.concatenate([v for v, _ in items])
    faces = np.concatenate([f + o for (_, f), o in zip(items, offsets, strict=True)])
    vertices, faces, owner = _weld_arrays(vertices, faces, np.repeat(np.arange(n), sizes))
    e = _edges(faces)

    def per_mesh(index: np.ndarray) -> np.ndarray:
        return np.bincount(index, minlength=n)

    face_owner = owner[faces[:, 0]]
    edge_owner = face_owner[e.first // 3]
    pair_owner = edge_owner[e.two]
    n_edges, n_pairs = per_mesh(edge_owner), per_mesh(pair_owner)
    n_boundary = per_mesh(edge_owner[e.counts == 1])
    n_consistent = per_mesh(pair_owner[e.consistent])

    coords = np.ascontiguousarray(vertices.T)
    area, quality, normals = _face_terms(coords, faces)  # quality ≥ 0: only its clip at 1 can matter
    n_degenerate = per_mesh(face_owner[np.minimum(quality, 1.0) < sliver_quality])
    n_comp, labels = _components(len(faces), e.edge_of_halfedge, e.first // 3)
    comp_area = np.bincount(labels, weights=area, minlength=n_comp)  # each sum in face order
    comp_owner = np.empty(n_comp, dtype=np.int64)
    comp_owner[labels] = face_owner
    n_components = per_mesh(comp_owner)

    # smoothness terms of every interior edge (both faces non-degenerate), in edge order
    h0 = e.first[e.two]
    f0, f1 = h0 // 3, e.second // 3
    keep = (area[f0] > 0) & (area[f1] > 0)
    prod = [n[f0] * n[f1] for n in normals]
    dot = (prod[0] + prod[2]) + prod[1]  # np.einsum("ij,ij->i")'s order
    cos = np.where(e.consistent, dot, -dot)
    e0, e1 = e.lo[h0], e.hi[h0]
    d = [c[e0] - c[e1] for c in coords]
    length = np.sqrt((d[0] * d[0] + d[1] * d[1]) + d[2] * d[2]) * keep
    smooth_length = length * (cos > np.cos(np.radians(smooth_angle_deg)))

    results = []
    n_faces, n_vertices = per_mesh(face_owner), per_mesh(owner)
    pair_end, comp_end = np.cumsum(n_pairs), np.cumsum(n_components)
    for i in range(n):
        pairs = slice(pair_end[i] - n_pairs[i], pair_end[i])
        comps = comp_area[comp_end[i] - n_components[i] : comp_end[i]]
        total_area = float(comps.sum())
        total_length = float(length[pairs].sum())
        manifold_edges = int(n_boundary[i] + n_consistent[i])
        results.append(
            MeshMeasures(
                watertight=float(n_pairs[i] / n_edges[i]),
                components=min(1.0, float(comps.max()) / total_area) if total_area > 0 else 0.0,
                manifold=float(manifold_edges / n_edges[i]),
                smoothness=float(smooth_length[pairs].sum() / total_length) if total_length > 0 else 0.0,
                degenerate=1.0 - float(n_degenerate[i] / n_faces[i]),
                n_vertices=int(n_vertices[i]),
                n_faces=int(n_faces[i]),
                n_components=int(n_components[i]),
                n_boundary_edges=int(n_boundary[i]),
                n_nonmanifold_edges=int(n_edges[i]) - manifold_edges,
                n_degenerate_faces=int(n_degenerate[i]),
            )
        )
    return results


def measure_many(
    meshes: Sequence[trimesh.Trimesh],
    smooth_angle_deg: float = 30.0,
    sliver_quality: float = 0.01,
) -> list[MeshMeasures]:
    """:func:`measure` of every mesh, vectorised over chunks of up to :data:`CHUNK_FACES` faces.

    Bit-identical to measuring each mesh alone (a mesh's faces, vertices and sums never mix with
    another's). Faces must index their mesh's vertices (R3DError otherwise).
    """
    results: list[MeshMeasures | None] = [None] * len(meshes)
    chunk: list[tuple[int, np.ndarray, np.ndarray]] = []
    chunk_faces = 0

    def flush() -> None:
        done = _measure_chunk([(v, f) for _, v, f in chunk], smooth_angle_deg, sliver_quality)
        for (i, _, _), m in zip(chunk, done, strict=True):
            results[i] = m
        chunk.clear()

    for i, mesh in enumerate(meshes):
        vertices = np.asarray(mesh.vertices, dtype=np.float64)
        faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
        if len(faces) == 0 or len(vertices) == 0 or not np.isfinite(vertices).all():
            results[i] = _empty(len(vertices), len(faces))
            continue
        if faces.min() < 0 or faces.max() >= len(vertices):
            raise R3DError(f"mesh {i}: face indices outside [0, {len(vertices)}) (a corrupt mesh)")
        if chunk and chunk_faces + len(faces) > CHUNK_FACES:
            flush()
            chunk_faces = 0
        chunk.append((i, vertices, faces))
        chunk_faces += len(faces)
    if chunk:
        flush()
    return results  # type: ignore[return-value]


def measure(
    mesh: trimesh.Trimesh,
    smooth_angle_deg: float = 30.0,
    sliver_quality: float = 0.01,
) -> MeshMeasures:
    """Compute every measure of the module docstring for one mesh (welded first).

    A mesh with no faces or any non-finite vertex scores 0 everywhere.
    """
    return measure_many([mesh], smooth_angle_deg, sliver_quality)[0]
