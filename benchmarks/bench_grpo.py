"""Time split of GRPO iterations and the overhead of r3d's loop over the bare network passes.

Usage: python benchmarks/bench_grpo.py [RECIPE] [--iterations N] [--set key=value ...]

It runs one warm-up and N timed iterations of the recipe (default recipes/tiny_mesh.yaml) in a
temporary folder and reports the median seconds per iteration spent sampling, decoding, scoring and
training. After each iteration it times the bare network work those phases perform — the same number of forward
passes (sampling) and forward + backward passes (training, plus the reference model's forward when
the recipe has a KL term, and the optimizer's steps) with the same batch shapes, called directly on
the LoRA-wrapped network — and reports r3d's loop time as a ratio of that bare time (1.0 = no
overhead). What remains above 1.0 is the sampler's own work (per-sample noise draws, the transition
means and log-densities), the loss, KL and their gradients, and the loop's bookkeeping.
Writes grpo.json and grpo.md into --out (default benchmarks/results).

Definition change (issue #18): the bare training passes now include the AdamW step of each update
(work the loop must do), and the reference forward runs under r3d.core.lora.adapter_disabled, as the
trainer now does; before, it ran under peft's ``disable_adapter()``, whose per-call model scan
(≈ 2 ms per call for tiny-shapes) counted as bare network time. The bare passes are now timed after
each timed iteration (before: all after the last one), so that both see the same machine load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RECIPE, ROOT, caption, md_table, ratio, timed, write_result  # noqa: E402
from r3d.commands.runner import make_trainer  # noqa: E402
from r3d.core.config import GRPORecipe  # noqa: E402
from r3d.core.lora import adapter_disabled  # noqa: E402
from r3d.core.recipe import load_recipe  # noqa: E402

PHASES = ("sample_s", "decode_s", "reward_s", "train_s")


def bare_passes(
    trainer: Any, n_samples: int, n_train_steps: int
) -> tuple[Callable[[], None], Callable[[], None]]:
    """The bare network work of one iteration's sampling and of its training, as two functions.

    Sampling: ``num_steps`` forwards per chunk of ``train.batch_size`` samples, without grad.
    Training: per chunk, inner epoch and trained step one forward + backward, plus one forward with
    the adapter disabled when ``train.kl_beta`` > 0 (the KL reference), as the trainer does; and one
    AdamW step per chunk and inner epoch (the trainer's updates without ``train.samples_per_update``),
    by an optimizer of its own. Training puts the adapter's weights back afterwards: timing it between
    iterations leaves the run unchanged.
    """
    cfg, policy, t = trainer.cfg, trainer.policy, trainer.cfg.train
    b = min(t.batch_size, n_samples)
    cond = policy.encode_prompts(cfg.prompts.train[:1] * b)
    x = policy.initial_noise(b, torch.Generator().manual_seed(0))
    sigma = torch.full((b,), 0.5)
    chunks = max(1, n_samples // b)
    params = trainer.params
    optimizer = torch.optim.AdamW(
        params, lr=t.lr, betas=t.adam_betas, weight_decay=t.weight_decay, foreach=True
    )

    def sampling() -> None:
        with torch.no_grad():
            for _ in range(chunks * trainer.schedule.num_steps):
                policy.velocity(x, sigma, cond)

    def training() -> None:
        weights = [p.detach().clone() for p in params]
        for _ in range(chunks * t.inner_epochs):
            optimizer.zero_grad(set_to_none=True)
            for _ in range(n_train_steps):
                policy.velocity(x, sigma, cond).square().mean().backward()
                if t.kl_beta > 0:
                    with torch.no_grad(), adapter_disabled(trainer.peft):
                        policy.velocity(x, sigma, cond)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, w in zip(params, weights, strict=True):
                p.copy_(w)

    return sampling, training


def measure(
    recipe: str | Path = RECIPE, iterations: int = 3, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Run 1 warm-up + ``iterations`` GRPO iterations, each followed by the bare passes of its work;
    median phase seconds and loop/bare ratios (of the medians)."""
    overrides = [*overrides, f"train.iterations={iterations + 1}", "eval.every=0"]
    cfg: GRPORecipe = load_recipe(recipe, GRPORecipe, overrides)
    n_samples = cfg.train.prompts_per_iteration * cfg.train.group_size
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(cfg, Path(tmp) / "run", log=lambda _: None)
        moving = int(trainer.schedule.moving().sum())
        n_train_steps = max(1, round(cfg.train.timestep_fraction * moving))
        sampling, training = bare_passes(trainer, n_samples, n_train_steps)
        trainer.run_iteration()  # warm-up: first-call allocations, lazy imports
        sampling()
        training()
        rows, bare_samples, bare_trains = [], [], []
        for _ in range(iterations):  # interleaved: loop and bare times see the same machine load
            m = trainer.run_iteration()
            rows.append({k.removeprefix("time/"): v for k, v in m.items() if k.startswith("time/")})
            bare_samples.append(timed(sampling, 1)[1])
            bare_trains.append(timed(training, 1)[1])
    bare_sample, bare_train = statistics.median(bare_samples), statistics.median(bare_trains)
    med = {k: statistics.median(r[k] for r in rows) for k in PHASES}
    return {
        "recipe": str(recipe),
        "iterations": iterations,
        "torch_threads": torch.get_num_threads(),
        "samples_per_iteration": n_samples,
        "train_steps_per_sample": n_train_steps,
        "kl_reference_forward": cfg.train.kl_beta > 0,
        "median_seconds": med,
        "iteration_s": sum(med.values()),
        "bare_sample_s": bare_sample,
        "bare_train_s": bare_train,
        "sample_overhead_ratio": med["sample_s"] / bare_sample,
        "train_overhead_ratio": med["train_s"] / bare_train,
    }


def markdown(result: dict[str, Any], info: dict[str, Any] | None = None) -> list[str]:
    """Two tables: the phase split (share of the iteration) and loop vs bare passes (ratio)."""
    med, total = result["median_seconds"], result["iteration_s"]
    note = (
        f"Recipe `{Path(result['recipe']).name}`, {result['samples_per_iteration']} samples/iteration, "
        f"median of {result['iterations']} iterations after 1 warm-up."
    )
    split = md_table(
        ["phase", "seconds / iteration", "share of iteration (%)"],
        [[k.removesuffix("_s"), f"{med[k]:.3f}", f"{med[k] / total:.0%}"] for k in PHASES]
        + [["total", f"{total:.3f}", "100%"]],
    )
    ref = " + KL reference forward" if result["kl_reference_forward"] else ""
    overhead = md_table(
        ["work", "r3d loop s", "bare network passes s", "loop / bare (×)"],
        [
            [
                "sampling (forwards, no grad)",
                f"{med['sample_s']:.3f}",
                f"{result['bare_sample_s']:.3f}",
                ratio(med["sample_s"], result["bare_sample_s"]),
            ],
            [
                f"training (forward + backward{ref} + optimizer steps)",
                f"{med['train_s']:.3f}",
                f"{result['bare_train_s']:.3f}",
                ratio(med["train_s"], result["bare_train_s"]),
            ],
        ],
    )
    threads = result["torch_threads"]
    return [caption(info, note, threads), "", *split, "", caption(info, threads=threads), "", *overhead]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=str(RECIPE))
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results"), help="folder for grpo.json and grpo.md"
    )
    args = parser.parse_args()
    result = measure(args.recipe, args.iterations, args.overrides)
    out = Path(args.out)
    write_result(out, "grpo", "GRPO iteration time split", result, markdown(result))


if __name__ == "__main__":
    main()
