"""The ``r3d`` program: one typer app, one module per subcommand."""

from __future__ import annotations

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


# --- subcommands (one line each; each module holds one typed function) ---
# <register>
from r3d.cli import grpo as _grpo  # noqa: E402
from r3d.cli import sample as _sample  # noqa: E402

app.command("grpo")(_grpo.grpo)
app.command("sample")(_sample.sample)
from r3d.cli import fetch_weights as _fetch  # noqa: E402

app.command("fetch-weights")(_fetch.fetch_weights)
from r3d.cli import score as _score; app.command("score")(_score.score)  # noqa: E402, E702, I001  # fmt: skip
from r3d.cli import voxelize as _voxelize; app.command("voxelize")(_voxelize.voxelize)  # noqa: E402, E702, I001  # fmt: skip
from r3d.cli import bench_edit as _bench_edit; app.command("bench-edit")(_bench_edit.bench_edit)  # noqa: E402, E702, I001  # fmt: skip
from r3d.cli import train_vqvae as _train_vqvae; app.command("train-vqvae")(_train_vqvae.train_vqvae)  # noqa: E402, E702, I001  # fmt: skip
from r3d.cli import eval_motion as _eval_motion; app.command("eval-motion")(_eval_motion.eval_motion)  # noqa: E402, E702, I001  # fmt: skip
from r3d.cli import export as _export; app.command("export")(_export.export)  # noqa: E402, E702, I001  # fmt: skip
# </register>


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
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
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
