"""What a run adds up to: counts, identities and stage times over its frames, and the summary made from them.

:class:`StageTimes` keeps the per-frame stage times in bounded memory (a service runs for months);
:class:`RunStats` counts frames, faces and names, and :meth:`RunStats.summary` is the run's last JSON line.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from edgeface.runtime.procstats import peak_rss_mb, process_age
from edgeface.runtime.results import STAGES, FrameResult

# Stage times of at most this many frames are kept for the run summary's medians: every frame's up to it (exact
# figures), a uniform sample of all frames beyond.  Keeping every frame's grew a service by ~160 bytes a frame, for
# ever (2 MB per 10,000 frames, 140 MB a day at 10 fps: issue 22's soak); this is a fixed 400 KB at most.
STAGE_SAMPLE_FRAMES = 10_000


class StageTimes:
    """Per-frame stage times (ms) for the summary's medians and percentiles, in bounded memory.

    The first ``capacity`` frames are all kept, so the figures of shorter runs are exact.  Beyond, frame ``n``
    replaces a random kept row with probability ``capacity / n`` (reservoir sampling, Vitter's algorithm R), so the
    rows stay a uniform sample of the whole run and its medians estimate the run's (to about half a percentile at
    10,000 rows).  Seeded, so one run's frames give one summary.
    """

    def __init__(self, stages: Iterable[str] = STAGES, capacity: int = STAGE_SAMPLE_FRAMES, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"StageTimes needs a capacity of at least 1 frame, got {capacity}")
        self.stages = tuple(stages)
        self.capacity = capacity
        self.seen = 0  # frames added, kept or not
        self._rows = np.zeros((min(capacity, 256), len(self.stages)))  # doubled as needed, up to capacity
        self._rng = random.Random(seed)

    def add(self, ms: dict) -> None:
        """Record one frame's stage times (a stage it lacks counts 0)."""
        if self.seen < self.capacity:
            slot = self.seen
            if slot == len(self._rows):
                grown = np.zeros((min(2 * len(self._rows), self.capacity), len(self.stages)))
                grown[:slot] = self._rows
                self._rows = grown
        else:
            slot = self._rng.randrange(self.seen + 1)
        if slot < self.capacity:
            self._rows[slot] = [ms.get(s, 0.0) for s in self.stages]
        self.seen += 1

    @property
    def rows(self) -> np.ndarray:
        """The kept frames' times, (frames kept, stages)."""
        return self._rows[:min(self.seen, self.capacity)]

    def median(self, stage: str) -> float:
        """Median time of one stage over the kept frames (0 with none)."""
        rows = self.rows
        return float(np.median(rows[:, self.stages.index(stage)])) if len(rows) else 0.0

    def frame_totals(self) -> np.ndarray:
        """Each kept frame's time summed over the stages."""
        return self.rows.sum(axis=1)


@dataclass
class RunStats:
    """Counts and stage times over a run, and the summary made from them."""

    frames: int = 0
    faces: int = 0
    identities: Counter = field(default_factory=Counter)
    stage_times: StageTimes = field(default_factory=StageTimes)
    started: Optional[float] = None  # perf_counter when the first frame was asked for
    first_result: Optional[float] = None  # perf_counter when the first frame was done
    finished: Optional[float] = None
    first_frame_s: Optional[float] = None  # process start -> first frame done (the cold-start figure)

    def add(self, result: FrameResult) -> None:
        now = time.perf_counter()
        if self.first_result is None:
            self.first_result = now
            self.first_frame_s = process_age()
        self.frames += 1
        self.faces += len(result.faces)
        self.identities.update(f.identity for f in result.faces)
        self.stage_times.add(result.ms)
        self.finished = now

    def fps(self) -> float:
        if not self.frames or self.started is None or self.finished is None:
            return 0.0
        return self.frames / max(self.finished - self.started, 1e-9)

    def summary(self, extra: Optional[dict] = None) -> dict:
        medians = {s: round(self.stage_times.median(s), 3) for s in self.stage_times.stages}
        total = self.stage_times.frame_totals()
        out = {
            "frames": self.frames,
            "faces": self.faces,
            "identities": dict(self.identities.most_common()),
            "fps": round(self.fps(), 2),
            "seconds": round((self.finished - self.started), 3) if self.frames else 0.0,
            "median_ms": medians,
            "median_frame_ms": round(float(np.median(total)), 3) if len(total) else 0.0,
            "p90_frame_ms": round(float(np.percentile(total, 90)), 3) if len(total) else 0.0,
        }
        if self.first_frame_s is not None:
            out["first_frame_s"] = round(self.first_frame_s, 3)
        rss = peak_rss_mb()
        if rss is not None:
            out["peak_rss_mb"] = round(rss, 1)
        out.update(extra or {})
        return out
