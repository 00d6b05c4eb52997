"""Where a run's results go (edgeface.runtime.sinks): the events file, and the unknown-face saver's crops, caps and
failures.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time

import numpy as np
import pytest
from run_cli import events_of, invoke

from edgeface.errors import SettingError
from edgeface.runtime.images import read_image

# Every test in its own folder: `edgeface run` picks up ./gallery.npz when present.
pytestmark = [pytest.mark.board, pytest.mark.usefixtures("in_tmp_dir")]


def test_events_file_that_cannot_be_written_is_one_line_before_the_model_loads(media_dir, tmp_path):
    events = tmp_path / "no" / "such" / "dir" / "e.jsonl"
    # a folder that is no bundle: had the models been loaded first, that would have been the error
    result = invoke("run", "-s", media_dir / "obama.jpg", "-m", tmp_path, "--events", events)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --events {events}: cannot write to it (No such file or directory)"
    result = invoke("run", "-s", media_dir / "obama.jpg", "-m", tmp_path, "--events", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --events {tmp_path}: cannot write to it (Is a directory)"


def test_save_unknown_keeps_crops_that_enroll_again(runtime_bundle, media_dir, tmp_path):
    crops = tmp_path / "unknown"
    result = invoke("run", "-s", media_dir / "two_people.jpg", "-m", runtime_bundle, "--save-unknown", crops, "-q")
    assert result.exit_code == 0, result.output
    saved = sorted(crops.glob("unknown_*.png"))
    assert len(saved) == 2 and events_of(result.stdout)[1]["unknown_saved"] == 2
    # strangers' faces are biometric data: a folder and files no other account can read, whatever the umask
    assert stat.S_IMODE(crops.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in saved} == {0o600}
    result = invoke("enroll", "someone", saved[0], "-g", tmp_path / "g.npz", "-m", runtime_bundle)
    assert result.exit_code == 0, result.output  # the saved crop holds a detectable face
    assert stat.S_IMODE((tmp_path / "g.npz").stat().st_mode) == 0o600  # a new gallery is private


def test_save_unknown_given_a_file_is_one_line_before_the_model_loads(media_dir, tmp_path):
    a_file = tmp_path / "crops"
    a_file.write_text("not a folder")
    result = invoke("run", "-s", media_dir / "obama.jpg", "-m", tmp_path, "--save-unknown", a_file)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: --save-unknown {a_file} is a file: give a folder for the crops "
                                     "(created if missing)")
    assert a_file.read_text() == "not a folder"
    from edgeface.runtime.sinks import UnknownSaver

    # the library names the setting; the CLI (above) names its flag
    with pytest.raises(SettingError, match=r"^save_unknown .*crops/sub: cannot create the folder \(") as err:
        UnknownSaver(a_file / "sub", 0.5)
    assert str(err.value.as_flag()).startswith(f"--save-unknown {a_file / 'sub'}: cannot create the folder (")


def _unknown_frame(image: np.ndarray, boxes: list, index: int, timestamp: float):
    from edgeface.runtime.results import FaceResult, FrameResult

    faces = []
    for i, box in enumerate(boxes):
        embedding = np.zeros(16, np.float32)
        embedding[index * 4 + i] = 1  # every face its own person: the cooldown never skips one
        faces.append(FaceResult(np.array(box, np.float32), np.zeros((6, 2), np.float32), 0.9, "unknown", 0.1,
                                None, embedding=embedding))
    return FrameResult(index, index, timestamp, faces, {}, image=image)


def test_unknown_folder_is_capped_and_aged_oldest_first(tmp_path):
    from edgeface.runtime.sinks import UnknownSaver

    folder = tmp_path / "unknown"
    folder.mkdir()
    now = time.time()
    for i in range(6):  # unknown_0 is the oldest, 10 days apart
        crop = folder / f"unknown_{i}.png"
        crop.write_bytes(b"x" * 1000)
        os.utime(crop, (now - (60 - 10 * i) * 86400, now - (60 - 10 * i) * 86400))
    (folder / "notes.txt").write_text("mine")  # not a crop: never touched
    saver = UnknownSaver(folder, 0.5, max_age_s=45 * 86400)  # at start: 60 and 50 days old go
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", *[f"unknown_{i}.png" for i in range(2, 6)]]
    saver.max_files = 3
    assert saver.prune(now) == 1 and not (folder / "unknown_2.png").exists()
    saver.max_bytes = 1500  # room for one crop of 1000 bytes
    assert saver.prune(now) == 2 and [p.name for p in folder.glob("unknown_*")] == ["unknown_5.png"]
    assert saver.pruned == 5


def test_unknown_limits_must_be_positive(media_dir, tmp_path):
    for flag, value in (("--unknown-max-files", "0"), ("--unknown-max-mb", "-1"), ("--unknown-max-days", "nan")):
        result = invoke("run", "-s", media_dir / "obama.jpg", "--save-unknown", tmp_path / "u", flag, value)
        assert result.exit_code == 2, (flag, result.output)
        assert result.stderr.strip().splitlines() == [f"error: {flag} must be a positive number, got "
                                                      f"{float(value) if flag != '--unknown-max-files' else value}"]


def test_unknown_saver_skips_empty_crops_and_outlives_a_folder_it_cannot_write(media_dir, tmp_path, caplog):
    from edgeface.runtime.sinks import UnknownSaver

    image = read_image(media_dir / "obama.jpg")
    h, w = image.shape[:2]
    inside, outside = [w * 0.3, h * 0.3, w * 0.6, h * 0.6], [w + 50, h + 50, w + 150, h + 150]
    folder = tmp_path / "crops"
    saver = UnknownSaver(folder, threshold=0.5)
    saver(_unknown_frame(image, [outside, inside], 0, 1000.0))  # the box beyond the frame has no pixels
    assert saver.saved == 1 and saver.failed == 0 and len(list(folder.glob("unknown_*.png"))) == 1

    shutil.rmtree(folder)
    folder.write_text("the folder is gone")  # every write now fails with an OSError, as on a full disk
    with caplog.at_level(logging.WARNING, logger="edgeface"):
        saver(_unknown_frame(image, [inside], 1, 1001.0))
        saver(_unknown_frame(image, [inside], 2, 1002.0))
    assert saver.saved == 1 and saver.failed == 2
    warnings = [r.getMessage() for r in caplog.records if "cannot save an unknown face" in r.getMessage()]
    assert len(warnings) == 1 and "going on without it" in warnings[0]  # once, not on every frame

    folder.unlink()
    folder.mkdir()
    saver(_unknown_frame(image, [inside], 3, 1003.0))  # the folder is back: saving resumes
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(1003.0))
    assert saver.saved == 2 and [p.name for p in folder.iterdir()] == [f"unknown_{stamp}_f000003_0.png"]
