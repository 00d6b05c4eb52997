"""What the data path hands on: :class:`FaceResult` per face, :class:`FrameResult` per processed frame.

The recognizer makes the faces, the loop wraps them with the frame's numbers and stage times, and every sink
(events, status line, preview, unknown-face saver) and the run's statistics read them; the event a frame becomes
in the JSON lines is :meth:`FrameResult.to_event`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edgeface.runtime.gallery import UNKNOWN

# The stages a frame goes through, in order: the keys of FrameResult.ms and of the run summary's medians.
STAGES = ("capture", "detect", "align", "embed", "match")


@dataclass
class FaceResult:
    """One face in one frame."""

    box: np.ndarray  # x1, y1, x2, y2 in frame pixels
    keypoints: np.ndarray  # (6, 2)
    det_score: float
    identity: str
    score: float  # cosine similarity to the nearest enrolled embedding
    nearest: Optional[str]
    crop: Optional[np.ndarray] = None  # the aligned 112x112 RGB crop
    embedding: Optional[np.ndarray] = None
    track: Optional[int] = None  # the face's track over frames (runtime.tracker), None when not tracked
    named_by: Optional[str] = None  # "track": the identity came from the face's track, not its own match

    @property
    def known(self) -> bool:
        return self.identity != UNKNOWN

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "det_score": round(float(self.det_score), 4),
            "identity": self.identity,
            "score": round(float(self.score), 4),
            "nearest": self.nearest,
            **({"track": self.track} if self.track is not None else {}),
            **({"named_by": self.named_by} if self.named_by else {}),
        }


@dataclass
class FrameResult:
    """Everything found in one processed frame, and what each stage cost."""

    frame: int  # processed-frame counter, from 0
    source_frame: int  # the frame's number in its source
    timestamp: float
    faces: list[FaceResult]
    ms: dict[str, float]
    image: Optional[np.ndarray] = None
    name: str = ""

    def to_event(self) -> dict:
        event = {"frame": self.frame, "source_frame": self.source_frame, "timestamp": round(self.timestamp, 3),
                 "detections": [f.to_dict() for f in self.faces],
                 "ms": {k: round(v, 3) for k, v in self.ms.items()}}
        if self.name:
            event["file"] = self.name
        return event
