"""`edgeface import dlib` end to end: the command, then the imported model through export, evaluate, info, enroll
and run like a trained one (its own 150x150 chip geometry, read from its spec by every command)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.importers.dlib import DLIB_THRESHOLD

runner = CliRunner()
PEOPLE = ("Abdullah_Gul", "Alvaro_Uribe", "Amelie_Mauresmo", "Andre_Agassi", "Angelina_Jolie", "Ari_Fleischer",
          "Arnold_Schwarzenegger", "Atal_Bihari_Vajpayee")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported")
    result = invoke("import", "dlib", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["parameters"] == 5_614_592 and report["input_size"] == 150 and report["embedding_dim"] == 128
    assert report["check"]["cosine"] > 0.9999  # against dlib's own compute_face_descriptor (distill extra)
    return out


@pytest.fixture(scope="module")
def calib_photos(lfw_dir, tmp_path_factory) -> Path:
    """Raw LFW photos of a few people (a folder per person), for calibration."""
    root = tmp_path_factory.mktemp("calib")
    for person in PEOPLE:
        (root / person).mkdir()
        for photo in sorted((lfw_dir / "lfw-deepfunneled" / person).iterdir())[:3]:
            (root / person / photo.name).symlink_to(photo)
    return root


@pytest.fixture(scope="module")
def bundle(imported, calib_photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dlib_bundle") / "bundle"
    result = invoke("export", imported / "model.keras", "--formats", "fp32,int8", "--calib", calib_photos,
                    "--calib-count", "16", "--verify-count", "8", "--name", "dlib", "--out", out, "--no-compile",
                    "--json")
    assert result.exit_code == 0, result.output
    rows = {r["format"]: r for r in json.loads(result.stdout)["formats"]}
    assert rows["fp32"]["cosine_min"] > 0.9999 and rows["int8"]["cosine_mean"] > 0.99, rows
    return out


def test_the_spec_says_dlibs_chip(imported):
    from edgeface.runtime.facemodel import read_spec_file

    spec = read_spec_file(imported / "model.toml")
    assert spec.size == (150, 150) and spec.embedding_dim == 128 and spec.metric == "cosine"
    eyes = spec.chip_template()[:2]
    assert 50 < eyes[1, 0] - eyes[0, 0] < 62  # dlib's chip: the eyes ~56 px apart, padding 0.25
    assert "public domain" in spec.extra["provenance"]["license"]


def test_a_foreign_dat_is_refused_in_one_line(tmp_path):
    from edgeface.distill.teachers import dlib_model_files

    result = invoke("import", "dlib", "--dat", dlib_model_files()[1], "--out", tmp_path / "x")
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "is not dlib's face recognition ResNet" in result.stderr
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_the_bundle_carries_the_spec(bundle):
    from edgeface.runtime.bundle import Bundle

    b = Bundle.load(bundle)
    assert b.spec.size == (150, 150) and b.manifest["alignment"]["size"] == 150
    # no --pairs to calibrate on: the threshold the import's spec carries (FAR 1e-3 on LFW), not a generic one
    assert b.manifest["threshold"]["source"] == "spec" and b.threshold == pytest.approx(DLIB_THRESHOLD)
    assert b.manifest["provenance"]["imported"]["provenance"]["source_sha256"]
    result = invoke("info", bundle)
    assert result.exit_code == 0 and "150x150" in result.stdout


def test_evaluate_aligns_raw_photos_for_the_imported_model(imported, bundle, lfw_dir, tmp_path):
    pairs = tmp_path / "pairs.txt"
    lines = (lfw_dir / "pairs.txt").read_text().splitlines()
    pairs.write_text("\n".join(lines[1:11] + lines[301:311]) + "\n")  # 10 same, 10 different (fold 1)
    for model in (imported / "model.keras", bundle / "dlib_int8.tflite"):
        result = invoke("evaluate", model, "--pairs", pairs, "--images", lfw_dir / "lfw-deepfunneled", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["verification"]["accuracy_mean"] >= 0.95


def test_prepared_crops_are_refused_for_it(imported, att_crops, lfw_dir, tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("s1 1 2\n")
    result = invoke("evaluate", imported / "model.keras", "--pairs", pairs, "--images", att_crops)
    assert result.exit_code == 2 and "give the raw photographs" in result.stderr


def test_enroll_and_run_tell_obama_from_biden(bundle, media_dir, tmp_path):
    gallery = tmp_path / "g.npz"
    result = invoke("enroll", "obama", media_dir / "obama.jpg", "-m", bundle, "-g", gallery)
    assert result.exit_code == 0, result.output
    result = invoke("run", "-s", media_dir / "obama2.jpg", "-m", bundle, "-g", gallery, "-q")
    assert result.exit_code == 0, result.output
    frame = json.loads(result.stdout.splitlines()[0])
    assert [d["identity"] for d in frame["detections"]] == ["obama"]
    result = invoke("run", "-s", media_dir / "biden.jpg", "-m", bundle, "-g", gallery, "-q")
    frame = json.loads(result.stdout.splitlines()[0])
    assert [d["identity"] for d in frame["detections"]] == ["unknown"]


def test_the_self_test_aligns_the_face_for_the_model(bundle):
    result = invoke("run", "--self-test", "-m", bundle)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["checks"]["matches_fp32"] and report["cosine_to_fp32"] > 0.99


def test_the_imported_model_teaches_with_its_own_chip(imported, media_dir):
    from edgeface.distill.teachers import DlibTeacher, load_teacher
    from edgeface.runtime.detector import create_detector
    from edgeface.runtime.images import read_image

    teacher = load_teacher(f"keras:{imported / 'model.keras'}")
    assert teacher.spec.size == (150, 150)
    image = read_image(media_dir / "obama.jpg")
    det = create_detector("short").detect(image)[0]
    ours = teacher.embed(image, det)
    dlib_own = DlibTeacher("dlib", {}).embed(image, det)  # dlib's landmarks and chip on the same box
    cosine = float(ours @ dlib_own / np.linalg.norm(dlib_own))
    assert cosine > 0.95  # the board's template chip against dlib's own: the same face, a few px apart
