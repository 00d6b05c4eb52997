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
    model = quantizable_blazeface(source, "blazeface_short")
    calib = [read_image(p) for p in sorted((lfw_dir / "lfw-deepfunneled").glob("A*/*.jpg"))[:64]]
    calib = np.stack([to_tensor(letterbox(im, 128)[0]) for im in calib])
    data, graph = convert(model, get_format("edgetpu"), calibration=calib)  # checks: integer-only, uint8 I/O
    report = check_compatibility(graph)
    assert report.cpu_ops == 0 and report.tpu_ops == len(graph.operators), report.problems
    path = tmp_path / "blazeface_short_edgetpu.tflite"
    path.write_bytes(data)
    assert len(data) < 250_000  # 8-bit weights: about a quarter of the float file's float16+float32 buffers
    reference, int8 = BlazeFaceDetector(source, "short"), BlazeFaceDetector(path, "short")
    for image in photos(media_dir):
        ref, got = reference.detect(image), int8.detect(image)
        assert len(got) == len(ref) >= 1
        for d in ref:
            assert iou(d.box, np.array([e.box for e in got])).max() > 0.7
    assert len(int8.detect(read_image(media_dir / "two_people.jpg"))) == 2


def test_files_the_rebuild_does_not_know_are_refused_in_one_line(tmp_path):
    from edgeface.importers.blazeface import rebuild_tflite_model

    embedder = REPO / "edgeface" / "models" / "default" / "dlib_int8.tflite"
    with pytest.raises(UserError, match="the rebuild does not know|expected float32"):
        rebuild_tflite_model(embedder)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="not a TFLite model"):
        rebuild_tflite_model(junk)

