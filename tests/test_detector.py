"""BlazeFace post-processing (pure numpy) and detection on real photos."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgeface.runtime.detector import (
    DETECTORS,
    BlazeFaceDetector,
    HaarDetector,
    create_detector,
    decode_boxes,
    find_blazeface_file,
    letterbox,
    plausible_rows,
    ssd_anchors,
    weighted_nms,
)
from edgeface.runtime.images import read_image


def test_anchor_counts_match_the_models():
    assert len(ssd_anchors(DETECTORS["short"])) == 896
    assert len(ssd_anchors(DETECTORS["full"])) == 2304
    a = ssd_anchors(DETECTORS["short"])
    # first layer: 16x16 grid, 2 anchors per cell, row-major
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[1], a[0])
    np.testing.assert_allclose(a[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[512], [0.5 / 8, 0.5 / 8])


def test_decode_boxes_centres_on_anchor():
    anchors = np.array([[0.5, 0.25]], np.float32)
    raw = np.zeros((1, 16), np.float32)
    raw[0, 2:4] = 64  # width/height 64 px of a 128 input = 0.5
    raw[0, 4:6] = [12.8, 0]  # first keypoint 0.1 to the right
    rows = decode_boxes(raw, anchors, 128)
    np.testing.assert_allclose(rows[0, :4], [0.25, 0.0, 0.75, 0.5])
    np.testing.assert_allclose(rows[0, 4:6], [0.6, 0.25])


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces():
    rows = np.zeros((3, 16), np.float32)
    rows[0, :4] = [0.0, 0.0, 1.0, 1.0]
    rows[1, :4] = [0.1, 0.0, 1.1, 1.0]
    rows[2, :4] = [5.0, 5.0, 6.0, 6.0]
    out = weighted_nms(rows, np.array([0.9, 0.6, 0.8]), 0.3)
    assert len(out) == 2
    merged, score = out[0]
    assert score == pytest.approx(0.9)
    assert merged[0] == pytest.approx(0.1 * 0.6 / 1.5)  # score-weighted mean


def _finishes(fn, timeout_s: float = 20.0):
    """fn's result, failing (instead of hanging the suite) when it does not return within ``timeout_s``."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(timeout_s)
    assert not worker.is_alive(), f"did not finish within {timeout_s} s (endless loop?)"
    return out[0]


def test_weighted_nms_ends_when_the_best_box_is_degenerate():
    rows = np.zeros((3, 16), np.float32)
    rows[0, :4] = [0.5, 0.5, 0.5, 0.9]  # zero width: IoU 0 with itself
    rows[1, :4] = [0.0, 0.0, 0.4, 0.4]
    rows[2, :4] = [0.1, 0.0, 0.5, 0.4]
    out = _finishes(lambda: weighted_nms(rows, np.array([0.99, 0.9, 0.8]), 0.3))
    assert len(out) == 2  # the degenerate box alone, then the two overlapping normal boxes merged
    np.testing.assert_allclose(out[0][0][:4], rows[0, :4])
    assert out[1][1] == pytest.approx(0.9)
    np.testing.assert_allclose(out[1][0][0], 0.1 * 0.8 / 1.7, rtol=1e-5)


def test_degenerate_and_nan_boxes_from_the_model_are_dropped_and_real_faces_kept():
    """The real detector's decode -> filter -> NMS path, fed raw model outputs with broken rows among good ones."""
    det = create_detector("short")
    assert isinstance(det, BlazeFaceDetector)
    n = len(det.anchors)
    raw_boxes = np.zeros((1, n, 16), np.float32)
    raw_scores = np.full((1, n, 1), -100.0, np.float32)

    def anchor(col: int, row: int) -> int:  # first layer of the short model: 16x16 cells, 2 anchors each
        return (row * 16 + col) * 2

    good = {anchor(4, 4): 10.0, anchor(11, 11): 9.0}
    raw_boxes[0, list(good), 2:4] = 30  # 30x30 px boxes centred on their anchors
    zero_width, inverted, nan_row = anchor(4, 11), anchor(11, 4), anchor(8, 8)
    raw_boxes[0, zero_width, 2:4] = [0, 30]
    raw_boxes[0, inverted, 2:4] = [-10, 30]
    raw_boxes[0, nan_row] = np.nan
    for i, logit in {**good, zero_width: 12.0, inverted: 11.5, nan_row: 11.0}.items():
        raw_scores[0, i] = logit  # the broken rows score highest, so NMS would take them first
    outs = [None, None]
    outs[det._reg_idx], outs[1 - det._reg_idx] = raw_boxes, raw_scores
    det.model.run = lambda tensor: outs

    checks = np.array([[0, 0, 1, 1], [0.5, 0, 0.5, 1], [0.6, 0, 0.4, 1], [0, 0, np.nan, 1], [0, 0, np.inf, 1]])
    assert plausible_rows(checks).tolist() == [True, False, False, False, False]
    faces = _finishes(lambda: det.detect(np.zeros((128, 128, 3), np.uint8)))  # 128 px: no letterbox scaling
    boxes = sorted(f.box.tolist() for f in faces)
    np.testing.assert_allclose(boxes, [[21, 21, 51, 51], [77, 77, 107, 107]], atol=1e-3)
    assert all(np.isfinite(f.keypoints).all() and f.score > 0.99 for f in faces)


def test_letterbox_keeps_aspect():
    img = np.full((50, 100, 3), 255, np.uint8)
    out, (scale, px, py) = letterbox(img, 128)
    assert out.shape == (128, 128, 3)
    assert scale == pytest.approx(1.28) and px == 0 and py == 32
    assert out[0, 0].sum() == 0 and out[64, 64].sum() == 765


@pytest.mark.parametrize("kind", ["short", "full"])
def test_blazeface_files_are_found_in_the_wheel(kind):
    path = find_blazeface_file(kind)
    assert path is not None and path.name == DETECTORS[kind].filename


def test_two_people_gives_two_faces(media_dir):
    det = create_detector("short")
    assert isinstance(det, BlazeFaceDetector)
    faces = det.detect(read_image(media_dir / "two_people.jpg"))
    assert len(faces) == 2
    for f in faces:
        x1, y1, x2, y2 = f.box
        # both eyes, nose and mouth inside the box
        assert np.all((f.keypoints[:4, 0] > x1) & (f.keypoints[:4, 0] < x2))
        assert np.all((f.keypoints[:4, 1] > y1) & (f.keypoints[:4, 1] < y2))


def test_every_att_face_is_found(att_dir):
    det = create_detector("short")
    files = sorted(att_dir.glob("s*/*.pgm"))[::4]
    found = sum(bool(det.detect(read_image(f))) for f in files)
    assert found == len(files)


def test_no_face_in_a_blank_image():
    assert create_detector("short").detect(np.full((200, 300, 3), 127, np.uint8)) == []


def test_haar_fallback_when_no_blazeface_file(monkeypatch, media_dir, caplog):
    import edgeface.runtime.detector as detector

    monkeypatch.setattr(detector, "find_blazeface_file", lambda kind, dirs=(): None)
    det = detector.create_detector("short")
    assert isinstance(det, HaarDetector)
    assert "falling back to OpenCV's Haar cascade" in caplog.text
    faces = det.detect(read_image(media_dir / "obama.jpg"))
    assert len(faces) >= 1 and faces[0].landmarks_estimated
