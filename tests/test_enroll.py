"""Enrollment (edgeface.runtime.enroll, ``edgeface enroll``): one face per photo, photos that have none or several,
repeats, another gallery than ./gallery.npz, a folder of people.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
from run_cli import NEEDS_DEFAULT, invoke

from edgeface.errors import SettingError
from edgeface.runtime.gallery import Gallery

# Every test in its own folder: `edgeface run` picks up ./gallery.npz when present.
pytestmark = [pytest.mark.board, pytest.mark.usefixtures("in_tmp_dir")]


def test_enroll_reports_photos_without_one_face(runtime_bundle, media_dir, tmp_path):
    no_face = tmp_path / "curtain.jpg"  # the top-left corner of a real photo: no face in it
    cv2.imwrite(str(no_face), cv2.imread(str(media_dir / "two_people.jpg"))[:200, :200])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    gallery = tmp_path / "g.npz"
    two = media_dir / "two_people.jpg"
    result = invoke("enroll", "obama", media_dir / "obama2.jpg", no_face, two, broken, "-g", gallery,
                    "-m", runtime_bundle, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    status = {Path(r["photo"]).name: (r["status"], r["faces"]) for r in report["photos"]}
    assert status == {"obama2.jpg": ("enrolled", 1), "curtain.jpg": ("no face", 0),
                      "two_people.jpg": ("several faces", 2), "broken.jpg": ("unreadable", 0)}
    assert report["enrolled"] == 1 and report["skipped"] == 3
    assert Gallery.load(gallery).names() == {"obama": 1}
    # --pick largest takes the largest face of a group photo
    result = invoke("enroll", "group", two, "-g", gallery, "-m", runtime_bundle, "--pick", "largest")
    assert result.exit_code == 0, result.output
    assert Gallery.load(gallery).names() == {"obama": 1, "group": 1}
    # nothing enrollable: one line, exit 2, gallery untouched
    before = gallery.read_bytes()
    result = invoke("enroll", "nobody", no_face, two, "-g", gallery, "-m", runtime_bundle)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: no photo of 'nobody' could be enrolled (curtain.jpg: no face detected; two_people.jpg: 2 faces: use "
        "a photo of this person alone, or --pick largest)")
    assert gallery.read_bytes() == before


def test_enroll_rejects_threads_that_are_not_positive(media_dir):
    for threads in ("0", "-5"):
        result = invoke("enroll", "obama", media_dir / "obama.jpg", "-g", "g.npz", "--threads", threads)
        assert result.exit_code == 2
        assert result.stderr.strip() == f"error: --threads must be a positive number, got {int(threads)}"
    assert not Path("g.npz").exists()


@NEEDS_DEFAULT
def test_enroll_into_another_gallery_ignores_gallery_npz_in_the_current_folder(media_dir, tmp_path):
    cwd_gallery = Path("gallery.npz")  # the test runs in tmp_path (autouse fixture)
    cwd_gallery.write_bytes(b"PK\x03\x04 not really a zip")
    other = tmp_path / "other.npz"
    result = invoke("enroll", "obama", media_dir / "obama.jpg", "-g", other)
    assert result.exit_code == 0, result.output
    assert Gallery.load(other).names() == {"obama": 1}
    assert cwd_gallery.read_bytes() == b"PK\x03\x04 not really a zip"  # neither read nor touched
    assert "no gallery" not in result.stderr and "gallery.npz" not in result.stderr


def test_enrolling_the_same_photo_again_adds_nothing(media_dir, tmp_path):
    gallery = tmp_path / "g.npz"
    assert invoke("enroll", "obama", media_dir / "obama.jpg", "-g", gallery).exit_code == 0
    result = invoke("enroll", "obama", media_dir / "obama.jpg", media_dir / "obama2.jpg", "-g", gallery, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["enrolled"] == 1 and report["embeddings"] == 2  # obama2.jpg only
    assert any(w.startswith("obama.jpg is already enrolled for 'obama'") for w in report["warnings"])
    # --replace starts the person over, so nothing counts as a repeat
    report = json.loads(invoke("enroll", "obama", media_dir / "obama.jpg", "-g", gallery, "--replace",
                               "--json").stdout)
    assert report["enrolled"] == 1 and report["replaced"] == 2 and report["embeddings"] == 1


def test_enroll_a_folder_of_people_at_once(media_dir, data_dir, tmp_path):
    """--people: one subfolder per person, or a photo named after its person (face_recognition's layout)."""
    people = tmp_path / "people"
    (people / "obama").mkdir(parents=True)
    shutil.copy(media_dir / "obama.jpg", people / "obama")
    shutil.copy(media_dir / "obama2.jpg", people / "obama")
    (people / "obama" / ".thumbs").mkdir()  # hidden: a viewer's cache, not Obama's photos
    shutil.copy(media_dir / "biden.jpg", people / "obama" / ".thumbs")
    (people / "obama" / "._obama.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    shutil.copy(media_dir / "biden.jpg", people / "Joe Biden.jpg")
    (people / "s1" / "more").mkdir(parents=True)  # an AT&T subject, photos at any depth, one group photo
    shutil.copy(data_dir / "att_faces" / "s1" / "1.pgm", people / "s1")
    shutil.copy(data_dir / "att_faces" / "s1" / "2.pgm", people / "s1" / "more")
    shutil.copy(media_dir / "two_people.jpg", people / "s1")
    (people / "nobody").mkdir()
    (people / "notes.txt").write_text("not a photo")
    gallery = tmp_path / "g.npz"

    result = invoke("enroll", "--people", people, "-g", gallery, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    got = {p["name"]: (len(p["photos"]), p["enrolled"], p["skipped"]) for p in report["persons"]}
    assert got == {"Joe Biden": (1, 1, 0), "nobody": (0, 0, 0), "obama": (2, 2, 0), "s1": (3, 2, 1)}
    assert (report["enrolled_people"], report["enrolled"], report["people"], report["embeddings"]) == (3, 5, 3, 5)
    s1 = next(p for p in report["persons"] if p["name"] == "s1")
    assert {Path(p["photo"]).name: p["status"] for p in s1["photos"]} == {
        "1.pgm": "enrolled", "2.pgm": "enrolled", "two_people.jpg": "several faces"}
    assert {p["name"]: p["embeddings"] for p in Gallery.load(gallery).people()} == {"Joe Biden": 1, "obama": 2, "s1": 2}
    # the enrolled people are recognised: obama2.jpg is nearest to obama, biden.jpg to Joe Biden
    result = invoke("run", "-s", media_dir / "obama2.jpg", "-g", gallery, "-q")
    assert json.loads(result.stdout.splitlines()[0])["detections"][0]["identity"] == "obama"

    # again: nothing is added twice, and each photo says why
    result = invoke("enroll", "--people", people, "-g", gallery)
    assert result.exit_code == 0, result.output
    assert "0 of 4 people: 0 embedding(s) added; " in result.stderr and "already enrolled" in result.stdout
    assert len(Gallery.load(gallery)) == 5

    # a folder that cannot name a person stops before any work; NAME with --people is refused
    (people / "unknown").mkdir()
    before = gallery.read_bytes()
    result = invoke("enroll", "--people", people, "-g", gallery)
    assert result.exit_code == 2 and result.stderr.strip() == (
        f"error: --people {people}: 'unknown' cannot name a person: 'unknown' is reserved for faces that match "
        "nobody: choose another name")
    (people / "unknown").rmdir()
    (people / "Bob\nSmith").mkdir()
    result = invoke("enroll", "--people", people, "-g", gallery)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and "'Bob\\nSmith'" in result.stderr
    assert gallery.read_bytes() == before
    result = invoke("enroll", "obama", media_dir / "obama.jpg", "--people", people, "-g", gallery)
    assert result.exit_code == 2 and result.stderr.strip() == "error: give NAME PHOTOS... or --people FOLDER, not both"
    result = invoke("enroll", "obama", "-g", gallery)
    assert result.exit_code == 2 and "or a folder of people (`edgeface enroll --people FOLDER`)" in result.stderr


@NEEDS_DEFAULT
def test_enrollment_works_without_the_cli(media_dir, tmp_path):
    """A service enrolls with the runtime alone: the people folder, one person's photos, repeats, lookalikes."""
    from edgeface.runtime.enroll import enroll_person, people_folder
    from edgeface.runtime.recognizer import load_recognizer
    from edgeface.runtime.settings import RunSettings

    people = tmp_path / "people"
    (people / "obama").mkdir(parents=True)
    shutil.copy(media_dir / "obama.jpg", people / "obama")
    shutil.copy(media_dir / "two_people.jpg", people / "obama")
    shutil.copy(media_dir / "biden.jpg", people / "Joe Biden.jpg")
    rt = load_recognizer(RunSettings(), with_gallery=False)
    store = Gallery(model=rt.model_id)
    work = people_folder(people)
    assert [(name, [p.name for p in photos]) for name, photos in work] == [
        ("Joe Biden", ["Joe Biden.jpg"]), ("obama", ["obama.jpg", "two_people.jpg"])]
    reports = [enroll_person(store, rt.recognizer, rt.threshold, name, photos, None, False, None)[0]
               for name, photos in work]
    assert [(r["name"], r["enrolled"], r["skipped"]) for r in reports] == [("Joe Biden", 1, 0), ("obama", 1, 1)]
    # the library names the setting to pick the largest face; the CLI names its flag (--pick largest)
    assert reports[1]["photos"][1]["detail"] == "2 faces: use a photo of this person alone, or pick largest"
    again, rows = enroll_person(store, rt.recognizer, rt.threshold, "obama", [people / "obama" / "obama.jpg"], None,
                                False, None)
    assert again["enrolled"] == 0 and rows[0].status == "already enrolled" and store.names() == {"Joe Biden": 1,
                                                                                                  "obama": 1}
    with pytest.raises(SettingError) as err:
        people_folder(people / "obama" / "obama.jpg")
    assert str(err.value) == (f"people {people / 'obama' / 'obama.jpg'}: not a folder (one subfolder of photos per "
                              "person, or photos named after their person)")
