"""The ``edgeface`` command line: one Typer app, one module per command group.

Each module in :mod:`edgeface.commands` defines its options at import time but
imports its heavy dependencies (TensorFlow, the runtime) only inside the command
body, so ``edgeface --help`` stays fast and TensorFlow-free.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(
    name="edgeface",
    help="Face recognition from the workstation to the edge board: prepare, train, evaluate, export, run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# Command modules, in the order their commands appear in `edgeface --help`.
COMMAND_MODULES = (
    "data",
    "train",
    "distill",
    "importer",
    "evaluate",
    "run",
    "enroll",
    "gallery",
    "export",
    "info",
    "devices",
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"edgeface.commands.{name}").register(app)


def _print_version(value: bool) -> None:
    if value:
        from edgeface import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the edgeface version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Face recognition from the workstation to the edge board."""


_register_all()


def run_cli(args: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; a usage error (unknown option, out-of-range or missing value) is one
    ``error: ...`` line on stderr with the command's --help hint, exit code 2, like every other user mistake
    (Typer's own rendering is a usage line, a hint and a framed box)."""
    try:  # Typer >= 0.2x carries its own copy of Click; older releases use the click package
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - depends on the installed Typer
        from click import exceptions
    # Click < 8.2 (the last on Python 3.9) shows a bare group's help itself and has no such error
    no_args_is_help = getattr(exceptions, "NoArgsIsHelpError", ())

    try:
        rv = app(args=args, prog_name="edgeface", standalone_mode=False)
    except no_args_is_help as exc:  # `edgeface` or `edgeface data` alone: the help text, as Typer shows it
        if exc.format_message().strip():  # with Rich the help is already printed and the message is empty
            exc.show()
        return exc.exit_code
    except exceptions.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
        return exc.exit_code
    except typer.Abort:  # end of input at a prompt
        typer.echo("aborted", err=True)
        return 1
    # With standalone_mode off a typer.Exit comes back as its code and a finished command as its return value.
    return rv if type(rv) is int else 0


def main() -> None:
    """Console-script entry point."""
    # TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) buries the commands' own output;
    # set before any command imports TensorFlow, and only when the user has not chosen a level.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(run_cli())
