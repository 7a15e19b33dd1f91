"""``r3d grpo``: RL post-training of a generator with reward adapters (Flow-GRPO family)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from r3d.cli.common import SetOption, console


def grpo(
    recipe: Annotated[
        Path | None, typer.Argument(help="Recipe YAML, e.g. recipes/tiny_mesh.yaml.", show_default=False)
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this folder from its last checkpoint.", show_default=False),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default: run.out_dir/run.name).", show_default=False)
    ] = None,
    overrides: SetOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Load recipe, model and rewards, then stop.")
    ] = False,
) -> None:
    """RL post-training with group-relative advantages (GRPO) and a LoRA adapter.

    Each iteration samples groups of outputs per prompt with a stochastic sampler, scores them
    with the recipe's rewards, and updates the adapter with the PPO-clip loss. Writes into the run
    folder: recipe.yaml (resolved), metrics.jsonl, tb/ (TensorBoard), checkpoint/ (adapter +
    optimizer + RNG), samples_*.png, reward_curve.png, summary.json. Ctrl-C finishes the iteration
    and saves a checkpoint; continue with --resume RUN_DIR.

    Example: r3d grpo recipes/tiny_mesh.yaml --set train.iterations=10
    """
    from r3d.runner import finish_run, load_grpo, make_trainer

    cfg, run_dir = load_grpo(recipe, resume, overrides, out)
    with Progress(
        TextColumn("[bold]grpo[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("train", total=cfg.train.iterations, info="loading")

        def progress(i: int, n: int, m: dict[str, float]) -> None:
            info = f"reward {m['reward']:.3f}"
            if "eval/reward" in m:
                info += f" | held-out {m['eval/reward']:.3f}"
            bar.update(task, completed=i, info=info + f" | {m['time/iteration_s']:.1f}s/it")

        trainer = make_trainer(
            cfg, run_dir, log=lambda msg: bar.console.print(f"[dim]{msg}[/]"), progress=progress
        )
        if dry_run:
            console.print(
                f"dry run OK: model {cfg.model.name}, rewards {', '.join(cfg.rewards)}, run folder {run_dir}"
            )
            return
        bar.update(task, completed=trainer.iteration, info="evaluating" if resume is None else "resuming")
        trainer.train(resume=resume is not None)
    summary = finish_run(run_dir)
    table = Table(title=f"held-out evaluation ({run_dir})")
    table.add_column("metric")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")
    for key, value in summary.get("eval", {}).items():
        end = value["end"]
        table.add_row(key, f"{value['start']:.4f}", "-" if end is None else f"{end:.4f}")
    console.print(table)
    console.print(f"reward curve: {summary['plot']}   samples: {run_dir}/samples_start.png, samples_end.png")
