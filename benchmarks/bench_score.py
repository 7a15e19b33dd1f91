"""Scoring speed: meshes per second of mesh loading, CPU rendering and each reward, on real meshes.

Loads every mesh once, then times (median of ``--repeat`` runs, after one warm-up) ``load_mesh``, a
4-view 128² ``render_views`` and every reward that can be built here (``geometry``, ``normal``, and
``semantic`` when its module and weights are present), each called on batches of ``--batch-size``
meshes as ``r3d score`` does. Prints a table and writes ``score.json`` and ``score.md`` into ``--out``.

    python benchmarks/bench_score.py                       # the shared real meshes
    python benchmarks/bench_score.py my_meshes/ --repeat 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from r3d.core.errors import R3DError  # noqa: E402
from r3d.core.io import atomic_write_json, atomic_write_text  # noqa: E402
from r3d.mesh.io import expand_inputs, load_mesh  # noqa: E402
from r3d.mesh.render import render_views  # noqa: E402
from r3d.rewards import available_rewards, build_reward  # noqa: E402

DEFAULT_MESHES = Path(
    os.environ.get("R3D_SHARED_MESHES", Path(__file__).resolve().parents[2] / "shared/data/meshes")
)


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time in seconds of ``repeat`` calls, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", default=[str(DEFAULT_MESHES)], help="mesh files, folders or globs")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--prompt", default="a 3D model", help="prompt passed to prompt-conditioned rewards")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    console = Console()

    paths = expand_inputs(args.inputs)
    meshes = [load_mesh(p) for p in paths]
    n = len(meshes)
    faces = sum(len(m.faces) for m in meshes)
    batches = [meshes[i : i + args.batch_size] for i in range(0, n, args.batch_size)]

    def run_all(reward) -> None:
        for batch in batches:
            reward(batch, [args.prompt] * len(batch))

    jobs: dict[str, Callable[[], object]] = {
        "load_mesh": lambda: [load_mesh(p) for p in paths],
        "render 4×128²": lambda: [render_views(m, n_views=4, size=128) for m in meshes],
    }
    for name in available_rewards():
        try:
            reward = build_reward(name)
        except R3DError as exc:
            console.print(f"[yellow]skipping {name}:[/] {exc}")
            continue
        jobs[f"reward {name}"] = lambda reward=reward: run_all(reward)

    rows = []
    for job, fn in jobs.items():
        seconds = median_time(fn, args.repeat)
        rows.append(
            {"job": job, "seconds": seconds, "meshes_per_s": n / seconds, "ms_per_mesh": 1e3 * seconds / n}
        )

    env = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "meshes": n,
        "faces_total": faces,
        "batch_size": args.batch_size,
        "repeat": args.repeat,
        "inputs": [str(i) for i in args.inputs],
    }
    table = Table(title=f"{n} meshes, {faces} faces in total, median of {args.repeat}", title_justify="left")
    for column in ("job", "meshes/s", "ms/mesh"):
        table.add_column(column, justify="left" if column == "job" else "right")
    md = [
        f"{n} meshes ({faces} faces), {env['cpus']} CPUs, batch {args.batch_size}, median of {args.repeat}",
        "",
        "| job | meshes/s | ms/mesh |",
        "|---|---:|---:|",
    ]
    for r in rows:
        table.add_row(r["job"], f"{r['meshes_per_s']:.1f}", f"{r['ms_per_mesh']:.1f}")
        md.append(f"| {r['job']} | {r['meshes_per_s']:.1f} | {r['ms_per_mesh']:.1f} |")
    console.print(table)
    out = Path(args.out)
    atomic_write_json(out / "score.json", {"env": env, "rows": rows})
    atomic_write_text(out / "score.md", "\n".join(md) + "\n")
    console.print(f"wrote {out / 'score.json'} and {out / 'score.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
