"""The recognizer (edgeface.runtime.recognizer): loading a bundle's model files as its manifest says, and what it
recognises with the default model shipped in edgeface/models/default (the Hamilton clip, the knn_examples photos).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from run_cli import CLIP, NEEDS_DEFAULT, events_of, invoke

from edgeface.errors import UserError
from edgeface.runtime.bundle import Bundle, default_bundle_dir
from edgeface.runtime.gallery import UNKNOWN, Gallery
from edgeface.runtime.images import read_image

# Every test in its own folder: `edgeface run` picks up ./gallery.npz when present.
pytestmark = [pytest.mark.board, pytest.mark.usefixtures("in_tmp_dir")]


@NEEDS_DEFAULT
def test_format_int8_mixed_is_accepted_and_preferred(media_dir, tmp_path):
    """A bundle with an `export --auto-mixed` file: `--format int8_mixed` runs it, and so does the default."""
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    int8 = next(f for f in manifest["files"] if f["format"] == "int8")
    shutil.copy(bundle / int8["path"], bundle / "mixed.tflite")  # same bytes, so the same checksum
    manifest["files"].append({**int8, "format": "int8_mixed", "path": "mixed.tflite"})
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    for fmt in (["--format", "int8_mixed"], []):
        result = invoke("run", "-s", media_dir / "obama.jpg", "-m", bundle, *fmt, "-q")
        assert result.exit_code == 0, result.output
        assert events_of(result.stdout)[1]["model"] == str(bundle / "mixed.tflite")


@NEEDS_DEFAULT
def test_a_manifest_without_embedding_dim_takes_it_from_the_model_file(media_dir, tmp_path):
    """A hand-written manifest may leave the size out: enrolling and recognising must still work (the gallery's
    model id used to say 0-d and the first face failed to reshape)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    dim = manifest["model"].pop("embedding_dim")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    gallery = tmp_path / "g.npz"
    result = invoke("enroll", "obama", media_dir / "obama.jpg", "-m", bundle, "-g", gallery)
    assert result.exit_code == 0, result.output
    assert Gallery.load(gallery).model.embedding_dim == dim
    result = invoke("run", "-s", media_dir / "obama2.jpg", "-m", bundle, "-g", gallery, "-q")
    assert result.exit_code == 0, result.output
    frames, _ = events_of(result.stdout)
    assert [d["identity"] for d in frames[0]["detections"]] == ["obama"]


def test_edgetpu_delegate_without_the_runtime_is_one_clear_line(runtime_bundle, media_dir):
    import ctypes

    try:
        ctypes.CDLL("libedgetpu.so.1")
        pytest.skip("libedgetpu.so.1 is installed here")
    except OSError:
        pass
    result = invoke("run", "-s", media_dir / "obama2.jpg", "-m", runtime_bundle, "--delegate", "edgetpu")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: the Edge TPU runtime library libedgetpu.so.1 is not installed: install the Edge TPU runtime: on "
        "Debian/Raspberry Pi OS add Coral's apt repository and `sudo apt-get install libedgetpu1-std` (see "
        "coral.ai/docs/accelerator/get-started)")


