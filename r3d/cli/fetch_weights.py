"""``r3d fetch-weights``: download exactly the files a backend needs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from r3d.cli.common import console


def fetch_weights(
    name: Annotated[str | None, typer.Argument(help="Weights name (see --list).", show_default=False)] = None,
    local_dir: Annotated[
        Path | None,
        typer.Option(help="Put the files here (repo layout) instead of the hub cache.", show_default=False),
    ] = None,
    revision: Annotated[
        str | None, typer.Option(help="Branch, tag or commit of the repo.", show_default=False)
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List known weights and whether they are present.")
    ] = False,
) -> None:
    """Download the files one backend needs from the Hugging Face hub (resumable).

    Gated repos need a token: `hf auth login` or HF_TOKEN. HF_ENDPOINT selects a mirror.

    A family name means its default member: hunyuan3d → hunyuan3d-2.1, uni3d → uni3d-g,
    trellis → trellis-ss, qwen3-vl → qwen3-vl-30b-a3b.

    Examples: r3d fetch-weights hunyuan3d;  r3d fetch-weights --list;
    r3d fetch-weights trellis-ss --local-dir weights/trellis
    """
    from r3d.core.errors import R3DError
    from r3d.core.weights import ALIASES, MANIFEST, fetch, get_spec, status

    if list_ or name is None:
        if name is None and not list_:
            raise R3DError("give a NAME to download, or --list")
        table = Table(title="known weights")
        for col in ("name", "repo", "≈ size", "status", "licence"):
            table.add_column(col, overflow="fold")
        for spec in MANIFEST.values():
            st = status(spec, local_dir)
            colour = {"present": "green", "partial": "yellow", "missing": "red"}.get(st, "dim")
            table.add_row(
                spec.name, spec.repo_id, f"{spec.approx_size_gb:g} GB", f"[{colour}]{st}[/]", spec.licence
            )
        console.print(table)
        aliases = ", ".join(f"{alias} → {target}" for alias, target in ALIASES.items())
        console.print(f"aliases: {aliases}", highlight=False)
        return
    spec = get_spec(name)
    folder = fetch(spec.name, local_dir=local_dir, revision=revision)
    console.print(f"[green]✓[/] {spec.name} → {folder}", highlight=False)
