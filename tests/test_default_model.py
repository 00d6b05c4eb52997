"""The bundles shipped in edgeface/models: intact, run without TensorFlow, tell people apart.

``default`` is dlib's ResNet imported by ``edgeface import dlib`` (int8 and the Edge TPU-ready file, 150x150 chips
aligned by its own template); ``mobilefacenet`` the distilled MobileFaceNet (float32 and int8, 112x112 crops).  The
figures behind them (LFW accuracy, the threshold at FAR) come from each folder's recipe.sh and are in README; here
we check the shipped files themselves, each through its own spec (alignment and input size from its manifest).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.runtime.bundle import Bundle, default_bundle_dir, packaged_models, sha256_file
from edgeface.runtime.detector import create_detector
from edgeface.runtime.faces import detect_and_align
from edgeface.runtime.images import read_image
from edgeface.runtime.interpreter import Embedder

pytestmark = pytest.mark.board

# name -> (formats shipped, input size, the pair of formats whose embeddings must agree)
SHIPPED = {"default": (("int8", "edgetpu"), 150, ("int8", "edgetpu")),
           "mobilefacenet": (("fp32", "int8"), 112, ("fp32", "int8"))}
CASES = [(name, fmt) for name, (formats, _, _) in SHIPPED.items() for fmt in formats]


@pytest.fixture(scope="module", params=list(SHIPPED))
def named(request) -> tuple[str, Bundle]:
    return request.param, Bundle.load(request.param)


def face_crops(bundle: Bundle, media_dir) -> dict[str, np.ndarray]:
    """obama, obama2 and biden, detected and aligned as the bundle's spec says."""
    det = create_detector("short")
    crops = {}
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        faces = detect_and_align(read_image(media_dir / name), det, bundle.spec)
        assert faces, f"no face found in {name}"
        crops[name] = faces[0].crop
    return crops


def test_the_shipped_models_are_found_by_name():
    assert set(SHIPPED) <= set(packaged_models())
    assert Bundle.load().root.resolve() == Bundle.load("default").root.resolve() == default_bundle_dir().resolve()
    assert Bundle.load().manifest["model"]["name"] == "dlib"


def test_shipped_bundles_are_intact_and_say_where_they_came_from(named):
    name, bundle = named
    formats, size, _ = SHIPPED[name]
    assert set(formats) == set(bundle.formats) and bundle.spec.size == (size, size)
    for entry in bundle.files + bundle.manifest["detectors"]:
        path = bundle.root / entry["path"]
        assert sha256_file(path) == entry["sha256"], path
    total = sum((bundle.root / e["path"]).stat().st_size for e in bundle.files)
    assert total < 12 * 1024 * 1024  # a few MB each: the package carries them
    prov = bundle.manifest["provenance"]
    if name == "default":  # imported: the source file, its licence and how the template was made
        imported = prov["imported"]["provenance"]
        assert "public domain" in imported["license"] and len(imported["source_sha256"]) == 64
        assert bundle.manifest["threshold"]["far"] == 1e-3
    else:
        assert prov["train"]["teacher"]  # the manifest says how the model was made


@pytest.mark.parametrize("name, fmt", CASES)
def test_shipped_files_give_unit_128d_embeddings(media_dir, name, fmt):
    bundle = Bundle.load(name)
    emb = Embedder(bundle.model_path(fmt), spec=bundle.spec)
    size = SHIPPED[name][1]
    assert emb.dim == 128 and emb.input_size == (size, size)
    vecs = emb.embed(np.stack(list(face_crops(bundle, media_dir).values())))
    assert vecs.shape == (3, 128) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert np.all(np.isfinite(vecs)) and np.ptp(vecs) > 0.1  # not a constant output


@pytest.mark.parametrize("name, fmt", CASES)
def test_same_person_above_the_threshold_other_person_below(media_dir, name, fmt):
    bundle = Bundle.load(name)
    emb = Embedder(bundle.model_path(fmt), spec=bundle.spec)
    crops = face_crops(bundle, media_dir)
    v = dict(zip(crops, emb.embed(np.stack(list(crops.values())))))
    same = float(v["obama.jpg"] @ v["obama2.jpg"])
    other = float(v["obama.jpg"] @ v["biden.jpg"])
    assert same > bundle.threshold > other, (same, bundle.threshold, other)


def test_the_two_files_of_a_bundle_agree_on_real_faces(named, media_dir):
    name, bundle = named
    a, b = SHIPPED[name][2]
    crops = np.stack(list(face_crops(bundle, media_dir).values()))
    ea = Embedder(bundle.model_path(a), spec=bundle.spec).embed(crops)
    eb = Embedder(bundle.model_path(b), spec=bundle.spec).embed(crops)
    assert np.min(np.sum(ea * eb, axis=1)) > 0.95


def test_info_describes_the_default_bundle():
    result = CliRunner().invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["path"] == str(default_bundle_dir().resolve())
    assert {f["format"] for f in report["files"]} == set(SHIPPED["default"][0])
    assert all(f["checksum"] == "ok" for f in report["files"] + report["detectors"])
    named = CliRunner().invoke(app, ["info", "mobilefacenet", "--json"])
    assert named.exit_code == 0 and json.loads(named.stdout)["manifest"]["model"]["name"] == "mobilefacenet"


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
    assert missing.exit_code == 2 and missing.stderr.strip().startswith(
        f"error: bundle not found: {tmp_path / 'nope'} (a folder written by `edgeface export`, or a shipped model: ")
