"""TRELLIS voxelisation: exactness (vs open3d when installed), geometry, formats, batch behaviour."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
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
    output_lock,
    read_voxel_ply,
    voxel_centres,
    voxelize_many,
    voxelize_mesh,
    voxelize_triangles,
    write_voxel_ply,
    y_up_to_z_up,
)

sys.path.insert(0, str(Path(__file__).parents[1]))
from conftest import shared_meshes_dir

from benchmarks import bench_voxelize  # noqa: E402  (random soups and large meshes, shared with the benchmark)

MESHES = shared_meshes_dir()
needs_meshes = pytest.mark.skipif(MESHES is None, reason="shared real meshes not present")


def as_set(idx: np.ndarray) -> set[tuple[int, ...]]:
    return set(map(tuple, np.asarray(idx).tolist()))


def asym_mesh() -> trimesh.Trimesh:
    """A box stretched along y (extent 2 in y, 1 in x, 0.5 in z): up-axis handling is visible."""
    return trimesh.creation.box(extents=(1.0, 2.0, 0.5))


def open3d_reference(meshes: list[tuple[np.ndarray, np.ndarray]], resolution: int = 64) -> list[set]:
    """open3d's voxel sets of ``meshes`` (normalised (v, f) pairs): in process when open3d imports,
    else through benchmarks/open3d_voxels.py under $R3D_OPEN3D_PYTHON; skips the test otherwise."""
    try:
        import open3d as o3d
    except Exception:
        o3d = None
    if o3d is not None:
        from benchmarks.open3d_voxels import open3d_voxels

        return [as_set(open3d_voxels(o3d, v, f, resolution)) for v, f in meshes]
    python = os.environ.get("R3D_OPEN3D_PYTHON")
    if not python:
        pytest.skip("open3d not importable and $R3D_OPEN3D_PYTHON not set")
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inp, **{f"{k}{i}": a for i, (v, f) in enumerate(meshes) for k, a in (("v", v), ("f", f))})
        script = Path(__file__).parents[1] / "benchmarks" / "open3d_voxels.py"
        cmd = [python, str(script), str(inp), str(out), "--resolution", str(resolution), "--repeat", "1"]
        subprocess.run(cmd, check=True, capture_output=True)
        with np.load(out) as data:
            return [as_set(data[f"idx{i}"]) for i in range(len(meshes))]


def random_soups(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """benchmarks/bench_voxelize.py's soups: ties on cell boundaries, slivers, degenerate triangles."""
    return [(v, f) for _, v, f in bench_voxelize.random_soups(seed)]


@needs_meshes
def test_identical_to_open3d_on_shared_and_large_meshes():
    """The voxel set equals open3d's create_from_triangle_mesh_within_bounds (TRELLIS's call) exactly,
    on the 12 shared meshes and on 60–100 k-face meshes none of them is."""
    meshes = []
    for path in sorted(MESHES.glob("*.obj")):
        v, f, b = load_mesh(path)
        meshes.append((normalize_trellis(v, b), f))
    large = [(v, f) for _, v, f in bench_voxelize.large_meshes(MESHES)]
    assert len(large) == 4 and all(60_000 <= len(f) <= 100_000 for _, f in large)
    meshes += large
    for (v, f), ref in zip(meshes, open3d_reference(meshes), strict=True):
        assert as_set(voxelize_triangles(v, f, 64)) == ref, len(f)


def test_identical_to_open3d_on_random_triangle_soups():
    """Ties on cell boundaries, slivers and degenerate triangles give open3d's voxels exactly."""
    soups = random_soups()
    for (v, f), ref in zip(soups, open3d_reference(soups), strict=True):
        assert as_set(voxelize_triangles(v, f, 64)) == ref


@pytest.mark.parametrize("resolution", [64, 37])
def test_compiled_kernel_equals_the_numpy_reference(resolution):
    """numba's kernel (skips occupied cells, stops at the first separating axis) gives the NumPy
    reference's set bit for bit, also at a resolution whose cell size is not a power of two: an operand
    swapped or a candidate range off by one would show here even without open3d."""
    pytest.importorskip("numba")
    for v, f in random_soups(seed=resolution):
        fast = voxelize_triangles(v, f, resolution, engine="numba")
        ref = voxelize_triangles(v, f, resolution, engine="numpy")
        assert np.array_equal(fast, ref)


def test_voxelize_triangles_refuses_what_would_read_out_of_bounds():
    """Bad face indices, NaN in a used vertex and an unknown engine are one-line errors; NaN in an
    unused vertex is harmless (only referenced vertices matter)."""
    v = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [np.nan, 0.0, 0.0]])
    with pytest.raises(R3DError, match="out of range"):
        voxelize_triangles(v, np.array([[0, 1, 4]]))
    with pytest.raises(R3DError, match="out of range"):
        voxelize_triangles(v, np.array([[0, 1, -1]]))
    with pytest.raises(R3DError, match="non-finite"):
        voxelize_triangles(v, np.array([[0, 1, 3]]))
    with pytest.raises(R3DError, match="engine"):
        voxelize_triangles(v[:3], np.array([[0, 1, 2]]), engine="cuda")  # type: ignore[arg-type]
    assert len(voxelize_triangles(v, np.array([[0, 1, 2]]))) > 0


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


