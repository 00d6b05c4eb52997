"""User-facing errors.

Any :class:`UserError` raised under a CLI command is printed as one line on
stderr and the command exits with code 2, never with a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input: the message says what was wrong and how to fix it."""

    exit_code = 2


class SettingError(UserError):
    """A bad value of one setting, named by its key (``threshold``, ``capture_size``).

    Library code knows the setting, not where its value came from; the layer that took the value names it
    (:meth:`as_flag` for a CLI flag, :meth:`named` for a key in a file).  ``message`` follows that name:
    ``"1.5 is not a cosine similarity: ..."``.
    """

    def __init__(self, key: str, message: str, name: str | None = None) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{name or key} {message}")

    def named(self, name: str) -> SettingError:
        """The same error, its setting called ``name`` (``"threshold in edgeface.toml"``)."""
        return SettingError(self.key, self.message, name)

    def as_flag(self) -> SettingError:
        """The same error naming the CLI flag that sets it (``capture_size`` -> ``--capture-size``)."""
        return self.named("--" + self.key.replace("_", "-"))
