"""``r3d score``: per-file error rows, JSON/CSV output, prompt handling and exit codes (through ``main``)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
import trimesh
from conftest import shared_meshes_dir

from r3d.cli.main import main
from r3d.commands.score import REGISTRY
from r3d.mesh.io import save_mesh


class FakeSemantic:
    """Stand-in for the semantic reward: 1 when the prompt names the mesh's class; fails on big meshes."""

    name = "semantic"
    higher_is_better = True
    value_range = (0.0, 1.0)
    differentiable = False

    def __init__(self, fail_above_faces: int = 10**9) -> None:
        self.fail_above_faces = fail_above_faces

    def _label(self, mesh: trimesh.Trimesh) -> str:
        return "box" if len(mesh.faces) == 12 else "sphere"

    def __call__(self, artifacts, prompts):
        if any(len(m.faces) > self.fail_above_faces for m in artifacts):
            raise RuntimeError("too many faces")
        return {
            "semantic": torch.tensor(
                [float(self._label(m) in p) for m, p in zip(artifacts, prompts, strict=True)]
            )
        }

    def classify(self, meshes):
        return [(self._label(m), 0.9) for m in meshes]


class FlakySemantic(FakeSemantic):
    def __init__(self) -> None:
        super().__init__(fail_above_faces=100)


@pytest.fixture()
def mesh_dir(tmp_path) -> Path:
    """Two good meshes plus garbage, empty and truncated files."""
    save_mesh(trimesh.creation.icosphere(2), tmp_path / "sphere.glb")
    save_mesh(trimesh.creation.box(), tmp_path / "box.obj")
    (tmp_path / "garbage.obj").write_bytes(os.urandom(2048))
    (tmp_path / "empty.ply").write_bytes(b"")
    glb = trimesh.creation.icosphere(1).export(file_type="glb")
    (tmp_path / "cut.glb").write_bytes(glb[: len(glb) // 2])
    return tmp_path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_files_get_their_own_rows_and_exit_1(mesh_dir, capsys):
    """Corrupt files are reported per item, the good ones are still scored, and the exit code is 1."""
    code, out, err = run(["score", str(mesh_dir), "--json", "-r", "geometry,normal"], capsys)
    records = {Path(r["path"]).name: r for r in json.loads(out)}
    assert code == 1
    assert sorted(records) == ["box.obj", "cut.glb", "empty.ply", "garbage.obj", "sphere.glb"]
    for name in ("garbage.obj", "empty.ply", "cut.glb"):
        assert records[name]["ok"] is False and records[name]["error"] and records[name]["scores"] == {}
    assert "empty file" in records["empty.ply"]["error"] and "GLB" in records["cut.glb"]["error"]
    for name in ("box.obj", "sphere.glb"):
        scores = records[name]["scores"]
        assert records[name]["ok"] and set(scores) >= {"geometry", "geometry/watertight", "normal"}
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert records["sphere.glb"]["faces"] == 320


def test_table_output_and_semantic_skipped_without_prompt(mesh_dir, capsys):
    """Default rewards: semantic is skipped with one note; the table lists every file and the summary."""
    code, out, err = run(["score", str(mesh_dir / "sphere.glb"), str(mesh_dir / "garbage.obj")], capsys)
    assert code == 1
    assert err.count("skipping semantic") == 1
    assert "sphere.glb" in out and "garbage.obj" in out and "1 scored, 1 failed" in out
    assert out.splitlines()[0].startswith("rewards: geometry, normal ")


def test_usage_errors_exit_2(tmp_path, capsys):
    """No matching files, a missing path and an unknown reward are one-line errors with exit code 2."""
    code, _, err = run(["score", str(tmp_path / "*.glb")], capsys)
    assert code == 2 and "no mesh files" in err
    code, _, err = run(["score", str(tmp_path / "missing.obj")], capsys)
    assert code == 2 and "no such file or folder" in err
    save_mesh(trimesh.creation.box(), tmp_path / "b.obj")
    code, _, err = run(["score", str(tmp_path), "-r", "geometri"], capsys)
    assert code == 2 and "did you mean 'geometry'" in err and len(err.strip().splitlines()) == 1


def test_prompt_enables_semantic_and_classification(mesh_dir, capsys, monkeypatch):
    """With --prompt the semantic reward runs with that prompt and its class label is recorded."""
    monkeypatch.setitem(REGISTRY, "semantic", f"{__name__}:FakeSemantic")
    files = [str(mesh_dir / "sphere.glb"), str(mesh_dir / "box.obj")]
    code, out, _ = run(["score", *files, "-r", "semantic", "--prompt", "a box", "--json"], capsys)
    records = {Path(r["path"]).name: r for r in json.loads(out)}
    assert code == 0
    assert records["box.obj"]["scores"] == {"semantic": 1.0} and records["sphere.glb"]["scores"] == {
        "semantic": 0.0
    }
    assert (records["box.obj"]["label"], records["box.obj"]["label_prob"]) == ("box", 0.9)


def test_reward_failure_is_isolated_per_mesh(mesh_dir, capsys, monkeypatch, tmp_path):
    """A reward that raises on one mesh marks only that mesh failed; --out writes a CSV of all rows."""
    monkeypatch.setitem(REGISTRY, "semantic", f"{__name__}:FlakySemantic")
    files = [str(mesh_dir / "sphere.glb"), str(mesh_dir / "box.obj")]
    out_csv = tmp_path / "scores.csv"
    code, out, _ = run(
        ["score", *files, "-r", "geometry,semantic", "-p", "box", "--json", "--out", str(out_csv)], capsys
    )
    records = {Path(r["path"]).name: r for r in json.loads(out)}
    assert code == 1
    assert records["box.obj"]["ok"] and records["box.obj"]["scores"]["semantic"] == 1.0
    assert not records["sphere.glb"]["ok"] and "too many faces" in records["sphere.glb"]["error"]
    assert "geometry" in records["sphere.glb"]["scores"]  # the other reward still scored it
    rows = list(csv.DictReader(out_csv.open()))
    assert [Path(r["path"]).name for r in rows] == ["box.obj", "sphere.glb"]
    assert float(rows[0]["semantic"]) == 1.0


@pytest.mark.skipif(shared_meshes_dir() is None, reason="shared real meshes not present")
def test_scores_every_real_mesh(capsys, tmp_path):
    """Every real test mesh loads and scores in range with geometry + normal; exit code 0; JSON file written."""
    out_json = tmp_path / "real.json"
    code, _, _ = run(
        ["score", str(shared_meshes_dir()), "-r", "geometry,normal", "--out", str(out_json)], capsys
    )
    records = json.loads(out_json.read_text())
    assert code == 0 and len(records) == len(list(shared_meshes_dir().glob("*.obj")))
    for record in records:
        assert record["ok"], record
        assert all(0.0 <= v <= 1.0 for v in record["scores"].values())
