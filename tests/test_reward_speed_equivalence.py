"""The fast geometry and normal rewards give the values of the implementations they replaced.

The previous implementations are kept here as references (per-mesh trimesh welding, a stable argsort of
half-edges, a bipartite face–edge graph, ``np.cross`` on (F, 3) arrays; trimesh's embree intersector on
every pixel ray). Inputs: meshes made by the tiny_mesh policy (clean samples, samples from perturbed
latents, decodes of pure noise), the shared real meshes, and deliberately broken meshes. Geometry must
be bit-identical (it drives recorded training runs), and so is normal.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch
import trimesh
from scipy.sparse.csgraph import connected_components

from benchmarks.common import default_meshes
from r3d.core.errors import R3DError
from r3d.mesh import measures
from r3d.mesh.io import load_mesh
from r3d.mesh.render import (
    RenderedView,
    _camera_rays,
    _decided_hits,
    _embree_frame,
    _first_hits,
    _Intersector,
    _ray_directions,
    normalize_unit_sphere,
    orbit_cameras,
    render_views,
)
from r3d.rewards.geometry import GeometryReward
from r3d.rewards.normal import NormalReward, normals_from_depth

# ---------------------------------------------------------------- reference (previous) implementations


def ref_weld(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    welded = trimesh.Trimesh(
        np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces), process=False
    )
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    welded.remove_unreferenced_vertices()
    return welded


def ref_edge_topology(faces: np.ndarray) -> measures.EdgeTopology:
    faces = np.asarray(faces, dtype=np.int64)
    half = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    lo, hi = half.min(axis=1), half.max(axis=1)
    key = lo * (int(faces.max()) + 1) + hi
    order = np.argsort(key, kind="stable")
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
    return measures.EdgeTopology(edges, counts, pairs, two, half[h0, 0] != half[h1, 0], inverse)


def ref_face_geometry(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(cross, axis=1)
    area = 0.5 * norm
    sq = ((tri[:, [1, 2, 0]] - tri) ** 2).sum(axis=(1, 2))
    quality = np.divide(4.0 * np.sqrt(3.0) * area, sq, out=np.zeros_like(area), where=sq > 0)
    normals = np.divide(cross, norm[:, None], out=np.zeros_like(cross), where=norm[:, None] > 0)
    return area, np.clip(quality, 0.0, 1.0), normals


def ref_measure(mesh: trimesh.Trimesh, smooth_angle_deg: float = 30.0, sliver_quality: float = 0.01) -> dict:
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if len(mesh.faces) == 0 or len(vertices) == 0 or not np.isfinite(vertices).all():
        n_f = len(mesh.faces)
        return measures.MeshMeasures(0.0, 0.0, 0.0, 0.0, 0.0, len(vertices), n_f, 0, 0, 0, n_f).as_dict()
    welded = ref_weld(mesh)
    vertices, faces = np.asarray(welded.vertices), np.asarray(welded.faces, dtype=np.int64)
    n_faces = len(faces)
    topo = ref_edge_topology(faces)
    n_edges = len(topo.edges)
    n_boundary = int((topo.counts == 1).sum())
    manifold_edges = n_boundary + int(topo.pair_consistent.sum())
    area, quality, normals = ref_face_geometry(vertices, faces)
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
    f0, f1 = topo.pairs[:, 0], topo.pairs[:, 1]
    keep = (area[f0] > 0) & (area[f1] > 0)
    cos = np.einsum("ij,ij->i", normals[f0], normals[f1]) * np.where(topo.pair_consistent, 1.0, -1.0)
    edges = topo.edges[topo.pair_edge]
    length = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1) * keep
    total = float(length.sum())
    smooth = cos > np.cos(np.radians(smooth_angle_deg))
    degenerate_faces = quality < sliver_quality
    return measures.MeshMeasures(
        watertight=float((topo.counts == 2).sum() / n_edges),
        components=min(1.0, float(comp_area.max()) / total_area) if total_area > 0 else 0.0,
        manifold=float(manifold_edges / n_edges),
        smoothness=float((length * smooth).sum() / total) if total > 0 else 0.0,
        degenerate=1.0 - float(degenerate_faces.mean()),
        n_vertices=len(vertices),
        n_faces=n_faces,
        n_components=int((np.bincount(labels[:n_faces], minlength=n_comp) > 0).sum()),
        n_boundary_edges=n_boundary,
        n_nonmanifold_edges=n_edges - manifold_edges,
        n_degenerate_faces=int(degenerate_faces.sum()),
    ).as_dict()


def ref_render(mesh: trimesh.Trimesh, cameras, normalize: bool = True) -> list[dict[str, np.ndarray]]:
    """render_views as it was: trimesh's embree intersector on every pixel ray."""
    mesh = normalize_unit_sphere(mesh) if normalize else mesh
    size, fov = cameras[0].size, cameras[0].fov_deg
    rays_cam = _camera_rays(size, fov)
    n_pix = size * size
    origins = np.repeat(np.stack([c.position for c in cameras]), n_pix, axis=0)
    directions = np.concatenate([rays_cam @ c.rotation.T for c in cameras])
    faces, vertices = np.asarray(mesh.faces), np.asarray(mesh.vertices, dtype=np.float64)
    tri = np.asarray(_Intersector(mesh).intersects_first(origins, directions), dtype=np.int64)
    hit = np.flatnonzero(tri >= 0)
    v0 = vertices[faces[tri[hit], 0]]
    cross = np.cross(vertices[faces[tri[hit], 1]] - v0, vertices[faces[tri[hit], 2]] - v0)
    denom = np.einsum("ij,ij->i", cross, directions[hit])
    t = np.einsum("ij,ij->i", cross, v0 - origins[hit]) / denom
    normals = cross / np.linalg.norm(cross, axis=1, keepdims=True)
    normals[denom >= 0] *= -1.0
    flat_t, flat_n, flat_front = np.zeros(len(tri)), np.zeros((len(tri), 3)), np.zeros(len(tri), dtype=bool)
    flat_t[hit], flat_n[hit], flat_front[hit] = t, normals, denom < 0
    views = []
    for k, cam in enumerate(cameras):
        sl = slice(k * n_pix, (k + 1) * n_pix)
        mask = tri[sl] >= 0
        views.append(
            {
                "mask": mask.reshape(size, size),
                "depth": np.where(mask, flat_t[sl] * -rays_cam[:, 2], 0.0).reshape(size, size),
                "normals_world": flat_n[sl].astype(np.float32).reshape(size, size, 3),
                "normals_cam": (flat_n[sl] @ cam.rotation).astype(np.float32).reshape(size, size, 3),
                "face_index": tri[sl].reshape(size, size),
                "frontface": flat_front[sl].reshape(size, size),
            }
        )
    return views


