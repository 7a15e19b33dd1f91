"""``r3d voxelize``: meshes → TRELLIS sparse-structure voxels (PLY of centres + npz of indices)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from r3d.cli.common import console, err_console


def voxelize(
    inputs: Annotated[
        list[str], typer.Argument(help="Mesh files (OBJ, PLY, GLB/GLTF, STL, OFF), folders or glob patterns.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Output folder (NAME.ply, NAME.npz, manifest, summary).")
    ],
    resolution: Annotated[
        int, typer.Option(help="Grid cells per axis over [-0.5, 0.5]^3 (TRELLIS: 64).")
    ] = 64,
    workers: Annotated[int, typer.Option(help="Parallel worker processes.")] = 1,
    shard: Annotated[
        str | None, typer.Option(help="Process only part i of n of the sorted inputs, e.g. 0/4.")
    ] = None,
    up: Annotated[
        str,
        typer.Option(help="Up axis of the files: auto (Blender's importers: GLB/GLTF/OBJ are Y-up), y or z."),
    ] = "auto",
    overwrite: Annotated[
        bool, typer.Option(help="Redo meshes whose outputs are already up to date.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Voxelise meshes exactly as TRELLIS's dataset toolkit does (unit cube, Z-up, 64³ surface shell).

    Example: r3d voxelize meshes/*.glb --out voxels --workers 2
    """
    from r3d.mesh.voxelize import voxelize_many

    summary = voxelize_many(
        inputs,
        out,
        resolution=resolution,
        workers=workers,
        shard=shard,
        up_axis=up,  # type: ignore[arg-type]
        overwrite=overwrite,
        progress=not as_json,
    )
    if as_json:
        print(json.dumps({k: v for k, v in summary.items() if k != "records"}, indent=2))
    else:
        _print_summary(summary)
    if summary["failed"] == summary["total"]:
        err_console.print(
            f"[bold red]error:[/] every mesh failed ({summary['failed']} of {summary['total']}); nothing voxelised",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _print_summary(summary: dict) -> None:
    """The per-mesh table (when the summary lists the records), the counts and the failures."""
    from rich.table import Table

    table = Table(
        title=f"voxelize → {summary['out_dir']}  ({summary['resolution']}³, {summary['seconds']:.2f} s)"
    )
    for col in ("mesh", "status", "voxels", "faces", "seconds"):
        table.add_column(col, justify="left" if col in ("mesh", "status") else "right")
    style = {"ok": "green", "skipped": "dim", "failed": "red"}
    for r in summary["records"]:
        table.add_row(
            r["name"],
            f"[{style[r['status']]}]{r['status']}[/]",
            str(r.get("num_voxels", "–")),
            str(r.get("num_faces", "–")),
            f"{r['seconds']:.2f}",
        )
    if summary["records"]:
        console.print(table)
    console.print(
        f"{summary['ok']} voxelised, {summary['skipped']} up to date, {summary['failed']} failed; "
        f"voxels min/mean/max {summary['voxels']['min']}/{summary['voxels']['mean']:.0f}/{summary['voxels']['max']}"
    )
    for f in summary["failures"]:
        err_console.print(f"[red]failed[/] {f['source']}: {f['error']}", highlight=False, soft_wrap=True)
