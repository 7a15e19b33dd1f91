"""Helpers shared by the thin CLI commands (console, override option)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a recipe field, e.g. --set train.lr=3e-4 --set rewards.geometry.weight=0.5 "
        "(values are YAML: numbers, true/false, \\[lists]). Repeatable.",
        show_default=False,
    ),
]
