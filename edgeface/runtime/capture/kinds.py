"""The kinds of ``--source`` in one table: how each is recognised, how it is opened, whether it is live, how help
names it; and :func:`parse_source` / :func:`open_source`, which read that table.

Adding a source kind is one :class:`SourceKind` entry in :data:`KINDS` (with its parser and opener beside it):
:data:`SOURCE_HELP`, the error messages and ``edgeface run``'s help are built from the table.

Light on purpose (no OpenCV, no numpy): ``edgeface run --help`` imports it for its help text.  Each opener imports
the room that does the work (:mod:`.devices`, :mod:`.files`, :mod:`.live`) when it is called.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from edgeface.errors import SettingError, UserError
from edgeface.runtime.capture.base import CaptureConfig, FrameSource
from edgeface.runtime.capture.urls import STREAM_SCHEMES, redact_url

PICAMERA2 = "picamera2"


@dataclass(frozen=True)
class SourceKind:
    """One kind of ``--source``."""

    name: str
    live: bool  # read by a thread keeping the newest frame, reopened when it drops
    help: str  # its phrase in SOURCE_HELP
    parse: Callable[[str], Any]  # the --source text -> the target to open; None: the text is not this kind
    open: Callable[[Any, CaptureConfig], FrameSource]  # (target, config) -> the opened source
    # Recognised by what is at the path (tried after every kind recognised by its text alone, so "0" or
    # "rtsp://..." name a device whatever files exist).
    on_disk: bool = False
    size_help: Optional[str] = None  # kinds that honour CaptureConfig.size: their name in --capture-size's help
    # Frames of one scene in time order (a face in one frame is likely the same face near there in the next), so
    # faces can be tracked across them; a folder's photos are unrelated to each other.
    continuous: bool = True


@dataclass(frozen=True)
class SourceSpec:
    """What ``--source`` names, parsed but not opened."""

    kind: str  # one of SOURCE_KINDS
    target: Any  # camera index / device path / file path / URL / Pi camera number
    text: str

    @property
    def live(self) -> bool:
        return SOURCE_KINDS[self.kind].live

    @property
    def continuous(self) -> bool:
        """Frames of one scene in time order, where faces can be tracked (not a folder of photos)."""
        return SOURCE_KINDS[self.kind].continuous


# --- each kind's parser: the stripped --source text -> its target, or None ----------------------------------------


def _camera_target(text: str) -> int | str | None:
    if re.fullmatch(r"\d+", text):
        return int(text)
    if re.fullmatch(r"/dev/video\d+", text):
        return text
    return None


def _picamera2_target(text: str) -> Optional[int]:
    m = re.fullmatch(r"picamera2(?::(\d+))?", text, flags=re.IGNORECASE)
    return int(m.group(1) or 0) if m else None


def _stream_target(text: str) -> Optional[str]:
    return text if text.lower().startswith(STREAM_SCHEMES) else None


def _video_target(text: str) -> Optional[Path]:
    from edgeface.runtime.images import is_image_file  # imports OpenCV: not for --help

    path = Path(text).expanduser()
    return path if path.is_file() and not is_image_file(path) else None


def _folder_target(text: str) -> Optional[Path]:
    path = Path(text).expanduser()
    return path if path.is_dir() else None


def _image_target(text: str) -> Optional[Path]:
    from edgeface.runtime.images import is_image_file  # imports OpenCV: not for --help

    path = Path(text).expanduser()
    return path if path.is_file() and is_image_file(path) else None


# --- each kind's opener: (target, config) -> FrameSource --------------------------------------------------------


def _open_camera(target: int | str, config: CaptureConfig) -> FrameSource:
    from edgeface.runtime.capture.devices import open_camera
    from edgeface.runtime.capture.live import LiveSource

    name = f"camera /dev/video{target}" if isinstance(target, int) else f"camera {target}"
    return LiveSource(lambda: open_camera(target, config), name, config)


def _open_picamera2(target: int, config: CaptureConfig) -> FrameSource:
    from edgeface.runtime.capture.devices import PiCamera2Device
    from edgeface.runtime.capture.live import LiveSource

    return LiveSource(lambda: PiCamera2Device(target, config), f"Pi camera {target}", config)


def _open_stream(target: str, config: CaptureConfig) -> FrameSource:
    from edgeface.runtime.capture.devices import open_stream
    from edgeface.runtime.capture.live import LiveSource

    return LiveSource(lambda: open_stream(target, config), f"stream {redact_url(target)}", config)


def _open_video(target: Path, config: CaptureConfig) -> FrameSource:
    from edgeface.runtime.capture.files import VideoFileSource

    return VideoFileSource(target)


def _open_images(target: Path, config: CaptureConfig) -> FrameSource:
    from edgeface.runtime.capture.files import ImageFilesSource

    return ImageFilesSource(target)


# The table.  Its order is the order SOURCE_HELP names the kinds in; the parsers of the kinds recognised by their
# text never accept the same text, nor do those of the kinds on disk, so parsing needs no other order.
KINDS = (
    SourceKind(name="camera", live=True, help="a camera index (0) or /dev/videoN", parse=_camera_target,
               open=_open_camera, size_help="cameras"),
    SourceKind(name=PICAMERA2, live=True, help="picamera2[:N]", parse=_picamera2_target, open=_open_picamera2,
               size_help="picamera2"),
    SourceKind(name="video", live=False, help="a video file", parse=_video_target, open=_open_video, on_disk=True),
    SourceKind(name="stream", live=True, help="an rtsp:// or http:// stream URL", parse=_stream_target,
               open=_open_stream),
    SourceKind(name="folder", live=False, help="a folder of images", parse=_folder_target, open=_open_images,
               on_disk=True, continuous=False),
    SourceKind(name="image", live=False, help="one image", parse=_image_target, open=_open_images, on_disk=True,
               continuous=False),
)
SOURCE_KINDS = {kind.name: kind for kind in KINDS}
_PARSE_ORDER = tuple(k for k in KINDS if not k.on_disk) + tuple(k for k in KINDS if k.on_disk)

SOURCE_HELP = ", ".join(kind.help for kind in KINDS[:-1]) + " or " + KINDS[-1].help
SIZE_HELP = " and ".join(kind.size_help for kind in KINDS if kind.size_help)  # "cameras and picamera2"


def parse_source(text: str) -> SourceSpec:
    """Classify ``--source``; files and folders must exist."""
    text = str(text).strip()
    if not text:
        raise SettingError("source", f"is empty: give {SOURCE_HELP}")
    for kind in _PARSE_ORDER:
        target = kind.parse(text)
        if target is not None:
            return SourceSpec(kind.name, target, text)
    if text.startswith("/dev/"):
        from edgeface.runtime.capture.devices import cameras_present  # imports OpenCV: only on this error

        raise UserError(f"camera {text} not found ({cameras_present()})")
    raise UserError(f"source not found: {text} (expected {SOURCE_HELP})")


def open_source(spec: SourceSpec | str, config: Optional[CaptureConfig] = None) -> FrameSource:
    """Open what ``--source`` names."""
    spec = parse_source(spec) if isinstance(spec, str) else spec
    config = config or CaptureConfig()
    kind = SOURCE_KINDS.get(spec.kind)
    if kind is None:
        raise UserError(f"unknown source kind {spec.kind!r}")
    return kind.open(spec.target, config)
