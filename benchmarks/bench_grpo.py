"""Time split of GRPO iterations and the overhead of r3d's loop over the bare network passes.

Usage: python benchmarks/bench_grpo.py [RECIPE] [--iterations N] [--set key=value ...]

It runs N iterations of the recipe (default recipes/tiny_mesh.yaml) in a temporary folder and
reports, per iteration, the seconds spent sampling, decoding, scoring and training. It then times
the bare network work those phases perform — the same number of forward passes (sampling) and
forward + backward passes (training) with the same batch shapes, called directly on the LoRA-wrapped
network — and prints r3d's loop time as a ratio of that bare time (1.0 = no overhead).
Writes benchmarks/results/grpo.json and grpo.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from r3d.core.config import GRPORecipe  # noqa: E402
from r3d.core.recipe import load_recipe  # noqa: E402
from r3d.runner import make_trainer  # noqa: E402


def bare_passes(trainer, n_samples: int, n_train_steps: int) -> tuple[float, float]:
    """Seconds for the sampling forwards and the training forward+backwards, without r3d's loop."""
    cfg, policy = trainer.cfg, trainer.policy
    b = cfg.train.batch_size
    prompts = cfg.prompts.train[:1] * b
    cond = policy.encode_prompts(prompts)
    x = policy.initial_noise(b, torch.Generator().manual_seed(0))
    sigma = torch.full((b,), 0.5)
    chunks = max(1, n_samples // b)
    tic = time.perf_counter()
    with torch.no_grad():
        for _ in range(chunks * trainer.schedule.num_steps):
            policy.velocity(x, sigma, cond)
    t_sample = time.perf_counter() - tic
    tic = time.perf_counter()
    for _ in range(chunks * cfg.train.inner_epochs):
        for _ in range(n_train_steps):
            policy.velocity(x, sigma, cond).square().mean().backward()
    t_train = time.perf_counter() - tic
    trainer.optimizer.zero_grad(set_to_none=True)
    return t_sample, t_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "tiny_mesh.yaml"))
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    overrides = [*args.overrides, f"train.iterations={args.iterations}", "eval.every=0"]
    cfg: GRPORecipe = load_recipe(args.recipe, GRPORecipe, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(cfg, Path(tmp) / "run", log=lambda _: None)
        rows = []
        for _ in range(args.iterations):
            m = trainer.run_iteration()
            rows.append({k.removeprefix("time/"): v for k, v in m.items() if k.startswith("time/")})
        n_samples = cfg.train.prompts_per_iteration * cfg.train.group_size
        n_train_steps = max(1, round(cfg.train.timestep_fraction * int(trainer.schedule.moving().sum())))
        bare_sample, bare_train = bare_passes(trainer, n_samples, n_train_steps)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "recipe": args.recipe,
        "iterations": args.iterations,
        "samples_per_iteration": n_samples,
        "median_seconds": med,
        "bare_sample_s": bare_sample,
        "bare_train_s": bare_train,
        "sample_overhead_ratio": med["sample_s"] / bare_sample,
        "train_overhead_ratio": med["train_s"] / bare_train,
    }
    lines = [
        f"# GRPO iteration time split ({result['machine']})",
        "",
        f"recipe `{Path(args.recipe).name}`, {n_samples} samples/iteration, median of {args.iterations} iterations",
        "",
        "| phase | seconds | share |",
        "|---|---:|---:|",
    ]
    total = med["sample_s"] + med["decode_s"] + med["reward_s"] + med["train_s"]
    for key in ("sample_s", "decode_s", "reward_s", "train_s"):
        lines.append(f"| {key[:-2]} | {med[key]:.3f} | {med[key] / total:.0%} |")
    lines += [
        "",
        "| loop vs bare network passes | r3d | bare | ratio |",
        "|---|---:|---:|---:|",
        f"| sampling (forwards) | {med['sample_s']:.3f} | {bare_sample:.3f} | {result['sample_overhead_ratio']:.2f}× |",
        f"| training (forward+backward) | {med['train_s']:.3f} | {bare_train:.3f} | {result['train_overhead_ratio']:.2f}× |",
    ]
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "grpo.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "grpo.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
