"""`r3d voxelize` on the command line: outputs, JSON summary, resumability, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import trimesh

from r3d.cli.main import main
from r3d.mesh.voxelize import load_voxels, read_voxel_ply, voxel_centres


def test_voxelize_command_writes_ply_npz_and_summary(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    trimesh.creation.icosphere(2).export(src / "ball.glb")
    trimesh.creation.box((1, 2, 3)).export(src / "brick.obj")
    (src / "notes.txt").write_text("ignored: not a mesh suffix")
    out = tmp_path / "out"
    assert main(["voxelize", str(src), "--out", str(out), "--resolution", "32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["total"], summary["ok"], summary["failed"]) == (2, 2, 0)
    for name in ("ball", "brick"):
        idx, res = load_voxels(out / f"{name}.npz")
        assert res == 32 and len(idx) > 0
        assert np.allclose(read_voxel_ply(out / f"{name}.ply"), voxel_centres(idx, 32), atol=1e-7)
    assert main(["voxelize", str(src / "*.obj"), "--out", str(out), "--resolution", "32", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["total"], again["skipped"]) == (1, 1)


def test_voxelize_command_table_reports_a_broken_mesh_and_exits_zero(tmp_path, capsys):
    (tmp_path / "bad.ply").write_text("ply\nformat ascii 1.0\nelement vertex 2\n")
    trimesh.creation.icosphere(1).export(tmp_path / "good.stl")
    assert (
        main(
            ["voxelize", str(tmp_path / "bad.ply"), str(tmp_path / "good.stl"), "--out", str(tmp_path / "o")]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "1 voxelised, 0 up to date, 1 failed" in captured.out
    assert "failed" in captured.err and "bad.ply" in captured.err


def test_voxelize_command_user_errors_are_one_line(tmp_path, capsys):
    assert main(["voxelize", str(tmp_path / "missing.obj"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "input not found" in err and len(err.splitlines()) == 1
    trimesh.creation.icosphere(1).export(tmp_path / "a.stl")
    assert main(["voxelize", str(tmp_path / "a.stl"), "--out", str(tmp_path / "o"), "--up", "x"]) == 2
    assert "--up must be auto, y or z" in capsys.readouterr().err


def test_voxelize_command_exits_one_when_every_mesh_fails(tmp_path, capsys):
    """Nothing voxelised is a failure of the command: exit 1 and one line saying so (also with --json)."""
    (tmp_path / "a.ply").write_text("ply\nformat ascii 1.0\nelement vertex 2\n")
    (tmp_path / "b.off").write_text("OFF\n3 1 0\n0 0 0\n")
    for extra in ([], ["--json"]):
        assert main(["voxelize", str(tmp_path), "--out", str(tmp_path / "o"), *extra]) == 1
        err = capsys.readouterr().err
        assert [x for x in err.splitlines() if x.startswith("error:")] == [
            "error: every mesh failed (2 of 2); nothing voxelised"
        ]


def test_voxelize_command_out_on_a_file_or_a_busy_folder_is_exit_two(tmp_path, capsys):
    """--out naming an existing file, or a folder another run holds, is a one-line error, exit 2."""
    from r3d.mesh.voxelize import output_lock

    trimesh.creation.icosphere(1).export(tmp_path / "a.stl")
    (tmp_path / "file.txt").write_text("keep me")
    assert main(["voxelize", str(tmp_path / "a.stl"), "--out", str(tmp_path / "file.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "is a file, not a folder" in err and len(err.splitlines()) == 1
    assert (tmp_path / "file.txt").read_text() == "keep me"
    (tmp_path / "o").mkdir()
    with output_lock(tmp_path / "o"):
        assert main(["voxelize", str(tmp_path / "a.stl"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is in use by another r3d process" in err and len(err.splitlines()) == 1
