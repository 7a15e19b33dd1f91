"""``r3d export``: a run's LoRA as a peft adapter folder and, with --merge, the backend's own weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from r3d.cli.common import console


def export(
    run_dir: Annotated[
        Path, typer.Argument(help="A grpo run folder (with checkpoint/).", show_default=False)
    ],
    out: Annotated[
        Path, typer.Option(help="Output folder for the adapter (and merged/).", show_default=False)
    ],
    merge: Annotated[
        bool,
        typer.Option(
            help="Also write merged/: the base weights with the adapter merged, in the backend's format."
        ),
    ] = False,
    ema: Annotated[
        bool, typer.Option(help="Export the EMA of the LoRA weights (runs trained with train.ema.enabled).")
    ] = False,
    dtype: Annotated[
        str,
        typer.Option(
            help="Storage dtype of merged/: auto (the backend's default: fp16 for Hunyuan3D, fp32 for the "
            "others), float32, float16 or bfloat16."
        ),
    ] = "auto",
) -> None:
    """Write OUT/adapter_config.json + OUT/adapter_model.safetensors (loadable with
    peft.PeftModel.from_pretrained on the backend's network) and, with --merge, OUT/merged/.

    Example: r3d export runs/tiny_mesh --out exported --merge
    then:    r3d sample -p 'a cube' --model-weights exported/merged/tiny_shapes.safetensors --out s/
    """
    from r3d.commands.export import export_run

    result = export_run(run_dir, out, merge=merge, ema=ema, dtype=dtype)
    console.print(f"adapter: {result['adapter']}")
    if result["merged"]:
        console.print(f"merged weights: {result['merged']}")
        console.print(
            f"sample from them: r3d sample --model {result['model']} --model-weights {result['merged']} "
            "-p PROMPT --out DIR"
        )
