"""Run r3d's whole benchmark suite and write one markdown report (default benchmarks/results.md).

    python benchmarks/run_all.py [--quick] [--out benchmarks/results.md] [--open3d-python PATH]
                                 [--meshes DIR] [--only grpo,scaling,voxelize,score,memory,server,nabla]

Sections (each a function of the bench_*.py scripts next to this file):
  grpo      GRPO iteration time split (sample / decode / reward / train) and loop vs bare passes
  scaling   wall time per iteration with torchrun 1 vs 2 processes (gloo, CPU, same global batch)
  voxelize  r3d vs open3d vs trimesh at 64³ (identical voxel sets checked); r3d voxelize meshes/s
  score     meshes/s per reward (geometry, normal, semantic) through r3d.core.registry
  memory    peak RSS of a GRPO iteration, voxelising the largest mesh and scoring, one process each
  server    reward server: throughput, p50/p95 latency, answers at 1/50/200 raw clients, ± 20 slow
            clients, and its peak memory for the largest body it accepts (loopback)
  nabla     sample efficiency: reward evaluations Nabla and Flow-GRPO need to reach 90 % of the best
            held-out gain on recipes/nabla_tiny.yaml (full: 3 seeds × 2 560 evaluations, ≈ 25 min;
            --quick: 1 seed × 320)
The machine (CPU model, cores, torch version, threads) is collected once, printed in the report's
header and in the caption of every table; every table has a ratio column (×). Timings are medians of
repeated runs with one torch thread unless a table says otherwise; ``--quick`` uses fewer repeats and
iterations (about 2 minutes on 2 cores). The raw numbers go to the same path with a .json suffix. A
section that fails is reported as such (and the exit code is 1); the others still run.

open3d is not an r3d dependency; for the real open3d column, give a Python that has it, e.g.
    apt-get install libusb-1.0-0 && python3 -m venv /tmp/o3d && /tmp/o3d/bin/pip install open3d
    python benchmarks/run_all.py --open3d-python /tmp/o3d/bin/python
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from benchmarks import (  # noqa: E402
    bench_grpo,
    bench_memory,
    bench_nabla_vs_grpo,
    bench_scaling,
    bench_score,
    bench_server,
    bench_voxelize,
)
from benchmarks.common import RECIPE, ROOT, default_meshes, machine_info  # noqa: E402
from r3d.core.io import atomic_write_json, atomic_write_text  # noqa: E402


@dataclass(frozen=True)
class Settings:
    """What one run measures: repeats and iterations per section, inputs."""

    quick: bool
    meshes: Path
    recipe: Path
    open3d_python: str | None

    @property
    def grpo_iterations(self) -> int:
        return 2 if self.quick else 5

    @property
    def scaling_iterations(self) -> int:
        return 2 if self.quick else 8

    @property
    def scaling_configs(self) -> tuple[tuple[int, int], ...]:
        """(processes, threads) rows; --quick leaves out 1 process × 2 threads."""
        return bench_scaling.CONFIGS[:2] if self.quick else bench_scaling.CONFIGS

    @property
    def repeat(self) -> int:
        return 1 if self.quick else 5

    @property
    def nabla_budget(self) -> int:
        return 320 if self.quick else 2560

    @property
    def nabla_seeds(self) -> tuple[int, ...]:
        return (0,) if self.quick else (0, 1, 2)

    @property
    def voxelize_meshes(self) -> int:
        """Meshes generated for `r3d voxelize`'s throughput (rotated and scaled shared meshes)."""
        return 120 if self.quick else 1000


Note = Callable[[str], None]


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    about: str
    run: Callable[[Settings, Note], dict[str, Any]]
    markdown: Callable[[dict[str, Any], dict[str, Any] | None], list[str]]


