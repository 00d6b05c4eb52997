"""An unknown name among known ones: one line that lists the choices and suggests the closest.

Every table keyed by name (architectures, heads, detectors, face-model options, settings, teachers) answers a
typo the same way, so the wording and the closeness cutoff live here once.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Optional

from edgeface.errors import UserError


def closest(value: str, choices: Iterable[str], cutoff: float = 0.6) -> Optional[str]:
    """The choice nearest ``value`` (difflib's ratio at least ``cutoff``), or None."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(value: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close."""
    near = closest(value, choices, cutoff)
    return f" (did you mean {near!r}?)" if near is not None else ""


def unknown_choice(what: str, value: str, choices: Iterable[str]) -> UserError:
    """A :class:`UserError` for an unknown ``value``, with the closest choice suggested."""
    choices = list(choices)
    return UserError(f"unknown {what} {value!r}{did_you_mean(value, choices)}: choose one of {', '.join(choices)}")


def choice(what: str, value: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else :func:`unknown_choice`'s error."""
    choices = list(choices)
    if value not in choices:
        raise unknown_choice(what, value, choices)
    return value
