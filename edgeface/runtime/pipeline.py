"""The per-frame loop of ``edgeface run``: capture -> detect -> align -> embed -> match (-> track) -> sinks,
timed stage by stage.

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
from edgeface.runtime.tracker import FaceTracker


def run_loop(source: FrameSource, recognizer: Recognizer, sinks: Iterable[Callable[[FrameResult], None]] = (),
             max_frames: Optional[int] = None, fps_limit: Optional[float] = None,
             stop: Optional[threading.Event] = None, keep_image: bool = False,
             tracker: Optional[FaceTracker] = None) -> RunStats:
    """Process frames until the source ends, ``max_frames`` are done or ``stop`` is set.

    With a ``tracker`` faces are followed over frames and an ``unknown`` face may take its track's name (see
    :mod:`edgeface.runtime.tracker`); its time counts in the ``match`` stage.
    """
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
        if tracker is not None:
            t1 = time.perf_counter()
            tracker.update(stats.frames, faces)
            ms["match"] = ms.get("match", 0.0) + (time.perf_counter() - t1) * 1000.0
        result = FrameResult(stats.frames, frame.index, frame.timestamp, faces, ms,
                             image=frame.image if keep_image else None, name=frame.name)
        stats.add(result)
        for sink in sinks:
            sink(result)
    return stats

