"""TRELLIS voxelisation: exactness (vs open3d when installed), geometry, formats, batch behaviour."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import trimesh

from r3d.core.errors import R3DError
from r3d.mesh.voxelize import (
    centres_to_indices,
    load_mesh,
    load_voxels,
    normalize_trellis,
    read_voxel_ply,
    voxel_centres,
    voxelize_many,
    voxelize_mesh,
    voxelize_triangles,
    write_voxel_ply,
    y_up_to_z_up,
)


def shared_meshes_dir() -> Path | None:
    for candidate in (
        os.environ.get("R3D_SHARED_MESHES"),
        Path(__file__).parents[1].parent / "shared/data/meshes",
    ):
        if candidate and Path(candidate).is_dir() and any(Path(candidate).glob("*.obj")):
            return Path(candidate)
    return None


MESHES = shared_meshes_dir()
needs_meshes = pytest.mark.skipif(MESHES is None, reason="shared real meshes not present")


def as_set(idx: np.ndarray) -> set[tuple[int, ...]]:
    return set(map(tuple, np.asarray(idx).tolist()))


def asym_mesh() -> trimesh.Trimesh:
    """A box stretched along y (extent 2 in y, 1 in x, 0.5 in z): up-axis handling is visible."""
    return trimesh.creation.box(extents=(1.0, 2.0, 0.5))


@needs_meshes
def test_identical_to_open3d_on_every_shared_mesh():
    """The voxel set equals open3d's create_from_triangle_mesh_within_bounds (TRELLIS's call) exactly."""
    o3d = pytest.importorskip("open3d")
    for path in sorted(MESHES.glob("*.obj")):
        v, f, b = load_mesh(path)
        v = normalize_trellis(v, b)
        mesh = o3d.geometry.TriangleMesh()
        mesh.vertices = o3d.utility.Vector3dVector(v)
        mesh.triangles = o3d.utility.Vector3iVector(f.astype(np.int32))
        grid = o3d.geometry.VoxelGrid.create_from_triangle_mesh_within_bounds(
            mesh, voxel_size=1 / 64, min_bound=(-0.5, -0.5, -0.5), max_bound=(0.5, 0.5, 0.5)
        )
        ref = {tuple(vox.grid_index) for vox in grid.get_voxels()}
        assert as_set(voxelize_triangles(v, f, 64)) == ref, path.name


def test_triangle_inside_one_cell_gives_that_cell():
    """A small triangle strictly inside cell (10, 20, 30) of the 64³ grid occupies exactly that cell."""
    c = (np.array([10, 20, 30]) + 0.5) / 64 - 0.5
    v = c + np.array([[-0.002, -0.002, 0.0], [0.003, -0.001, 0.001], [0.0, 0.003, -0.002]])
    assert as_set(voxelize_triangles(v, np.array([[0, 1, 2]]), 64)) == {(10, 20, 30)}


def test_plane_on_a_cell_boundary_keeps_only_the_upper_cells():
    """open3d ≥ 0.18 tests cells from floor(min / size): a face lying on the plane between cells 31
    and 32 (z = 0) marks only the k = 32 layer, not both layers it touches."""
    v = np.array([[-0.2, -0.2, 0.0], [0.2, -0.2, 0.0], [-0.2, 0.2, 0.0]])
    idx = voxelize_triangles(v, np.array([[0, 1, 2]]), 64)
    assert set(idx[:, 2].tolist()) == {32}
    assert len(idx) > 100


def test_large_triangle_covers_sampled_points_and_stays_near_the_plane():
    """Every cell containing a point of the triangle is kept; every kept cell touches its plane."""
    rng = np.random.default_rng(0)
    v = np.array([[-0.45, -0.4, -0.3], [0.42, -0.1, 0.35], [-0.1, 0.44, 0.05]])
    idx = voxelize_triangles(v, np.array([[0, 1, 2]]), 64)
    w = rng.dirichlet(np.ones(3), 20000)
    pts = w @ v
    cells = np.floor((pts + 0.5) * 64).astype(int)
    assert as_set(cells) <= as_set(idx)
    n = np.cross(v[1] - v[0], v[2] - v[0])
    n /= np.linalg.norm(n)
    dist = np.abs((voxel_centres(idx, 64) - v[0]) @ n)
    assert dist.max() <= np.sqrt(3) / 128 + 1e-12


@needs_meshes
def test_surface_points_of_a_real_mesh_fall_in_occupied_cells():
    """Shell property on the bunny: sampled surface points land in voxels; the shell is not filled."""
    v, f, b = load_mesh(MESHES / "stanford-bunny.obj")
    v = normalize_trellis(v, b)
    idx = voxelize_triangles(v, f, 64)
    pts, _ = trimesh.sample.sample_surface(trimesh.Trimesh(v, f, process=False), 20000, seed=0)
    cells = np.clip(np.floor((pts + 0.5) * 64).astype(int), 0, 63)
    assert as_set(cells) <= as_set(idx)
    assert len(idx) < 0.1 * 64**3  # a surface shell, not a solid


def test_normalisation_is_trellis_unit_cube():
    """Scale 1/max extent, box centred at 0, clamp to ±(0.5 − 1e-6), float32 round trip."""
    v = np.array([[2.0, 1.0, 5.0], [6.0, 2.0, 5.5], [3.0, 3.0, 7.0]])
    out = normalize_trellis(v)
    assert np.allclose(out.max(0) + out.min(0), 0, atol=1e-6)
    assert np.isclose((out.max(0) - out.min(0)).max(), 1 - 2e-6)
    assert out.max() <= 0.5 - 1e-6 and out.min() >= -0.5 + 1e-6
    inner = np.abs(out) < 0.5 - 1e-6  # unclamped coordinates went through float32 (Blender's mesh.ply)
    assert np.array_equal(out[inner], out[inner].astype(np.float32).astype(np.float64))
    with pytest.raises(R3DError, match="zero extent"):
        normalize_trellis(np.ones((3, 3)))


@pytest.mark.parametrize(
    ("suffix", "rotated"), [(".obj", True), (".glb", True), (".ply", False), (".stl", False)]
)
def test_up_axis_follows_blenders_importers(tmp_path, suffix, rotated):
    """GLB/GLTF/OBJ are Y-up (rotated +90° about x into Z-up), PLY/STL are kept as they are."""
    path = tmp_path / f"box{suffix}"
    asym_mesh().export(path)
    v, _, _ = load_mesh(path)
    ext = v.max(0) - v.min(0)
    # the long axis (file y) becomes z after the rotation; the thin one (file z) becomes y
    assert np.allclose(ext, [1.0, 0.5, 2.0] if rotated else [1.0, 2.0, 0.5])
    forced, _, _ = load_mesh(path, up_axis="z")
    assert np.allclose(forced.max(0) - forced.min(0), [1.0, 2.0, 0.5])


def test_y_up_rotation_is_plus_90_about_x():
    p = np.array([[0.1, 0.2, 0.3]])
    assert np.array_equal(y_up_to_z_up(p), [[0.1, -0.3, 0.2]])
    r = trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0])[:3, :3]
    assert np.allclose(p @ r.T, y_up_to_z_up(p))


def test_voxel_ply_is_trellis_format_and_round_trips(tmp_path):
    """Binary little-endian PLY with float x, y, z; reading it back recovers the grid indices."""
    idx = np.array([[0, 0, 0], [63, 1, 2], [5, 40, 63]])
    write_voxel_ply(tmp_path / "v.ply", voxel_centres(idx, 64))
    raw = (tmp_path / "v.ply").read_bytes()
    header = raw[: raw.index(b"end_header\n") + 11].decode()
    assert header == (
        "ply\nformat binary_little_endian 1.0\nelement vertex 3\n"
        "property float x\nproperty float y\nproperty float z\nend_header\n"
    )
    assert len(raw) == len(header) + 3 * 12
    pts = read_voxel_ply(tmp_path / "v.ply")
    assert np.array_equal(centres_to_indices(pts, 64), idx)
    got, res = load_voxels(tmp_path / "v.ply")
    assert res == 64 and np.array_equal(got, idx)


def test_broken_inputs_raise_one_line_errors(tmp_path):
    (tmp_path / "junk.obj").write_text("this is not a mesh\n")
    with pytest.raises(R3DError, match="no triangles"):
        load_mesh(tmp_path / "junk.obj")
    with pytest.raises(R3DError, match="not found"):
        load_mesh(tmp_path / "nope.obj")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(R3DError, match="corrupt voxel file"):
        load_voxels(tmp_path / "bad.npz")


def write_meshes(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, mesh in enumerate([asym_mesh(), trimesh.creation.icosphere(2), trimesh.creation.torus(1.0, 0.3)]):
        p = folder / f"m{i}.{['obj', 'ply', 'stl'][i]}"
        mesh.export(p)
        paths.append(p)
    (folder / "broken.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n")  # truncated
    return paths


def test_batch_is_resumable_reports_failures_and_matches_single_calls(tmp_path):
    """Outputs equal voxelize_mesh; a second run skips everything; a broken file is reported, not fatal."""
    paths = write_meshes(tmp_path / "in")
    out = tmp_path / "out"
    s1 = voxelize_many([tmp_path / "in"], out, resolution=32, workers=2, progress=False)
    assert (s1["ok"], s1["failed"]) == (3, 1)
    assert "broken.off" in s1["failures"][0]["source"]
    for p in paths:
        idx, res = load_voxels(out / f"{p.stem}.npz")
        assert res == 32 and np.array_equal(idx, voxelize_mesh(p, 32)[0])
        assert np.array_equal(centres_to_indices(read_voxel_ply(out / f"{p.stem}.ply"), 32), idx)
    mtime = (out / "m0.npz").stat().st_mtime_ns
    s2 = voxelize_many([tmp_path / "in"], out, resolution=32, progress=False)
    assert (s2["ok"], s2["skipped"], s2["failed"]) == (0, 3, 1)
    assert (out / "m0.npz").stat().st_mtime_ns == mtime
    s3 = voxelize_many([tmp_path / "in"], out, resolution=16, progress=False)  # other settings: redone
    assert s3["ok"] == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"] == 4 and len((out / "manifest.jsonl").read_text().splitlines()) == 12


def test_shards_partition_the_inputs_and_duplicate_stems_get_unique_names(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        asym_mesh().export(tmp_path / d / "same.stl")
    names = set()
    for i in range(2):
        s = voxelize_many(
            [str(tmp_path / "*" / "*.stl")], tmp_path / "out", resolution=8, shard=f"{i}/2", progress=False
        )
        assert s["total"] == 1
        names.add(s["records"][0]["name"])
    assert len(names) == 2 and all(n.startswith("same-") for n in names)
    with pytest.raises(R3DError, match="shard"):
        voxelize_many([tmp_path], tmp_path / "out", shard="2/2", progress=False)
    with pytest.raises(R3DError, match="input not found"):
        voxelize_many([tmp_path / "missing"], tmp_path / "out", progress=False)
