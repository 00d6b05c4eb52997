"""BlazeFace rebuilt from its own TFLite file (edgeface.importers.blazeface), and its int8 / Edge TPU-ready file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeface.errors import UserError
from edgeface.runtime.detector import DETECTORS, BlazeFaceDetector, find_blazeface_file, iou, letterbox, to_tensor
from edgeface.runtime.images import read_image

REPO = Path(__file__).resolve().parent.parent


def photos(media_dir: Path) -> list[np.ndarray]:
    return [read_image(media_dir / n) for n in ("two_people.jpg", "obama.jpg", "biden.jpg")]


@pytest.mark.parametrize("kind", ["short", "full"])
def test_rebuild_computes_what_the_shipped_file_computes(kind, media_dir):
    from edgeface.importers.blazeface import rebuild_tflite_model
    from edgeface.runtime.interpreter import TFLiteModel

    source = find_blazeface_file(kind)
    model = rebuild_tflite_model(source, f"blazeface_{kind}")
    shipped = TFLiteModel(source)
    size = DETECTORS[kind].input_size
    for image in photos(media_dir):
        x = to_tensor(letterbox(image, size)[0])[None]
        ref = sorted(shipped.run(x), key=lambda a: a.shape[-1])  # classificators (…, 1), regressors (…, 16)
        got = sorted((np.asarray(o) for o in model(x)), key=lambda a: a.shape[-1])
        assert [a.shape for a in got] == [a.shape for a in ref]
        # Same weights, float32 arithmetic in another order: full-range agrees to 2e-4; short-range's logits reach
        # -344 on background anchors, where 0.03 is float rounding (1e-4 relative)
        for a, b in zip(ref, got):
            assert np.abs(a - b).max() <= 1e-3 * max(1.0, float(np.abs(a).max())), (kind, np.abs(a - b).max())


def test_int8_edge_tpu_ready_short_range_maps_every_op_and_finds_the_same_faces(media_dir, lfw_dir, tmp_path):
    from edgeface.converters.convert import convert
    from edgeface.converters.edgetpu import check_compatibility
    from edgeface.converters.formats import get_format
    from edgeface.importers.blazeface import quantizable_blazeface

    source = find_blazeface_file("short")
    calib = [read_image(p) for p in sorted((lfw_dir / "lfw-deepfunneled").glob("A*/*.jpg"))[:64]]
    calib = np.stack([to_tensor(letterbox(im, 128)[0]) for im in calib])
    model = quantizable_blazeface(source, "blazeface_short", calibration=calib)
    data, graph = convert(model, get_format("edgetpu"), calibration=calib)  # checks: integer-only, uint8 I/O
    report = check_compatibility(graph)
    assert report.cpu_ops == 0 and report.tpu_ops == len(graph.operators), report.problems
    path = tmp_path / "blazeface_short_edgetpu.tflite"
    path.write_bytes(data)
    assert len(data) < 250_000  # 8-bit weights: about a quarter of the float file's float16+float32 buffers
    reference, int8 = BlazeFaceDetector(source, "short"), BlazeFaceDetector(path, "short")
    errors = []
    for image in photos(media_dir):
        ref, got = reference.detect(image), int8.detect(image)
        assert len(got) == len(ref) >= 1
        for d in ref:
            overlap = iou(d.box, np.array([e.box for e in got]))
            assert overlap.max() > 0.7
            e = got[int(overlap.argmax())]
            errors.append(float(np.abs(d.keypoints[:6] - e.keypoints[:6]).mean()) * 112 / float(d.box[2] - d.box[0]))
    assert len(int8.detect(read_image(media_dir / "two_people.jpg"))) == 2
    # without equalization these faces' keypoints moved 2-3 px at 112 px (the last block's depthwise output
    # spans ~50x more in one channel than another); with it, ~0.7 px on 455 images (tests/benchmarks)
    assert np.mean(errors) < 1.2, errors


def test_equalization_keeps_the_float_function_and_balances_the_ranges(media_dir):
    from edgeface.importers.blazeface import equalization_scales, quantizable_blazeface, rebuild_tflite_model

    s = equalization_scales(np.array([8.0, 0.5, 0.0, 2.0]), np.array([0.5, 2.0, 1.0, 0.0]))
    assert np.allclose(s, [4.0, 0.5, 1.0, 1.0])  # sqrt(a / w); dead channels keep 1
    assert np.allclose(np.array([8.0, 0.5]) / s[:2], np.array([0.5, 2.0]) * s[:2])  # both ranges meet

    source = find_blazeface_file("short")
    tensors = np.stack([to_tensor(letterbox(im, 128)[0]) for im in photos(media_dir)])
    plain = rebuild_tflite_model(source, "plain")
    equal = quantizable_blazeface(source, "equal", calibration=tensors)
    for x in tensors:
        ref = sorted((np.asarray(o) for o in plain(x[None])), key=lambda a: a.shape[-1])
        got = sorted((np.asarray(o) for o in equal(x[None])), key=lambda a: a.shape[-1])
        for a, b in zip(ref, got):
            inside = (a > -16) & (a < 16) if a.shape[-1] == 1 else (a > -96) & (a < 160)  # the clip ranges
            assert inside.mean() > 0.5
            assert np.abs(a - b)[inside].max() <= 1e-3 * max(1.0, float(np.abs(a[inside]).max()))


def test_import_blazeface_writes_checked_files_into_a_bundle(lfw_dir, media_dir, tmp_path):
    import json
    import shutil

    from run_cli import invoke

    from edgeface.runtime.bundle import Bundle, default_bundle_dir

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["detectors"] = [d for d in manifest["detectors"] if d.get("format", "float") == "float"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    for f in [*bundle.glob("face_detection_*_int8.tflite"), *bundle.glob("face_detection_*_quant*.tflite")]:
        f.unlink()
    result = invoke("import", "blazeface", "--out", bundle, "--calib", lfw_dir / "lfw-deepfunneled", "--calib",
                    media_dir / "two_people.jpg", "--kinds", "short", "--count", "24", "--verify-count", "20",
                    "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["bundle"] and [(f["kind"], f["format"]) for f in report["files"]] == [("short", "int8"),
                                                                                        ("short", "edgetpu")]
    assert report["rebuild_max_abs_diff"]["short"] < 1e-3
    for f in report["files"]:
        assert f["edgetpu_ops"].split("/")[0] == f["edgetpu_ops"].split("/")[1]
        assert f["recall"] >= 0.9 and f["reference_faces"] >= 8  # 10 LFW photos verify (the other source: one photo)
    loaded = Bundle.load(bundle)
    assert loaded.detector_path("short", fmt="int8").name == "face_detection_short_range_int8.tflite"
    assert loaded.detector_path("full", fmt="int8") is None  # not asked for
    assert (bundle / "detectors.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--calib", "/nonexistent/photos"], "error: --calib /nonexistent/photos does not exist"),
    (["--calib", "{media}", "--kinds", "tiny"], "error: --kinds 'tiny' is not a BlazeFace network: choose from "
                                                 "short, full"),
    (["--calib", "{media}", "--count", "0"], "error: --count must be at least 1, got 0"),
    (["--calib", "{readme}"], "is neither a folder, a photo nor a video"),
])
def test_import_blazeface_bad_input_is_one_line(args, message, media_dir, tmp_path):
    from run_cli import invoke

    args = [a.replace("{media}", str(media_dir)).replace("{readme}", str(REPO / "README.md")) for a in args]
    result = invoke("import", "blazeface", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_files_the_rebuild_does_not_know_are_refused_in_one_line(tmp_path):
    from edgeface.importers.blazeface import rebuild_tflite_model

    embedder = REPO / "edgeface" / "models" / "default" / "dlib_int8.tflite"
    with pytest.raises(UserError, match="the rebuild does not know|expected float32"):
        rebuild_tflite_model(embedder)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="not a TFLite model"):
        rebuild_tflite_model(junk)



def test_calibration_views_and_the_logit_head_the_bias_correction_adjusts(media_dir):
    import keras

    from edgeface.importers.blazeface import quantizable_blazeface
    from edgeface.importers.blazeface_int8 import calibration_views, logit_head

    image = read_image(media_dir / "obama.jpg")
    h, w = image.shape[:2]
    four = calibration_views(image, np.random.default_rng(0), 4)
    assert [v.shape[:2] for v in four] == [(h, w), (int(min(h, w) * 0.55),) * 2, (3 * h, 3 * w), (6 * h, 6 * w)]
    assert four[0] is image and (four[2] > 0).mean() == pytest.approx(1 / 9, abs=0.02)  # the photo, a ninth of it
    three = calibration_views(image, np.random.default_rng(0), 3)  # the first views are drawn alike
    assert all(np.array_equal(a, b) for a, b in zip(three, four))
    assert calibration_views(image, np.random.default_rng(0), 1) == [image]
    full = quantizable_blazeface(find_blazeface_file("full"), "full")
    head = logit_head(full)
    assert isinstance(head, keras.layers.Conv2D) and head.filters == 1 and head.kernel_size == (1, 1)
    assert logit_head(quantizable_blazeface(find_blazeface_file("short"), "short")) is None  # two heads, concatenated
