"""The README's RL figures: held-out start → end metrics of shipped recipes over several seeds.

Usage:
    python benchmarks/rl_figures.py RUN_DIR... [--motion-eval FILE...] [--out benchmarks/results]

Each RUN_DIR is a finished ``r3d grpo`` run (its ``summary.json`` and ``recipe.yaml``); runs are grouped
by recipe name. ``--motion-eval`` takes ``r3d eval-motion --baseline --json`` reports named
``...-s<seed>-<evaluator>.json``. For every metric it writes mean ± sample std and min–max over seeds,
the per-seed values, the package versions and the CPU's vector instruction set (float results, and so
RL trajectories, depend on it) into ``rl_figures.json`` and ``rl_figures.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import md_table  # noqa: E402

PACKAGES = ("torch", "numpy", "trimesh", "peft", "diffusers", "transformers", "scipy")


def spread(values: list[float]) -> dict[str, Any]:
    """mean, sample std (0 for one value), min, max and the values themselves."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def run_figures(run_dirs: list[Path]) -> dict[str, Any]:
    """recipe → {seeds, metric → {start: spread, end: spread}} from the runs' summary.json."""
    import yaml

    groups: dict[str, list[tuple[int, dict]]] = {}
    for run in run_dirs:
        recipe = yaml.safe_load((run / "recipe.yaml").read_text())
        summary = json.loads((run / "summary.json").read_text())
        groups.setdefault(recipe["run"]["name"], []).append((recipe["run"]["seed"], summary))
    out: dict[str, Any] = {}
    for name, runs in sorted(groups.items()):
        runs.sort(key=lambda r: r[0])
        metrics = runs[0][1]["eval"].keys()
        out[name] = {
            "seeds": [seed for seed, _ in runs],
            "iterations": runs[0][1]["iterations"],
            "metrics": {
                m: {
                    when: spread([s["eval"][m][when] for _, s in runs])
                    for when in ("start", "end")
                    if all(s["eval"][m][when] is not None for _, s in runs)
                }
                for m in metrics
            },
        }
    return out


def motion_figures(files: list[Path]) -> dict[str, Any]:
    """evaluator → metric → {base, adapter, delta: spread over seeds} from eval-motion --baseline JSON."""
    per: dict[str, dict[str, dict[str, list[float]]]] = {}
    for path in files:
        match = re.search(r"-s(\d+)-(.+)\.json$", path.name)
        if not match:
            raise SystemExit(f"{path}: expected a name ending in -s<seed>-<evaluator>.json")
        report = json.loads(path.read_text())
        evaluator = match.group(2)
        for metric, delta in report["paired"].items():
            slot = per.setdefault(evaluator, {}).setdefault(metric, {"base": [], "adapter": [], "delta": []})
            slot["base"].append(report["baseline"]["summary"][metric]["generated"][0])
            slot["adapter"].append(report["summary"][metric]["generated"][0])
            slot["delta"].append(delta[0])
    return {
        ev: {m: {k: spread(v) for k, v in rows.items()} for m, rows in metrics.items()}
        for ev, metrics in per.items()
    }


def environment() -> dict[str, Any]:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except Exception:  # noqa: BLE001 — a package that is not installed is simply not listed
            continue
    return {"versions": versions, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def fmt(s: dict[str, Any], digits: int = 3) -> str:
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def markdown(figures: dict[str, Any]) -> list[str]:
    lines = []
    for name, fig in figures["runs"].items():
        lines += [
            f"### {name} (seeds {', '.join(map(str, fig['seeds']))}, {fig['iterations']} iterations)",
            "",
        ]
        rows = [[m, fmt(v["start"]), fmt(v["end"])] for m, v in fig["metrics"].items() if "end" in v]
        lines += md_table(["held-out metric", "start: mean ± std (min–max)", "end"], rows) + [""]
    for evaluator, metrics in figures.get("motion", {}).items():
        lines += [f"### motion eval, {evaluator}", ""]
        rows = [[m, fmt(v["base"]), fmt(v["adapter"]), fmt(v["delta"])] for m, v in metrics.items()]
        lines += md_table(["metric", "base", "adapter", "Δ (paired)"], rows) + [""]
    env = figures["environment"]
    code = f"r3d {env['code']}; " if env.get("code") else ""
    lines.append(
        f"Measured with {code}{', '.join(f'{k} {v}' for k, v in env['versions'].items())}; "
        f"CPU kernels {env['cpu_capability']}."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--motion-eval", nargs="*", type=Path, default=[])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--code", default="", help="which r3d code ran the runs, e.g. 'commit b93ba02'")
    args = parser.parse_args()
    figures = {
        "runs": run_figures(args.runs),
        "motion": motion_figures(args.motion_eval),
        "environment": {**environment(), "code": args.code},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rl_figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    text = "\n".join(markdown(figures)) + "\n"
    (args.out / "rl_figures.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