def ref_normal(mesh: trimesh.Trimesh | None, cameras) -> float:
    """The normal reward as it was: full views, full-image depth normals, per-view sums."""
    if mesh is None:
        return 0.0
    try:
        normalize_unit_sphere(mesh)
    except R3DError:
        return 0.0
    total, count = 0.0, 0
    for cam, maps in zip(cameras, ref_render(mesh, cameras), strict=True):
        view = RenderedView(camera=cam, **maps)
        est, valid = normals_from_depth(view)
        cos = np.einsum("ijk,ijk->ij", est, view.normals_cam.astype(np.float64))[valid]
        total += float(cos.sum())
        count += int(cos.size)
    return max(0.0, total / count) if count else 0.0


# ---------------------------------------------------------------- inputs


def broken_meshes() -> list[trimesh.Trimesh]:
    """Meshes that exercise every branch: soups, near-duplicates, clashing winding, 3+ faces per edge,
    zero-area faces, holes, floaters, unreferenced vertices, single faces, NaN, empty, huge and tiny."""
    rng = np.random.default_rng(0)
    sphere = trimesh.creation.icosphere(subdivisions=2)
    v, f = sphere.vertices, sphere.faces
    soup_v = v[f].reshape(-1, 3)
    soup_f = np.arange(len(soup_v)).reshape(-1, 3)
    flipped = f.copy()
    flipped[::3] = flipped[::3, ::-1]
    slivers = f.copy()
    slivers[:7, 2] = slivers[:7, 1]
    nan = v.copy()
    nan[3] = np.nan
    random_soup = rng.normal(size=(300, 3, 3)).reshape(-1, 3)
    floaters = [sphere] + [
        trimesh.creation.box().apply_scale(s).apply_translation(rng.normal(0, 3, 3)) for s in (0.1, 0.3, 0.05)
    ]
    raw = [
        (soup_v, soup_f),
        (soup_v + rng.uniform(-4e-9, 4e-9, soup_v.shape), soup_f),  # within the 1e-8 merge grid
        (v, flipped),
        (v, np.concatenate([f, f[:5], f[:5, ::-1]])),  # edges with 3 and 4 faces
        (v, slivers),
        (v + rng.normal(0, 0.05, v.shape), f),
        (trimesh.util.concatenate(floaters).vertices, trimesh.util.concatenate(floaters).faces),
        (v, f[rng.permutation(len(f))[:-30]]),  # holes
        (np.vstack([v, rng.normal(size=(20, 3))]), f),  # unreferenced vertices
        ([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]]),
        ([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], [[0, 1, 2], [2, 1, 3]]),
        ([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 1, 2]]),  # collinear
        ([[0, 0, 0], [0, 0, 0], [0, 0, 0]], [[0, 1, 2]]),  # a point
        (random_soup, np.arange(len(random_soup)).reshape(-1, 3)),
        (rng.normal(size=(50, 3)), rng.integers(0, 50, (200, 3))),  # repeated indices
        (v * 1e5 + 3e5, f),
        (v * 1e-7, f),
        (nan, f),
        (np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)),
        (v, np.zeros((0, 3), dtype=np.int64)),
        (np.vstack([v, v]), np.vstack([f, f + len(v)])),  # two coincident shells
    ]
    return [trimesh.Trimesh(np.asarray(a, dtype=np.float64), np.asarray(b), process=False) for a, b in raw]


