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

One room per job:

- :mod:`.kinds`: the table of source kinds (parser, opener, live or not, help phrase), ``parse_source``,
  ``open_source``, ``SOURCE_HELP``
- :mod:`.base`: the ``FrameSource`` interface, ``Frame``, ``SourceStats``, ``CaptureConfig``
- :mod:`.devices`: opening cameras, network streams and the Pi camera
- :mod:`.files`: video files and image folders
- :mod:`.live`: the threaded live source that reopens a dropped device
- :mod:`.pacer`: ``--fps-limit``
- :mod:`.urls`: stream URL schemes and password redaction

The names below are this package's public face, loaded on first use (PEP 562): ``import edgeface.runtime.capture``
and the help text built from :mod:`.kinds` import no OpenCV.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module (in this package) that defines it
_HOMES = {
    "CaptureConfig": "base", "Frame": "base", "FrameSource": "base", "SourceStats": "base",
    "PICAMERA2_HINT": "devices", "PiCamera2Device": "devices", "open_camera": "devices", "open_stream": "devices",
    "ImageFilesSource": "files", "VideoFileSource": "files",
    "KINDS": "kinds", "PICAMERA2": "kinds", "SIZE_HELP": "kinds", "SOURCE_HELP": "kinds", "SOURCE_KINDS": "kinds",
    "SourceKind": "kinds", "SourceSpec": "kinds", "open_source": "kinds", "parse_source": "kinds",
    "LiveSource": "live", "bgr_to_rgb": "live",
    "Pacer": "pacer",
    "STREAM_SCHEMES": "urls", "redact_url": "urls",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