def test_a_torn_or_altered_ply_is_redone_on_the_next_run(tmp_path):
    """The up-to-date check reads the .ply too: truncated or same-size corrupt, it is rewritten while
    the intact meshes stay skipped."""
    write_meshes(tmp_path / "in")
    out = tmp_path / "out"
    voxelize_many([tmp_path / "in"], out, resolution=16, progress=False)
    good = (out / "m0.ply").read_bytes()
    (out / "m0.ply").write_bytes(good[: len(good) // 2])
    flipped = bytearray((out / "m1.ply").read_bytes())
    flipped[-1] ^= 0xFF
    (out / "m1.ply").write_bytes(bytes(flipped))
    s = voxelize_many([tmp_path / "in"], out, resolution=16, progress=False)
    status = {r["name"]: r["status"] for r in s["records"]}
    assert status == {"broken": "failed", "m0": "ok", "m1": "ok", "m2": "skipped"}
    assert (out / "m0.ply").read_bytes() == good
    idx, _ = load_voxels(out / "m1.npz")
    assert np.array_equal(centres_to_indices(read_voxel_ply(out / "m1.ply"), 16), idx)


def test_out_pointing_at_a_file_is_a_one_line_error(tmp_path):
    write_meshes(tmp_path / "in")
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(R3DError, match="is a file, not a folder"):
        voxelize_many([tmp_path / "in"], tmp_path / "taken", progress=False)
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_a_locked_folder_is_refused_and_shards_share_one(tmp_path):
    """A second whole run on a folder in use is refused (one-line error); shard i/n runs lock only their
    shard, so another shard may write into the same folder, the same shard or a whole run may not."""
    write_meshes(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out):
        with pytest.raises(R3DError, match="^voxelize output folder .* is in use by another r3d process"):
            voxelize_many([tmp_path / "in"], out, resolution=8, progress=False)
        with pytest.raises(R3DError, match="is in use by another r3d process"):
            voxelize_many([tmp_path / "in"], out, resolution=8, shard="0/2", progress=False)
    with output_lock(out, (0, 2)):
        s = voxelize_many([tmp_path / "in"], out, resolution=8, shard="1/2", progress=False)
        assert s["total"] == 2
        with pytest.raises(R3DError, match="^shard 0/2 of voxelize output folder .* is in use"):
            voxelize_many([tmp_path / "in"], out, resolution=8, shard="0/2", progress=False)
        with pytest.raises(R3DError, match="^voxelize output folder .* is in use"):
            voxelize_many([tmp_path / "in"], out, resolution=8, progress=False)
    assert voxelize_many([tmp_path / "in"], out, resolution=8, progress=False)["total"] == 4  # released


def _run_shard(inp: str, out: str, shard: str, workers: int) -> None:
    voxelize_many([inp], out, resolution=16, shard=shard, workers=workers, progress=False)


def test_concurrent_shards_into_one_folder_keep_every_manifest_line(tmp_path):
    """Two processes writing shards 0/2 and 1/2 of 16 meshes into one folder at once: every output is
    there and the shared manifest holds 16 whole JSON lines, one per mesh (appends are locked)."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(16):
        trimesh.creation.icosphere(1, radius=1 + i / 10).export(src / f"s{i:02d}.stl")
    out = tmp_path / "out"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_run_shard, args=(str(src), str(out), f"{i}/2", 2)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["name"] for r in records) == [f"s{i:02d}" for i in range(16)]
    assert all(r["status"] == "ok" for r in records)
    assert all(load_voxels(out / f"s{i:02d}.npz")[1] == 16 for i in range(16))


def test_summary_stops_listing_records_beyond_the_cap_but_counts_everything(tmp_path, monkeypatch):
    """Beyond SUMMARY_RECORDS meshes the summary keeps counts and voxel statistics (equal to the
    manifest's) but not the per-mesh list, so memory does not grow with the number of meshes."""
    import r3d.mesh.voxelize as vox

    write_meshes(tmp_path / "in")
    monkeypatch.setattr(vox, "SUMMARY_RECORDS", 2)
    s = voxelize_many([tmp_path / "in"], tmp_path / "out", resolution=16, workers=2, progress=False)
    assert (s["total"], s["ok"], s["failed"], s["records"], s["records_omitted"]) == (4, 3, 1, [], 4)
    manifest = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    counts = [r["num_voxels"] for r in manifest if r["status"] == "ok"]
    assert s["voxels"] == {"min": min(counts), "mean": sum(counts) / 3, "max": max(counts)}
    assert s["failures"] == [{"source": r["source"], "error": r["error"]} for r in manifest if "error" in r]


def test_parallel_runs_keep_at_most_two_jobs_per_worker_queued(tmp_path, monkeypatch):
    """The pool is fed as jobs finish (not all submitted up front): at most 2 × workers are pending."""
    import concurrent.futures as cf

    import r3d.mesh.voxelize as vox

    most = []

    class Counting(cf.ProcessPoolExecutor):
        live = 0

        def submit(self, *a, **k):
            fut = super().submit(*a, **k)
            Counting.live += 1
            most.append(Counting.live)
            fut.add_done_callback(lambda _: setattr(Counting, "live", Counting.live - 1))
            return fut

    monkeypatch.setattr(vox, "ProcessPoolExecutor", Counting)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        trimesh.creation.box((1, 1 + i, 1)).export(src / f"b{i:02d}.stl")
    s = voxelize_many([src], tmp_path / "out", resolution=8, workers=2, progress=False)
    assert s["ok"] == 12 and len(most) == 12 and max(most) <= 4
