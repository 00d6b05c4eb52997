"""Opening the devices a live source reads: V4L2 cameras, network streams and the Raspberry Pi camera.

Each opener returns an object with ``read() -> (ok, BGR image)`` and ``release()`` (a ``cv2.VideoCapture`` or
:class:`PiCamera2Device`), or raises :class:`UserError` with one line saying why the device cannot be opened.
:class:`edgeface.runtime.capture.live.LiveSource` calls them again to reopen a device that dropped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from edgeface.errors import UserError
from edgeface.runtime.capture.base import CaptureConfig
from edgeface.runtime.capture.urls import redact_url

PICAMERA2_HINT = ("picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
                  "and create the virtual environment with --system-site-packages")


def cameras_present() -> str:
    devices = sorted(Path("/dev").glob("video*"), key=lambda p: (len(p.name), p.name))
    return "cameras present: " + ", ".join(str(d) for d in devices) if devices else "no /dev/video* device present"


def quiet_opencv() -> None:
    """OpenCV prints its own warnings for every failed read/timeout; we log our own, once."""
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # very old OpenCV builds
        pass


def open_camera(target: int | str, config: CaptureConfig):
    """Open a V4L2 camera (index or /dev/videoN); UserError if it is missing or busy."""
    quiet_opencv()
    dev_path = f"/dev/video{target}" if isinstance(target, int) else str(target)
    if sys.platform.startswith("linux") and not Path(dev_path).exists():
        raise UserError(f"camera {target} not found: {dev_path} does not exist ({cameras_present()})")
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
    quiet_opencv()
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(config.open_timeout_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(config.read_timeout_s * 1000)]
    # Not silenced like files: this runs in the reader thread when reopening, and FFmpeg's own
    # line ("Connection refused") helps.
    started = time.monotonic()
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        waited = time.monotonic() - started
        # A server that answers at once with an error (503, 404, a refused connection, a page that is no video)
        # is not a stream that never answered: say which, so a user looks at the camera's URL, not the network.
        why = (f"no answer within {config.open_timeout_s:g} s" if waited >= 0.9 * config.open_timeout_s
               else f"refused, or not a video stream (answered after {waited:.1f} s)")
        raise UserError(f"cannot open stream {redact_url(url)}: {why} (check the URL, the network and the camera)")
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
