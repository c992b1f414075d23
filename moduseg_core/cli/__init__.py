"""The ``moduseg`` command. Heavy libraries load only inside the commands that build components."""

from __future__ import annotations

import os
import re
import sys

import typer

from moduseg_core.cli import ablate_cmd, doctor_cmd, labels_cmd, run_cmd
from moduseg_core.cli.bank_cmd import app as bank_app
from moduseg_core.cli.plugins_cmd import app as plugins_app
from moduseg_core.cli.prepare_cmd import app as prepare_app
from moduseg_core.contract.errors import ModusegError

app = typer.Typer(
    name="moduseg",
    help="Training-free weakly supervised semantic segmentation from swappable plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run_cmd.run)
app.command("build-bank")(run_cmd.build_bank_cmd)
app.command("predict")(run_cmd.predict)
app.command("evaluate")(run_cmd.evaluate)
app.command("demo")(run_cmd.demo)
app.command("evaluate-labels")(labels_cmd.evaluate_labels)
app.command("bench")(run_cmd.bench)
app.command("doctor")(doctor_cmd.doctor)
app.add_typer(plugins_app, name="plugins")
app.command("ablate")(ablate_cmd.ablate)
app.add_typer(ablate_cmd.cache_app, name="cache")
app.add_typer(prepare_app, name="prepare")
app.add_typer(bank_app, name="bank")


def _print_version(value: bool) -> None:
    if value:
        from moduseg_core import __version__

        typer.echo(f"moduseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        is_eager=True,
        callback=_print_version,
        expose_value=True,
    ),
) -> None:
    """Training-free weakly supervised semantic segmentation from swappable plugins."""


def main(argv: list[str] | None = None) -> int:
    """Entry point. Every error a user can fix is one line ``Error: ...`` on stderr and exit code 2
    (bad input, config or data, and every command-line usage error); an exception raised inside a
    plugin's component is one line naming the component, its plugin and the method, exit code 1;
    ``EXIT_SKIPPED`` (3) means the job finished but skipped images (``on_error: skip``);
    MODUSEG_DEBUG=1 shows tracebacks."""
    debug = os.environ.get("MODUSEG_DEBUG", "") not in ("", "0")
    try:
        result = app(args=argv, prog_name="moduseg", standalone_mode=False)
    except ModusegError as exc:
        _stopped()
        if debug:
            raise
        typer.echo(f"Error: {_one_line(str(exc))}", err=True)
        return _exit(2)
    except KeyboardInterrupt:
        _stopped()
        typer.echo("Interrupted.", err=True)
        return _exit(130)
    except Exception as exc:
        kind = _click_error_kind(exc)
        _stopped()
        if kind is None:
            from moduseg_core.contract.plugins import failed_component

            line = None if debug else failed_component(exc)
            if line is None:
                raise  # a failure of moduseg itself (or MODUSEG_DEBUG=1): the traceback
            typer.echo(f"Error: {line}", err=True)
            return _exit(1)
        if kind == "help":  # a bare command group (`moduseg`, `moduseg plugins`): its help, as requested
            message = exc.format_message()  # type: ignore[attr-defined]
            if message.strip():
                typer.echo(message)
            return _exit(0)
        if kind == "abort":
            typer.echo("Aborted.", err=True)
            return _exit(130)
        if debug:
            raise
        typer.echo(f"Error: {_usage_message(exc)}", err=True)
        return _exit(2)
    return _exit(result if isinstance(result, int) else 0)


def _stopped() -> None:
    """A command stopped on an error: progress bars closed, output folders it began but wrote nothing into
    left as they were found (``OutputDir.abandon``)."""
    from moduseg_core.files.outputs import abandon_open
    from moduseg_core.files.progress import close_all

    close_all()
    abandon_open()


def _click_classes(name: str) -> tuple[type, ...]:
    """``name`` from click and from the click that typer ≥ 0.29 bundles (``typer._click``), whichever
    of them is loaded (only a loaded one can have raised)."""
    found = []
    for module in ("click.exceptions", "typer._click.exceptions"):
        loaded = sys.modules.get(module)
        cls = getattr(loaded, name, None) if loaded is not None else None
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _click_error_kind(exc: BaseException) -> str | None:
    """'help', 'abort', 'usage' (any other click exception) or None (not click's)."""
    if isinstance(exc, _click_classes("NoArgsIsHelpError")):
        return "help"
    typer_abort = type(exc).__name__ == "Abort" and type(exc).__module__.startswith("typer")
    if isinstance(exc, _click_classes("Abort")) or typer_abort:
        return "abort"
    if isinstance(exc, _click_classes("ClickException")):
        return "usage"
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _usage_message(exc: Exception) -> str:
    """Click's message (with its closest-match suggestion) on one line, and where to read the usage."""
    message = _one_line(exc.format_message())  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    unknown = re.match(r"No such command '([^']*)'", message)
    if unknown and "did you mean" not in message.lower() and ctx is not None:  # older click does not suggest
        from moduseg_core.contract.errors import closest

        match = closest(unknown.group(1), ctx.command.list_commands(ctx))
        message = message.rstrip(".") + (f". Did you mean '{match}'?" if match else ".")
    command = getattr(ctx, "command_path", None) or "moduseg"
    if command and not message.endswith((".", "?")):
        message += "."
    return f"{message} See `{command} --help`."


def _exit(code: int) -> int:
    if __name__ != "__main__" and sys.argv and sys.argv[0].endswith("moduseg"):
        sys.exit(code)
    return code
