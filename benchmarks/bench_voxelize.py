"""Voxelisation: r3d vs open3d (TRELLIS's reference) vs trimesh — exactness, speed, batch throughput.

Every mesh is loaded and normalised once the TRELLIS way (r3d.mesh.voxelize); then the same vertices
go to r3d's compiled voxeliser (numba, one thread), to open3d's ``create_from_triangle_mesh_within_bounds``
(what TRELLIS's ``dataset_toolkits/voxelize.py`` calls; timed alone, "voxelisation only", and with
TRELLIS's ``get_voxels`` read-out) and to trimesh's ``voxelized`` (pitch 1/R, shifted to the same
grid). Meshes: the shared ones plus 4 unseen 60–100 k-face meshes (shared meshes subdivided and
jittered). Timings are the minimum over ``--repeat`` (≥ 3) interleaved rounds: each round times r3d on
every mesh, then open3d on every mesh, so a change in the machine's load hits both. Exactness is also
checked on random triangle soups (ties on cell boundaries, slivers, degenerate triangles). The JIT's
compile time is measured in fresh processes: cold (empty cache) and warm (cached machine code).

``--throughput N`` adds ``r3d voxelize`` over N meshes made by rotating and scaling the shared ones
(GLB files generated into ``--work``, default /tmp/r3d-voxbench): meshes/s with 1 and 2 workers, peak
memory with N/10 and N meshes (flat: no growth with the number of meshes), and resumption (an
up-to-date rerun; a run killed with SIGKILL midway and restarted). ``--quick``: N = 120, 3 rounds.

open3d is not an r3d dependency. When ``import open3d`` fails here, give a Python that has it
(``--open3d-python``, or $R3D_OPEN3D_PYTHON); the open3d part then runs there through
benchmarks/open3d_voxels.py (which needs only numpy + open3d). Without either, rows say so.

    python benchmarks/bench_voxelize.py --open3d-python /tmp/o3d/bin/python --throughput 1000

Writes ``voxelize.json`` and ``voxelize.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, caption, default_meshes, md_table, ratio, write_result  # noqa: E402
from benchmarks.open3d_voxels import best_of, time_meshes  # noqa: E402
from r3d.mesh.voxelize import (  # noqa: E402
    collect_inputs,
    load_mesh,
    normalize_trellis,
    voxelize_triangles,
)

NOT_INSTALLED = "open3d not installed"
Mesh = tuple[np.ndarray, np.ndarray]
# (shared mesh, subdivisions): each subdivision ×4 faces; 60–100 k faces after
LARGE = (("cow.obj", 2), ("alligator.obj", 2), ("suzanne.obj", 3), ("rocker-arm.obj", 1))


def trimesh_voxels(v: np.ndarray, f: np.ndarray, resolution: int) -> np.ndarray:
    """trimesh's ``voxelized(pitch=1/R)`` mapped onto the same R³ grid over [−0.5, 0.5]³ (K, 3)."""
    import trimesh

    mesh = trimesh.Trimesh(v, f, process=False)
    vg = mesh.voxelized(pitch=1.0 / resolution)
    idx = np.floor((np.asarray(vg.points) + 0.5) * resolution).astype(np.int64)
    return np.unique(idx[((idx >= 0) & (idx < resolution)).all(1)], axis=0)


def as_set(idx: np.ndarray) -> set[tuple[int, int, int]]:
    return set(map(tuple, np.asarray(idx).tolist()))


def large_meshes(folder: Path, seed: int = 1) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """4 unseen 60–100 k-face meshes: shared meshes subdivided, every vertex jittered by 0.1 % of the
    extent (seeded), normalised the TRELLIS way → (name, vertices, faces)."""
    import trimesh

    rng = np.random.default_rng(seed)
    out = []
    for name, times in LARGE:
        v, f, _ = load_mesh(folder / name)
        for _ in range(times):
            v, f = trimesh.remesh.subdivide(v, f)
        v = v + rng.normal(0, 1e-3 * np.ptp(v, axis=0).max(), v.shape)
        out.append((f"{Path(name).stem}-x{4**times}", normalize_trellis(v), f))
    return out