def random_meshes() -> list[trimesh.Trimesh]:
    """Random soups and noisy spheres, and axis-aligned boxes whose diagonals pass through the optical
    axis of the elevation-0 cameras (with an odd image size a pixel-centre ray hits an edge exactly)."""
    rng = np.random.default_rng(1)
    meshes = []
    for n in (1, 2, 7, 60, 400):
        corners = rng.normal(size=(3 * n, 3))
        meshes.append(trimesh.Trimesh(corners, np.arange(3 * n).reshape(-1, 3), process=False))
    for scale in (0.01, 0.2):
        sphere = trimesh.creation.icosphere(subdivisions=3)
        meshes.append(
            trimesh.Trimesh(sphere.vertices + rng.normal(0, scale, sphere.vertices.shape), sphere.faces)
        )
    box = trimesh.creation.box()
    fine = box.subdivide().subdivide()
    turned = box.copy().apply_transform(trimesh.transformations.rotation_matrix(np.pi / 4, [0, 1, 0]))
    slab = trimesh.creation.box(extents=[2.0, 2.0, 1e-6])  # two faces a float32 ulp apart
    return meshes + [box, fine, turned, slab]


EDGE_ON_CAMERAS = orbit_cameras(4, 33, elevation_deg=0.0)  # on the axes, the centre pixel on the axis


@pytest.fixture(scope="module")
def policy_meshes() -> list[trimesh.Trimesh | None]:
    """What tiny_mesh's policy makes: clean samples, samples of perturbed latents, decodes of noise."""
    from r3d.models.tiny_shapes import load_tiny_shapes

    policy = load_tiny_shapes()
    prompts = ["a cube", "a pyramid", "a prism", "an octahedron"] * 4
    generator = torch.Generator().manual_seed(0)
    x = policy.sample(prompts, num_steps=6, generator=generator)
    latents = [
        x,
        x + 0.8 * torch.randn(x.shape, generator=generator),
        torch.randn(x.shape, generator=generator),
    ]
    return [m for z in latents for m in policy.decode(z)]


@pytest.fixture(scope="module")
def shared_meshes() -> list[trimesh.Trimesh]:
    folder = default_meshes()
    paths = sorted(folder.glob("*.obj")) if folder.is_dir() else []
    if not paths:
        pytest.skip(f"no shared meshes in {folder}")
    return [load_mesh(p) for p in paths]


# ---------------------------------------------------------------- geometry


