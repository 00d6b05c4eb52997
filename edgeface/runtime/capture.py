"""Frame sources for ``edgeface run``: cameras, the Pi camera, video files, network streams, image folders.

Two kinds of source behave differently on purpose:

- *Files* (a video, a folder of images, one image) are read frame by frame: every
  frame is processed, none dropped, and the run ends with the file.
- *Live* sources (a camera, ``picamera2``, an ``rtsp://`` / ``http://`` stream) are
  read by a background thread that keeps only the newest frame, so a slow
  consumer sees the present rather than a growing backlog.  When a live source
  stops delivering (camera unplugged, stream dropped or silent past its read
  timeout) the thread closes it and reopens it with exponential back-off,
  logging each step; the run goes on.

Every source returns RGB uint8 frames, the colour order of every edgeface model.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import cv2
import numpy as np

from edgeface.errors import UserError
from edgeface.runtime.images import UnreadableImage, is_image_file, read_image
from edgeface.runtime.interpreter import quiet_stderr

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
PICAMERA2 = "picamera2"
PICAMERA2_HINT = ("picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
                  "and create the virtual environment with --system-site-packages")
SOURCE_HELP = ("a camera index (0) or /dev/videoN, picamera2[:N], a video file, an rtsp:// or http:// stream URL, "
               "a folder of images or one image")


@dataclass(frozen=True)
class SourceSpec:
    """What ``--source`` names, parsed but not opened."""

    kind: str  # one of SOURCE_KINDS
    target: Any  # camera index / device path / file path / URL / Pi camera number
    text: str

    @property
    def live(self) -> bool:
        return SOURCE_KINDS[self.kind]


# kind -> is it live (read by a thread keeping the newest frame, reopened when it drops)?
SOURCE_KINDS = {"camera": True, "picamera2": True, "stream": True, "video": False, "folder": False, "image": False}


@dataclass
class CaptureConfig:
    """How sources are opened and kept alive."""

    size: Optional[tuple[int, int]] = None  # requested (width, height) for cameras; None: the device's default
    open_timeout_s: float = 10.0  # network streams: give up opening after this long
    read_timeout_s: float = 5.0  # a live source silent this long counts as dropped and is reopened
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0


@dataclass
class Frame:
    """One captured frame."""

    image: np.ndarray  # RGB uint8 (H, W, 3)
    index: int  # the frame's number in its source, from 0
    timestamp: float  # wall-clock time (time.time()) when it was captured
    name: str = ""  # file name for image folders


@dataclass
class SourceStats:
    """What happened while reading a source (reported in the run summary)."""

    frames: int = 0
    dropped: int = 0  # live sources: frames overwritten before the consumer took them
    skipped: int = 0  # folders: unreadable images
    reconnects: int = 0
    outages: int = 0
    ended_early: Optional[str] = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None,)}


def parse_source(text: str) -> SourceSpec:
    """Classify ``--source``; files and folders must exist."""
    text = str(text).strip()
    if not text:
        raise UserError(f"--source is empty: give {SOURCE_HELP}")
    if re.fullmatch(r"\d+", text):
        return SourceSpec("camera", int(text), text)
    if re.fullmatch(r"/dev/video\d+", text):
        return SourceSpec("camera", text, text)
    m = re.fullmatch(r"picamera2(?::(\d+))?", text, flags=re.IGNORECASE)
    if m:
        return SourceSpec("picamera2", int(m.group(1) or 0), text)
    if text.lower().startswith(STREAM_SCHEMES):
        return SourceSpec("stream", text, text)
    path = Path(text).expanduser()
    if path.is_dir():
        return SourceSpec("folder", path, text)
    if path.is_file():
        return SourceSpec("image" if is_image_file(path) else "video", path, text)
    if text.startswith("/dev/"):
        raise UserError(f"camera {text} not found ({_cameras_present()})")
    raise UserError(f"source not found: {text} (expected {SOURCE_HELP})")


def _cameras_present() -> str:
    devices = sorted(Path("/dev").glob("video*"), key=lambda p: (len(p.name), p.name))
    return "cameras present: " + ", ".join(str(d) for d in devices) if devices else "no /dev/video* device present"


# --- low-level devices: read() -> (ok, BGR image), release() -----------------------


def _quiet_opencv() -> None:
    """OpenCV prints its own warnings for every failed read/timeout; we log our own, once."""
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # very old OpenCV builds
        pass


def open_camera(target: int | str, config: CaptureConfig):
    """Open a V4L2 camera (index or /dev/videoN); UserError if it is missing or busy."""
    _quiet_opencv()
    dev_path = f"/dev/video{target}" if isinstance(target, int) else str(target)
    if sys.platform.startswith("linux") and not Path(dev_path).exists():
        raise UserError(f"camera {target} not found: {dev_path} does not exist ({_cameras_present()})")
    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    cap = cv2.VideoCapture(target if isinstance(target, int) else dev_path, api)
    if not cap.isOpened():
        cap.release()
        raise UserError(f"cannot open camera {dev_path}: busy (another program uses it), not a capture device, "
                        "or no permission (add the user to the 'video' group)")
    if config.size:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, config.size[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, config.size[1])
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver's queue adds latency; our thread keeps the newest frame
    return cap


def open_stream(url: str, config: CaptureConfig):
    """Open a network stream with FFmpeg, with open and read timeouts so a dead stream cannot hang the run."""
    _quiet_opencv()
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(config.open_timeout_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(config.read_timeout_s * 1000)]
    # Not silenced like files: this runs in the reader thread when reopening, and FFmpeg's own
    # line ("Connection refused") helps.
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise UserError(f"cannot open stream {redact_url(url)}: no answer or not a video stream within "
                        f"{config.open_timeout_s:g} s (check the URL, the network and the camera)")
    return cap


class PiCamera2Device:
    """The Raspberry Pi camera through picamera2, behind the same read()/release() as OpenCV."""

    def __init__(self, number: int, config: CaptureConfig) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise UserError(PICAMERA2_HINT) from None
        try:
            self.camera = Picamera2(number)
            size = tuple(config.size) if config.size else (640, 480)
            # "RGB888" is B, G, R in memory (libcamera's naming): the same order as OpenCV frames.
            self.camera.configure(self.camera.create_video_configuration(main={"size": size, "format": "RGB888"}))
            self.camera.start()
        except (RuntimeError, IndexError, OSError) as exc:
            raise UserError(f"cannot open Pi camera {number}: {str(exc).splitlines()[0] if str(exc) else exc}") \
                from None

    def read(self) -> tuple[bool, Optional[np.ndarray]]:
        try:
            return True, self.camera.capture_array("main")
        except (RuntimeError, OSError):
            return False, None

    def release(self) -> None:
        try:
            self.camera.stop()
            self.camera.close()
        except Exception:  # closing a camera that already vanished must not stop the run
            pass


def redact_url(url: str) -> str:
    """A stream URL without its password, for logs.

    Camera passwords often hold '/' or '@' that users do not percent-encode, so everything from the first ':' after
    the user name to the last '@' before any query counts as the password: an '@' in the path hides more than it
    must, which is the safe side for a log."""
    return re.sub(r"(://[^:/@]*):[^?#]*@", r"\1:***@", url)


# --- sources ------------------------------------------------------------------------


class FrameSource:
    """Base class: ``read()`` returns the next :class:`Frame`, or None at the end (or when stopped)."""

    live = False
    description = ""

    def __init__(self) -> None:
        self.stats = SourceStats()

    def read(self, stop: Optional[threading.Event] = None) -> Optional[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoFileSource(FrameSource):
    """A video file, every frame in order."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(path)
        self.description = f"video {self.path.name}"
        _quiet_opencv()
        with quiet_stderr():  # FFmpeg prints its own parse errors ("moov atom not found") straight to fd 2
            self.cap = cv2.VideoCapture(str(self.path))
        if not self.cap.isOpened():
            self.cap.release()
            raise UserError(f"cannot read {self.path}: not a video file OpenCV can decode, or a damaged one")
        self.expected = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def read(self, stop: Optional[threading.Event] = None) -> Optional[Frame]:
        if self.cap is None:
            return None
        ok, bgr = self.cap.read()
        if not ok or bgr is None:
            if self.stats.frames == 0:
                raise UserError(f"cannot read {self.path}: the file opened but holds no decodable frame")
            if self.expected and self.stats.frames < self.expected - 1:
                # Containers' frame counts are estimates; one frame short is normal, more is a damaged file.
                self.stats.ended_early = (f"{self.path.name} ended after {self.stats.frames} of the "
                                          f"{self.expected} frames its header announces (truncated or damaged)")
                log.warning(self.stats.ended_early)
            self.close()
            return None
        frame = Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.stats.frames, time.time())
        self.stats.frames += 1
        return frame

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class ImageFilesSource(FrameSource):
    """A folder of images (sorted by name) or one image; unreadable files are skipped with a warning."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        path = Path(path)
        if path.is_dir():
            self.files = sorted((p for p in path.iterdir() if p.is_file() and is_image_file(p)),
                                key=lambda p: _natural_key(p.name))
            if not self.files:
                raise UserError(f"no images in {path} (looked for {', '.join(('.jpg', '.png', '.pgm', '...'))})")
            self.description = f"folder {path} ({len(self.files)} images)"
        else:
            self.files = [path]
            self.description = f"image {path.name}"
        self.position = 0

    def read(self, stop: Optional[threading.Event] = None) -> Optional[Frame]:
        while self.position < len(self.files):
            p = self.files[self.position]
            self.position += 1
            try:
                image = read_image(p)
            except (UnreadableImage, OSError) as exc:
                if len(self.files) == 1:
                    raise UserError(f"cannot read {p}: not a readable image") from None
                log.warning("skipping %s: %s", p.name, exc)
                self.stats.skipped += 1
                continue
            frame = Frame(image, self.position - 1, time.time(), name=p.name)
            self.stats.frames += 1
            return frame
        if not self.stats.frames and self.stats.skipped:
            # skipping a bad file among good ones is a warning; a folder of nothing but bad files is the user's to fix
            raise UserError(f"none of the {self.stats.skipped} images in {self.files[0].parent} could be read "
                            "(damaged files, or not images)")
        return None


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """A device frame (BGR, BGRA or grey) as RGB uint8."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


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


def open_source(spec: SourceSpec | str, config: Optional[CaptureConfig] = None) -> FrameSource:
    """Open what ``--source`` names."""
    spec = parse_source(spec) if isinstance(spec, str) else spec
    config = config or CaptureConfig()
    if spec.kind == "video":
        return VideoFileSource(spec.target)
    if spec.kind in ("folder", "image"):
        return ImageFilesSource(spec.target)
    if spec.kind == "camera":
        name = f"camera /dev/video{spec.target}" if isinstance(spec.target, int) else f"camera {spec.target}"
        return LiveSource(lambda: open_camera(spec.target, config), name, config)
    if spec.kind == "stream":
        return LiveSource(lambda: open_stream(spec.target, config), f"stream {redact_url(spec.target)}", config)
    if spec.kind == "picamera2":
        return LiveSource(lambda: PiCamera2Device(spec.target, config), f"Pi camera {spec.target}", config)
    raise UserError(f"unknown source kind {spec.kind!r}")


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
