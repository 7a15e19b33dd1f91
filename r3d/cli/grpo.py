"""``r3d grpo``: RL post-training of a generator with reward adapters (Flow-GRPO family)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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
        bool,
        typer.Option(
            "--dry-run",
            help="Validate the recipe without training: weights, prompts, one pipeline pass, memory estimate.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --dry-run: print the report as JSON.")
    ] = False,
) -> None:
    """RL post-training with group-relative advantages (GRPO) and a LoRA adapter.

    Each iteration samples groups of outputs per prompt with a stochastic sampler, scores them
    with the recipe's rewards, and updates the adapter with the PPO-clip loss. Writes into the run
    folder: recipe.yaml (resolved), metrics.jsonl, tb/ (TensorBoard), checkpoint/ (adapter +
    optimizer + RNG), samples_*.png, reward_curve.png, summary.json. Ctrl-C finishes the iteration
    and saves a checkpoint; continue with --resume RUN_DIR.

    --dry-run builds everything (on the meta device when weights or the GPU are missing), runs one
    rollout → reward → update pass where it can, and prints the checks, the problems (exit code 2 if
    any) and a memory estimate; nothing is written.

    Example: r3d grpo recipes/tiny_mesh.yaml --set train.iterations=10
    """
    from r3d.commands.runner import check_device, finish_run, load_grpo, make_trainer

    cfg, run_dir = load_grpo(recipe, resume, overrides, out)
    if dry_run:
        _dry_run(cfg, run_dir, str(recipe or resume), as_json)
        return
    from r3d.core import distributed

    check_device(cfg)  # before the progress bar: a usage mistake is one line
    distributed.init_from_env()  # the run's one join: before the policy is built and the bar drawn
    with Progress(
        TextColumn("[bold]grpo[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not distributed.is_main(),
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
        bar.update(task, completed=trainer.iteration, info="evaluating" if resume is None else "resuming")
        trainer.train(resume=resume is not None)
    distributed.shutdown()  # every rank leaves the process group together before any exits
    if not trainer.main:  # other ranks of a multi-process run: rank 0 writes the summary and prints
        return
    summary = finish_run(run_dir)
    table = Table(title=f"held-out evaluation ({run_dir})")
    table.add_column("metric")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")
    for key, value in summary.get("eval", {}).items():
        end = value["end"]
        table.add_row(key, f"{value['start']:.4f}", "-" if end is None else f"{end:.4f}")
    console.print(table)
    from r3d.report import write_run_report

    report = write_run_report(run_dir)
    written = [summary["plot"], *(str(p) for p in sorted(run_dir.glob("samples_*.png")))]
    console.print("wrote: " + ", ".join(p for p in written if p and Path(p).is_file()), highlight=False)
    console.print(f"report: {report} (open it in a browser)", highlight=False)


def _dry_run(cfg: Any, run_dir: Path, source: str, as_json: bool) -> None:
    """Print the dry-run report (rich tables or JSON); exit 2 when it found problems."""
    from r3d.commands.dry_run import dry_run
    from r3d.core.errors import R3DError
    from r3d.core.memory import device_key, format_bytes

    with console.status("dry run: building the policy and rewards, one pipeline pass"):
        report = dry_run(cfg, run_dir, source)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1))
        if report.problems:
            raise typer.Exit(2)
        return
    console.print(f"[bold]dry run[/] {source}: model {cfg.model.name}, rewards {', '.join(cfg.rewards)}")
    for item, detail in report.checks:
        console.print(f"  [green]ok[/] {item}: {detail}", highlight=False)
    for message in report.warnings:
        console.print(f"  [yellow]warning[/] {message}", highlight=False)
    for message in report.problems:
        console.print(f"  [red]problem[/] {message}", highlight=False)
    if not report.memory.rows:
        console.print("memory estimate: nothing could be built to measure (see the problems above)")
    for b in report.memory.budget():
        verdict = {True: "[green]fits[/]", False: "[red]does not fit[/]", None: "[dim]not checked[/]"}[
            b["fits"]
        ]
        table = Table(title=f"memory estimate on {b['device']}", caption=f"{b['source']} — {verdict}")
        table.add_column("component", min_width=14)
        table.add_column("parameters", justify="right")
        table.add_column("dtype")
        table.add_column("bytes", justify="right")
        table.add_column("what")
        for row in report.memory.rows:
            if device_key(row.device) == b["device"]:
                count = "-" if row.count is None else f"{row.count:,}"
                what = f"{row.kind}: {row.note}" if row.note else row.kind
                table.add_row(row.component, count, row.dtypes, format_bytes(row.bytes), what)
        table.add_row("[bold]total[/]", "", "", f"[bold]{format_bytes(b['total'])}[/]", "")
        console.print(table)
    for note in report.memory.notes:
        console.print(f"  [dim]{note}[/]", highlight=False)
    if report.problems:
        raise R3DError(f"dry run found {len(report.problems)} problem(s), listed above")
    console.print(f"dry run OK; training would write to {run_dir}")
