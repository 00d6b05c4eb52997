"""Faces followed from frame to frame, so a person recognised on a track keeps the name between clear views.

A face turned a little, blurred by motion or lit from the side scores just under the match threshold against the
person's enrolled photo, while the frames around it match clearly.  A single-frame matcher then names the person
on some frames and calls the same face ``unknown`` on the next.  Video recognisers (DeepStream's trackers,
InsightFace's demos) join detections into tracks and vote per track; this does the same, conservatively, because
a wrong name is worse than no name:

- detections continue a track when their boxes overlap the track's last box (IoU, greedy by overlap) within a few
  processed frames; anything else starts a new track;
- a face whose own match clears the threshold keeps it, and counts as a vote for that name on its track;
- an ``unknown`` face is named by its track only when the track holds at least ``votes`` confident matches, the
  name is the track's majority, the face's own nearest enrolled person is that same person and its score is
  within ``margin`` of the threshold; and never when that person is already named on another face in the frame.

So a cut to another person at the same place, a passer-by crossing a known face, or an audience shot after the
performer stays ``unknown``: their nearest person differs, or their score is far below.  Pure Python over the
matcher's outputs: no model; numpy for the box overlaps only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from edgeface.runtime.detector import iou
from edgeface.runtime.results import FaceResult


@dataclass(frozen=True)
class TrackConfig:
    """How detections join tracks and when a track may name a face."""

    iou: float = 0.3  # box overlap that continues a track from its last box
    max_gap: int = 3  # processed frames a track waits for its face (a missed detection, a blink)
    votes: int = 2  # confident matches a track needs before it names faces on its own
    margin: float = 0.1  # a face named by its track scores at least threshold - margin against that person


@dataclass
class Track:
    """One face followed over frames: its last box and the confident names it was given."""

    id: int
    box: object
    last: int
    votes: Counter = field(default_factory=Counter)

    def name(self, min_votes: int) -> Optional[str]:
        """The track's majority name once it has ``min_votes`` confident matches for it (ties: no name)."""
        ranked = self.votes.most_common(2)
        if not ranked or ranked[0][1] < min_votes or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
            return None
        return ranked[0][0]


class FaceTracker:
    """Assigns each frame's faces to tracks and names ``unknown`` faces from their track (see the module doc)."""

    def __init__(self, threshold: float, config: TrackConfig = TrackConfig()) -> None:
        self.threshold = float(threshold)
        self.config = config
        self.tracks: list[Track] = []
        self._next_id = 0
        self.named = 0  # faces named by their track so far

    def update(self, frame: int, faces: list[FaceResult]) -> None:
        """Track ``faces`` (one processed frame, ``frame`` counting processed frames) and fill in names in place."""
        cfg = self.config
        self.tracks = [t for t in self.tracks if frame - t.last <= cfg.max_gap]
        boxes = np.asarray([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        pairs = sorted(((float(overlap), ti, fi) for ti, t in enumerate(self.tracks)
                        for fi, overlap in enumerate(iou(np.asarray(t.box, dtype=np.float64), boxes))), reverse=True)
        track_of: dict[int, Track] = {}
        taken: set[int] = set()
        for overlap, ti, fi in pairs:
            if overlap < cfg.iou:
                break
            if ti in taken or fi in track_of:
                continue
            taken.add(ti)
            track_of[fi] = self.tracks[ti]
        for fi, face in enumerate(faces):
            track = track_of.get(fi)
            if track is None:
                track = Track(self._next_id, face.box, frame)
                self._next_id += 1
                self.tracks.append(track)
                track_of[fi] = track
            track.box, track.last = face.box, frame
            face.track = track.id
            if face.known:
                track.votes[face.identity] += 1
        named_here = {f.identity for f in faces if f.known}
        for fi, face in enumerate(faces):
            if face.known:
                continue
            name = track_of[fi].name(cfg.votes)
            if (name is not None and name not in named_here and face.nearest == name
                    and face.score >= self.threshold - cfg.margin):
                face.identity = name
                face.named_by = "track"
                named_here.add(name)
                self.named += 1

