"""Peak memory (RSS) of one GRPO iteration, of voxelising the largest mesh, and of scoring meshes.

Usage: python benchmarks/bench_memory.py [--recipe RECIPE] [--meshes DIR]

Each workload runs in its own fresh Python process (``python -m benchmarks.bench_memory --probe
NAME``) so that peaks do not mix. The probe records its resident set size once its imports and setup
are done (model, rewards or nothing loaded, as the workload needs) and its peak RSS after the work
(``VmHWM``; ``ru_maxrss`` would carry the parent's peak across exec), and prints both as one JSON line; the table
gives the peak as a multiple of the RSS before the work. One torch thread per probe.
Writes memory.json and memory.md into --out (default benchmarks/results).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    RECIPE,
    ROOT,
    caption,
    current_rss_mib,
    default_meshes,
    md_table,
    peak_rss_mib,
    ratio,
    write_result,
)

PROBES = ("grpo", "voxelize", "score")
SCORE_REWARDS = ("geometry", "normal", "semantic")


def _probe_grpo(recipe: Path, meshes: Path) -> tuple[float, str]:
    from r3d.commands.runner import make_trainer
    from r3d.core.config import GRPORecipe
    from r3d.core.recipe import load_recipe

    cfg = load_recipe(recipe, GRPORecipe, ["eval.every=0"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(cfg, Path(tmp) / "run", log=lambda _: None)
        before = current_rss_mib()
        trainer.run_iteration()
    n = cfg.train.prompts_per_iteration * cfg.train.group_size
    return before, f"1 iteration of `{recipe.name}` ({n} samples), model and rewards loaded before"


def _probe_voxelize(recipe: Path, meshes: Path) -> tuple[float, str]:
    from r3d.mesh.voxelize import collect_inputs, load_mesh, normalize_trellis, voxelize_triangles

    path = max(collect_inputs([meshes]), key=lambda p: p.stat().st_size)
    before = current_rss_mib()
    v, f, b = load_mesh(path)
    idx = voxelize_triangles(normalize_trellis(v, b), f, 64)
    return before, f"load + voxelise `{path.name}` ({len(f)} faces → {len(idx)} voxels at 64³)"


def _probe_score(recipe: Path, meshes: Path) -> tuple[float, str]:
    from r3d.commands.score import score_files
    from r3d.core.registry import build_reward
    from r3d.mesh.io import expand_inputs

    rewards = [build_reward(name) for name in SCORE_REWARDS]
    paths = expand_inputs([str(meshes)])
    before = current_rss_mib()
    records = score_files(paths, rewards, prompt="a cube", batch_size=16)
    ok = sum(r.ok for r in records)
    return before, f"`r3d score` path: {ok}/{len(paths)} meshes × {', '.join(SCORE_REWARDS)}, batches of 16"


_PROBES: dict[str, Callable[[Path, Path], tuple[float, str]]] = {
    "grpo": _probe_grpo,
    "voxelize": _probe_voxelize,
    "score": _probe_score,
}


def probe(name: str, recipe: Path, meshes: Path) -> dict[str, Any]:
    """Run workload ``name`` in this process: RSS before the work, peak RSS after it (MiB)."""
    import torch

    torch.set_num_threads(1)
    before, detail = _PROBES[name](recipe, meshes)
    return {"probe": name, "detail": detail, "rss_before_mib": before, "peak_rss_mib": peak_rss_mib()}


def measure(
    recipe: str | Path = RECIPE,
    meshes: str | Path | None = None,
    probes: Sequence[str] = PROBES,
    on_probe: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run each probe in a fresh subprocess and collect its JSON line."""
    meshes = Path(meshes) if meshes else default_meshes()
    rows = []
    for name in probes:
        cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--probe", name]
        cmd += ["--recipe", str(Path(recipe).resolve()), "--meshes", str(Path(meshes).resolve())]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"memory probe {name} failed: {tail[0]}")
        rows.append(json.loads(lines[-1]))
        if on_probe is not None:
            on_probe(name)
    return {"rows": rows}


def markdown(result: dict[str, Any], info: dict[str, Any] | None = None) -> list[str]:
    """One row per workload: RSS before the work, peak RSS, the increase and peak / before."""
    rows = [
        [
            r["probe"],
            r["detail"],
            f"{r['rss_before_mib']:.0f}",
            f"{r['peak_rss_mib']:.0f}",
            f"{r['peak_rss_mib'] - r['rss_before_mib']:.0f}",
            ratio(r["peak_rss_mib"], r["rss_before_mib"]),
        ]
        for r in result["rows"]
    ]
    note = "Each workload in its own fresh process (peak = the process's VmHWM); 1 MiB = 2²⁰ bytes."
    table = md_table(
        [
            "workload",
            "what",
            "RSS before work MiB",
            "peak RSS MiB",
            "added by the work MiB",
            "peak / before (×)",
        ],
        rows,
        align="llrrrr",
    )
    return [caption(info, note, threads=1), "", *table]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=RECIPE)
    ap.add_argument("--meshes", type=Path, default=None, help="mesh folder (default: the shared meshes)")
    ap.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results"), help="folder for memory.json and memory.md"
    )
    ap.add_argument("--probe", choices=PROBES, help="run one workload in this process and print JSON")
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.recipe, args.meshes or default_meshes())))
        return 0

    result = measure(args.recipe, args.meshes)
    out = Path(args.out)
    write_result(out, "memory", "Peak memory", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
