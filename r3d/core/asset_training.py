"""Pieces shared by the argparse scripts that train r3d's embedded assets.

``python -m r3d.models.train_tiny_shapes`` / ``r3d.rewards.train_semantic`` (procedural shapes; flags
from :func:`asset_parser`, run by :func:`run_script`, training info from :func:`train_info`) and
``r3d.motion.train_mdm`` / ``r3d.motion.train_evaluator`` (synthetic motions; :func:`start_training`,
:func:`saved_line`). All four show their loss with :class:`LossBar`. Nothing here changes what a
script computes: seeds, schedules and the saved files are each script's own.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from r3d.core.io import atomic_write_json
from r3d.core.progress import task_progress


def asset_parser(
    description: str, *, steps: int, batch: int, lr: float, per_class: int, metrics_help: str
) -> argparse.ArgumentParser:
    """A parser with the flags of the procedural-shape scripts: --out (required), --steps, --seed,
    --batch, --lr, --per-class, --metrics (a JSON copy of the result) and --threads (default 1)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output .safetensors path")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--per-class", type=int, default=per_class)
    p.add_argument("--metrics", help=metrics_help)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: reproducible, and fastest on a shared CPU)"
    )
    return p


def run_script(
    parser: argparse.ArgumentParser, argv: list[str] | None, run: Callable[[argparse.Namespace], dict]
) -> dict:
    """Parse ``argv``, set the torch threads, ``run(args)``; write its result to --metrics if given."""
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args)
    if args.metrics:
        atomic_write_json(args.metrics, result)
    return result


def train_info(
    module: str, args: argparse.Namespace, data_seconds: float, train_seconds: float, final_loss: float
) -> dict[str, Any]:
    """The training record stored in an asset's metadata: the command that rebuilds it and its cost."""
    return {
        "command": f"python -m {module} --out {args.out} --steps {args.steps} --seed {args.seed}",
        "seed": args.seed,
        "steps": args.steps,
        "per_class": args.per_class,
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "final_loss": final_loss,
    }


def start_training(args: argparse.Namespace) -> tuple[Console, np.random.Generator, float]:
    """Seed torch with --seed, set --threads; returns (console, numpy generator seeded with --seed,
    start time in s) for the synthetic-motion scripts."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    return Console(), np.random.default_rng(args.seed), time.time()


def saved_line(out: Path, t0: float) -> str:
    """``saved OUT (SIZE MB) in Ns`` for a file written ``t0`` (time.time()) after the start."""
    return f"saved {out} ({out.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.0f}s"


class LossBar:
    """A progress bar over ``steps`` that shows the loss; use as a context manager, call :meth:`step`
    once per training step.

    ``keep``: the loss shown is a running average ``keep·running + (1 − keep)·loss`` (None: the latest
    loss); ``every``: refresh the shown loss every that many steps; ``digits``: decimals shown.
    """

    def __init__(
        self,
        console: Console,
        description: str,
        steps: int,
        *,
        keep: float | None = None,
        every: int = 1,
        digits: int = 4,
    ) -> None:
        self.bar = task_progress(console)
        self.task = self.bar.add_task(description, total=steps, info="")
        self.keep, self.every, self.digits = keep, every, digits
        # 1 − 0.98 is 0.020000000000000018 in floats: round so the average is keep·r + 0.02·x exactly
        self.mix = None if keep is None else round(1 - keep, 12)
        self.running: float | None = None
        self.n = 0

    def __enter__(self) -> LossBar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def step(self, loss: float) -> None:
        """Record this step's loss (a float), advance the bar."""
        if self.running is None or self.keep is None:
            self.running = loss
        else:
            self.running = self.keep * self.running + self.mix * loss  # type: ignore[operator]
        if self.n % self.every == 0:
            self.bar.update(self.task, info=f"loss {self.running:.{self.digits}f}")
        self.n += 1
        self.bar.advance(self.task)
