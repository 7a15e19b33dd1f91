"""``r3d train-vqvae``: two-stage sparse-structure VQ-VAE training (plus the TRELLIS VAE stage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from r3d.cli.common import SetOption, console, err_console

if TYPE_CHECKING:
    from r3d.vqvae.config import VQVAERecipe


def train_vqvae(
    recipe: Annotated[
        Path | None, typer.Argument(help="Recipe YAML, e.g. recipes/vqvae_tiny_stage1.yaml.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default runs/<recipe>-<time>).")
    ] = None,
    set_: SetOption = None,
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="Folder with ss_enc_conv3d_16l8_fp16.{json,safetensors} and ss_dec_conv3d_16l8_fp16.{json,"
            "safetensors} (TRELLIS-image-large ckpts/, or an r3d run's export/)."
        ),
    ] = None,
    init_from: Annotated[
        str | None, typer.Option(help="Start from this run's newest checkpoint (stage 2).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run folder from its last checkpoint.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Load data and model, check the frozen/trainable split, exit.")
    ] = False,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda (overrides the recipe).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Train the TRELLIS sparse-structure VQ-VAE: stage vae, codebook (stage 1) or joint (stage 2).

    Example: r3d train-vqvae recipes/vqvae_tiny_stage1.yaml --set data.root=voxels --dry-run
    """
    from r3d.vqvae.train import prepare_run
    from r3d.vqvae.train import train_vqvae as run

    cfg, run_dir, resuming = prepare_run(
        recipe,
        out=out,
        overrides=set_,
        pretrained=pretrained,
        init_from=init_from,
        resume=resume,
        device=device,
    )
    if dry_run:
        summary = run(cfg, run_dir, resume=resuming, dry_run=True)
    else:
        summary = _train_with_bar(cfg, run_dir, resuming, show_bar=not as_json)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    from rich.table import Table

    table = Table(
        title=f"{'dry run' if dry_run else 'train-vqvae'}: stage {summary['stage']} ({summary['source']})"
    )
    for col in ("part", "parameters", "trainable", "note"):
        table.add_column(col, justify="right" if col in ("parameters", "trainable") else "left")
    for part, s in summary["split"].items():
        state = "[dim]frozen[/]" if s["frozen"] else f"{s['trainable']:,}"
        table.add_row(part, f"{s['params']:,}", state, s["note"])
    console.print(table)
    d = summary["data"]
    skipped = len(d["problems"])
    console.print(
        f"data: {d['usable']} usable files ({d['train']} train, {d['holdout']} held out), {skipped} skipped"
    )
    for p in d["problems"]:
        console.print(f"  [yellow]skipped[/] {p['file']}: {p['error']}", highlight=False)
    if dry_run:
        console.print("shapes: " + ", ".join(f"{k} {tuple(v)}" for k, v in summary["shapes"].items()))
        return
    for split, m in summary["metrics"].items():
        keys = [k for k in ("iou", "f1", "codebook", "usage", "perplexity", "dead_codes") if k in m]
        console.print(f"{split}: " + "  ".join(f"{k} {m[k]:.4g}" for k in keys))
    if "frozen_unchanged" in summary:
        console.print(f"encoder/decoder bit-identical after stage 1: {summary['frozen_unchanged']}")
    export = Path(summary["run_dir"]) / "export"
    console.print(
        f"run {summary['run_dir']}: {summary['steps']} steps, {summary['seconds']:.0f} s; export in {export}"
    )


def _train_with_bar(cfg: VQVAERecipe, run_dir: Path, resuming: bool, show_bar: bool) -> dict[str, Any]:
    """Run the trainer with a progress bar on stderr, drawn from the first step on (a setup error stays
    one line); the trainer's log lines print above it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from r3d.vqvae.train import train_vqvae as run

    columns = (
        TextColumn(cfg.train.stage),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, console=err_console, disable=not show_bar, transient=False)
    task = bar.add_task("train", total=cfg.train.steps, info="")
    started = False

    def progress(step: int, total: int, shown: dict[str, float]) -> None:
        nonlocal started
        if not started:
            bar.start()
            started = True
        info = "  ".join(f"{k} {v:.4g}" for k, v in shown.items())
        bar.update(task, completed=step, total=total, info=info)

    try:
        return run(
            cfg,
            run_dir,
            resume=resuming,
            log=lambda line: bar.console.print(line, highlight=False, markup=False),
            progress=progress,
        )
    finally:
        if started:
            bar.stop()
