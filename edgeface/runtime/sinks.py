"""Where the results of a run go: JSON event lines, the status line on stderr, and crops of unknown faces.

Each sink is a callable taking one :class:`~edgeface.runtime.results.FrameResult`, handed to
:func:`edgeface.runtime.pipeline.run_loop` (the live preview, :mod:`edgeface.runtime.preview`, is one more).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from edgeface.errors import SettingError
from edgeface.runtime.results import FrameResult

log = logging.getLogger(__name__)


class EventWriter:
    """JSON lines, one per processed frame, flushed as they come (a consumer may be tailing them).

    When the reader goes away (``edgeface run ... | head``) the run is stopped through ``stop``
    instead of dying with a BrokenPipeError traceback.
    """

    def __init__(self, stream, stop: Optional[threading.Event] = None) -> None:
        self.stream = stream
        self.stop = stop
        self.broken = False

    def _write(self, obj: dict) -> None:
        if self.broken:
            return
        try:
            self.stream.write(json.dumps(obj) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self.broken = True
            try:  # point the descriptor at /dev/null so Python's exit-time flush is quiet too
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stream.fileno())
                os.close(devnull)
            except (OSError, AttributeError, ValueError):
                pass
            if self.stop is not None:
                self.stop.set()

    def __call__(self, result: FrameResult) -> None:
        self._write(result.to_event())

    def write_summary(self, summary: dict) -> None:
        self._write({"summary": summary})


class UnknownSaver:
    """``--save-unknown DIR``: keep a crop of each unknown face, for enrolling later.

    A stranger in front of a camera is unknown in every frame; a crop is saved only
    when no crop saved in the last ``cooldown_s`` seconds looks like the same face
    (cosine >= threshold).  The crop is the detection box widened by half its size,
    from the original frame, so ``edgeface enroll`` can detect and align it again.
    Strangers' faces are biometric data kept without their consent: the folder is
    created 0700, each crop 0600, and the folder is capped (``max_files``,
    ``max_bytes``, oldest dropped first) and aged (``max_age_s``), at start and
    after every save, so a board running for months keeps days, not a library.
    """

    PATTERN = "unknown_*.png"

    def __init__(self, folder: str | os.PathLike, threshold: float, cooldown_s: float = 5.0,
                 margin: float = 0.5, max_files: int = 1000, max_bytes: int = 100 * 1024 * 1024,
                 max_age_s: float = 30 * 86400.0) -> None:
        self.folder = Path(folder)
        try:
            # Strangers' faces: a folder only the service's account can list, crops only it can read.
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingError("save_unknown", f"{self.folder}: cannot create the folder ({exc.strerror or exc})") \
                from None
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.margin = margin
        self.max_files, self.max_bytes, self.max_age_s = max_files, max_bytes, max_age_s
        self.recent: list[tuple[float, np.ndarray]] = []
        self.saved = 0
        self.failed = 0  # crops that could not be written
        self.pruned = 0  # crops deleted by the caps and the age limit
        self._failing = False  # warn once per run of failures, not on every frame of a full disk
        self.prune()

    def prune(self, now: Optional[float] = None) -> int:
        """Delete the crops over the age limit, then the oldest until the count and size caps hold; returns how
        many were deleted.  Only files this saver names (``unknown_*.png``) are touched."""
        now = time.time() if now is None else now
        crops = []
        for path in self.folder.glob(self.PATTERN):
            try:
                st = path.stat()
            except OSError:  # deleted meanwhile
                continue
            crops.append((st.st_mtime, path.name, path, st.st_size))
        crops.sort()  # oldest first (names carry the time too: ties by name)
        total = sum(c[3] for c in crops)
        doomed = []
        for i, (mtime, _, path, size) in enumerate(crops):
            left = len(crops) - i
            if now - mtime > self.max_age_s or left > self.max_files or total > self.max_bytes:
                doomed.append(path)
                total -= size
            else:
                break
        deleted = 0
        for path in doomed:
            try:
                path.unlink()
                deleted += 1
            except OSError:
                continue
        self.pruned += deleted
        return deleted

    def __call__(self, result: FrameResult) -> None:
        if result.image is None:
            return
        now = time.monotonic()
        # Only crops of earlier frames count: two faces in one frame are two people.
        earlier = [(t, e) for t, e in self.recent if now - t < self.cooldown_s]
        self.recent = list(earlier)
        for i, face in enumerate(result.faces):
            if face.known or face.embedding is None:
                continue
            if any(float(e @ face.embedding) >= self.threshold for _, e in earlier):
                continue
            from edgeface.runtime.images import write_image

            crop = context_crop(result.image, face.box, self.margin)
            if crop.size == 0:  # a box wholly outside the frame: nothing to keep
                continue
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.timestamp))
            path = self.folder / f"unknown_{stamp}_f{result.source_frame:06d}_{i}.png"
            try:
                write_image(path, crop, private=True)
            except OSError as exc:
                # A full disk or a vanished folder must not stop a long-running service: the crops are a
                # convenience, recognition goes on.
                self.failed += 1
                if not self._failing:
                    log.warning("cannot save an unknown face to %s (%s); going on without it (further failures "
                                "are not logged until a crop is saved again)", path, exc.strerror or exc)
                self._failing = True
                continue
            self._failing = False
            self.recent.append((now, face.embedding))
            self.saved += 1
            self.prune()


def context_crop(image: np.ndarray, box: np.ndarray, margin: float = 0.5) -> np.ndarray:
    """The box widened by ``margin`` of its size on every side, clipped to the image."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = [float(v) for v in box]
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    xa, ya = max(0, int(x1 - mx)), max(0, int(y1 - my))
    xb, yb = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
    return np.ascontiguousarray(image[ya:yb, xa:xb])


class StatusLine(logging.Handler):
    """The rolling human-readable status on stderr, and the logging handler that writes around it.

    On a terminal one line is redrawn in place (``\\r``) every ``interval_s``; to a
    file or journal (systemd) a full line is written every ``log_interval_s``.
    Log records clear the status line first so the two never interleave.
    """

    def __init__(self, stream, interval_s: float = 0.5, log_interval_s: float = 10.0, enabled: bool = True) -> None:
        super().__init__(level=logging.INFO)
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval_s = interval_s if self.tty else log_interval_s
        self.enabled = enabled
        self._last = 0.0
        self._shown = False
        self._window: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.clear()
            self.stream.write(f"{record.levelname.lower()}: {record.getMessage()}\n")
            self.stream.flush()
        except Exception:  # logging must never break the run
            self.handleError(record)

    def clear(self) -> None:
        if self._shown and self.tty:
            self.stream.write("\r\033[K")
            self._shown = False

    def __call__(self, result: FrameResult) -> None:
        now = time.monotonic()
        self._window.append(now)
        if len(self._window) > 60:
            del self._window[:-60]
        if not self.enabled or now - self._last < self.interval_s:
            return
        self._last = now
        fps = (len(self._window) - 1) / (self._window[-1] - self._window[0]) if len(self._window) > 1 else 0.0
        names = ", ".join(f"{f.identity} {f.score:.2f}" for f in result.faces) or "no face"
        stage = " ".join(f"{k} {v:.1f}" for k, v in result.ms.items())
        line = f"frame {result.frame + 1} | {fps:5.1f} fps | {names} | ms: {stage}"
        if self.tty:
            self.stream.write("\r\033[K" + line[:200])
            self._shown = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
