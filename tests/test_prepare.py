"""`edgeface data prepare` on real faces, broken files and bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.data.dataset import load_crops, read_people_file
from edgeface.data.prepare import MANIFEST, SKIP_LOG, PrepareConfig, prepare
from edgeface.errors import UserError

runner = CliRunner()


def _messy_dataset(tmp_path, att_dir, media_dir):
    src = tmp_path / "src"
    for person in ("s1", "s2"):
        (src / person).mkdir(parents=True)
        for i in (1, 2, 3):
            shutil.copy(att_dir / person / f"{i}.pgm", src / person / f"{i}.pgm")
    (src / "obama").mkdir()
    shutil.copy(media_dir / "obama.jpg", src / "obama" / "a.jpg")
    # a GIF, a corrupt JPEG (truncated header), a text file named .jpg, an image with no face
    import cv2

    cv2.imwrite(str(src / "obama" / "b.gif"), cv2.imread(str(media_dir / "obama2.jpg")))
    (src / "obama" / "corrupt.jpg").write_bytes((media_dir / "biden.jpg").read_bytes()[:200])
    (src / "obama" / "notes.jpg").write_text("this is not an image\n")
    cv2.imwrite(str(src / "s1" / "blank.png"), np.full((120, 160, 3), 90, np.uint8))
    return src


def test_prepare_reports_bad_files_and_finishes(tmp_path, att_dir, media_dir):
    src = _messy_dataset(tmp_path, att_dir, media_dir)
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "prepare", str(src), "--out", str(out), "--json", "--workers", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 11
    assert summary["aligned"] == 8  # 6 AT&T + obama.jpg + the GIF
    assert summary["unreadable"] == 2
    assert summary["no_face"] == 1
    log = (out / SKIP_LOG).read_text()
    for name in ("obama/corrupt.jpg", "obama/notes.jpg", "s1/blank.png"):
        assert name in log
    records = [json.loads(x) for x in (out / MANIFEST).read_text().splitlines()]
    assert len(records) == 8
    rec = next(r for r in records if r["source"] == "obama/a.jpg")
    assert rec["identity"] == "obama" and rec["crop"] == "obama/a.png" and len(rec["keypoints"]) == 6
    assert (out / "obama" / "b.png").is_file()

    crops = load_crops(out)
    assert crops.images.shape == (8, 112, 112, 3) and crops.class_names == ["obama", "s1", "s2"]

    # a second run skips everything already done, including the files that failed
    again = runner.invoke(app, ["data", "prepare", str(src), "--out", str(out), "--json"])
    assert json.loads(again.stdout)["already_done"] == 11
    assert len((out / MANIFEST).read_text().splitlines()) == 8


def test_prepare_with_two_workers_matches_one(tmp_path, att_dir):
    src = tmp_path / "src"
    for person in ("s3", "s4", "s5"):
        shutil.copytree(att_dir / person, src / person)
    one = prepare(PrepareConfig(src=src, out=tmp_path / "one", workers=1))
    two = prepare(PrepareConfig(src=src, out=tmp_path / "two", workers=2))
    assert one.aligned == two.aligned == 30
    a, b = load_crops(tmp_path / "one"), load_crops(tmp_path / "two")
    np.testing.assert_array_equal(a.images, b.images)


def test_missing_or_empty_source_exits_2(tmp_path):
    result = runner.invoke(app, ["data", "prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: source folder not found")
    assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["data", "prepare", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no images found" in result.stderr


def test_people_file_folds(lfw_dir):
    fold10 = read_people_file(f"{lfw_dir / 'people.txt'}:10")
    fold1 = read_people_file(f"{lfw_dir / 'people.txt'}:1")
    assert fold10 and not (fold10 & fold1)
    # the people of fold 10 in pairs.txt are people of fold 10 in people.txt
    assert read_people_file(f"{lfw_dir / 'pairs.txt'}:10") <= fold10
    everyone = read_people_file(lfw_dir / "people.txt")
    assert fold10 < everyone


def test_people_files_of_lfw_view_1_are_read(lfw_dir):
    # View 1 files start with a count followed by names or pairs, not by folds
    dev_train = read_people_file(lfw_dir / "peopleDevTrain.txt")
    dev_test = read_people_file(lfw_dir / "peopleDevTest.txt")
    assert len(dev_train) == 4038 and len(dev_test) == 1711 and not (dev_train & dev_test)
    assert read_people_file(lfw_dir / "pairsDevTest.txt") <= dev_test
    assert read_people_file(lfw_dir / "pairsDevTrain.txt") <= dev_train
    with pytest.raises(UserError, match="no folds"):
        read_people_file(f"{lfw_dir / 'peopleDevTest.txt'}:2")


def test_a_people_file_cut_short_names_its_last_line(tmp_path, lfw_dir):
    lines = (lfw_dir / "people.txt").read_text().splitlines()
    cut = tmp_path / "people.txt"
    cut.write_text("\n".join(lines[:700]) + "\n")  # fold 2 of 10 stops part way
    with pytest.raises(UserError, match=r"people\.txt:700: file ends after \d+ of \d+ names of fold 2"):
        read_people_file(cut)
    bad = tmp_path / "pairs.txt"
    bad.write_text("1\t1\nAbel_Pacheco\t1\t4\nAbel_Pacheco\tone\tAkhmed_Zakayev\t3\n")
    with pytest.raises(UserError, match=r"pairs\.txt:3: .* is not a pairs row"):
        read_people_file(bad)
    # the CLI turns it into one line and exit 2, before any training starts
    result = runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--exclude-people", str(cut)])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "people.txt:700" in result.stderr


def test_prepare_refuses_bad_settings_before_writing_anything(tmp_path, att_dir):
    src = tmp_path / "src"
    shutil.copytree(att_dir / "s1", src / "s1")
    for args, message in [
        (["--detector", "nope"], "unknown detector 'nope'"),
        (["--size", "0"], "--size 0 is out of range"),
        (["--size", "-5"], "--size -5 is out of range"),
        (["--min-score", "5"], "--min-score 5.0 is out of range"),
        (["--min-score", "nan"], "--min-score nan is out of range"),
        (["--workers", "-1"], "--workers -1 is negative"),
    ]:
        # two workers: a detector that fails inside the pool's initializer used to hang the run for ever
        result = runner.invoke(app, ["data", "prepare", str(src), "--out", str(tmp_path / "out"), "--workers", "2",
                                     *args])
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.strip().startswith(f"error: {message}"), result.stderr
        assert not (tmp_path / "out").exists()


def test_prepare_resumes_after_a_manifest_line_cut_short(tmp_path, att_dir):
    src = tmp_path / "src"
    shutil.copytree(att_dir / "s1", src / "s1")
    out = tmp_path / "out"
    prepare(PrepareConfig(src=src, out=out, workers=1))
    manifest = out / MANIFEST
    lines = manifest.read_text().splitlines()
    # an interrupted run: the last record half written, its crop never saved
    manifest.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])
    (out / json.loads(lines[-1])["crop"]).unlink()
    again = prepare(PrepareConfig(src=src, out=out, workers=1))
    assert again.already_done == 9 and again.aligned == 1
    records = [json.loads(x) for x in manifest.read_text().splitlines() if x.startswith("{") and x.endswith("}")]
    assert len(records) == 10 and len(load_crops(out)) == 10
    assert manifest.read_text().splitlines()[-1] == json.dumps(records[-1])