def test_alignment_follows_the_manifest_template(media_dir):
    from edgeface.runtime.align import TEMPLATE_112, align_face
    from edgeface.runtime.detector import create_detector
    from edgeface.runtime.facemodel import FaceModelSpec

    ours = FaceModelSpec.edgeface()
    for manifest in ({"alignment": {"size": 112, "template": TEMPLATE_112.tolist()}}, {}):
        np.testing.assert_allclose(FaceModelSpec.from_manifest(manifest).chip_template(), TEMPLATE_112, atol=1e-4)
    shifted = TEMPLATE_112 + [0, 8]  # a model trained on crops with the face 8 px lower
    lowered = FaceModelSpec.from_manifest({"alignment": {"size": 112, "template": shifted.tolist()}})
    np.testing.assert_allclose(lowered.chip_template(), shifted, atol=1e-4)
    with pytest.raises(UserError, match="must be 4 or 5 \\[x, y\\] points.*re-export the bundle"):
        FaceModelSpec.from_manifest({"alignment": {"size": 112, "template": [[1, 2]]}})
    big = FaceModelSpec.from_manifest({"alignment": {"size": 128}})
    with pytest.raises(UserError, match="takes 112x112 images but its spec says 128x128"):
        big.for_model_input((1, 112, 112, 3), "m.tflite")

    image = read_image(media_dir / "obama_small.jpg")
    det = create_detector("short").detect(image)[0]
    crop = ours.align(image, det.keypoints)
    np.testing.assert_array_equal(crop, align_face(image, det.keypoints))
    lower = lowered.align(image, det.keypoints)
    # the face moved down by 8 px: row r of the shifted crop is row r - 8 of ours (up to interpolation)
    diff = np.abs(lower[20:100].astype(int) - crop[12:92].astype(int)).mean()
    assert diff < 6 and np.abs(lower.astype(int) - crop.astype(int)).mean() > diff + 5


# --- recognition quality with the shipped default model ---------------------------------------------------------------


# In the clip's 275 frames (full-range detector): who is named in each frame, with Obama and Biden enrolled as well,
# who are not in the clip, so their names must never appear on a face there.
CLIP_PEOPLE = {"lin-manuel-miranda": "lin-manuel-miranda.png", "alex-lacamoire": "alex-lacamoire.png"}


CLIP_DISTRACTORS = {"obama": "obama.jpg", "biden": "biden.jpg"}


@pytest.fixture(scope="module")
def hamilton_run(media_dir, tmp_path_factory) -> tuple[list[dict], dict]:
    gallery = tmp_path_factory.mktemp("hamilton") / "g.npz"
    for name, photo in {**CLIP_PEOPLE, **CLIP_DISTRACTORS}.items():
        result = invoke("enroll", name, media_dir / photo, "-g", gallery)
        assert result.exit_code == 0, result.output
    result = invoke("run", "-s", media_dir / CLIP, "-g", gallery, "--detector", "full", "-q")
    assert result.exit_code == 0, result.output
    frames, summary = events_of(result.stdout)
    assert summary["frames"] == 275 and summary["faces"] > 275  # stage and audience shots: several faces in many frames
    return frames, summary


def _named_faces(frames: list[dict]) -> dict[str, int]:
    names = [d["identity"] for f in frames for d in f["detections"]]
    return {n: names.count(n) for n in CLIP_PEOPLE}


@NEEDS_DEFAULT
def test_hamilton_clip_never_misnames_a_face(hamilton_run):
    frames, _ = hamilton_run
    for f in frames:
        names = [d["identity"] for d in f["detections"]]
        assert set(names) <= {*CLIP_PEOPLE, "unknown"}, (f["frame"], names)  # nobody else's name appears
        assert all(names.count(n) <= 1 for n in CLIP_PEOPLE), (f["frame"], names)  # one face per person and frame
    assert _named_faces(frames)["lin-manuel-miranda"] >= 110  # his photo matches his stage face: measured 127


# Barack Obama sits in the audience in frames 244-271 and is enrolled nowhere: the old default model named him
# "alex-lacamoire" there (cosine 0.47-0.51 against its 0.469).
AUDIENCE_FRAMES = range(244, 272)


@pytest.fixture(scope="module")
def hamilton_two_photos(media_dir, tmp_path_factory) -> list[dict]:
    """The clip with only the two reference photos enrolled, every setting the default (the auto detector)."""
    gallery = tmp_path_factory.mktemp("hamilton2") / "g.npz"
    for name, photo in CLIP_PEOPLE.items():
        result = invoke("enroll", name, media_dir / photo, "-g", gallery)
        assert result.exit_code == 0, result.output
    result = invoke("run", "-s", media_dir / CLIP, "-g", gallery, "-q")
    assert result.exit_code == 0, result.output
    return events_of(result.stdout)[0]


