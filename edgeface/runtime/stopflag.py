"""A stop request that a signal handler can raise without risking a deadlock."""

from __future__ import annotations

import time
from typing import Optional


class StopFlag:
    """``threading.Event``'s ``set``/``is_set``/``wait``, safe to ``set`` from a signal handler.

    ``Event.set`` takes the event's lock.  Python runs a signal handler in the main thread between two
    bytecodes, so a handler that calls it while that same thread holds the lock -- inside ``Event.wait``,
    or inside the first handler's ``set`` when a second Ctrl-C or SIGTERM arrives -- waits for itself for
    ever, and ``edgeface run`` never exits.  Here ``set`` is a plain attribute write and ``wait`` polls it
    in short sleeps, so a stop is seen within :attr:`poll_s`.
    """

    poll_s = 0.05

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Return once set (True) or after ``timeout`` seconds (False if still not set)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._set:
            if deadline is None:
                time.sleep(self.poll_s)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(self.poll_s, remaining))
        return self._set
