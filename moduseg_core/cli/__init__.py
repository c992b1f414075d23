"""The ``moduseg`` command. Heavy libraries load only inside the commands that build components."""

from __future__ import annotations

import os
import sys

import typer

from ..errors import ModusegError
from . import ablate_cmd, jobs, labels_cmd
from .plugins_cmd import app as plugins_app

app = typer.Typer(
    name="moduseg",
    help="Training-free weakly supervised semantic segmentation from swappable plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(jobs.run)
app.command("build-bank")(jobs.build_bank)
app.command("predict")(jobs.predict)
app.command("evaluate")(jobs.evaluate)
app.command("demo")(jobs.demo)
app.command("evaluate-labels")(labels_cmd.evaluate_labels)
app.command("bench")(jobs.bench)
app.add_typer(plugins_app, name="plugins")
app.command("ablate")(ablate_cmd.ablate)
app.add_typer(ablate_cmd.cache_app, name="cache")


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from .. import __version__

        typer.echo(f"moduseg {__version__}")
        raise typer.Exit()


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line and exit 2; MODUSEG_DEBUG=1 shows tracebacks."""
    import click

    debug = os.environ.get("MODUSEG_DEBUG", "") not in ("", "0")
    try:
        result = app(args=argv, prog_name="moduseg", standalone_mode=False)
    except ModusegError as exc:
        if debug:
            raise
        typer.echo(f"Error: {exc}", err=True)
        return _exit(2)
    except click.exceptions.Abort:
        typer.echo("Aborted.", err=True)
        return _exit(130)
    except click.ClickException as exc:
        exc.show()
        return _exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        return _exit(130)
    return _exit(result if isinstance(result, int) else 0)


def _exit(code: int) -> int:
    if __name__ != "__main__" and sys.argv and sys.argv[0].endswith("moduseg"):
        sys.exit(code)
    return code
