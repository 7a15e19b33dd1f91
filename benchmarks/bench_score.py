"""Scoring speed: meshes per second of mesh loading, CPU rendering and each reward, on real meshes.

Loads every mesh once, then times (median of ``--repeat`` runs, after one warm-up) ``load_mesh``, a
4-view 128² ``render_views`` and each reward built through ``r3d.core.registry`` (default
``geometry``, ``normal`` and ``semantic``), each called on batches of ``--batch-size`` meshes as
``r3d score`` does. Every row also gives its time as a multiple of loading the same files. Prints a
table and writes ``score.json`` and ``score.md`` into ``--out``.

A second table compares the ``geometry`` and ``normal`` rewards with their previous implementations
(kept as references in ``tests/test_reward_speed_equivalence.py``) side by side in this process, on the
shared meshes and on meshes sampled from the tiny_mesh policy: old and new alternate, each timed
``max(3, --repeat)`` times, the medians compared (meshes/s and the ratio); the row also says whether
the values are identical.

    python benchmarks/bench_score.py                       # the shared real meshes
    python benchmarks/bench_score.py my_meshes/ --repeat 5 --rewards geometry
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import RECIPE, ROOT, caption, default_meshes, md_table, ratio, timed, write_result  # noqa: E402
from r3d.core.errors import R3DError  # noqa: E402
from r3d.core.registry import REWARDS as REGISTERED  # noqa: E402
from r3d.core.registry import build_reward  # noqa: E402
from r3d.mesh.io import expand_inputs, load_mesh  # noqa: E402
from r3d.mesh.render import render_views  # noqa: E402

REWARDS = ("geometry", "normal", "semantic")
REFERENCE = "load_mesh"
COMPARED = ("geometry", "normal")


def policy_meshes(n: int = 64, seed: int = 0) -> list[Any]:
    """``n`` meshes from the tiny_mesh recipe's policy (its prompts and sampling steps, ODE sampler)."""
    import torch

    from r3d.core.config import GRPORecipe
    from r3d.core.recipe import load_recipe
    from r3d.models.tiny_shapes import load_tiny_shapes

    recipe = load_recipe(RECIPE, GRPORecipe)
    prompts = [recipe.prompts.train[i % len(recipe.prompts.train)] for i in range(n)]
    policy = load_tiny_shapes()
    latents = policy.sample(prompts, recipe.sampler.num_steps, torch.Generator().manual_seed(seed))
    return policy.decode(latents)


def _previous(name: str) -> Callable[[Sequence[Any]], list[float]]:
    """The reward ``name``'s previous implementation (headline per mesh), from the equivalence tests."""
    from tests import test_reward_speed_equivalence as ref

    if name == "geometry":
        weights = build_reward("geometry").weights
        total = sum(weights.values())

        def geometry(meshes: Sequence[Any]) -> list[float]:
            rows = [ref.ref_measure(m) if m is not None else None for m in meshes]
            return [0.0 if r is None else sum(weights[k] * r[k] for k in weights) / total for r in rows]

        return geometry
    cameras = build_reward("normal").cameras
    return lambda meshes: [ref.ref_normal(m, cameras) for m in meshes]


def compare(
    sets: dict[str, Sequence[Any]],
    repeat: int = 3,
    batch_size: int = 16,
    on_job: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Previous vs current implementation of each :data:`COMPARED` reward on each named mesh set:
    median seconds of ``max(3, repeat)`` alternating runs, meshes/s, speed-up (ratio of the medians)
    and identical values."""
    rows = []
    for name in COMPARED:
        current, previous = build_reward(name), _previous(name)
        for label, meshes in sets.items():
            batches = [list(meshes[i : i + batch_size]) for i in range(0, len(meshes), batch_size)]
            new_values = [float(v) for b in batches for v in current(b)[name]]
            old_values = [float(np.float32(v)) for b in batches for v in previous(b)]
            timings: dict[str, list[float]] = {"previous": [], "current": []}
            for _ in range(max(3, repeat)):
                for key, fn in (("previous", previous), ("current", current)):
                    tic = time.perf_counter()
                    for b in batches:
                        fn(b)
                    timings[key].append(time.perf_counter() - tic)
            old_s, new_s = statistics.median(timings["previous"]), statistics.median(timings["current"])
            n = len(meshes)
            rows.append(
                {
                    "reward": name,
                    "inputs": label,
                    "meshes": n,
                    "previous_s": old_s,
                    "current_s": new_s,
                    "previous_per_s": n / old_s,
                    "current_per_s": n / new_s,
                    "speedup": old_s / new_s,
                    "identical": new_values == old_values,
                }
            )
            if on_job is not None:
                on_job(f"{name} vs previous on {label}")
    return rows


def measure(
    inputs: Sequence[str | os.PathLike] = (),
    rewards: Sequence[str] = REWARDS,
    repeat: int = 3,
    batch_size: int = 16,
    prompt: str = "a cube",
    on_job: Callable[[str], None] | None = None,
    n_policy: int = 64,
) -> dict[str, Any]:
    """Median seconds per job over all meshes of ``inputs`` (default: the shared meshes).

    Jobs: ``load_mesh`` (the reference), ``render 4×128²`` and ``reward NAME`` per reward; a reward
    that cannot be built here (missing weights) is listed under ``skipped`` with the reason, an
    unregistered name raises R3DError. With ``n_policy`` > 0, ``speedup`` holds :func:`compare` on
    these meshes and on ``n_policy`` tiny_mesh policy meshes (empty, with ``speedup_skipped``, when the
    reference implementations cannot be imported).
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
    speedup, speedup_skipped = [], None
    if n_policy > 0:
        try:
            sets = {
                "shared meshes" if not inputs else "inputs": meshes,
                "tiny_mesh policy": policy_meshes(n_policy),
            }
            speedup = compare(sets, repeat, batch_size, on_job)
        except ImportError as exc:  # an installed package without the tests folder
            speedup_skipped = f"previous implementations not importable ({exc})"
    return {
        "speedup": speedup,
        "speedup_skipped": speedup_skipped,
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
    lines = [caption(info, note), "", *table]
    if result.get("speedup"):
        speed = [
            [
                r["reward"],
                f"{r['inputs']} ({r['meshes']})",
                f"{r['previous_per_s']:.1f}",
                f"{r['current_per_s']:.1f}",
                f"{r['speedup']:.2f}×",
                "yes" if r["identical"] else "NO",
            ]
            for r in result["speedup"]
        ]
        header = [
            "reward",
            "meshes",
            "previous meshes / s",
            "current meshes / s",
            "speed-up",
            "identical values",
        ]
        lines += [
            "",
            "Against the previous implementations, side by side in this process (alternating, median of "
            f"{max(3, result['repeat'])} runs each, batches of {result['batch_size']}):",
            "",
            *md_table(header, speed),
        ]
    elif result.get("speedup_skipped"):
        lines += ["", f"Speed-up against the previous implementations skipped: {result['speedup_skipped']}."]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", help="mesh files, folders or globs (default: the shared meshes)")
    ap.add_argument("--rewards", default=",".join(REWARDS), help="comma-separated reward names")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--prompt", default="a cube", help="prompt passed to prompt-conditioned rewards")
    ap.add_argument(
        "--policy-meshes",
        type=int,
        default=64,
        help="tiny_mesh policy meshes for the speed-up table (0: none)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    names = [n.strip() for n in args.rewards.split(",") if n.strip()]
    try:
        result = measure(
            args.inputs, names, args.repeat, args.batch_size, args.prompt, n_policy=args.policy_meshes
        )
    except R3DError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_result(Path(args.out), "score", "Mesh scoring throughput", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
