"""User-facing errors.

Any :class:`UserError` raised under a CLI command is printed as one line on
stderr and the command exits with code 2, never with a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input: the message says what was wrong and how to fix it."""

    exit_code = 2
