"""Faces followed over frames (edgeface.runtime.tracker): when a track may name a face, and when it must not.

Synthetic matcher outputs here (the tracker reads boxes, names and scores only); the Hamilton clip's figures with
the shipped model are in tests/test_recognizer.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeface.runtime.results import FaceResult, FrameResult
from edgeface.runtime.tracker import FaceTracker, TrackConfig

pytestmark = pytest.mark.board

THRESHOLD = 0.9


def face(x: float, name: str = "unknown", score: float = 0.85, nearest: str = "ann", size: float = 60.0) -> FaceResult:
    return FaceResult(box=np.array([x, 50.0, x + size, 50.0 + size]), keypoints=np.zeros((6, 2)), det_score=0.9,
                      identity=name, score=score, nearest=nearest)


def run(frames: list[list[FaceResult]], config: TrackConfig = TrackConfig()) -> FaceTracker:
    tracker = FaceTracker(THRESHOLD, config)
    for i, faces in enumerate(frames):
        tracker.update(i, faces)
    return tracker


def test_a_face_matched_on_two_frames_keeps_its_name_when_it_scores_just_under():
    frames = [[face(100, "ann", 0.95)], [face(103, "ann", 0.93)], [face(106)], [face(109, score=0.81)]]
    tracker = run(frames)
    assert [f.identity for [f] in frames] == ["ann"] * 4
    assert [f.named_by for [f] in frames] == [None, None, "track", "track"] and tracker.named == 2
    assert len({f.track for [f] in frames}) == 1


def test_one_confident_frame_is_not_enough():
    frames = [[face(100, "ann", 0.95)], [face(103)], [face(106)]]
    run(frames)
    assert [f.identity for [f] in frames] == ["ann", "unknown", "unknown"]


@pytest.mark.parametrize("later", [dict(score=0.79), dict(nearest="bob"), dict(nearest=None, score=-1.0)])
def test_a_face_far_below_or_nearer_someone_else_stays_unknown(later):
    # score under threshold - margin (0.8), or its own nearest person is another one: a cut to someone else at the
    # same place, or a passer-by, takes no name from the track.
    frames = [[face(100, "ann", 0.95)], [face(102, "ann", 0.95)], [face(104, **later)]]
    run(frames)
    assert frames[2][0].identity == "unknown" and frames[2][0].named_by is None


def test_a_track_lost_for_longer_than_the_gap_starts_again():
    frames = [[face(100, "ann", 0.95)], [face(102, "ann", 0.95)], [], [], [], [], [face(104)]]
    run(frames, TrackConfig(max_gap=3))
    assert frames[-1][0].identity == "unknown" and frames[-1][0].track != frames[0][0].track


def test_boxes_that_do_not_overlap_are_different_tracks():
    frames = [[face(100, "ann", 0.95)], [face(102, "ann", 0.95)], [face(400)]]
    run(frames)
    assert frames[2][0].identity == "unknown" and frames[2][0].track != frames[1][0].track


def test_never_two_faces_with_one_name_in_a_frame():
    # ann is matched on her own face in frame 2; the track of an overlapping look-alike must not name it ann too.
    frames = [[face(100, "ann", 0.95)], [face(102, "ann", 0.95)],
              [face(104, score=0.88), face(300, "ann", 0.97)]]
    run(frames)
    assert [f.identity for f in frames[2]] == ["unknown", "ann"]


def test_a_split_vote_names_nobody_and_the_majority_wins():
    tied = [[face(100, "ann", 0.95)], [face(102, "bob", 0.95, nearest="bob")], [face(104, "ann", 0.95)],
            [face(106, "bob", 0.95, nearest="bob")], [face(108)]]
    run(tied)
    assert tied[-1][0].identity == "unknown"
    majority = [[face(100, "ann", 0.95)], [face(102, "bob", 0.95, nearest="bob")], [face(104, "ann", 0.95)],
                [face(106)]]
    run(majority)
    assert majority[-1][0].identity == "ann"


def test_faces_are_paired_with_the_track_they_overlap_most():
    # Two people side by side moving right: each keeps its own track and name.
    frames = [[face(100, "ann", 0.95), face(150, "bob", 0.95, nearest="bob")],
              [face(104, "ann", 0.95), face(154, "bob", 0.95, nearest="bob")],
              [face(108), face(158, nearest="bob")]]
    run(frames)
    assert [f.identity for f in frames[2]] == ["ann", "bob"]
    assert frames[2][0].track == frames[0][0].track and frames[2][1].track == frames[0][1].track


def test_events_say_which_track_and_who_named_a_face():
    frames = [[face(100, "ann", 0.95)], [face(103, "ann", 0.93)], [face(106)]]
    run(frames)
    event = FrameResult(2, 2, 0.0, frames[2], {}).to_event()["detections"][0]
    assert event["identity"] == "ann" and event["named_by"] == "track" and event["track"] == frames[0][0].track
    untracked = face(1).to_dict()
    assert "track" not in untracked and "named_by" not in untracked


def test_a_folder_of_photos_is_not_tracked_but_a_video_is(media_dir, tmp_path, runtime_bundle):
    # The same photo twice in a folder: identical boxes, yet unrelated pictures: no track joins them.
    import shutil

    from run_cli import CLIP, events_of, invoke

    for name in ("a.jpg", "b.jpg"):
        shutil.copy(media_dir / "obama.jpg", tmp_path / name)
    photos, summary = events_of(invoke("run", "-s", tmp_path, "-m", runtime_bundle, "-q").stdout)
    assert summary["frames"] == 2 and summary["named_by_track"] is None
    assert all("track" not in d for f in photos for d in f["detections"])
    clip, _ = events_of(invoke("run", "-s", media_dir / CLIP, "-m", runtime_bundle, "--max-frames", 5, "-q").stdout)
    tracks = [d["track"] for f in clip for d in f["detections"]]
    assert tracks and len(set(tracks)) < len(tracks)  # the same faces followed over the 5 frames
