"""The live source: a device read by a background thread that keeps only the newest frame.

A slow consumer sees the present rather than a growing backlog.  When the device stops delivering (camera
unplugged, stream dropped or silent past its read timeout) the thread closes it and reopens it with exponential
back-off, logging each step; the run goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

import cv2
import numpy as np

from edgeface.runtime.capture.base import CaptureConfig, Frame, FrameSource

log = logging.getLogger(__name__)


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """A device frame (BGR, BGRA or grey) as RGB uint8."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class LiveSource(FrameSource):
    """A live device read by a thread that keeps only the newest frame and reopens the device when it drops.

    ``opener`` returns an object with ``read() -> (ok, BGR image)`` and ``release()``
    (a ``cv2.VideoCapture``, :class:`PiCamera2Device`, or a test double); it raises
    :class:`UserError` when the device cannot be opened.  The first open happens in
    the constructor, so a missing camera fails at once with one line.
    """

    live = True

    def __init__(self, opener: Callable[[], Any], description: str, config: Optional[CaptureConfig] = None) -> None:
        super().__init__()
        self.opener = opener
        self.description = description
        self.config = config or CaptureConfig()
        self.device = opener()
        self._cond = threading.Condition()
        self._latest: Optional[Frame] = None
        self._taken = -1  # index of the last frame handed out
        self._stopped = threading.Event()
        self._last_frame_time = time.monotonic()
        # The back-off carries over from one outage to the next until the device has delivered frames for a
        # read timeout: a camera that opens but fails its first reads would otherwise be reopened (and logged)
        # every backoff_initial_s for ever.
        self._delay = self.config.backoff_initial_s
        self._opened_at = time.monotonic()
        self._thread = threading.Thread(target=self._reader, name=f"capture {description}", daemon=True)
        self._thread.start()

    # reader thread -------------------------------------------------------------

    def _reader(self) -> None:
        try:
            self._read_until_stopped()
        finally:
            # The reader releases the device it reads: close() may return while a driver read is still blocked
            # here, and OpenCV capture objects must not be released from one thread while read in another.
            self._release_device()

    def _read_until_stopped(self) -> None:
        seq = 0
        while not self._stopped.is_set():
            try:
                ok, bgr = self.device.read() if self.device is not None else (False, None)
            except Exception as exc:  # a driver error is a dropped source, not a crash of the run
                log.debug("read error from %s: %s", self.description, exc)
                ok, bgr = False, None
            if self._stopped.is_set():
                break
            if ok and bgr is not None:
                if time.monotonic() - self._opened_at >= self.config.read_timeout_s:
                    self._delay = self.config.backoff_initial_s  # healthy again: the next outage starts afresh
                rgb = bgr_to_rgb(bgr)
                with self._cond:
                    if self._latest is not None and self._latest.index > self._taken:
                        self.stats.dropped += 1
                    self._latest = Frame(rgb, seq, time.time())
                    self._last_frame_time = time.monotonic()
                    seq += 1
                    self._cond.notify_all()
                continue
            self._reopen()

    def _reopen(self) -> None:
        """Close the dropped device and open it again, waiting longer after each failure.

        The wait doubles after every failed open and after every reopen that did not stay healthy for a read
        timeout (see ``_read_until_stopped``), up to ``backoff_max_s``."""
        self.stats.outages += 1
        self._release_device()
        delay = self._delay
        started = time.monotonic()
        log.warning("%s stopped delivering frames; reopening in %.1f s", self.description, delay)
        attempt = 0
        while not self._stopped.wait(delay):
            attempt += 1
            delay = min(delay * 2, self.config.backoff_max_s)
            try:
                self.device = self.opener()
            except Exception as exc:  # not only UserError: a driver error must not end the reader thread for good
                log.warning("reopening %s failed (attempt %d: %s); next try in %.1f s", self.description, attempt,
                            exc, delay)
                continue
            self._delay, self._opened_at = delay, time.monotonic()
            self.stats.reconnects += 1
            log.warning("%s reopened after %.1f s (attempt %d)", self.description, time.monotonic() - started,
                        attempt)
            return

    def _release_device(self) -> None:
        if self.device is not None:
            try:
                self.device.release()
            except Exception:  # releasing a vanished device must not stop the reader
                pass
            self.device = None

    # consumer ------------------------------------------------------------------

    def read(self, stop: Optional[threading.Event] = None, poll_s: float = 0.2) -> Optional[Frame]:
        """The newest frame not yet returned; waits for one. None once closed or ``stop`` is set."""
        silent_logged = 0.0
        with self._cond:
            while not self._stopped.is_set() and not (stop is not None and stop.is_set()):
                if self._latest is not None and self._latest.index > self._taken:
                    frame = self._latest
                    self._taken = frame.index
                    self.stats.frames += 1
                    return frame
                self._cond.wait(poll_s)
                silent = time.monotonic() - self._last_frame_time
                if silent > 2 * self.config.read_timeout_s and silent - silent_logged > 2 * self.config.read_timeout_s:
                    silent_logged = silent
                    log.warning("no frame from %s for %.0f s; still trying", self.description, silent)
        return None

    def close(self) -> None:
        self._stopped.set()
        with self._cond:
            self._cond.notify_all()
        # The reader may be blocked in a driver read (streams bound it by the read timeout, cameras may not) or in
        # a reopen: don't wait for ever.  Once it ends it releases the device itself (see _reader); releasing it
        # from here while it is still inside read() would race with the driver.
        self._thread.join(timeout=self.config.read_timeout_s + 1.0)
        if self._thread.is_alive():
            log.debug("%s: the reader is still in a driver call; it releases the device when that returns",
                      self.description)
        else:
            self._release_device()
