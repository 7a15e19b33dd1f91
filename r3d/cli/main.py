"""The ``r3d`` program: one typer app, one module per subcommand."""

from __future__ import annotations

import importlib
import sys

import typer

import r3d
from r3d.cli.common import err_console
from r3d.core.errors import R3DError

app = typer.Typer(
    name="r3d",
    help="RL post-training and evaluation of generative diffusion / flow models: 3D shapes, "
    "multi-view, image editing, motion. Every command runs on r3d's small embedded models on CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# command name → (module in r3d.cli, function name); each module holds one typed function.
COMMANDS: dict[str, tuple[str, str]] = {
    "fetch-weights": ("fetch_weights", "fetch_weights"),
    "voxelize": ("voxelize", "voxelize"),
    "train-vqvae": ("train_vqvae", "train_vqvae"),
    "grpo": ("grpo", "grpo"),
    "sample": ("sample", "sample"),
    "score": ("score", "score"),
    "bench-edit": ("bench_edit", "bench_edit"),
    "eval-motion": ("eval_motion", "eval_motion"),
    "export": ("export", "export"),
}

_DEBUG = False


def _version(value: bool) -> None:
    if value:
        print(f"r3d {r3d.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    global _DEBUG
    _DEBUG = debug


for _name, (_module, _function) in COMMANDS.items():
    app.command(_name)(getattr(importlib.import_module(f"r3d.cli.{_module}"), _function))


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """click's ClickException, from the click that typer runs on: recent typer vendors its own copy
    (``typer._click``), older typer uses the ``click`` package; both are caught."""
    types: list[type[BaseException]] = []
    try:
        from typer._click.exceptions import ClickException as vendored

        types.append(vendored)
    except ImportError:
        pass
    try:
        from click import ClickException

        types.append(ClickException)
    except ImportError:
        pass
    return tuple(types)


_USAGE_ERRORS = _usage_error_types()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: usage mistakes print a short usage message and return 2, user
    errors one ``error:`` line and 2, Ctrl-C 130; ``--debug`` shows tracebacks of real errors."""
    try:
        rc = app(args=argv, standalone_mode=False)  # non-standalone click returns typer.Exit codes
    except R3DError as exc:
        if _DEBUG:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("[yellow]aborted[/]")
        return 1
    except _USAGE_ERRORS as exc:
        exc.show()  # "Usage: r3d CMD ...", "Try 'r3d CMD --help' for help.", "Error: ..."
        return exc.exit_code
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
