"""Scoring speed: meshes per second of mesh loading, CPU rendering and each reward, on real meshes.

Loads every mesh once, then times (median of ``--repeat`` runs, after one warm-up) ``load_mesh``, a
4-view 128² ``render_views`` and each reward built through ``r3d.core.registry`` (default
``geometry``, ``normal`` and ``semantic``), each called on batches of ``--batch-size`` meshes as
``r3d score`` does. Every row also gives its time as a multiple of loading the same files. Prints a
table and writes ``score.json`` and ``score.md`` into ``--out``.

    python benchmarks/bench_score.py                       # the shared real meshes
    python benchmarks/bench_score.py my_meshes/ --repeat 5 --rewards geometry
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, caption, default_meshes, md_table, ratio, timed  # noqa: E402
from r3d.core.errors import R3DError  # noqa: E402
from r3d.core.io import atomic_write_json, atomic_write_text  # noqa: E402
from r3d.core.registry import REWARDS as REGISTERED  # noqa: E402
from r3d.core.registry import build_reward  # noqa: E402
from r3d.mesh.io import expand_inputs, load_mesh  # noqa: E402
from r3d.mesh.render import render_views  # noqa: E402

REWARDS = ("geometry", "normal", "semantic")
REFERENCE = "load_mesh"


def measure(
    inputs: Sequence[str | os.PathLike] = (),
    rewards: Sequence[str] = REWARDS,
    repeat: int = 3,
    batch_size: int = 16,
    prompt: str = "a cube",
    on_job: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Median seconds per job over all meshes of ``inputs`` (default: the shared meshes).

    Jobs: ``load_mesh`` (the reference), ``render 4×128²`` and ``reward NAME`` per reward; a reward
    that cannot be built here (missing weights) is listed under ``skipped`` with the reason, an
    unregistered name raises R3DError.
    """
    unknown = [n for n in rewards if n not in REGISTERED and ":" not in n]
    if unknown:
        raise R3DError(f"unknown reward(s) {', '.join(unknown)}; known: {', '.join(sorted(REGISTERED))}")
    paths = expand_inputs([str(p) for p in inputs] or [str(default_meshes())])
    meshes = [load_mesh(p) for p in paths]
    batches = [meshes[i : i + batch_size] for i in range(0, len(meshes), batch_size)]
    jobs: dict[str, Callable[[], object]] = {
        REFERENCE: lambda: [load_mesh(p) for p in paths],
        "render 4×128²": lambda: [render_views(m, n_views=4, size=128) for m in meshes],
    }
    skipped = {}
    for name in rewards:
        try:
            reward = build_reward(name)
        except R3DError as exc:
            skipped[name] = str(exc)
            continue
        jobs[f"reward {name}"] = lambda reward=reward: [reward(b, [prompt] * len(b)) for b in batches]
    rows = []
    for job, fn in jobs.items():
        _, seconds = timed(fn, repeat, warmup=1)
        rows.append({"job": job, "seconds": seconds, "meshes_per_s": len(meshes) / seconds})
        if on_job is not None:
            on_job(job)
    return {
        "meshes": len(meshes),
        "faces_total": sum(len(m.faces) for m in meshes),
        "batch_size": batch_size,
        "repeat": repeat,
        "prompt": prompt,
        "rows": rows,
        "skipped": skipped,
    }


def markdown(result: dict[str, Any], info: dict[str, Any] | None = None) -> list[str]:
    """One row per job: meshes/s, ms/mesh, and time relative to loading the same files."""
    ref = next(r["seconds"] for r in result["rows"] if r["job"] == REFERENCE)
    n = result["meshes"]
    rows = [
        [r["job"], f"{r['meshes_per_s']:.1f}", f"{1e3 * r['seconds'] / n:.1f}", ratio(r["seconds"], ref)]
        for r in result["rows"]
    ]
    rows += [[f"reward {k}", f"skipped: {v}", "–", "–"] for k, v in result["skipped"].items()]
    note = (
        f"{n} meshes ({result['faces_total']} faces), batches of {result['batch_size']}, prompt "
        f"'{result['prompt']}', median of {result['repeat']} runs after 1 warm-up, one process."
    )
    table = md_table(["job", "meshes / s", "ms / mesh", f"time vs {REFERENCE} (×)"], rows)
    return [caption(info, note), "", *table]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", help="mesh files, folders or globs (default: the shared meshes)")
    ap.add_argument("--rewards", default=",".join(REWARDS), help="comma-separated reward names")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--prompt", default="a cube", help="prompt passed to prompt-conditioned rewards")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    names = [n.strip() for n in args.rewards.split(",") if n.strip()]
    try:
        result = measure(args.inputs, names, args.repeat, args.batch_size, args.prompt)
    except R3DError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = ["# Mesh scoring throughput", "", *markdown(result), ""]
    atomic_write_json(Path(args.out) / "score.json", result)
    atomic_write_text(Path(args.out) / "score.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
