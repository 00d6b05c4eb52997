"""How a command reports a user's mistake: one ``error: ...`` line on stderr and exit code 2.

Kept apart from :mod:`edgeface.cli`, which imports every command module to register it: a command module that
imported the decorator from there could not be imported on its own (a circular import).
"""

from __future__ import annotations

import functools
from typing import Callable

import typer

from edgeface.errors import SettingError, UserError


def fail(message: str) -> typer.Exit:
    """Print one error line on stderr and return the exit to raise (code 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def user_errors(fn: Callable) -> Callable:
    """Decorator for command bodies: a :class:`UserError` becomes one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SettingError as exc:  # library code names the setting; here it is the command's flag
            raise fail(str(exc.as_flag())) from None
        except UserError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(code=130) from None

    return wrapper
