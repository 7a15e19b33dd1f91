"""Nabla (reward-gradient alignment) against Flow-GRPO on the same 2D reward and the same budget.

Usage: python benchmarks/bench_nabla_vs_grpo.py [RECIPE] [--budget N] [--set key=value ...]
                                                 [--grpo-set key=value ...] [--nabla-set key=value ...]

Both algorithms start from the same tiny-shapes model and recipe (default recipes/nabla_tiny.yaml: the
silhouette reward on rendered views) and run until they have used ``--budget`` reward evaluations — one
evaluation = one sample scored; Nabla's gradient evaluations count one each (each also costs a
backward pass), GRPO only scores its rollouts. The held-out reward (fixed evaluation noise, ODE
sampler, meshes ray-cast) is logged every ``eval.every`` iterations. At the end, prior preservation
is measured on the same evaluation noise against the base model (LoRA disabled): the occupancy IoU of
the decoded SDF grids (1 = shapes unchanged) and the RMS distance of the latents, plus the semantic
classifier's accuracy when its weights are installed. Writes benchmarks/results/nabla_vs_grpo.json,
.md and .png (held-out reward vs reward evaluations and vs wall-clock seconds).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from r3d.core.config import GRPORecipe  # noqa: E402
from r3d.core.io import atomic_write, atomic_write_json, atomic_write_text  # noqa: E402
from r3d.core.recipe import load_recipe  # noqa: E402
from r3d.core.rollout import decode  # noqa: E402
from r3d.runner import make_trainer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def evals_per_iteration(cfg: GRPORecipe, trainable_steps: int) -> int:
    n = cfg.train.prompts_per_iteration * cfg.train.group_size
    if cfg.train.algorithm == "grpo":
        return n
    k = min(trainable_steps, max(1, round(cfg.train.timestep_fraction * trainable_steps)))
    return n * (1 + k * cfg.train.inner_epochs)


@torch.no_grad()
def final_samples(trainer: Any, base: bool) -> torch.Tensor:
    """Final latents of the held-out evaluation (same noise as trainer.evaluate), tuned or base model."""
    cfg = trainer.cfg
    prompts = [p for p in (cfg.prompts.eval or cfg.prompts.train) for _ in range(cfg.eval.samples_per_prompt)]
    gen = torch.Generator().manual_seed(cfg.eval.seed)
    noise = trainer.policy.initial_noise(len(prompts), gen)
    sde = torch.ones(trainer.schedule.num_steps, dtype=torch.bool)
    if base:
        with trainer.peft.disable_adapter():
            return trainer.rollout(prompts, noise, "ode", sde, gen)["latents"][:, -1]
    return trainer.rollout(prompts, noise, "ode", sde, gen)["latents"][:, -1]


def preservation(trainer: Any) -> dict[str, float]:
    """Occupancy IoU and latent RMS distance of the tuned model's held-out samples to the base model's."""
    tuned, base = final_samples(trainer, False), final_samples(trainer, True)
    out = {"latent_rms_to_base": float((tuned - base).pow(2).mean().sqrt())}
    to_grid = getattr(trainer.policy, "to_grid", None)
    if to_grid is not None:
        a, b = to_grid(tuned) < 0, to_grid(base) < 0
        inter = (a & b).flatten(1).sum(1).float()
        union = (a | b).flatten(1).sum(1).float().clamp_min(1)
        out["occupancy_iou_to_base"] = float((inter / union).mean())
    try:
        from r3d.rewards.semantic import SemanticReward

        sem = SemanticReward()
    except Exception:  # weights not installed: the measure is optional
        return out
    cfg = trainer.cfg
    prompts = [p for p in (cfg.prompts.eval or cfg.prompts.train) for _ in range(cfg.eval.samples_per_prompt)]
    cond = trainer.policy.encode_prompts(prompts)
    for tag, lat in (("tuned", tuned), ("base", base)):
        scores = sem(decode(trainer.policy, lat, cond), prompts)
        out[f"semantic_{tag}"] = float(next(iter(scores.values())).mean())
    return out


def run(cfg: GRPORecipe, budget: int, run_dir: Path) -> dict[str, Any]:
    torch.manual_seed(cfg.run.seed)
    trainer = make_trainer(cfg, run_dir, log=lambda _: None)
    trainable = int(trainer.schedule.moving().sum())
    per_it = evals_per_iteration(cfg, trainable)
    cfg.train.iterations = max(1, budget // per_it)
    tic = time.perf_counter()
    records = trainer.train()
    seconds = time.perf_counter() - tic
    curve, elapsed = [], 0.0
    for r in records:
        elapsed += r.get("time/iteration_s", 0.0)
        if "eval/reward" in r:
            evals = r.get("reward_evals", r["iteration"] * per_it)
            curve.append(
                {
                    "iteration": r["iteration"],
                    "reward_evals": evals,
                    "seconds": elapsed,
                    **{k.removeprefix("eval/"): r[k] for k in r if k.startswith("eval/")},
                }
            )
    late = [c for c in curve if c["reward_evals"] >= 0.75 * budget] or curve[-1:]
    return {
        "algorithm": cfg.train.algorithm,
        "iterations": cfg.train.iterations,
        "evals_per_iteration": per_it,
        "seconds": seconds,
        "curve": curve,
        "start": curve[0]["reward"],
        "end": curve[-1]["reward"],
        "peak": max(c["reward"] for c in curve),
        "late_mean": sum(c["reward"] for c in late) / len(late),
        **preservation(trainer),
    }


def plot(results: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        label = "Flow-GRPO" if r["algorithm"] == "grpo" else "Nabla"
        xs = [c["reward_evals"] for c in r["curve"]]
        ts = [c["seconds"] for c in r["curve"]]
        ys = [c["reward"] for c in r["curve"]]
        axes[0].plot(xs, ys, "o-", label=label)
        axes[1].plot(ts, ys, "o-", label=label)
    axes[0].set_xlabel("reward evaluations")
    axes[1].set_xlabel("training seconds (this machine)")
    for ax in axes:
        ax.set_ylabel("held-out reward")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Nabla vs Flow-GRPO, same reward and budget")
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Nabla vs Flow-GRPO (tiny-shapes, silhouette reward)",
        "",
        f"`{result['command']}`",
        "",
        f"Machine: {result['machine']}. Budget: {result['budget']} reward evaluations each.",
        "",
        "| algorithm | iterations | evals/iter | held-out reward start → end | peak | mean, last 25 % of budget "
        "| occupancy IoU to base | latent RMS to base | other held-out metrics, start → end | train s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in result["runs"]:
        name = "Flow-GRPO" if r["algorithm"] == "grpo" else "Nabla"
        first, last = r["curve"][0], r["curve"][-1]
        skip = {"iteration", "reward_evals", "seconds", "reward"}
        skip |= {k for k in first if all(c.get(k) == c["reward"] for c in r["curve"])}  # the reward itself
        others = ", ".join(f"{k} {first[k]:.3f} → {last[k]:.3f}" for k in first if k not in skip)
        lines.append(
            f"| {name} | {r['iterations']} | {r['evals_per_iteration']} | {r['start']:.4f} → {r['end']:.4f} | "
            f"{r['peak']:.4f} | {r['late_mean']:.4f} | {r.get('occupancy_iou_to_base', float('nan')):.3f} | "
            f"{r['latent_rms_to_base']:.3f} | {others} | {r['seconds']:.0f} |"
        )
    sem = [r for r in result["runs"] if "semantic_tuned" in r]
    if sem:
        lines += [
            "",
            "Semantic classifier p(prompt class) on the held-out samples (tuned / base): "
            + ", ".join(
                f"{r['algorithm']}: {r['semantic_tuned']:.3f} / {r['semantic_base']:.3f}" for r in sem
            ),
        ]
    lines += ["", "![held-out reward vs reward evaluations](nabla_vs_grpo.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "nabla_tiny.yaml"))
    parser.add_argument("--budget", type=int, default=2560, help="reward evaluations per algorithm")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="both runs")
    parser.add_argument("--grpo-set", dest="grpo", action="append", default=[], help="Flow-GRPO run only")
    parser.add_argument("--nabla-set", dest="nabla", action="append", default=[], help="Nabla run only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for algo, extra in (("nabla", args.nabla), ("grpo", args.grpo)):
            cfg = load_recipe(args.recipe, GRPORecipe, [*args.overrides, f"train.algorithm={algo}", *extra])
            runs.append(run(cfg, args.budget, Path(tmp) / algo))
            print(f"{algo}: held-out reward {runs[-1]['start']:.4f} → {runs[-1]['end']:.4f}", flush=True)
    command = "python benchmarks/bench_nabla_vs_grpo.py " + " ".join(sys.argv[1:])
    result = {
        "command": command.strip(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "budget": args.budget,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "nabla_vs_grpo.json", result)
    atomic_write_text(args.out / "nabla_vs_grpo.md", markdown(result))
    plot(runs, args.out / "nabla_vs_grpo.png")
    print(markdown(result))


if __name__ == "__main__":
    main()