SECTIONS: tuple[Section, ...] = (
    Section(
        "grpo",
        "GRPO iteration time split and loop overhead",
        "Seconds per iteration of each phase of `r3d grpo` on the tiny recipe, in process, and r3d's "
        "loop time as a multiple of the bare network passes it performs (same count and batch shapes, "
        "called directly on the LoRA-wrapped network; 1.00× = no overhead).",
        lambda s, note: bench_grpo.measure(s.recipe, s.grpo_iterations),
        bench_grpo.markdown,
    ),
    Section(
        "scaling",
        "Scaling 1 → 2 processes (torchrun, gloo, CPU)",
        "Wall time per iteration of the tiny recipe under `torchrun --nproc_per_node P` at the same "
        "global batch, and the speed-up over 1 process × 1 thread. On a 2-core box at most 2× is "
        "possible; a 1 process × 2 threads row (full run only) uses the same two cores through torch's "
        "intra-op threads instead. "
        "The reward column checks that the runs compute the same thing.",
        lambda s, note: bench_scaling.measure(s.recipe, s.scaling_iterations, s.scaling_configs, on_run=note),
        bench_scaling.markdown,
    ),
    Section(
        "voxelize",
        "Voxelisation at 64³: r3d vs open3d vs trimesh, and `r3d voxelize` throughput",
        "TRELLIS-normalised shared meshes and 4 unseen 60–100 k-face ones voxelised by r3d's compiled "
        "voxeliser (numba, one thread), by open3d's `create_from_triangle_mesh_within_bounds` (TRELLIS's "
        "reference) and by trimesh's `voxelized`; r3d's voxel set must equal open3d's (also on random "
        "triangle soups), trimesh's differs. Then `r3d voxelize` over generated meshes with 1 and 2 workers.",
        lambda s, note: bench_voxelize.measure(
            [s.meshes],
            64,
            s.repeat,
            s.open3d_python,
            on_mesh=lambda m: note(f"voxelize {m}"),
            throughput_meshes=s.voxelize_meshes,
        ),
        bench_voxelize.markdown,
    ),
    Section(
        "score",
        "Mesh scoring throughput",
        "Meshes per second of each reward built through `r3d.core.registry`, on the shared meshes "
        "already in memory, batched as `r3d score` does; loading the files is the reference row.",
        lambda s, note: bench_score.measure([s.meshes], repeat=s.repeat, on_job=lambda j: note(f"score {j}")),
        bench_score.markdown,
    ),
    Section(
        "memory",
        "Peak memory",
        "Peak resident memory of each workload, each in a fresh process so that peaks do not mix.",
        lambda s, note: bench_memory.measure(s.recipe, s.meshes, on_probe=lambda p: note(f"memory {p}")),
        bench_memory.markdown,
    ),
    Section(
        "server",
        "Reward server under load",
        "`python -m r3d.rewards.server` (defaults) on loopback: requests answered, throughput and "
        "latency at 1, 50 and 200 concurrent raw clients that never retry, without and with 20 "
        "slow-loris clients holding connections; then the server's peak memory for one body of "
        "exactly its size limit (--quick: 32 MiB, full: the default 256 MiB).",
        lambda s, note: bench_server.measure(s.quick, on_run=note),
        bench_server.markdown,
    ),
    Section(
        "nabla",
        "Sample efficiency: Nabla vs Flow-GRPO",
        "Reward evaluations each algorithm needs before its held-out reward reaches start + 0.9·(best − "
        "start), best being the highest held-out reward either reached in that seed (`recipes/nabla_tiny.yaml`,"
        " silhouette reward, same budget; Flow-GRPO with the README's settings), with the final and best "
        "reward and prior preservation. Ratio column: GRPO / Nabla evaluations (≥: GRPO never reached it).",
        lambda s, note: bench_nabla_vs_grpo.measure(
            budget=s.nabla_budget,
            seeds=s.nabla_seeds,
            command=f"bench_nabla_vs_grpo.measure(budget={s.nabla_budget}, seeds={list(s.nabla_seeds)})",
        ),
        lambda result, info: bench_nabla_vs_grpo.markdown(result, title=False).splitlines(),
    ),
)
SECTION_KEYS = tuple(s.key for s in SECTIONS)


def header(info: dict[str, Any], command: str, seconds: float, quick: bool) -> list[str]:
    """The report's opening lines: the machine in full, the command, how busy the box was."""
    mem = f", {info['memory_gib']:.1f} GiB RAM" if info.get("memory_gib") else ""
    load = info.get("load_avg_1min")
    busy = ""
    if load is not None:
        busy = f" Load average when the run started: {load:.2f} on {info['usable_cores']} cores"
        busy += (
            " — other processes were running, so timings are noisy."
            if load >= 0.5 * info["usable_cores"]
            else "."
        )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick: fewer repeats and iterations" if quick else "full"
    return [
        "# r3d benchmarks",
        "",
        f"**Machine:** {info['cpu']} ({info['arch']}), {info['usable_cores']} usable cores "
        f"({info['logical_cores']} logical){mem}, {info['os']}, Python {info['python']}, "
        f"torch {info['torch']}, {info['torch_threads']} torch thread"
        f"{'s' if info['torch_threads'] != 1 else ''} unless a table says otherwise.{busy}",
        "",
        f"Generated by `{command}` ({mode}) on {stamp} in {seconds:.0f} s. Timings are medians of "
        "repeated runs; every table's caption names the machine and its settings, and columns marked "
        "(×) are ratios against the row or tool their header names.",
    ]


