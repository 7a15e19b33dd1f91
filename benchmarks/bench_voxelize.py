"""Voxelisation: r3d vs open3d (TRELLIS's reference) vs trimesh, speed and exactness, on real meshes.

Every mesh is loaded and normalised once the TRELLIS way (r3d.mesh.voxelize); then the same vertices
go to r3d's vectorised NumPy voxeliser, to open3d's ``create_from_triangle_mesh_within_bounds`` (what
TRELLIS's ``dataset_toolkits/voxelize.py`` calls) and to trimesh's ``voxelized`` (pitch 1/R, shifted
to the same grid). Reports per mesh: voxel counts, whether r3d's set equals open3d's, how many cells
trimesh's set differs by, the median wall time of ``--repeat`` runs and the time ratios to r3d.

open3d is not an r3d dependency. When ``import open3d`` fails here, give a Python that has it
(``--open3d-python``, or $R3D_OPEN3D_PYTHON); the open3d part then runs there through
benchmarks/open3d_voxels.py (which needs only numpy + open3d). Without either, rows say so.

    python benchmarks/bench_voxelize.py --open3d-python /tmp/o3d/bin/python

Writes ``voxelize.json`` and ``voxelize.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, caption, default_meshes, md_table, ratio, timed  # noqa: E402
from benchmarks.open3d_voxels import time_meshes  # noqa: E402
from r3d.core.io import atomic_write_json, atomic_write_text  # noqa: E402
from r3d.mesh.voxelize import collect_inputs, load_mesh, normalize_trellis, voxelize_triangles  # noqa: E402

NOT_INSTALLED = "open3d not installed"


def trimesh_voxels(v: np.ndarray, f: np.ndarray, resolution: int) -> np.ndarray:
    """trimesh's ``voxelized(pitch=1/R)`` mapped onto the same R³ grid over [−0.5, 0.5]³ (K, 3)."""
    import trimesh

    mesh = trimesh.Trimesh(v, f, process=False)
    vg = mesh.voxelized(pitch=1.0 / resolution)
    idx = np.floor((np.asarray(vg.points) + 0.5) * resolution).astype(np.int64)
    return np.unique(idx[((idx >= 0) & (idx < resolution)).all(1)], axis=0)


def as_set(idx: np.ndarray) -> set[tuple[int, int, int]]:
    return set(map(tuple, np.asarray(idx).tolist()))


