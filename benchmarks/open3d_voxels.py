"""open3d's voxelisation (what TRELLIS's dataset toolkit calls), importable or run by another Python.

open3d is not an r3d dependency and its wheels may clash with r3d's environment, so this module needs
only numpy and open3d. Run as a worker from a separate environment:

    python3 -m venv /tmp/o3d && /tmp/o3d/bin/pip install open3d      # (+ apt-get install libusb-1.0-0)
    /tmp/o3d/bin/python benchmarks/open3d_voxels.py IN.npz OUT.npz --resolution 64 --repeat 3

IN.npz holds ``v0, f0, v1, f1, ...`` (normalised float64 vertices (N, 3), int faces (M, 3)); OUT.npz
gets ``idx0, idx1, ...`` (K, 3) int64 grid indices sorted lexicographically, ``seconds`` (minimum
wall time per mesh of the voxelisation call), ``seconds_with_readout`` (plus TRELLIS's ``get_voxels``
read-out) and ``version`` (open3d's).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def best_of(fn: Callable[[], T], repeat: int) -> tuple[T, float]:
    """(last result, minimum wall seconds) of ``repeat`` calls of ``fn`` (the least disturbed run)."""
    best, out = float("inf"), None
    for _ in range(max(repeat, 1)):
        tic = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - tic)
    return out, best  # type: ignore[return-value]


def open3d_grid(o3d: Any, v: np.ndarray, f: np.ndarray, resolution: int) -> Any:
    """open3d's ``VoxelGrid.create_from_triangle_mesh_within_bounds`` as TRELLIS calls it (grid 1/R over
    [−0.5, 0.5]³), on a mesh built from ``v`` (N, 3) float64 and ``f`` (M, 3) int."""
    mesh = o3d.geometry.TriangleMesh()
    mesh.vertices = o3d.utility.Vector3dVector(np.asarray(v, dtype=np.float64))
    mesh.triangles = o3d.utility.Vector3iVector(np.asarray(f, dtype=np.int32))
    return o3d.geometry.VoxelGrid.create_from_triangle_mesh_within_bounds(
        mesh, voxel_size=1 / resolution, min_bound=(-0.5, -0.5, -0.5), max_bound=(0.5, 0.5, 0.5)
    )


def grid_indices(grid: Any) -> np.ndarray:
    """TRELLIS's read-out of a VoxelGrid (``get_voxels()`` → ``grid_index``), sorted: (K, 3) int64."""
    idx = np.array([vox.grid_index for vox in grid.get_voxels()], dtype=np.int64).reshape(-1, 3)
    return idx[np.lexsort(idx.T[::-1])]


def open3d_voxels(o3d: Any, v: np.ndarray, f: np.ndarray, resolution: int) -> np.ndarray:
    """Cells of the ``resolution``³ grid over [−0.5, 0.5]³ that open3d's
    ``create_from_triangle_mesh_within_bounds`` keeps; (K, 3) int64, sorted lexicographically."""
    return grid_indices(open3d_grid(o3d, v, f, resolution))


def time_meshes(
    o3d: Any, meshes: list[tuple[np.ndarray, np.ndarray]], resolution: int, repeat: int
) -> list[dict[str, Any]]:
    """Per (v, f): ``idx`` (open3d's voxels), ``seconds`` (minimum over ``repeat`` runs of the mesh
    construction + ``create_from_triangle_mesh_within_bounds``: voxelisation only) and
    ``seconds_with_readout`` (the same plus TRELLIS's ``get_voxels`` read-out)."""
    out = []
    for v, f in meshes:
        grid, seconds = best_of(lambda v=v, f=f: open3d_grid(o3d, v, f, resolution), repeat)
        idx, readout = best_of(lambda g=grid: grid_indices(g), repeat)
        out.append({"idx": idx, "seconds": seconds, "seconds_with_readout": seconds + readout})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inp", type=Path, help="npz with v0, f0, v1, f1, ...")
    ap.add_argument("out", type=Path, help="npz to write idx0, idx1, ..., seconds, version")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import open3d as o3d

    data = np.load(args.inp)
    n = sum(1 for k in data.files if k.startswith("v"))
    results = time_meshes(
        o3d, [(data[f"v{i}"], data[f"f{i}"]) for i in range(n)], args.resolution, args.repeat
    )
    out: dict[str, Any] = {f"idx{i}": r["idx"] for i, r in enumerate(results)}
    out["seconds"] = np.array([r["seconds"] for r in results])
    out["seconds_with_readout"] = np.array([r["seconds_with_readout"] for r in results])
    out["version"] = np.array(o3d.__version__)
    tmp = args.out.with_name(f".{args.out.name}.tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
