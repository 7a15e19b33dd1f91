"""Scaling of ``r3d grpo`` from 1 to 2 processes (torchrun, gloo, CPU) at the same global batch.

Usage: python benchmarks/bench_scaling.py [RECIPE] [--iterations N] [--set key=value ...]

Each configuration runs ``python -m torch.distributed.run --standalone --nproc_per_node P -m r3d grpo
RECIPE`` (that is ``torchrun``) with ``run.threads=T`` and OMP_NUM_THREADS=T per process, for N + 2
iterations; the first (warm-up) and the last (it also runs the final evaluation) are dropped and the
median of the other N ``time/iteration_s`` of rank 0 is the wall time per iteration. The global batch
(prompts_per_iteration × group_size) is the recipe's in every configuration; each process samples,
scores and trains its share. Default configurations: 1 process × 1 thread (the reference), 2 processes
× 1 thread, and 1 process × 2 threads (the same two cores used by intra-op threads instead).
Writes scaling.json and scaling.md into --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RECIPE, ROOT, caption, md_table, ratio, write_result  # noqa: E402
from r3d.core.config import GRPORecipe  # noqa: E402
from r3d.core.io import read_jsonl  # noqa: E402
from r3d.core.recipe import load_recipe  # noqa: E402

#: (processes, torch threads per process); the first is the reference of the speed-up.
CONFIGS: tuple[tuple[int, int], ...] = ((1, 1), (2, 1), (1, 2))


def run_config(
    recipe: str | Path, processes: int, threads: int, iterations: int, run_dir: Path, overrides: Sequence[str]
) -> dict[str, Any]:
    """Run the recipe under torchrun with ``processes`` × ``threads``; per-iteration seconds and rewards."""
    sets = [
        *overrides,
        f"train.iterations={iterations + 2}",
        f"run.threads={threads}",
        "eval.every=0",
        "checkpoint.every=1000000",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd += ["-m", "r3d", "grpo", str(recipe), "--out", str(run_dir)]
    cmd += [arg for s in sets for arg in ("--set", s)]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "R3D_DIST_BACKEND": "gloo",
        "CUDA_VISIBLE_DEVICES": "",
    }
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"torchrun with {processes} process(es) failed: {' | '.join(tail)}")
    records = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "time/iteration_s" in r]
    timed = records[1:-1]  # drop the warm-up iteration and the last one (it runs the final evaluation)
    return {
        "processes": processes,
        "threads": threads,
        "iteration_s": statistics.median(r["time/iteration_s"] for r in timed),
        "phases_s": {
            k.removeprefix("time/"): statistics.median(r[k] for r in timed)
            for k in ("time/sample_s", "time/decode_s", "time/reward_s", "time/train_s")
        },
        "rewards": [r["reward"] for r in records],
        "command_wall_s": wall,
    }


def measure(
    recipe: str | Path = RECIPE,
    iterations: int = 6,
    configs: Sequence[tuple[int, int]] = CONFIGS,
    overrides: Sequence[str] = (),
    on_run: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every (processes, threads) configuration; speed-ups relative to the first."""
    cfg = load_recipe(recipe, GRPORecipe, list(overrides))
    global_batch = cfg.train.prompts_per_iteration * cfg.train.group_size
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for p, t in configs:
            if on_run is not None:
                on_run(f"torchrun {p} process(es) × {t} thread(s)")
            runs.append(run_config(recipe, p, t, iterations, Path(tmp) / f"p{p}t{t}", overrides))
    ref = runs[0]
    for r in runs:
        r["speedup"] = ref["iteration_s"] / r["iteration_s"]
        r["efficiency"] = r["speedup"] / (r["processes"] * r["threads"] / (ref["processes"] * ref["threads"]))
        r["first_reward_equal"] = r["rewards"][0] == ref["rewards"][0]
        r["max_reward_diff"] = max(abs(a - b) for a, b in zip(r["rewards"], ref["rewards"], strict=True))
    return {"recipe": str(recipe), "iterations": iterations, "global_batch": global_batch, "runs": runs}


def markdown(result: dict[str, Any], info: dict[str, Any] | None = None) -> list[str]:
    """One row per configuration: s/iteration, samples/s, speed-up and efficiency vs the first row."""
    ref = result["runs"][0]
    rows = []
    for r in result["runs"]:
        ph = r["phases_s"]
        rows.append(
            [
                f"{r['processes']} × {r['threads']}",
                f"{r['iteration_s']:.3f}",
                f"{result['global_batch'] / r['iteration_s']:.1f}",
                " / ".join(f"{ph[k]:.2f}" for k in ("sample_s", "decode_s", "reward_s", "train_s")),
                ratio(ref["iteration_s"], r["iteration_s"]),
                f"{r['efficiency']:.0%}",
                "yes" if r["first_reward_equal"] else "NO",
                f"{r['max_reward_diff']:.1e}",
                f"{r['command_wall_s']:.1f}",
            ]
        )
    note = (
        f"`torchrun` (gloo) on recipe `{Path(result['recipe']).name}`, global batch {result['global_batch']} "
        f"samples in every row, median of {result['iterations']} iterations (warm-up and final-evaluation "
        "iterations dropped). Rows state processes × torch threads per process; efficiency = speed-up / "
        "(cores used relative to the first row). Same-seed runs should give bit-identical rewards in the "
        "first iteration; later iterations may differ slightly (gradients summed in another order)."
    )
    table = md_table(
        [
            "processes × threads",
            "s / iteration",
            "samples / s",
            "sample / decode / reward / train s (rank 0)",
            "speed-up vs first row (×)",
            "efficiency (%)",
            "iteration-1 rewards = first row",
            "max abs. Δ mean reward vs first row",
            "command wall s (incl. start-up, evals)",
        ],
        rows,
        align="lrrrrrlrr",
    )
    return [caption(info, note, threads="torch threads per process as in each row"), "", *table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=str(RECIPE))
    parser.add_argument("--iterations", type=int, default=6, help="timed iterations per configuration")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results"), help="folder for scaling.json and scaling.md"
    )
    args = parser.parse_args()
    result = measure(args.recipe, args.iterations, overrides=args.overrides)
    out = Path(args.out)
    write_result(out, "scaling", "GRPO scaling, 1 → 2 processes", result, markdown(result))


if __name__ == "__main__":
    main()