def test_geometry_reward_bit_identical_on_policy_shared_and_broken_meshes(policy_meshes, shared_meshes):
    """Every sub-score and the headline equal the previous implementation's exactly, batched as the
    reward batches them (catches any change in welding, edge order, summation order or chunking)."""
    meshes = policy_meshes + shared_meshes + broken_meshes()
    assert sum(m is None for m in policy_meshes) < len(policy_meshes)
    for kwargs in ({}, {"smooth_angle_deg": 10.0, "sliver_quality": 0.2, "binary_watertight": True}):
        reward = GeometryReward(**kwargs)
        got = reward(meshes)
        for i, mesh in enumerate(meshes):
            if mesh is None:
                assert all(float(v[i]) == 0.0 for v in got.values())
                continue
            ref = ref_measure(mesh, reward.smooth_angle_deg, reward.sliver_quality)
            scores = {k: ref[k] for k in measures.SCORE_NAMES}
            if reward.binary_watertight:
                scores["watertight"] = float(scores["watertight"] == 1.0)
            headline = sum(reward.weights[k] * scores[k] for k in measures.SCORE_NAMES) / sum(
                reward.weights.values()
            )
            expected = torch.tensor([headline, *scores.values()], dtype=torch.float32)
            actual = torch.stack([got[k][i] for k in ("geometry", *measures.SCORE_NAMES)])
            assert torch.equal(actual, expected), (i, actual, expected)


def test_measure_many_equals_reference_measures_for_every_chunk_size(
    policy_meshes, shared_meshes, monkeypatch
):
    """Raw counts and float64 scores equal the reference whether meshes are measured alone, in small
    chunks or together (catches vertices, edges or components leaking between meshes of one chunk)."""
    meshes = [m for m in policy_meshes if m is not None][:24] + shared_meshes[:4] + broken_meshes()
    expected = [ref_measure(m) for m in meshes]
    for chunk in (1, 3000, 1 << 20):
        monkeypatch.setattr(measures, "CHUNK_FACES", chunk)
        got = [m.as_dict() for m in measures.measure_many(meshes)]
        for g, e in zip(got, expected, strict=True):
            assert g == e and all(type(g[k]) is type(e[k]) for k in e)
    assert [measures.measure(m).as_dict() for m in meshes[-6:]] == expected[-6:]


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # the NaN mesh
def test_weld_topology_and_face_geometry_equal_the_reference(shared_meshes):
    """The public building blocks return the reference's arrays exactly (same kept vertex per merge
    group and vertex order as trimesh; edges in the same order; identical float64 face terms)."""
    for mesh in broken_meshes() + shared_meshes[:3]:
        ours, ref = measures.weld(mesh), ref_weld(mesh)
        assert np.array_equal(ours.vertices, ref.vertices, equal_nan=True)
        assert np.array_equal(ours.faces, ref.faces)
        if not np.isfinite(mesh.vertices).all() or len(mesh.faces) == 0:
            continue
        faces = np.asarray(ref.faces, dtype=np.int64)
        ours_topo, ref_topo = vars(measures.edge_topology(faces)), vars(ref_edge_topology(faces))
        for a, b in zip(ours_topo.values(), ref_topo.values(), strict=True):
            assert np.array_equal(a, b)
        for a, b in zip(
            measures.face_geometry(ref.vertices, faces), ref_face_geometry(ref.vertices, faces), strict=True
        ):
            assert np.array_equal(a, b)


def test_hash_collisions_fall_back_to_exact_grouping(monkeypatch):
    """With a hash that maps every vertex to one value, welding must still merge exactly the coincident
    vertices (catches trusting the hash instead of comparing the rows)."""
    monkeypatch.setattr(measures, "_HASH", np.zeros(4, dtype=np.uint64))
    for mesh in broken_meshes()[:3]:
        ours, ref = measures.weld(mesh), ref_weld(mesh)
        assert np.array_equal(ours.vertices, ref.vertices) and np.array_equal(ours.faces, ref.faces)
        assert measures.measure(mesh).as_dict() == ref_measure(mesh)


def test_out_of_range_face_indices_are_a_one_line_error():
    """A corrupt mesh (faces pointing past its vertices) raises R3DError instead of reading another
    mesh's vertices in the batch."""
    bad = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 3]], process=False, validate=False)
    with pytest.raises(R3DError, match="face indices"):
        measures.measure_many([trimesh.creation.box(), bad])


# ---------------------------------------------------------------- normal and rendering


