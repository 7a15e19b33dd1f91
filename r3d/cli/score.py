"""``r3d score``: score mesh files with reward adapters (table or JSON)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from r3d.cli.common import console, err_console
from r3d.commands.score import ScoreRecord


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _table(records: list[ScoreRecord], names: list[str]) -> Table:
    """One row per file (relative to the files' common folder unless that is the root), one column per score."""
    folder = os.path.commonpath([os.path.dirname(os.path.abspath(r.path)) for r in records])
    at_root = os.path.dirname(folder) == folder
    keys = list(dict.fromkeys(k for r in records for k in r.scores))
    show_label = any(r.label is not None for r in records)
    title = f"rewards: {', '.join(names)}" + ("" if at_root else f"   folder: {folder}")
    headers = ["faces", "verts", *(k.split("/")[-1] for k in keys)]
    # on a narrow terminal give every number column a fixed width (headers fold, values never do);
    # rich would otherwise squeeze the last columns away
    narrow = 14 + sum(len(h) + 3 for h in headers) + (16 if show_label else 0) > console.width
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0 if narrow else 1))
    table.add_column("file", overflow="fold", min_width=12)
    for key, header in zip(["", "", *keys], headers, strict=True):
        style = "bold" if key and "/" not in key else None
        table.add_column(header, justify="right", overflow="fold", width=5 if narrow else None, style=style)
    if show_label:
        table.add_column("class", overflow="fold")
    for r in records:
        name = r.path if at_root else os.path.relpath(os.path.abspath(r.path), folder)
        row = [name if r.ok else f"[red]{name}[/]", str(r.faces or "-"), str(r.vertices or "-")]
        row += [_cell(r.scores.get(k)) for k in keys]
        if show_label:
            row.append("-" if r.label is None else f"{r.label} ({r.label_prob:.2f})")
        table.add_row(*row)
    return table


def score(
    files: Annotated[
        list[str], typer.Argument(help="Mesh files, folders (searched recursively) or glob patterns.")
    ],
    rewards: Annotated[
        str, typer.Option("--rewards", "-r", help="Comma-separated rewards: geometry, normal, semantic.")
    ] = "geometry,normal,semantic",
    prompt: Annotated[
        str | None,
        typer.Option("--prompt", "-p", help="Text prompt for the semantic reward (skipped without it)."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of records instead of a table.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also write the records to this file (.json, or .csv).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Meshes per reward call.")] = 16,
) -> None:
    """Score meshes (OBJ, PLY, STL, OFF, GLB, glTF): one row per file, one column per reward component.

    A file that cannot be read gets its own error row; the exit code is then 1.

    Example: r3d score mesh.glb meshes/ -r geometry,semantic --prompt "a cube" --json
    """
    from r3d.commands.score import build_reward, records_json, score_files, select_rewards, write_records
    from r3d.mesh.io import expand_inputs

    paths = expand_inputs(files)
    names, skipped = select_rewards(rewards, has_prompt=prompt is not None)
    if skipped:
        err_console.print(
            f"[yellow]note:[/] skipping {', '.join(skipped)} (needs --prompt TEXT)", highlight=False
        )
    reward_objs = [build_reward(name) for name in names]

    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=len(paths) < 2,
    ) as progress:
        task = progress.add_task("score", total=len(paths))
        records = score_files(
            paths, reward_objs, prompt, batch_size, on_progress=lambda n: progress.advance(task, n)
        )
    if out is not None:
        write_records(records, out)

    failed = sum(not r.ok for r in records)
    if json_output:
        typer.echo(records_json(records))
    else:
        console.print(_table(records, names))
        for r in records:
            if r.error:
                console.print(f"[red]✗ {r.path}:[/] {r.error}", highlight=False, soft_wrap=True)
        summary = f"{len(records) - failed} scored, {failed} failed"
        console.print(f"[red]{summary}[/]" if failed else summary, highlight=False)
    if out is not None:
        err_console.print(f"wrote {out}", highlight=False)
    if failed:
        raise typer.Exit(1)
