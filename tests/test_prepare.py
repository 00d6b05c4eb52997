"""`edgeface data prepare` on real faces, broken files and bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.data.dataset import load_crops, read_people_file
from edgeface.data.prepare import MANIFEST, SKIP_LOG, PrepareConfig, prepare

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