def render_report(
    results: dict[str, dict[str, Any]], info: dict[str, Any], command: str, seconds: float, quick: bool
) -> str:
    """The markdown report of ``results`` (section key → result dict, or ``{"error": message}``)."""
    lines = header(info, command, seconds, quick)
    for n, section in enumerate((s for s in SECTIONS if s.key in results), start=1):
        result = results[section.key]
        lines += ["", f"## {n}. {section.title}", "", section.about, ""]
        if "error" in result:
            lines.append(f"**Not measured** — {result['error']}")
        else:
            lines += section.markdown(result, info)
    return "\n".join(lines) + "\n"


def run_sections(settings: Settings, keys: tuple[str, ...], console: Console) -> dict[str, dict[str, Any]]:
    """Run the chosen sections in order under a progress bar; a failure is recorded, not raised."""
    results: dict[str, dict[str, Any]] = {}
    chosen = [s for s in SECTIONS if s.key in keys]
    columns = (
        TextColumn("[bold]bench[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("sections", total=len(chosen), info="")
        for section in chosen:
            bar.update(task, info=section.key)
            tic = time.perf_counter()
            try:
                results[section.key] = section.run(settings, lambda msg: bar.update(task, info=msg))
            except Exception as exc:  # one broken section must not lose the others' measurements
                results[section.key] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
                bar.console.print(f"[red]{section.key} failed:[/] {results[section.key]['error']}")
            results[section.key]["section_s"] = time.perf_counter() - tic
            bar.advance(task)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer repeats and iterations (about 2 minutes)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.md", help="markdown report")
    ap.add_argument("--meshes", type=Path, default=None, help="mesh folder (default: the shared meshes)")
    ap.add_argument("--recipe", type=Path, default=RECIPE, help="GRPO recipe (default: tiny_mesh.yaml)")
    ap.add_argument(
        "--open3d-python",
        default=os.environ.get("R3D_OPEN3D_PYTHON"),
        help="a Python that can import open3d, when this one cannot (default: $R3D_OPEN3D_PYTHON)",
    )
    ap.add_argument("--only", default=",".join(SECTION_KEYS), help="comma-separated sections to run")
    args = ap.parse_args(argv)
    keys = tuple(k.strip() for k in args.only.split(",") if k.strip())
    unknown = [k for k in keys if k not in SECTION_KEYS]
    if unknown or not keys:
        ap.error(
            f"--only: unknown section(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SECTION_KEYS)}"
        )
    meshes = args.meshes or default_meshes()
    if not meshes.is_dir():
        ap.error(f"mesh folder not found: {meshes} (give --meshes DIR or set R3D_SHARED_MESHES)")
    if not args.recipe.is_file():
        ap.error(f"recipe not found: {args.recipe}")
    torch.set_num_threads(1)
    info = machine_info()
    console = Console()
    console.print(f"[bold]machine:[/] {info['cpu']}, {info['usable_cores']} cores, torch {info['torch']}")
    settings = Settings(args.quick, meshes, args.recipe, args.open3d_python)
    tic = time.perf_counter()
    results = run_sections(settings, keys, console)
    seconds = time.perf_counter() - tic
    command = "python benchmarks/run_all.py" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv)
    )
    report = render_report(results, info, command, seconds, args.quick)
    atomic_write_text(args.out, report)
    raw = {"machine": info, "command": command, "quick": args.quick, "seconds": seconds, "sections": results}
    atomic_write_json(args.out.with_suffix(".json"), raw)
    console.print(f"wrote {args.out} and {args.out.with_suffix('.json')} in {seconds:.0f} s")
    failed = [k for k, r in results.items() if "error" in r]
    if failed:
        console.print(f"[red]failed sections:[/] {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
