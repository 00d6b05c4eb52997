"""The face-model contract: specs from options, TOML files and manifests; one alignment for every command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeface.errors import UserError
from edgeface.runtime.align import TEMPLATE_112, align_face
from edgeface.runtime.facemodel import (
    DEFAULT_SPEC_SOURCE,
    FaceModelSpec,
    embed_faces,
    read_spec_file,
    spec_for_model_file,
    spec_toml,
)
from edgeface.runtime.images import read_image

pytestmark = pytest.mark.board

DLIB_LIKE = {"name": "dlib-like", "input_size": 150, "layout": "NHWC", "template": [[46, 46], [102, 47], [73.5, 79],
             [73.5, 108]], "template_size": 150, "embedding_dim": 128, "metric": "cosine", "threshold": 0.42}


def test_a_spec_survives_its_toml_file_and_a_manifest(tmp_path):
    spec = FaceModelSpec.from_options(DLIB_LIKE)
    path = tmp_path / "model.toml"
    path.write_text(spec_toml(spec, {"provenance": {"source": "x.dat", "parameters": 5614592}}))
    back = read_spec_file(path)
    assert back == spec and back.extra == {"provenance": {"source": "x.dat", "parameters": 5614592}}
    model, alignment = spec.manifest_blocks()
    manifest = {"model": {**model, "embedding_dim": 128, "name": "dlib-like"}, "alignment": alignment,
                "threshold": {"cosine": 0.42}}
    from_manifest = FaceModelSpec.from_manifest(json.loads(json.dumps(manifest)))
    np.testing.assert_allclose(from_manifest.chip_template(), spec.chip_template(), atol=1e-4)
    assert (from_manifest.size, from_manifest.embedding_dim, from_manifest.threshold) == ((150, 150), 128, 0.42)
    assert from_manifest.same_alignment(spec) and not spec.same_alignment(FaceModelSpec.edgeface())


def test_bundles_written_before_the_spec_read_as_edgeface_models():
    spec = FaceModelSpec.from_manifest({"model": {"input_size": 112, "embedding_dim": 128}})
    np.testing.assert_allclose(spec.chip_template(), TEMPLATE_112, atol=1e-4)
    assert spec.raw_pixels and spec.same_alignment(FaceModelSpec.edgeface(96))  # a resize away


@pytest.mark.parametrize("text, message", [
    ('[face_model]\ninput_sise = 150\n', "unknown face-model option 'input_sise' (did you mean 'input_size'?)"),
    ('[face_model]\ntemplate = [[1, 2], [3, 4]]\n', "must be 4 or 5 [x, y] points"),
    ('[face_model]\nmetric = "euclid"\n', "unknown metric 'euclid'"),
    ('[face_model]\nthreshold = 3\n', "threshold is a cosine similarity"),
    ('[face_model]\nembedding_dim = 1.5\n', "embedding_dim must be a whole number"),
    ('[face_model\n', "is not a valid TOML file"),
])
def test_a_bad_spec_file_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "model.toml"
    path.write_text(text)
    with pytest.raises(UserError) as exc:
        read_spec_file(path)
    assert message in str(exc.value) and str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_where_a_model_files_spec_comes_from(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"x")
    assert spec_for_model_file(model)[1] == DEFAULT_SPEC_SOURCE
    (tmp_path / "m.toml").write_text(spec_toml(FaceModelSpec.from_options(DLIB_LIKE)))
    spec, source = spec_for_model_file(model)
    assert source == str(tmp_path / "m.toml") and spec.size == (150, 150)
    # a file listed in a bundle's manifest takes the manifest's spec
    (tmp_path / "m.tflite").write_bytes(b"x")
    (tmp_path / "manifest.json").write_text(json.dumps({"files": [{"path": "m.tflite"}],
                                                        "alignment": {"size": 96}}))
    spec, source = spec_for_model_file(tmp_path / "m.tflite")
    assert source.endswith("manifest.json") and spec.size == (96, 96)


def test_the_spec_aligns_a_real_face_to_its_own_template(media_dir):
    from edgeface.runtime.detector import create_detector

    image = read_image(media_dir / "obama.jpg")
    det = create_detector("short").detect(image)[0]
    ours = FaceModelSpec.edgeface().align(image, det.keypoints)
    np.testing.assert_array_equal(ours, align_face(image, det.keypoints))  # the training crops' alignment
    spec = FaceModelSpec.from_options(DLIB_LIKE)
    chip = spec.align(image, det.keypoints)
    assert chip.shape == (150, 150, 3)
    # the keypoints land on the template: warp them with the same similarity transform
    from edgeface.runtime.align import alignment_points, transform_points, umeyama

    matrix = umeyama(alignment_points(det.keypoints), spec.chip_template())
    moved = transform_points(matrix, alignment_points(det.keypoints))
    assert np.abs(moved - spec.chip_template()).max() < 8  # 4 points, one similarity: a few px of residual


def test_embed_faces_feeds_each_model_its_own_crop(media_dir):
    from edgeface.runtime.detector import create_detector

    class Recording:
        def __init__(self, spec):
            self.spec, self.dim, self.seen = spec, 4, None

        def embed(self, crops):
            self.seen = crops
            return np.ones((len(crops), 4), np.float32) / 2

    image = read_image(media_dir / "two_people.jpg")
    dets = create_detector("short").detect(image)
    model = Recording(FaceModelSpec.from_options(DLIB_LIKE))
    out = embed_faces(model, image, dets)
    assert out.shape == (len(dets), 4) and model.seen.shape == (len(dets), 150, 150, 3) and len(dets) == 2
    assert embed_faces(model, image, []).shape == (0, 4)


def test_prepared_crops_are_refused_for_a_model_aligned_another_way(tmp_path):
    from edgeface.evaluate.pairs import PairImages

    (tmp_path / "manifest.jsonl").write_text("")
    images = PairImages(tmp_path)
    images.check_spec(FaceModelSpec.edgeface(96))  # the same template, resized: fine
    with pytest.raises(UserError, match="holds crops aligned by `edgeface data prepare`.*give the raw photographs"):
        images.check_spec(FaceModelSpec.from_options(DLIB_LIKE), "model.keras")


def test_shipped_models_are_found_by_name_where_a_bundle_is_expected(tmp_path, monkeypatch):
    from edgeface.devices.benchmark import expand_models
    from edgeface.runtime.bundle import models_dir, resolve_model

    specs = expand_models([resolve_model("mobilefacenet")])
    assert {(s.model, s.format) for s in specs} == {("mobilefacenet", "fp32"), ("mobilefacenet", "int8")}
    assert {s.format for s in expand_models(["default"])} == {"int8", "edgetpu"}
    assert resolve_model("default") == models_dir() / "default"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()  # a folder of that name where the command runs is that folder
    assert resolve_model("default") == tmp_path.joinpath("default").relative_to(tmp_path)
