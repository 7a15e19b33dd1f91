"""Mesh file io: every format round-trips, corrupt input is a one-line R3DError, inputs expand correctly."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from r3d.core.errors import R3DError
from r3d.mesh.io import expand_inputs, load_mesh, save_mesh


@pytest.fixture()
def sphere() -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=2)


@pytest.mark.parametrize("suffix", [".glb", ".obj", ".ply", ".stl", ".off"])
def test_save_load_round_trip_keeps_geometry(tmp_path, sphere, suffix):
    """Saving then loading in each format keeps face count, surface area and bounds."""
    path = save_mesh(sphere, tmp_path / f"s{suffix}")
    mesh = load_mesh(path)
    assert len(mesh.faces) == len(sphere.faces)
    assert mesh.area == pytest.approx(sphere.area, rel=1e-5)
    np.testing.assert_allclose(mesh.bounds, sphere.bounds, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [f"s{suffix}"]  # atomic write leaves no temp file


def test_glb_scene_is_flattened_with_node_transforms(tmp_path, sphere):
    """A GLB holding two nodes loads as one mesh with both nodes' faces, each moved by its transform."""
    scene = trimesh.Scene()
    scene.add_geometry(sphere, node_name="a")
    scene.add_geometry(
        sphere, node_name="b", transform=trimesh.transformations.translation_matrix([5.0, 0, 0])
    )
    path = tmp_path / "two.glb"
    path.write_bytes(scene.export(file_type="glb"))
    mesh = load_mesh(path)
    assert len(mesh.faces) == 2 * len(sphere.faces)
    assert mesh.bounds[1, 0] == pytest.approx(6.0, abs=1e-5)


def _write(path, data: bytes | str):
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        (
            "garbage.obj",
            bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)),
            "no triangle faces",
        ),
        ("empty.obj", b"", "empty file"),
        ("nan.obj", "v 0 0 0\nv 1 0 nan\nv 0 1 0\nf 1 2 3\n", "NaN"),
        ("badindex.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n", "corrupt"),
        ("points.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "PointCloud"),
        (
            "short.ply",
            b"ply\nformat binary_little_endian 1.0\nelement vertex 100\nproperty float x\nend_header\n\0",
            "corrupt",
        ),
        ("mesh.xyz", "1 2 3\n", "unsupported"),
    ],
)
def test_bad_files_raise_one_line_error(tmp_path, name, data, reason):
    """Each kind of broken file raises R3DError naming the file and the reason, on one line."""
    path = _write(tmp_path / name, data)
    with pytest.raises(R3DError) as info:
        load_mesh(path)
    message = str(info.value)
    assert str(path) in message and reason in message and "\n" not in message


def test_truncated_glb_is_reported(tmp_path, sphere):
    """A GLB cut short mid-file is a corrupt-file error, not a crash."""
    data = sphere.export(file_type="glb")
    path = _write(tmp_path / "cut.glb", data[: len(data) // 3])
    with pytest.raises(R3DError, match="cut.glb: corrupt or unreadable GLB"):
        load_mesh(path)


def test_missing_file_and_folder(tmp_path):
    """A missing path and a folder are refused with a clear reason."""
    with pytest.raises(R3DError, match="no such file"):
        load_mesh(tmp_path / "nope.obj")
    with pytest.raises(R3DError, match="not a file"):
        load_mesh(tmp_path)


def test_save_refuses_unknown_format(tmp_path, sphere):
    with pytest.raises(R3DError, match="cannot save as '.xyz'"):
        save_mesh(sphere, tmp_path / "a.xyz")


def test_expand_inputs_files_folders_globs(tmp_path, sphere):
    """Folders are searched recursively by suffix, globs expand, duplicates collapse, output is sorted."""
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    a = save_mesh(sphere, tmp_path / "b.obj")
    b = save_mesh(sphere, tmp_path / "sub" / "deep" / "a.GLB")
    (tmp_path / "sub" / "notes.txt").write_text("not a mesh")
    found = expand_inputs([tmp_path, a, str(tmp_path / "*.obj")])
    assert [p.resolve() for p in found] == sorted([a.resolve(), b.resolve()], key=str)
    assert expand_inputs([str(tmp_path / "**" / "*.GLB")]) == [b]


def test_expand_inputs_errors(tmp_path):
    """A path that does not exist, or inputs with no mesh file, are usage errors."""
    with pytest.raises(R3DError, match="no such file or folder"):
        expand_inputs([tmp_path / "missing.obj"])
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(R3DError, match="no mesh files"):
        expand_inputs([tmp_path, str(tmp_path / "*.glb")])
