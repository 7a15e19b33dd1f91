"""``r3d bench-edit``: edit a benchmark, judge the edits with a VLM, write per-category reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from r3d.cli.common import SetOption, console, err_console


def _table(report: dict) -> Table:
    """Per-category table: samples, scored, failed (judge + edit), missing, then score statistics."""
    title = f"headline (mean of category means): {_cell(report['headline'])}"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for header in ("category", "n", "ok", "fail", "todo", "mean", "std", "median", "min", "max"):
        table.add_column(header, justify="left" if header == "category" else "right", no_wrap=True)
    for name, s in [*report["categories"].items(), ("all", report["overall"])]:
        cells = [s["samples"], s["count"], s["failures"] + s["edit_failures"], s["missing"]]
        cells += [s["mean"], s["std"], s["median"], s["min"], s["max"]]
        table.add_row(name, *(_cell(c) for c in cells), style="bold" if name == "all" else None)
    return table


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


DEFAULT_ROOT = Path("runs") / "bench-edit"


def bench_edit(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output folder (records, images, reports, log); default: a new runs/bench-edit/<date-time>, "
            "or with --resume the latest run there.",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Benchmark JSON/JSONL; default: the shipped 10-sample benchmark."),
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", "-r", help="bench-edit recipe YAML; default: offline tiny editor + judge."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a run in --out: redo only missing or failed samples.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Keep the first N samples (after --categories).")
    ] = None,
    categories: Annotated[
        str | None,
        typer.Option("--categories", help="Comma-separated categories to keep, e.g. physics,causal."),
    ] = None,
    shard: Annotated[
        str | None, typer.Option("--shard", help="i/n: do every n-th sample from i (0-based).")
    ] = None,
    edit_only: Annotated[
        bool, typer.Option("--edit-only", help="Run the editor only (GPU phase 1).")
    ] = False,
    judge_only: Annotated[
        bool, typer.Option("--judge-only", help="Judge existing edits only (GPU phase 2).")
    ] = False,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Rebuild the reports from the records.")
    ] = False,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Drop invalid records instead of stopping.")
    ] = False,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Editor seed for every sample (records may set their own).")
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="auto, cpu, cuda or cuda:N for the editor and the local judge."),
    ] = None,
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Image-editing benchmark: the editor edits each image, a VLM judge scores each edit 0-10 with its
    category's prompt, and per-category reports are written; [bold]--resume[/] continues a run with
    the recipe it was started with.

    Examples: r3d bench-edit (the shipped 10-sample benchmark, offline tiny models);
    r3d bench-edit --resume (continue the latest run in runs/bench-edit);
    r3d bench-edit --recipe recipes/bench_edit_qwen.yaml --data bench.jsonl --out runs/qie
    """
    from r3d.commands.bench_edit import run_bench
    from r3d.core.errors import R3DError
    from r3d.core.recipe import load_recipe
    from r3d.core.run_dirs import latest_run_dir, new_run_dir
    from r3d.edit import BenchEditConfig
    from r3d.edit.dataset import SAMPLE_DIR

    if out is None and (resume or judge_only or report_only):
        out = latest_run_dir(DEFAULT_ROOT, "config.yaml")
        if out is None:
            raise R3DError(
                f"nothing to resume in {DEFAULT_ROOT}/; start a run with r3d bench-edit, or give --out DIR"
            )
        err_console.print(f"continuing {out}", highlight=False)
    elif out is None:
        out = new_run_dir(DEFAULT_ROOT)
    saved = out / "config.yaml"
    if (
        recipe is None
        and data is None
        and not overrides
        and saved.is_file()
        and (resume or judge_only or report_only)
    ):
        recipe = saved  # continue with the recipe the run was started with

    sets = list(overrides or [])
    if data is not None:
        sets.append(f"data={json.dumps(str(Path(data).resolve()))}")
    if limit is not None:
        sets.append(f"limit={limit}")
    if categories is not None:
        sets.append(f"categories={json.dumps([c.strip() for c in categories.split(',') if c.strip()])}")
    if shard is not None:
        sets.append(f"shard={json.dumps(shard)}")
    if skip_invalid:
        sets.append("skip_invalid=true")
    if seed is not None:
        sets.append(f"editor.seed={seed}")
    if device is not None:
        sets += [f"editor.device={json.dumps(device)}", f"judge.device={json.dumps(device)}"]
    cfg = load_recipe(recipe or SAMPLE_DIR / "tiny.yaml", BenchEditConfig, sets)
    result = run_bench(
        cfg,
        out,
        resume=resume,
        edit_only=edit_only,
        judge_only=judge_only,
        report_only=report_only,
        console=err_console,
    )
    if as_json:
        print(json.dumps(result.report, indent=2))
        return
    console.print(f"[bold]data:[/] {result.dataset_summary}")
    console.print(
        f"edited {result.edited} (already done {result.skipped_edits}), "
        f"judged {result.judged} (already done {result.skipped_judgments})"
    )
    console.print(_table(result.report))
    for kind in ("html", "markdown", "json", "chart", "records", "log"):
        console.print(f"  {kind:<8} {result.paths[kind]}", highlight=False)
