"""Base vs trained: the held-out reward and gold measures of finished (or running) GRPO runs.

For each run folder, the recipe in ``recipe.yaml`` is rebuilt (policy, rewards, gold measures), the
held-out evaluation (the recipe's eval prompts, ``eval.seed`` noise, ODE sampling) is run once with the
base model and once with the adapter of ``checkpoint/`` (or a folder given with ``--checkpoint``), and
every ``eval/*`` metric is printed per run and as mean ± sample std over the runs of each recipe.

    OMP_NUM_THREADS=1 python benchmarks/gold_of_runs.py /tmp/seeds/runs/tiny_mesh-s* --out gold.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import machine_line, md_table  # noqa: E402
from r3d.commands.runner import build_gold_set, build_rewards, policy_options, trainer_class  # noqa: E402
from r3d.core.checkpoint import load_adapter_weights, load_state, resolve_checkpoint  # noqa: E402
from r3d.core.config import GRPORecipe  # noqa: E402
from r3d.core.io import atomic_write_json  # noqa: E402
from r3d.core.recipe import read_yaml, validate  # noqa: E402
from r3d.core.registry import build_policy  # noqa: E402


def evaluate_run(run: Path, checkpoint: str = "checkpoint", gold: list[str] | None = None) -> dict[str, Any]:
    """``{"recipe", "iteration", "base": {metric: value}, "trained": {...}}`` of one run folder;
    ``gold`` replaces the recipe's gold measures (e.g. for runs made before a recipe named them)."""
    data = read_yaml(run / "recipe.yaml")
    if gold is not None:
        data.setdefault("eval", {})["gold"] = gold
    cfg = validate(data, GRPORecipe, source=str(run / "recipe.yaml"))
    ckpt = resolve_checkpoint(run / checkpoint)
    policy = build_policy(cfg.model.name, **policy_options(cfg))
    rewards = build_rewards(cfg)
    with tempfile.TemporaryDirectory() as scratch:  # the trainer's previews land here, not in the run
        trainer = trainer_class(cfg)(
            cfg, policy, rewards, Path(scratch), log=lambda _: None, gold=build_gold_set(cfg, rewards)
        )
        base = trainer.evaluate("base")  # a fresh LoRA adapter is zero: the base model
        load_adapter_weights(trainer.peft, ckpt)
        if trainer.ema is not None and "ema" in (state := load_state(ckpt)):
            trainer.ema.load_state_dict(state["ema"])
        trained = trainer.evaluate("trained")
    return {
        "recipe": cfg.run.name,
        "run": str(run),
        "iteration": int(load_state(ckpt)["iteration"]),
        "base": base,
        "trained": trained,
    }


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def report(results: list[dict[str, Any]]) -> list[str]:
    """Markdown: one table per recipe, metric rows, base → trained as mean ± std over its runs."""
    lines = [f"Machine: {machine_line()}", ""]
    for recipe in sorted({r["recipe"] for r in results}):
        runs = [r for r in results if r["recipe"] == recipe]
        keys = [k for k in runs[0]["base"] if not k.endswith("/se")]
        rows = []
        for key in keys:
            base = [r["base"][key] for r in runs]
            end = [r["trained"][key] for r in runs]
            delta = [b - a for a, b in zip(base, end, strict=True)]
            rows.append([key.removeprefix("eval/"), _spread(base), _spread(end), _spread(delta)])
        its = ", ".join(str(r["iteration"]) for r in runs)
        lines += [f"### {recipe}: {len(runs)} run(s), checkpoints at iterations {its}", ""]
        lines += md_table(["metric", "base", "trained", "trained − base"], rows, "lrrr")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with recipe.yaml, checkpoint/)")
    parser.add_argument("--checkpoint", default="checkpoint", help="checkpoint folder inside each run")
    parser.add_argument("--out", type=Path, help="write the per-run figures as JSON here")
    parser.add_argument("--gold", help="comma-separated gold measures instead of the recipe's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    gold = args.gold.split(",") if args.gold else None
    results = [evaluate_run(run, args.checkpoint, gold) for run in args.runs]
    if args.out is not None:
        atomic_write_json(args.out, {"machine": machine_line(), "runs": results})
    print("\n".join(report(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