def test_render_views_identical_to_casting_every_ray_with_trimesh(policy_meshes, shared_meshes):
    """All maps equal the full trimesh/embree render, with culling (default cameras) and without it
    (a camera inside the bounding sphere), so skipped rays really were misses."""
    meshes = [m for m in policy_meshes if m is not None][::6] + shared_meshes[::3] + broken_meshes()[:10]
    meshes += random_meshes()
    settings = [
        (orbit_cameras(4, 64), True),
        (orbit_cameras(3, 32, elevation_deg=-35.0, azimuth_offset_deg=17.0), True),
        (orbit_cameras(2, 24, distance=0.5), True),
        (EDGE_ON_CAMERAS, True),
    ]
    for mesh in meshes:
        for cameras, normalize in settings:
            ours = render_views(mesh, cameras=cameras, normalize=normalize)
            for view, ref in zip(ours, ref_render(mesh, cameras, normalize), strict=True):
                for key, value in ref.items():
                    got = getattr(view, key)
                    assert got.dtype == value.dtype and np.array_equal(got, value), key


def test_normal_reward_identical_to_reference(policy_meshes, shared_meshes):
    """The normal score equals the previous full-render implementation exactly (the brief allows
    1e-6; catches a changed neighbour rule, crop or summation order)."""
    meshes = [None] + policy_meshes + shared_meshes + broken_meshes() + random_meshes()
    for kwargs in (
        {},
        {"n_views": 3, "size": 48, "elevation_deg": -30.0, "azimuth_offset_deg": 17.0},
        {"size": 33, "elevation_deg": 0.0},
    ):
        reward = NormalReward(**kwargs)
        got = reward(meshes)["normal"]
        expected = torch.tensor([ref_normal(m, reward.cameras) for m in meshes], dtype=torch.float32)
        assert torch.equal(got, expected)
        assert [reward.score_one(m) for m in meshes[:6]] == [
            ref_normal(m, reward.cameras) for m in meshes[:6]
        ]


def test_prepass_decides_most_rays_and_those_as_embree(policy_meshes, shared_meshes):
    """The compiled pre-pass leaves few rays to embree (the speed-up rests on it: < 3% of the hit
    pixels of policy and shared meshes), and every ray it decides has embree's answer, casting every
    ray (catches a margin too small for float32 rounding, or a face box that misses pixels)."""
    real = [m for m in policy_meshes if m is not None][::2] + shared_meshes
    meshes = real + random_meshes()
    for cameras in (orbit_cameras(4, 128), EDGE_ON_CAMERAS):
        n_pix = cameras[0].size ** 2
        rotations = np.stack([c.rotation for c in cameras]).astype(np.float64)
        directions, unit, unit64 = _ray_directions(cameras[0].size, cameras[0].fov_deg, rotations.tobytes())
        undecided = hits = 0
        for i, mesh in enumerate(meshes):
            mesh = normalize_unit_sphere(mesh)
            origins = np.repeat(np.stack([c.position for c in cameras]), n_pix, axis=0)
            expected = np.asarray(_Intersector(mesh).intersects_first(origins, directions), dtype=np.int64)
            decided = _decided_hits(mesh, cameras, unit64, *_embree_frame(mesh, cameras))
            known = decided != -2
            assert np.array_equal(decided[known], expected[known])
            if i < len(real):
                undecided += int((~known).sum())
                hits += int((expected >= 0).sum())
            assert np.array_equal(_first_hits(mesh, cameras, directions, unit, unit64), expected)
        if cameras[0].size == 128:
            assert undecided < 0.03 * hits, (undecided, hits)


def test_direct_embree_calls_equal_embreex(shared_meshes):
    """The scene filled through the bundled library (one copy) answers every ray as embreex's own
    EmbreeScene/TriangleMesh do, including rays through edges and vertices and misses."""
    pytest.importorskip("embreex")
    from embreex.mesh_construction import TriangleMesh
    from embreex.rtcore_scene import EmbreeScene

    from r3d.mesh import _embree

    rng = np.random.default_rng(2)
    for mesh in [shared_meshes[1], *random_meshes()[-4:], broken_meshes()[3]]:
        vertices = np.asarray(mesh.vertices, dtype=np.float32)
        faces = np.asarray(mesh.faces, dtype=np.int32)
        targets = np.concatenate([vertices, vertices[faces[:, :2]].mean(axis=1), rng.normal(size=(300, 3))])
        origins = rng.normal(0, 4, size=(len(targets), 3)).astype(np.float32)
        directions = trimesh.util.unitize(targets - origins).astype(np.float32)
        scene = EmbreeScene()
        TriangleMesh(scene=scene, vertices=vertices, indices=faces)
        got = _embree.first_faces(vertices, faces, origins, directions)
        assert got is not None and np.array_equal(got, scene.run(origins, directions))
