"""``r3d eval-motion``: text-to-motion metrics with the MDM protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from r3d.cli.common import console


def eval_motion(
    model: Annotated[
        str, typer.Option(help="Policy name (tiny_motion), module:factory, or an MDM checkpoint .pt.")
    ] = "tiny_motion",
    motions: Annotated[
        Path | None,
        typer.Option(
            help="Evaluate a folder of generated motions (motions.jsonl + .npy) instead of a model.",
            show_default=False,
        ),
    ] = None,
    adapter: Annotated[
        Path | None,
        typer.Option(help="Trained LoRA adapter: a grpo run folder or its checkpoint/.", show_default=False),
    ] = None,
    evaluator: Annotated[
        str, typer.Option(help="tiny-t2m, tiny-tmr, a T2M finest.tar, a TMR folder or an r3d .safetensors.")
    ] = "tiny-t2m",
    reference: Annotated[
        str, typer.Option(help="'synthetic' (r3d's held-out motions) or a HumanML3D folder.")
    ] = "synthetic",
    split: Annotated[str, typer.Option(help="HumanML3D split file (test.txt).")] = "test",
    reference_size: Annotated[
        int, typer.Option(min=32, help="Motions in the synthetic reference set.")
    ] = 640,
    replications: Annotated[
        int, typer.Option(min=1, help="Replications (mean ± 1.96·std/√n); MDM uses 20.")
    ] = 1,
    num_samples: Annotated[
        int, typer.Option(min=32, help="Generated samples per replication; MDM uses 1000.")
    ] = 256,
    mm: Annotated[bool, typer.Option("--mm/--no-mm", help="Also compute multimodality.")] = False,
    mm_prompts: Annotated[int, typer.Option(min=1, help="Prompts for multimodality (MDM: 100).")] = 100,
    mm_repeats: Annotated[
        int, typer.Option(min=11, help="Generations per prompt for multimodality (MDM: 30).")
    ] = 30,
    steps: Annotated[int, typer.Option(min=1, help="DDIM sampling steps.")] = 20,
    guidance: Annotated[
        float | None,
        typer.Option(help="Classifier-free guidance scale (default: the model's).", show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of sampling noise and metric draws.")] = 0,
    stats_dir: Annotated[
        Path | None,
        typer.Option(help="For an MDM checkpoint: folder with Mean.npy and Std.npy.", show_default=False),
    ] = None,
    clip: Annotated[
        Path | None,
        typer.Option(help="For an MDM checkpoint: local CLIP ViT-B/32 folder.", show_default=False),
    ] = None,
    glove: Annotated[
        Path | None,
        typer.Option(help="For a T2M finest.tar: the GloVe folder (our_vab_*).", show_default=False),
    ] = None,
    evaluator_stats: Annotated[
        Path | None,
        typer.Option(
            help="For a T2M finest.tar: folder with t2m_mean.npy / t2m_std.npy.", show_default=False
        ),
    ] = None,
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline",
            help="With --adapter: also evaluate the model without it on the same captions and noise, "
            "and report adapter − base per metric (paired over replications).",
        ),
    ] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Write the JSON report to this file.", show_default=False)
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            help="Also write an HTML page: the metric table and a few animated samples per caption.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """FID, R-precision, matching score, diversity and multimodality of generated motions.

    Example: r3d eval-motion --adapter runs/motion_tiny --baseline --evaluator tiny-t2m --replications 5
    """
    import json

    from r3d.commands.eval_motion import MeasureOptions, ModelOptions, ProtocolOptions, run_eval_motion
    from r3d.core.io import atomic_write_json

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=json_out) as progress:
        report = run_eval_motion(
            model=ModelOptions(
                model=model,
                adapter=adapter,
                steps=steps,
                guidance_scale=guidance,
                stats_dir=stats_dir,
                clip=clip,
                device=device,
            ),
            motions_dir=motions,
            baseline=baseline,
            measure=MeasureOptions(
                evaluator=evaluator,
                glove=glove,
                evaluator_stats=evaluator_stats,
                reference=reference,
                split=split,
                reference_size=reference_size,
            ),
            protocol=ProtocolOptions(
                replications=replications,
                num_samples=num_samples,
                mm=mm,
                mm_prompts=mm_prompts,
                mm_repeats=mm_repeats,
                seed=seed,
            ),
            progress=progress,
        )
    if out is not None:
        atomic_write_json(out, report)
    if html is not None:
        from r3d.commands.eval_motion import collect_report_samples
        from r3d.report.motion import write_motion_report

        options = {"stats_dir": stats_dir, "clip": clip, "guidance_scale": guidance, "device": device}
        options.update(
            steps=steps, seed=seed, reference=reference, split=split, reference_size=reference_size
        )
        write_motion_report(report, collect_report_samples(report, model, motions, adapter, options), html)
    if json_out:
        print(json.dumps(report))
        return
    s = report["settings"]
    table = Table(
        title=f"eval-motion: {s['source']} | evaluator {s['evaluator']} | "
        f"{s['replications']} replication(s) × {s['num_samples']}"
    )
    paired = report.get("paired")
    table.add_column("metric")
    table.add_column("ground truth", justify="right")
    if paired is not None:
        table.add_column("base model", justify="right")
    table.add_column("with adapter" if paired is not None else "generated", justify="right")
    if paired is not None:
        table.add_column("adapter − base (paired)", justify="right")

    def cell(v: list[float] | None) -> str:
        return f"{v[0]:.4f} ± {v[1]:.4f}" if v is not None else ""

    for metric, values in report["summary"].items():
        cells = [cell(values.get("ground truth") if metric != "FID" else None)]
        if paired is not None:
            cells.append(cell(report["baseline"]["summary"][metric].get("generated")))
        cells.append(cell(values.get("generated")))
        if paired is not None:
            diff = paired.get(metric)
            cells.append(f"{diff[0]:+.4f} ± {diff[1]:.4f}" if diff is not None else "")
        table.add_row(metric, *cells)
    console.print(table)
    if out is not None:
        console.print(f"report: {out}")
    if html is not None:
        console.print(f"page: {html}")