def random_soups(seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Triangle soups inside [−0.5, 0.5]³ that stress the exact test → (kind, vertices, faces): big
    random triangles, small ones, vertices snapped to the 1/128 lattice (ties on cell boundaries and
    centres), horizontal faces on those planes, slivers, and degenerate (single-point) triangles."""
    rng = np.random.default_rng(seed)
    big = rng.uniform(-0.5, 0.5, (40, 3, 3))
    small = rng.uniform(-0.48, 0.48, (3000, 1, 3)) + rng.normal(0, 0.01, (3000, 3, 3))
    near = rng.uniform(-0.45, 0.45, (3000, 1, 3)) + rng.uniform(-0.04, 0.04, (3000, 3, 3))
    snapped = np.round(near * 128) / 128
    plane = snapped.copy()
    plane[:, :, 2] = plane[:, 0:1, 2]
    steps = np.linspace(0, 1, 3)[None, :, None]
    sliver = rng.uniform(-0.45, 0.45, (1000, 1, 3)) + steps * rng.normal(0, 0.05, (1000, 1, 3))
    point = np.repeat(rng.uniform(-0.5, 0.5, (500, 1, 3)), 3, axis=1)
    kinds = {"big": big, "small": small, "snapped": snapped, "plane": plane, "sliver": sliver, "point": point}
    out = []
    for kind, tris in kinds.items():
        tris = np.clip(tris, -0.5 + 1e-6, 0.5 - 1e-6)
        out.append((kind, tris.reshape(-1, 3), np.arange(3 * len(tris)).reshape(-1, 3)))
    return out


def open3d_results(
    meshes: list[Mesh], resolution: int, repeat: int, open3d_python: str | None
) -> tuple[list[dict[str, Any]] | None, str]:
    """open3d's ``{"idx", "seconds", "seconds_with_readout"}`` per mesh and its version — in process if
    importable, else through ``open3d_python``; ``(None, reason)`` when neither works."""
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
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return None, f"{NOT_INSTALLED} for {open3d_python} ({last[0][:120]})"
        with np.load(out) as data:
            results = [
                {
                    "idx": data[f"idx{i}"],
                    "seconds": float(data["seconds"][i]),
                    "seconds_with_readout": float(data["seconds_with_readout"][i]),
                }
                for i in range(len(meshes))
            ]
            return results, f"open3d {data['version']} (via {open3d_python})"


def jit_compile_seconds() -> dict[str, float]:
    """Seconds, in a fresh process with r3d.mesh.voxelize already imported, to import numba and load the
    compiled kernel (:func:`r3d.mesh.voxelize.warm_up`): ``cold`` (empty numba cache: compiles) and
    ``warm`` (the machine code the cold run cached); ``import_numba``: the import alone."""
    code = (
        "import time, r3d.mesh.voxelize as m; t = time.perf_counter(); {call}; print(time.perf_counter() - t)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache
        for key, call in (("import_numba", "import numba"), ("cold", "m.warm_up()"), ("warm", "m.warm_up()")):
            proc = subprocess.run(
                [sys.executable, "-c", code.format(call=call)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            out[key] = float(proc.stdout.strip().splitlines()[-1])
    return out


def measure(
    inputs: Sequence[str | os.PathLike] = (),
    resolution: int = 64,
    repeat: int = 3,
    open3d_python: str | None = None,
    use_trimesh: bool = True,
    on_mesh: Callable[[str], None] | None = None,
    *,
    large: bool = True,
    soups: bool = True,
    throughput_meshes: int = 0,
    work: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Time r3d, open3d and trimesh on every mesh of ``inputs`` (default: the shared meshes) plus the
    large ones; check exactness on triangle soups; optionally the batch throughput (:func:`throughput`)."""
    note = on_mesh or (lambda _: None)
    folder = Path(inputs[0]) if len(inputs) == 1 and Path(inputs[0]).is_dir() else default_meshes()
    paths = collect_inputs(inputs or [default_meshes()])
    named: list[tuple[str, np.ndarray, np.ndarray]] = []
    for path in paths:
        v, f, b = load_mesh(path)
        named.append((path.name, normalize_trellis(v, b), f))
    if large and all((folder / name).is_file() for name, _ in LARGE):
        named += large_meshes(folder)
    meshes = [(v, f) for _, v, f in named]
    rounds = max(repeat, 3)
    voxelize_triangles(*meshes[0])  # load the compiled kernel before timing
    r3d_s = np.full(len(meshes), np.inf)
    voxels: list[np.ndarray] = [np.empty((0, 3))] * len(meshes)
    o3d_s, o3d_read_s = np.full(len(meshes), np.inf), np.full(len(meshes), np.inf)
    reference, label = None, NOT_INSTALLED
    for rnd in range(rounds):
        for i, (v, f) in enumerate(meshes):
            voxels[i], t = best_of(lambda v=v, f=f: voxelize_triangles(v, f, resolution), 1)
            r3d_s[i] = min(r3d_s[i], t)
        note(f"round {rnd + 1}/{rounds}: r3d")
        got, label = open3d_results(meshes, resolution, 1, open3d_python)
        if got is not None:
            reference = got
            o3d_s = np.minimum(o3d_s, [g["seconds"] for g in got])
            o3d_read_s = np.minimum(o3d_read_s, [g["seconds_with_readout"] for g in got])
            note(f"round {rnd + 1}/{rounds}: open3d")
    rows = []
    for i, ((name, v, f), ours) in enumerate(zip(named, voxels, strict=True)):
        row: dict[str, Any] = {"mesh": name, "faces": int(len(f)), "r3d_voxels": len(ours), "r3d_s": r3d_s[i]}
        _, row["numpy_s"] = best_of(lambda v=v, f=f: voxelize_triangles(v, f, resolution, engine="numpy"), 1)
        if use_trimesh:
            tm, row["trimesh_s"] = best_of(lambda v=v, f=f: trimesh_voxels(v, f, resolution), rounds)
        if reference is not None:
            a, r = as_set(ours), as_set(reference[i]["idx"])
            row.update(open3d_voxels=len(r), open3d_s=float(o3d_s[i]), open3d_readout_s=float(o3d_read_s[i]))
            row.update(missing=len(r - a), extra=len(a - r), exact=a == r)
            if use_trimesh:
                row["trimesh_differs"] = len(as_set(tm) ^ r)
        rows.append(row)
        note(f"{name}: numpy, trimesh")
    result: dict[str, Any] = {"resolution": resolution, "rounds": rounds, "open3d": label, "rows": rows}
    result["jit_seconds"] = jit_compile_seconds()
    if soups:
        soup = random_soups()
        ref, _ = open3d_results([(v, f) for _, v, f in soup], resolution, 1, open3d_python)
        result["soups"] = [
            {
                "kind": kind,
                "triangles": int(len(f)),
                "voxels": int(len(got := voxelize_triangles(v, f, resolution))),
                **({"exact": as_set(got) == as_set(ref[i]["idx"])} if ref is not None else {}),
            }
            for i, (kind, v, f) in enumerate(soup)
        ]
        note("soups")
    if throughput_meshes:
        result["throughput"] = throughput(folder, throughput_meshes, work=work, on_run=note)
    return result


# ----------------------------------------------------------------------------- batch throughput

_CLI_PEAK = """
import json, resource, sys
from r3d.cli.main import main
rc = main(sys.argv[1:])
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
own = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": rc, "peak_mib": max(own, kids) / 1024}), file=sys.stderr)
"""


def make_mesh_set(folder: Path, n: int, work: Path, seed: int = 0) -> list[Path]:
    """``n`` GLB files made by rotating (uniformly random) and scaling (0.5–2× per axis) the shared
    meshes in turn; reused when ``work`` already holds the same set."""
    import trimesh

    out = work / f"meshes-{n}-{seed}"
    paths = [out / f"m{i:05d}.glb" for i in range(n)]
    if (out / "complete").is_file():
        return paths
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    sources = sorted(folder.glob("*.obj"))
    base = [trimesh.load(str(p), process=False, force="mesh") for p in sources]
    for i, path in enumerate(paths):
        m = base[i % len(base)].copy()
        m.apply_transform(trimesh.transformations.random_rotation_matrix(rng.random(3)))
        m.apply_scale(rng.uniform(0.5, 2.0, 3))
        m.export(path)
    (out / "complete").write_text(str(n))
    return paths


def run_cli(args: list[str], *, kill_at: tuple[Path, int] | None = None) -> dict[str, Any]:
    """``r3d voxelize ARGS --json`` in a fresh process → its summary, wall seconds and peak RSS (MiB,
    the largest of the process and its workers). ``kill_at=(manifest, k)``: SIGKILL it as soon as the
    manifest has ``k`` lines → ``{"killed_after_s", "lines_at_kill", "rc"}``."""
    cmd = [sys.executable, "-c", _CLI_PEAK, "voxelize", *args, "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    tic = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if kill_at is not None:
        manifest, k = kill_at
        lines = 0
        while proc.poll() is None:
            lines = manifest.read_bytes().count(b"\n") if manifest.is_file() else 0
            if lines >= k:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.communicate()
        return {
            "killed_after_s": round(time.perf_counter() - tic, 2),
            "lines_at_kill": lines,
            "rc": proc.returncode,
        }
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - tic
    peak = json.loads(stderr.strip().splitlines()[-1])
    if peak["rc"] != 0:
        raise RuntimeError(f"r3d voxelize failed ({peak['rc']}): {stderr.strip()[-300:]}")
    return {"summary": json.loads(stdout), "wall_s": wall, "peak_mib": peak["peak_mib"]}


def throughput(
    folder: Path,
    n: int,
    *,
    workers: Sequence[int] = (1, 2),
    work: str | os.PathLike | None = None,
    on_run: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``r3d voxelize`` over ``n`` generated meshes: meshes/s per worker count, peak memory at n/10 and
    n meshes, an up-to-date rerun, and a run killed midway then restarted (see the module docstring)."""
    note = on_run or (lambda _: None)
    work = Path(work or Path(tempfile.gettempdir()) / "r3d-voxbench")
    paths = make_mesh_set(folder, n, work)
    note(f"throughput: {n} meshes in {paths[0].parent}")
    outs = work / "out"
    shutil.rmtree(outs, ignore_errors=True)
    runs = []
    for w in workers:
        r = run_cli([str(paths[0].parent), "--out", str(outs / f"w{w}"), "--workers", str(w)])
        s = r["summary"]
        runs.append(
            {
                "workers": w,
                "meshes": s["total"],
                "ok": s["ok"],
                "failed": s["failed"],
                "seconds": s["seconds"],
                "wall_s": r["wall_s"],
                "meshes_per_s": s["total"] / s["seconds"],
                "peak_mib": r["peak_mib"],
            }
        )
        note(f"throughput: {w} worker(s) {runs[-1]['meshes_per_s']:.1f} meshes/s")
    few = max(n // 10, 2)
    small = run_cli([*map(str, paths[:few]), "--out", str(outs / "few"), "--workers", "1"])
    rerun = run_cli(
        [str(paths[0].parent), "--out", str(outs / f"w{workers[-1]}"), "--workers", str(workers[-1])]
    )
    note("throughput: memory and rerun")
    killed = run_cli(
        [str(paths[0].parent), "--out", str(outs / "killed"), "--workers", "1"],
        kill_at=(outs / "killed" / "manifest.jsonl", n // 2),
    )
    resumed = run_cli([str(paths[0].parent), "--out", str(outs / "killed"), "--workers", "1"])["summary"]
    note("throughput: killed and resumed")
    shutil.rmtree(outs, ignore_errors=True)
    return {
        "meshes": n,
        "runs": runs,
        "memory": {"meshes_few": few, "peak_few_mib": small["peak_mib"], "peak_all_mib": runs[0]["peak_mib"]},
        "rerun": {
            "skipped": rerun["summary"]["skipped"],
            "seconds": rerun["summary"]["seconds"],
            "meshes_per_s": n / rerun["summary"]["seconds"],
        },
        "resume": {**killed, "skipped": resumed["skipped"], "ok": resumed["ok"], "failed": resumed["failed"]},
    }


# ----------------------------------------------------------------------------- report


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{1e3 * seconds:.1f}"


def markdown(result: dict[str, Any], info: dict[str, Any] | None = None) -> list[str]:
    """Per-mesh table (ms, ratios to r3d, agreement with open3d) with a total row, then lines for the
    JIT's compile time, the random soups and the batch throughput when measured."""
    all_rows = result["rows"]
    total = {"mesh": f"all {len(all_rows)}", "faces": sum(r["faces"] for r in all_rows)}
    total["r3d_voxels"] = sum(r["r3d_voxels"] for r in all_rows)
    for key in ("r3d_s", "open3d_s", "open3d_readout_s", "trimesh_s", "numpy_s"):
        if all(key in r for r in all_rows):
            total[key] = sum(r[key] for r in all_rows)
    if "open3d_s" in total:
        total["exact"] = all(r["exact"] for r in all_rows)
        total["missing"] = sum(r["missing"] for r in all_rows)
        total["extra"] = sum(r["extra"] for r in all_rows)
    rows = []
    for r in [*all_rows, total] if len(all_rows) > 1 else all_rows:
        has_o3d = "open3d_s" in r
        rows.append(
            [
                r["mesh"],
                r["faces"],
                r["r3d_voxels"],
                _ms(r["r3d_s"]),
                _ms(r["open3d_s"]) if has_o3d else result["open3d"],
                _ms(r.get("trimesh_s")),
                _ms(r.get("numpy_s")),
                ratio(r.get("open3d_s"), r["r3d_s"]),
                ratio(r.get("trimesh_s"), r["r3d_s"]),
                ("yes" if r["exact"] else f"NO (−{r['missing']} +{r['extra']})") if has_o3d else "–",
                r.get("trimesh_differs", "–"),
            ]
        )
    rounds = result.get("rounds", result.get("repeat"))
    note = (
        f"Resolution {result['resolution']}, one thread, the same normalised vertices for all; minimum of "
        f"{rounds} interleaved rounds (r3d then open3d on every mesh, per round); reference: "
        f"{result['open3d']}, `create_from_triangle_mesh_within_bounds` alone (voxelisation only). "
        "Ratios > 1× mean r3d is faster."
    )
    header = ["mesh", "faces", "r3d voxels", "r3d ms", "open3d ms", "trimesh ms", "r3d NumPy engine ms"]
    header += ["open3d / r3d time (×)", "trimesh / r3d time (×)", "r3d set = open3d set"]
    header += ["cells trimesh ≠ open3d"]
    lines = [caption(info, note), "", *md_table(header, rows, align="lrrrrrrrrlr"), ""]
    if "open3d_readout_s" in total and "numpy_s" in total:
        lines += [
            f"Counting TRELLIS's read-out of open3d's voxels too (`get_voxels()` into a list), open3d takes "
            f"{_ms(total['open3d_readout_s'])} ms in all, {ratio(total['open3d_readout_s'], total['r3d_s'])} "
            f"r3d's time. r3d's NumPy engine (the previous voxeliser, kept as the reference and the fallback "
            f"without numba) takes {ratio(total['numpy_s'], total['r3d_s'])} the compiled kernel's time.",
            "",
        ]
    j = result.get("jit_seconds")
    if j:
        lines += [
            f"JIT (numba), in a fresh process: `import numba` {j['import_numba']:.2f} s; importing the "
            f"voxeliser and loading its kernel {j['cold']:.2f} s with an empty cache (compiles, once per "
            f"machine), {j['warm']:.2f} s once cached. `r3d voxelize --workers N` loads it once, before "
            "forking its workers.",
            "",
        ]
    if result.get("soups"):
        soups = result["soups"]
        kinds = ", ".join(f"{s['kind']} ({s['triangles']} triangles, {s['voxels']} voxels)" for s in soups)
        same = [s["exact"] for s in soups if "exact" in s]
        verdict = f"{sum(same)}/{len(same)} identical to open3d" if same else "open3d not run"
        lines += [f"Random triangle soups: {verdict} — {kinds}.", ""]
    if "throughput" in result:
        lines += throughput_markdown(result["throughput"])
    return lines


def throughput_markdown(t: dict[str, Any]) -> list[str]:
    """Lines: meshes/s per worker count with the speed-up, the memory check, the resumption check."""
    base = t["runs"][0]["meshes_per_s"]
    m, rr, res = t["memory"], t["rerun"], t["resume"]
    lines = [
        f"`r3d voxelize` over {t['meshes']} GLB meshes made by rotating and scaling the shared ones (64³; "
        "load, normalise, voxelise, write PLY + npz + manifest; one thread per worker; seconds from the "
        "summary; peak RSS of the largest process, the CLI or a worker):",
        "",
    ]
    for r in t["runs"]:
        lines.append(
            f"- {r['workers']} worker{'s' if r['workers'] > 1 else ''}: {r['ok']} voxelised, {r['failed']} "
            f"failed in {r['seconds']:.1f} s — **{r['meshes_per_s']:.1f} meshes/s** "
            f"({r['meshes_per_s'] / base:.2f}× 1 worker), peak {r['peak_mib']:.0f} MiB"
        )
    lines += [
        f"- peak memory, 1 worker: {m['peak_few_mib']:.0f} MiB for {m['meshes_few']} meshes, "
        f"{m['peak_all_mib']:.0f} MiB for {t['meshes']} ({m['peak_all_mib'] / m['peak_few_mib']:.2f}×)",
        f"- rerun on the finished folder: {rr['skipped']} up to date (PLY and npz checked), "
        f"{rr['meshes_per_s']:.0f} meshes/s",
        f"- a 1-worker run killed with SIGKILL after {res['lines_at_kill']} meshes ({res['killed_after_s']} s), "
        f"then restarted: {res['skipped']} kept, {res['ok']} voxelised, {res['failed']} failed",
        "",
    ]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", help="mesh files or folders (default: the shared meshes)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved timing rounds (at least 3)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--open3d-python", default=os.environ.get("R3D_OPEN3D_PYTHON"))
    ap.add_argument("--no-trimesh", action="store_true", help="skip trimesh")
    ap.add_argument("--no-large", action="store_true", help="skip the 4 generated 60–100 k-face meshes")
    ap.add_argument("--throughput", type=int, default=0, help="also run r3d voxelize over N generated meshes")
    ap.add_argument("--quick", action="store_true", help="3 rounds and --throughput 120")
    ap.add_argument(
        "--work", default=None, help="folder for the generated meshes (default /tmp/r3d-voxbench)"
    )
    args = ap.parse_args()
    result = measure(
        args.inputs,
        args.resolution,
        3 if args.quick else args.repeat,
        args.open3d_python,
        not args.no_trimesh,
        on_mesh=lambda msg: print(msg, flush=True),
        large=not args.no_large,
        throughput_meshes=120 if args.quick and not args.throughput else args.throughput,
        work=args.work,
    )
    write_result(
        Path(args.out), "voxelize", "Voxelisation: r3d vs open3d vs trimesh", result, markdown(result)
    )
    exact = [r["exact"] for r in result["rows"] if "exact" in r] + [
        s["exact"] for s in result.get("soups", []) if "exact" in s
    ]
    if exact:
        print(json.dumps({"identical_to_open3d": f"{sum(exact)}/{len(exact)}"}))
    return 0 if all(exact) else 1


if __name__ == "__main__":
    sys.exit(main())
