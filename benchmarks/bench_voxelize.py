"""Voxelisation: r3d vs open3d (TRELLIS's reference) vs trimesh, speed and exactness, on real meshes.

Every mesh is loaded and normalised once the TRELLIS way (r3d.mesh.voxelize); then the same vertices
go to r3d's vectorised NumPy voxeliser, to open3d's ``create_from_triangle_mesh_within_bounds`` (what
TRELLIS's ``dataset_toolkits/voxelize.py`` calls; skipped when open3d is not importable) and to
trimesh's ``voxelized`` (pitch 1/64, shifted to the same grid). Reports per mesh: voxel counts,
set differences against open3d, and the median wall time of ``--repeat`` runs.

open3d needs system libraries and is not an r3d dependency; run this from an environment that has it:

    python3 -m venv /tmp/o3d && /tmp/o3d/bin/pip install open3d numpy trimesh rich pydantic pyyaml
    PYTHONPATH=. /tmp/o3d/bin/python benchmarks/bench_voxelize.py --out benchmarks/results

Writes ``voxelize.json`` and ``voxelize.md`` (a markdown table) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r3d.mesh.voxelize import collect_inputs, load_mesh, normalize_trellis, voxelize_triangles  # noqa: E402

DEFAULT_MESHES = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes"


def timed(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def open3d_voxels(o3d, v: np.ndarray, f: np.ndarray, resolution: int) -> np.ndarray:
    mesh = o3d.geometry.TriangleMesh()
    mesh.vertices = o3d.utility.Vector3dVector(v)
    mesh.triangles = o3d.utility.Vector3iVector(f.astype(np.int32))
    grid = o3d.geometry.VoxelGrid.create_from_triangle_mesh_within_bounds(
        mesh, voxel_size=1 / resolution, min_bound=(-0.5, -0.5, -0.5), max_bound=(0.5, 0.5, 0.5)
    )
    return np.array([vox.grid_index for vox in grid.get_voxels()], dtype=np.int64).reshape(-1, 3)


def trimesh_voxels(v: np.ndarray, f: np.ndarray, resolution: int) -> np.ndarray:
    import trimesh

    mesh = trimesh.Trimesh(v, f, process=False)
    vg = mesh.voxelized(pitch=1.0 / resolution)
    centres = np.asarray(vg.points)
    idx = np.floor((centres + 0.5) * resolution).astype(np.int64)
    return np.unique(idx[((idx >= 0) & (idx < resolution)).all(1)], axis=0)


def as_set(idx: np.ndarray) -> set[tuple[int, int, int]]:
    return set(map(tuple, np.asarray(idx).tolist()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", default=[str(DEFAULT_MESHES)], help="mesh files or folders")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--no-trimesh", action="store_true", help="skip trimesh (slow on large meshes)")
    args = ap.parse_args()
    try:
        import open3d as o3d
    except Exception as exc:  # ImportError or a missing system library
        print(f"open3d unavailable ({exc}); exactness is not checked", file=sys.stderr)
        o3d = None
    R = args.resolution
    rows = []
    for path in collect_inputs(args.inputs):
        v, f, b = load_mesh(path)
        v = normalize_trellis(v, b)
        ours, t_ours = timed(lambda v=v, f=f: voxelize_triangles(v, f, R), args.repeat)
        row = {"mesh": path.name, "faces": int(len(f)), "r3d_voxels": int(len(ours)), "r3d_s": t_ours}
        if o3d is not None:
            ref, t_ref = timed(lambda v=v, f=f: open3d_voxels(o3d, v, f, R), args.repeat)
            a, r = as_set(ours), as_set(ref)
            row.update(
                open3d_voxels=len(r), open3d_s=t_ref, missing=len(r - a), extra=len(a - r), exact=a == r
            )
        if not args.no_trimesh:
            tm, t_tm = timed(lambda v=v, f=f: trimesh_voxels(v, f, R), args.repeat)
            row.update(trimesh_voxels=int(len(tm)), trimesh_s=t_tm)
            if o3d is not None:
                row["trimesh_differs"] = len(as_set(tm) ^ as_set(ref))
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "open3d": getattr(o3d, "__version__", None),
        "resolution": R,
        "repeat": args.repeat,
    }
    (out / "voxelize.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    head = (
        "| mesh | faces | r3d voxels | r3d ms | open3d ms | same as open3d | trimesh ms | trimesh ≠ open3d |"
    )
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r['mesh']} | {r['faces']} | {r['r3d_voxels']} | {1e3 * r['r3d_s']:.1f} | "
            f"{1e3 * r['open3d_s']:.1f} | {'yes' if r['exact'] else 'NO'} | "
            if "exact" in r
            else f"| {r['mesh']} | {r['faces']} | {r['r3d_voxels']} | {1e3 * r['r3d_s']:.1f} | – | – | "
        )
        lines[-1] += (
            f"{1e3 * r['trimesh_s']:.1f} | {r.get('trimesh_differs', '–')} |"
            if "trimesh_s" in r
            else "– | – |"
        )
    (out / "voxelize.md").write_text(f"open3d {env['open3d']}, resolution {R}\n\n" + "\n".join(lines) + "\n")
    if o3d is not None:
        exact = sum(r["exact"] for r in rows)
        print(f"identical to open3d on {exact}/{len(rows)} meshes")
        return 0 if exact == len(rows) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
