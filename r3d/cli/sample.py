"""``r3d sample``: generate from a base model, optionally with a trained LoRA adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from r3d.cli.common import console


def sample(
    prompts: Annotated[
        list[str], typer.Option("--prompt", "-p", help="Prompt (repeatable), e.g. -p 'a cube' -p 'a torus'.")
    ],
    out: Annotated[Path, typer.Option(help="Output folder for meshes, contact_sheet.png and samples.json.")],
    model: Annotated[str, typer.Option(help="Policy adapter name or module:factory.")] = "tiny_shapes",
    adapter: Annotated[
        Path | None,
        typer.Option(help="Trained adapter: a grpo run folder or its checkpoint/.", show_default=False),
    ] = None,
    model_weights: Annotated[
        Path | None,
        typer.Option(
            help="Merged weights written by `r3d export --merge` (the path it prints), loaded by the "
            "model's own loader instead of its default weights.",
            show_default=False,
        ),
    ] = None,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Samples per prompt.")] = 4,
    seed: Annotated[
        int, typer.Option(help="Noise seed: the same seed gives the same noise with or without adapter.")
    ] = 0,
    steps: Annotated[int, typer.Option(min=1, help="Deterministic sampling steps.")] = 10,
    fmt: Annotated[str, typer.Option("--format", help="Mesh file format: glb, obj or ply.")] = "glb",
    score: Annotated[
        str | None,
        typer.Option(help="Comma-separated rewards to score the samples with, e.g. geometry,semantic."),
    ] = None,
) -> None:
    """Sample N outputs per prompt with the deterministic (ODE) sampler and save them with a contact sheet.

    Example: r3d sample -p 'a cube' -p 'a torus' -n 8 --adapter runs/tiny_mesh --out samples/
    Merged:  r3d sample -p 'a cube' --model-weights exported/merged/tiny_shapes.safetensors --out samples/
    """
    from r3d.commands.runner import generate

    options = None
    if model_weights is not None:
        from r3d.commands.export import model_weights_options

        options = model_weights_options(model, model_weights)
    rewards = [r.strip() for r in score.split(",") if r.strip()] if score else None
    result = generate(
        model, prompts, n, seed, out, fmt, steps, adapter=adapter, options=options, reward_names=rewards
    )
    table = Table(title=f"{len(result['items'])} samples in {result['seconds']:.2f}s")
    table.add_column("prompt")
    table.add_column("file")
    extra = [k for k in result["items"][0] if k not in ("prompt", "path")] if result["items"] else []
    for k in extra:
        table.add_column(k, justify="right")
    for item in result["items"]:
        table.add_row(item["prompt"], item["path"] or "[red](empty)[/]", *[f"{item[k]:.3f}" for k in extra])
    console.print(table)
    if result["sheet"]:
        console.print(f"contact sheet: {result['sheet']}")
