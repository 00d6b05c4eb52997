"""What every frame source hands out and how sources are set up: the :class:`FrameSource` interface, its
:class:`Frame` and :class:`SourceStats`, and :class:`CaptureConfig`.

Light on purpose (no OpenCV, no numpy at run time): the source registry in :mod:`.kinds` imports it, and the CLI
imports that registry for its help text.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import numpy as np


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
