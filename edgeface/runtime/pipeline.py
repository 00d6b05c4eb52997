"""The per-frame loop of ``edgeface run``: capture -> detect -> align -> embed -> match -> sinks, timed stage by stage.

:func:`run_loop` pulls frames from a source (:mod:`edgeface.runtime.capture`), feeds the
:class:`~edgeface.runtime.recognizer.Recognizer` and hands every :class:`~edgeface.runtime.results.FrameResult`
to the sinks (:mod:`edgeface.runtime.sinks`: JSON events, status line, unknown-face saver; the preview);
the :class:`~edgeface.runtime.stats.RunStats` it returns make the end-of-run summary.  Loading the models and the
gallery is :func:`edgeface.runtime.recognizer.load_recognizer`.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Optional

from edgeface.runtime.capture import FrameSource, Pacer
from edgeface.runtime.recognizer import Recognizer
from edgeface.runtime.results import FrameResult
from edgeface.runtime.stats import RunStats


def run_loop(source: FrameSource, recognizer: Recognizer, sinks: Iterable[Callable[[FrameResult], None]] = (),
             max_frames: Optional[int] = None, fps_limit: Optional[float] = None,
             stop: Optional[threading.Event] = None, keep_image: bool = False) -> RunStats:
    """Process frames until the source ends, ``max_frames`` are done or ``stop`` is set."""
    stats = RunStats()
    pacer = Pacer(fps_limit)
    stop = stop or threading.Event()
    sinks = list(sinks)
    stats.started = time.perf_counter()
    while not stop.is_set() and (max_frames is None or stats.frames < max_frames):
        pacer.wait(stop)
        if stop.is_set():
            break
        t0 = time.perf_counter()
        frame = source.read(stop)
        if frame is None:
            break
        ms = {"capture": (time.perf_counter() - t0) * 1000.0}
        faces = recognizer.process(frame.image, ms)
        result = FrameResult(stats.frames, frame.index, frame.timestamp, faces, ms,
                             image=frame.image if keep_image else None, name=frame.name)
        stats.add(result)
        for sink in sinks:
            sink(result)
    return stats

