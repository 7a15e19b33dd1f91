"""Nabla (reward-gradient alignment) against Flow-GRPO on the same 2D reward and the same budget, over seeds.

Usage: python benchmarks/bench_nabla_vs_grpo.py [RECIPE] [--budget N] [--seeds S ...] [--fraction F]
           [--eval-every-evals E] [--set key=value ...] [--grpo-set key=value ...] [--nabla-set key=value ...]

Both algorithms start from the same tiny-shapes model and recipe (default recipes/nabla_tiny.yaml: the
silhouette reward on rendered views) and run until they have used ``--budget`` reward evaluations — one
evaluation = one sample scored; Nabla's gradient evaluations count one each (each also costs a
backward pass), GRPO only scores its rollouts. Each seed (``run.seed``) runs both. The held-out reward
(fixed evaluation noise, ODE sampler, meshes ray-cast) is logged on the same grid of reward
evaluations for both (every ``--eval-every-evals``, rounded to whole iterations).

Sample efficiency, per seed: the target is start + F·(best − start), F = ``--fraction`` (0.9), best =
the highest held-out reward either algorithm reached in that seed; the figure is the reward
evaluations an algorithm used when its held-out reward first reached the target (never: censored, shown
as "> budget"). F is taken of the gain because the untuned model already scores above 90 % of the best
reward, so "90 % of the best reward" itself is met at 0 evaluations by both.

At the end, prior preservation is measured on the same evaluation noise against the base model (LoRA
disabled): the occupancy IoU of the decoded SDF grids (1 = shapes unchanged) and the RMS distance of
the latents, plus the semantic classifier's p(prompt class) when its weights are installed. Writes
benchmarks/results/nabla_vs_grpo.json, .md and .png (held-out reward vs reward evaluations and vs
wall-clock seconds, every seed).
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

from r3d.commands.runner import make_trainer  # noqa: E402
from r3d.core.config import GRPORecipe  # noqa: E402
from r3d.core.io import atomic_write, atomic_write_json, atomic_write_text  # noqa: E402
from r3d.core.recipe import load_recipe  # noqa: E402

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
            return trainer.rollout(prompts, noise, "ode", sde, gen).final
    return trainer.rollout(prompts, noise, "ode", sde, gen).final


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
        scores = sem(trainer.policy.decode(lat, cond), prompts)
        out[f"semantic_{tag}"] = float(next(iter(scores.values())).mean())
    return out


NAMES = {"grpo": "Flow-GRPO", "nabla": "Nabla"}


def run(cfg: GRPORecipe, budget: int, run_dir: Path, eval_every_evals: int) -> dict[str, Any]:
    """Train ``cfg`` for ``budget`` reward evaluations; the held-out curve, end / peak reward, preservation."""
    torch.manual_seed(cfg.run.seed)
    trainer = make_trainer(cfg, run_dir, log=lambda _: None)
    trainable = int(trainer.schedule.moving().sum())
    per_it = evals_per_iteration(cfg, trainable)
    cfg.train.iterations = max(1, budget // per_it)
    cfg.eval.every = max(1, round(eval_every_evals / per_it))
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
        "seed": cfg.run.seed,
        "iterations": cfg.train.iterations,
        "evals_per_iteration": per_it,
        "eval_every": cfg.eval.every,
        "seconds": seconds,
        "curve": curve,
        "start": curve[0]["reward"],
        "end": curve[-1]["reward"],
        "peak": max(c["reward"] for c in curve),
        "late_mean": sum(c["reward"] for c in late) / len(late),
        **preservation(trainer),
    }


def evals_to_reach(curve: list[dict[str, Any]], target: float) -> float | None:
    """Reward evaluations at the first held-out point with reward ≥ ``target`` (None: never reached)."""
    return next((float(c["reward_evals"]) for c in curve if c["reward"] >= target), None)


def efficiency(runs: list[dict[str, Any]], fraction: float) -> dict[str, Any]:
    """Per seed: target = start + fraction·(best − start) over both algorithms, evaluations to reach it.

    Adds ``target``, ``best_either`` and per algorithm ``evals_to_target`` (None when never reached) to
    each seed's entry; ``ratio_grpo_over_nabla`` is None unless both reached it.
    """
    by_seed: dict[int, dict[str, Any]] = {}
    for r in runs:
        by_seed.setdefault(r["seed"], {})[r["algorithm"]] = r
    seeds = {}
    for seed, algos in sorted(by_seed.items()):
        start = min(r["start"] for r in algos.values())
        best = max(r["peak"] for r in algos.values())
        target = start + fraction * (best - start)
        reach = {a: evals_to_reach(r["curve"], target) for a, r in algos.items()}
        g, n = reach.get("grpo"), reach.get("nabla")
        seeds[seed] = {
            "start": start,
            "best_either": best,
            "target": target,
            "evals_to_target": reach,
            "ratio_grpo_over_nabla": g / n if g is not None and n else None,
        }
    return {"fraction": fraction, "seeds": seeds}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def plot(results: list[dict[str, Any]], path: Path, targets: dict[int, float] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"nabla": "tab:blue", "grpo": "tab:orange"}
    labelled: set[str] = set()
    for r in results:
        algo = r["algorithm"]
        label = None if algo in labelled else NAMES.get(algo, algo)
        labelled.add(algo)
        xs = [c["reward_evals"] for c in r["curve"]]
        ts = [c["seconds"] for c in r["curve"]]
        ys = [c["reward"] for c in r["curve"]]
        style = ["o-", "s--", "^:", "d-."][r.get("seed", 0) % 4]
        axes[0].plot(xs, ys, style, color=colors.get(algo), label=label, ms=3, alpha=0.8)
        axes[1].plot(ts, ys, style, color=colors.get(algo), label=label, ms=3, alpha=0.8)
    for seed, target in (targets or {}).items():
        axes[0].axhline(target, color="grey", lw=0.7, ls=":")
        axes[0].annotate(f"target s{seed}", (0, target), fontsize=7, color="grey")
    axes[0].set_xlabel("reward evaluations")
    axes[1].set_xlabel("training seconds (this machine)")
    for ax in axes:
        ax.set_ylabel("held-out reward")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Nabla vs Flow-GRPO, same reward and budget (marker = seed)")
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out


def _evals(value: float | None, budget: int) -> str:
    return f"> {budget}" if value is None else f"{value:.0f}"


def summary_rows(result: dict[str, Any]) -> list[str]:
    """Markdown rows: per algorithm, mean ± std over seeds of the efficiency and quality figures."""
    budget, eff = result["budget"], result["efficiency"]["seeds"]
    rows = []
    for algo in ("nabla", "grpo"):
        runs = [r for r in result["runs"] if r["algorithm"] == algo]
        if not runs:
            continue
        reach = [eff[r["seed"]]["evals_to_target"][algo] for r in runs]
        censored = [budget if v is None else v for v in reach]
        m, sd = mean_std(censored)
        never = sum(v is None for v in reach)
        cells = [f"{m:.0f} ± {sd:.0f}" + (f" ({never} never: counted as {budget})" if never else "")]
        for key in ("end", "peak", "late_mean", "occupancy_iou_to_base", "semantic_tuned"):
            vals = [r[key] for r in runs if key in r]
            cells.append("n/a" if not vals else "{:.3f} ± {:.3f}".format(*mean_std(vals)))
        rows.append(f"| {NAMES[algo]} | {len(runs)} | " + " | ".join(cells) + " |")
    return rows


def verdict(result: dict[str, Any]) -> str:
    """One honest sentence: does Nabla need ≥ 2× fewer reward evaluations than Flow-GRPO?

    A Flow-GRPO run that never reached the target counts as the budget, so its ratio is a lower bound
    (shown with "≥"); a Nabla run that never reached it while Flow-GRPO did counts as 0×.
    """
    budget, eff = result["budget"], result["efficiency"]["seeds"]
    ratios: list[float | None] = []
    texts = []
    for entry in eff.values():
        n, g = entry["evals_to_target"].get("nabla"), entry["evals_to_target"].get("grpo")
        if n is None:
            ratios.append(0.0 if g is not None else None)
            texts.append("0×" if g is not None else "n/a (neither)")
        else:
            ratios.append((budget if g is None else g) / n if n else float("inf"))
            texts.append(("≥ " if g is None else "") + f"{ratios[-1]:.2f}×")
    known = [r for r in ratios if r is not None]
    if not known:
        return "Neither algorithm reached the target in any seed: no sample-efficiency figure."
    wins = sum(r >= 2.0 for r in known)
    text = ", ".join(texts)
    note = "; ≥: Flow-GRPO never reached the target, counted as the budget" if "≥" in text else ""
    if wins == len(ratios):
        return (
            f"Nabla needed ≥ 2× fewer reward evaluations than Flow-GRPO in every seed "
            f"(GRPO/Nabla per seed: {text}{note})."
        )
    return (
        f"Nabla did NOT need ≥ 2× fewer reward evaluations than Flow-GRPO in every seed: it did in {wins} of "
        f"{len(ratios)} (GRPO/Nabla per seed: {text}{note})."
    )


def markdown(result: dict[str, Any], title: bool = True) -> str:
    """The report of ``result``; ``title=False`` leaves out the heading, command and plot (for run_all)."""
    budget, fraction = result["budget"], result["efficiency"]["fraction"]
    eff = result["efficiency"]["seeds"]
    sub = "##" if title else "###"
    head = ["# Nabla vs Flow-GRPO (tiny-shapes, silhouette reward)", "", f"`{result['command']}`", ""]
    lines = [
        *(head if title else []),
        f"Machine: {result['machine']}. Budget: {budget} reward evaluations per algorithm and seed; seeds "
        f"{', '.join(str(s) for s in result['seeds'])}. Held-out reward every ≈{result['eval_every_evals']} "
        "evaluations (32 fixed-noise samples, ODE sampler, meshes ray-cast).",
        "",
        f"**Target** per seed = start + {fraction:g}·(best − start), best = the highest held-out reward either "
        f"algorithm reached in that seed ({fraction:.0%} of the best reward itself is below the untuned start).",
        "",
        f"**{verdict(result)}**",
        "",
        f"{sub} Mean ± std over seeds",
        "",
        "| algorithm | seeds | evals to target | final reward | best reward | mean, last 25 % of budget "
        "| occupancy IoU to base | semantic p(class) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *summary_rows(result),
        "",
        f"{sub} Per seed",
        "",
        "| seed | algorithm | iterations | evals/iter | start → final | best | target | evals to target "
        "| occupancy IoU to base | latent RMS to base | semantic p(class) tuned / base | train s |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in result["runs"]:
        e = eff[r["seed"]]
        sem = f"{r['semantic_tuned']:.3f} / {r['semantic_base']:.3f}" if "semantic_tuned" in r else "n/a"
        lines.append(
            f"| {r['seed']} | {NAMES[r['algorithm']]} | {r['iterations']} | {r['evals_per_iteration']} | "
            f"{r['start']:.4f} → {r['end']:.4f} | {r['peak']:.4f} | {e['target']:.4f} | "
            f"{_evals(e['evals_to_target'][r['algorithm']], budget)} | "
            f"{r.get('occupancy_iou_to_base', float('nan')):.3f} | {r['latent_rms_to_base']:.3f} | {sem} | "
            f"{r['seconds']:.0f} |"
        )
    if title:
        lines += ["", "![held-out reward vs reward evaluations](nabla_vs_grpo.png)", ""]
    return "\n".join(lines)


PUBLISHED_GRPO_SETS = ("train.lr=1e-3", "train.timestep_fraction=1.0")  # the README's Flow-GRPO settings


def measure(
    recipe: str | Path = ROOT / "recipes" / "nabla_tiny.yaml",
    budget: int = 2560,
    seeds: list[int] | tuple[int, ...] = (0,),
    fraction: float = 0.9,
    eval_every_evals: int = 160,
    overrides: list[str] | tuple[str, ...] = (),
    grpo: list[str] | tuple[str, ...] = PUBLISHED_GRPO_SETS,
    nabla: list[str] | tuple[str, ...] = (),
    command: str = "",
    on_seed: Any = None,
) -> dict[str, Any]:
    """Both algorithms on every seed; the result dict :func:`markdown` renders. ``on_seed(runs)`` is
    called after each seed (to save partial results)."""
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for algo, extra in (("nabla", nabla), ("grpo", grpo)):
                sets = [*overrides, f"run.seed={seed}", f"train.algorithm={algo}", *extra]
                cfg = load_recipe(recipe, GRPORecipe, sets)
                runs.append(run(cfg, budget, Path(tmp) / f"{algo}-{seed}", eval_every_evals))
                r = runs[-1]
                print(f"seed {seed} {algo}: held-out reward {r['start']:.4f} → {r['end']:.4f}", flush=True)
            if on_seed is not None:
                on_seed(runs)
    return result_of(runs, budget, fraction, eval_every_evals, command)


def result_of(
    runs: list[dict[str, Any]], budget: int, fraction: float, eval_every_evals: int, command: str
) -> dict[str, Any]:
    result = {
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "budget": budget,
        "seeds": sorted({r["seed"] for r in runs}),
        "eval_every_evals": eval_every_evals,
        "runs": runs,
        "efficiency": efficiency(runs, fraction),
    }
    result["verdict"] = verdict(result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "nabla_tiny.yaml"))
    parser.add_argument("--budget", type=int, default=2560, help="reward evaluations per algorithm and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="run.seed values (each runs both)")
    parser.add_argument("--fraction", type=float, default=0.9, help="fraction of the best gain to reach")
    parser.add_argument("--eval-every-evals", type=int, default=160, help="held-out grid, reward evaluations")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="both runs")
    parser.add_argument(
        "--grpo-set",
        dest="grpo",
        action="append",
        default=None,
        help=f"Flow-GRPO run only (default: {' '.join(PUBLISHED_GRPO_SETS)})",
    )
    parser.add_argument("--nabla-set", dest="nabla", action="append", default=[], help="Nabla run only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    command = ("python benchmarks/bench_nabla_vs_grpo.py " + " ".join(sys.argv[1:])).strip()
    grpo = PUBLISHED_GRPO_SETS if args.grpo is None else args.grpo

    def save(runs: list[dict[str, Any]]) -> None:  # after each seed: a run cut short keeps the seeds done
        write_results(args.out, result_of(runs, args.budget, args.fraction, args.eval_every_evals, command))

    result = measure(
        args.recipe,
        args.budget,
        args.seeds,
        args.fraction,
        args.eval_every_evals,
        args.overrides,
        grpo,
        args.nabla,
        command,
        on_seed=save,
    )
    print(markdown(result))


def write_results(out: Path, result: dict[str, Any]) -> str:
    """Write the JSON, markdown and plot of ``result``; returns the markdown."""
    runs = result["runs"]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "nabla_vs_grpo.json", result)
    text = markdown(result)
    atomic_write_text(out / "nabla_vs_grpo.md", text)
    targets = {s: e["target"] for s, e in result["efficiency"]["seeds"].items()}
    plot(runs, out / "nabla_vs_grpo.png", targets)
    return text


if __name__ == "__main__":
    main()