@NEEDS_DEFAULT
def test_hamilton_clip_names_nobody_in_the_audience(hamilton_two_photos):
    frames = hamilton_two_photos
    audience = [(f["frame"], d["identity"], d["score"]) for f in frames if f["frame"] in AUDIENCE_FRAMES
                for d in f["detections"] if d["identity"] != "unknown"]
    assert audience == []
    # Issue 20's goal: face_recognition names him on 139 frames at its 0.6 tolerance. Measured 149 faces (129 on
    # their own match, 20 more by their track: runtime.tracker), 66 with the MobileFaceNet default it replaced.
    assert _named_faces(frames)["lin-manuel-miranda"] >= 139
    for f in frames:  # still one face per person and frame
        names = [d["identity"] for d in f["detections"] if d["identity"] != "unknown"]
        assert len(names) == len(set(names)), (f["frame"], names)


@NEEDS_DEFAULT
def test_track_names_only_faces_that_nearly_match_on_their_own(hamilton_two_photos, media_dir, tmp_path):
    frames = hamilton_two_photos
    by_track = [d for f in frames for d in f["detections"] if d.get("named_by") == "track"]
    threshold = Bundle.load(None).threshold
    assert by_track and all(d["nearest"] == d["identity"] and d["score"] >= threshold - 0.1 for d in by_track)
    # Without tracking the same faces are unknown, and nothing else changes.
    gallery = tmp_path / "g.npz"
    for name, photo in CLIP_PEOPLE.items():
        assert invoke("enroll", name, media_dir / photo, "-g", gallery).exit_code == 0
    result = invoke("run", "-s", media_dir / CLIP, "-g", gallery, "-q", "--no-track")
    assert result.exit_code == 0, result.output
    untracked, summary = events_of(result.stdout)
    assert summary["named_by_track"] is None
    tracked = [[(d["identity"], d.get("named_by")) for d in f["detections"]] for f in frames]
    plain = [[d["identity"] for d in f["detections"]] for f in untracked]
    assert plain == [[UNKNOWN if by == "track" else name for name, by in frame] for frame in tracked]


@NEEDS_DEFAULT
@pytest.mark.xfail(strict=True, reason="Alex Lacamoire is on screen in near profile in the dark (frames ~27-76), his "
                   "photo is frontal: the default model (dlib's ResNet) names him on none of them at its FAR 1e-3 "
                   "threshold, the MobileFaceNet neither, and dlib itself names him on 1 face at face_recognition's "
                   "tolerance (tests/benchmarks/clip_teacher_bench.py); strict, so a model that does recognise him "
                   "makes this a required pass")
def test_hamilton_clip_recognises_both_enrolled_people(hamilton_run):
    frames, summary = hamilton_run
    named = _named_faces(frames)
    # each must be named in a good share of the faces: a quarter of an even split of the clip's detected faces
    assert all(n >= 0.25 * summary["faces"] / 2 for n in named.values()), (named, summary["faces"])


@NEEDS_DEFAULT
def test_obama_photo_is_named_against_the_knn_gallery(media_dir, tmp_path):
    gallery = tmp_path / "g.npz"
    for person in sorted((media_dir / "knn_examples" / "train").iterdir()):
        photos = [p for p in person.iterdir() if p.name != "obama.jpg"]  # not the very photo we query
        result = invoke("enroll", person.name, *photos, "-g", gallery, "--pick", "largest")
        assert result.exit_code == 0, result.output
    result = invoke("run", "-s", media_dir / "obama.jpg", "-g", gallery, "-q")
    assert result.exit_code == 0, result.output
    frames, _ = events_of(result.stdout)
    assert [d["identity"] for d in frames[0]["detections"]] == ["obama"]