def open3d_results(
    meshes: list[tuple[np.ndarray, np.ndarray]], resolution: int, repeat: int, open3d_python: str | None
) -> tuple[list[tuple[np.ndarray, float]] | None, str]:
    """open3d's (indices, seconds) per mesh and its version — in process if importable, else through
    ``open3d_python``; ``(None, reason)`` when neither works."""
    try:
        import open3d as o3d
    except Exception:  # ImportError, or a missing system library (libusb, libGL)
        o3d = None
    if o3d is not None:
        return time_meshes(o3d, meshes, resolution, repeat), f"open3d {o3d.__version__}"
    if not open3d_python:
        return None, NOT_INSTALLED
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inp, **{f"{k}{i}": a for i, (v, f) in enumerate(meshes) for k, a in (("v", v), ("f", f))})
        cmd = [open3d_python, str(Path(__file__).with_name("open3d_voxels.py")), str(inp), str(out)]
        cmd += ["--resolution", str(resolution), "--repeat", str(repeat)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return None, f"{NOT_INSTALLED} for {open3d_python} ({last[0][:120]})"
        data = np.load(out)
        results = [(data[f"idx{i}"], float(data["seconds"][i])) for i in range(len(meshes))]
        return results, f"open3d {data['version']} (via {open3d_python})"


def measure(
    inputs: Sequence[str | os.PathLike] = (),
    resolution: int = 64,
    repeat: int = 3,
    open3d_python: str | None = None,
    use_trimesh: bool = True,
    on_mesh: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time r3d, open3d and trimesh on every mesh of ``inputs`` (default: the shared meshes)."""
    paths = collect_inputs(inputs or [default_meshes()])
    meshes, rows = [], []
    for path in paths:
        v, f, b = load_mesh(path)
        v = normalize_trellis(v, b)
        ours, t_ours = timed(lambda v=v, f=f: voxelize_triangles(v, f, resolution), repeat)
        row: dict[str, Any] = {
            "mesh": path.name,
            "faces": int(len(f)),
            "r3d_voxels": len(ours),
            "r3d_s": t_ours,
        }
        if use_trimesh:
            tm, t_tm = timed(lambda v=v, f=f: trimesh_voxels(v, f, resolution), repeat)
            row.update(trimesh_voxels=len(tm), trimesh_s=t_tm, _trimesh=tm)
        meshes.append((v, f))
        rows.append({**row, "_r3d": ours})
        if on_mesh is not None:
            on_mesh(path.name)
    reference, label = open3d_results(meshes, resolution, repeat, open3d_python)
    for i, row in enumerate(rows):
        ours, tm = row.pop("_r3d"), row.pop("_trimesh", None)
        if reference is None:
            continue
        ref, t_ref = reference[i]
        a, r = as_set(ours), as_set(ref)
        row.update(open3d_voxels=len(r), open3d_s=t_ref, missing=len(r - a), extra=len(a - r), exact=a == r)
        if tm is not None:
            row["trimesh_differs"] = len(as_set(tm) ^ r)
    return {"resolution": resolution, "repeat": repeat, "open3d": label, "rows": rows}


def markdown(result: dict[str, Any], info: dict[str, Any] | None = None) -> list[str]:
    """One row per mesh: milliseconds of each voxeliser, their ratios to r3d, agreement with open3d."""
    rows = []
    for r in result["rows"]:
        has_o3d = "open3d_s" in r
        o3d_ms = f"{1e3 * r['open3d_s']:.1f}" if has_o3d else result["open3d"]
        tm_ms = f"{1e3 * r['trimesh_s']:.1f}" if "trimesh_s" in r else "–"
        rows.append(
            [
                r["mesh"],
                r["faces"],
                r["r3d_voxels"],
                f"{1e3 * r['r3d_s']:.1f}",
                o3d_ms,
                tm_ms,
                ratio(r.get("open3d_s"), r["r3d_s"]),
                ratio(r.get("trimesh_s"), r["r3d_s"]),
                ("yes" if r["exact"] else f"NO (−{r['missing']} +{r['extra']})") if has_o3d else "–",
                r.get("trimesh_differs", "–"),
            ]
        )
    note = (
        f"Resolution {result['resolution']}, median of {result['repeat']} runs per mesh, one process; "
        f"reference: {result['open3d']}. Ratios > 1× mean r3d is faster."
    )
    table = md_table(
        [
            "mesh",
            "faces",
            "r3d voxels",
            "r3d ms",
            "open3d ms",
            "trimesh ms",
            "open3d / r3d time (×)",
            "trimesh / r3d time (×)",
            "r3d set = open3d set",
            "cells trimesh ≠ open3d",
        ],
        rows,
        align="lrrrrrrrlr",
    )
    return [caption(info, note), "", *table]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", help="mesh files or folders (default: the shared meshes)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--open3d-python", default=os.environ.get("R3D_OPEN3D_PYTHON"))
    ap.add_argument("--no-trimesh", action="store_true", help="skip trimesh")
    args = ap.parse_args()
    result = measure(
        args.inputs,
        args.resolution,
        args.repeat,
        args.open3d_python,
        not args.no_trimesh,
        on_mesh=lambda name: print(name, flush=True),
    )
    lines = ["# Voxelisation: r3d vs open3d vs trimesh", "", *markdown(result), ""]
    atomic_write_json(Path(args.out) / "voxelize.json", result)
    atomic_write_text(Path(args.out) / "voxelize.md", "\n".join(lines))
    print("\n".join(lines))
    exact = [r["exact"] for r in result["rows"] if "exact" in r]
    if exact:
        print(json.dumps({"identical_to_open3d": f"{sum(exact)}/{len(exact)}"}))
    return 0 if all(exact) else 1


if __name__ == "__main__":
    sys.exit(main())
