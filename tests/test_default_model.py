"""The default bundle shipped in edgeface/models/default: intact, runs without TensorFlow, tells people apart.

The figures behind it (LFW fold 10 accuracy, the threshold at FAR 1e-3) come from
edgeface/models/default/recipe.sh and are in README; here we check the shipped files themselves.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.runtime.bundle import Bundle, default_bundle_dir, sha256_file
from edgeface.runtime.detector import create_detector
from edgeface.runtime.faces import detect_and_align
from edgeface.runtime.images import read_image
from edgeface.runtime.interpreter import Embedder

SHIPPED_FORMATS = ("fp32", "int8")

# These check the shipped files; until edgeface/models/default/recipe.sh has produced a model worth shipping
# (see README, "The default model") there is nothing to check, and the skip reason says so.
pytestmark = pytest.mark.skipif(not (default_bundle_dir() / "manifest.json").is_file(),
                                reason="the default bundle is not shipped yet: edgeface/models/default/recipe.sh")


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return Bundle.load()  # no path: the package's own default bundle


@pytest.fixture(scope="module")
def obama_biden_crops(media_dir) -> dict[str, np.ndarray]:
    det = create_detector("short")
    crops = {}
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        faces = detect_and_align(read_image(media_dir / name), det)
        assert faces, f"no face found in {name}"
        crops[name] = faces[0].crop
    return crops


def test_default_bundle_is_found_and_its_checksums_match(bundle):
    assert bundle.root.resolve() == default_bundle_dir().resolve()
    assert set(SHIPPED_FORMATS) <= set(bundle.formats)
    for entry in bundle.files + bundle.manifest["detectors"]:
        path = bundle.root / entry["path"]
        assert sha256_file(path) == entry["sha256"], path
    total = sum((bundle.root / e["path"]).stat().st_size for e in bundle.files)
    assert total < 6 * 1024 * 1024  # float32 + int8 stay a few MB: the package carries them
    prov = bundle.manifest["provenance"]
    assert prov["train"]["teacher"]  # the manifest says how the model was made


@pytest.mark.parametrize("fmt", SHIPPED_FORMATS)
def test_shipped_files_give_unit_128d_embeddings(bundle, obama_biden_crops, fmt):
    emb = Embedder(bundle.model_path(fmt))
    assert emb.dim == 128 and emb.input_size == (112, 112)
    vecs = emb.embed(np.stack(list(obama_biden_crops.values())))
    assert vecs.shape == (3, 128) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert np.all(np.isfinite(vecs)) and np.ptp(vecs) > 0.1  # not a constant output


@pytest.mark.parametrize("fmt", SHIPPED_FORMATS)
def test_same_person_above_the_threshold_other_person_below(bundle, obama_biden_crops, fmt):
    emb = Embedder(bundle.model_path(fmt))
    v = dict(zip(obama_biden_crops, emb.embed(np.stack(list(obama_biden_crops.values())))))
    same = float(v["obama.jpg"] @ v["obama2.jpg"])
    other = float(v["obama.jpg"] @ v["biden.jpg"])
    assert same > bundle.threshold > other, (same, bundle.threshold, other)


def test_int8_agrees_with_float32_on_real_faces(bundle, obama_biden_crops):
    crops = np.stack(list(obama_biden_crops.values()))
    f32 = Embedder(bundle.model_path("fp32")).embed(crops)
    i8 = Embedder(bundle.model_path("int8")).embed(crops)
    assert np.min(np.sum(f32 * i8, axis=1)) > 0.95


def test_info_describes_the_default_bundle():
    result = CliRunner().invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["path"] == str(default_bundle_dir().resolve())
    assert {f["format"] for f in report["files"]} >= set(SHIPPED_FORMATS)
    assert all(f["checksum"] == "ok" for f in report["files"] + report["detectors"])


@pytest.mark.parametrize("edit, message", [
    (lambda m: [m], "a JSON object was expected, found a list"),
    (lambda m: {**m, "files": {"fp32": m["files"][0]}}, "'files' must be a list, found dict"),
    (lambda m: {**m, "files": [{k: v for k, v in f.items() if k != "format"} for f in m["files"]]},
     "files[0] has no 'format' string"),
    (lambda m: {**m, "files": ["model_fp32.tflite"]}, "files[0] must be an object, found str"),
    (lambda m: {**m, "threshold": 0.47}, "'threshold' must be an object, found float"),
    (lambda m: {**m, "threshold": {"cosine": "high"}}, "threshold.cosine must be a number, found 'high'"),
    (lambda m: {**m, "detectors": [{**m["detectors"][0], "path": "../../etc/passwd"}]},
     "detectors[0].path '../../etc/passwd' points outside the bundle"),
])
def test_a_malformed_manifest_is_one_line_for_info_and_run(edit, message, tmp_path, media_dir):
    manifest = json.loads((default_bundle_dir() / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(edit(manifest)))
    for args in (["info", str(tmp_path)], ["info", str(tmp_path), "--json"],
                 ["run", "--model", str(tmp_path), "--source", str(media_dir / "obama.jpg")]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0] == f"error: {tmp_path / 'manifest.json'} is malformed: {message}; re-run " \
            "`edgeface export` (or restore the bundle's manifest)", (args, result.stderr)


def test_info_shows_hand_edited_fields_as_they_are(tmp_path):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["model"]["width"] = "wide"
    manifest["files"][0].update(cosine_min="high", accuracy=None, input="uint8")
    manifest["threshold"]["far"] = "1%"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, ["info", str(bundle)])
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "width 'wide'" in out and "FAR '1%'" in out  # the table's cells wrap in a narrow terminal
    missing = CliRunner().invoke(app, ["info", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and missing.stderr.strip() == f"error: bundle not found: {tmp_path / 'nope'} (a " \
        "folder written by `edgeface export`)"
