"""File sources: a video file, a folder of images or one image, read frame by frame.

Every frame is processed, none dropped, and the run ends with the file.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Optional

import cv2

from edgeface.errors import UserError
from edgeface.runtime.capture.base import Frame, FrameSource
from edgeface.runtime.capture.devices import quiet_opencv
from edgeface.runtime.images import UnreadableImage, is_image_file, read_image
from edgeface.runtime.interpreter import quiet_stderr

log = logging.getLogger(__name__)


class VideoFileSource(FrameSource):
    """A video file, every frame in order."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(path)
        self.description = f"video {self.path.name}"
        quiet_opencv()
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


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]
