"""``--fps-limit``: the pacer the run loop waits on between frames."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Pacer:
    """``--fps-limit``: sleep so frames are processed no faster than ``fps``."""

    fps: Optional[float] = None
    _next: float = field(default=0.0)

    def wait(self, stop: Optional[threading.Event] = None) -> None:
        if not self.fps:
            return
        now = time.monotonic()
        if self._next > now:
            if stop is not None:
                stop.wait(self._next - now)
            else:
                time.sleep(self._next - now)
            now = time.monotonic()
        self._next = max(self._next, now) + 1.0 / self.fps
