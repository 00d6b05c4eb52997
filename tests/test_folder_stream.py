"""A folder of crops streamed instead of loaded (`edgeface train CROPS --stream`, or on its own past the memory
budget): the tf.data pipeline yields the very batches of the in-memory path, --exclude-people/--min-images choose
the same people, other image formats decode to the loader's pixels, and what cannot work is one line."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.data import folder_stream
from edgeface.data.dataset import load_crops
from edgeface.data.folder_stream import decoded_bytes, scan_folder, stream_folder
from edgeface.errors import UserError

runner = CliRunner()
EXCLUDE = {f"s{i}" for i in range(9, 41)}


def _batches(crops, **kw):
    from edgeface.train.stream import StreamInput

    s = StreamInput(crops, kw.pop("batch_size", 16), input_size=kw.pop("input_size", 112), **kw)
    return list(s.dataset.as_numpy_iterator())


def _expected(images, labels, epochs=2, **kw):
    from edgeface.train.data import ArraySequence

    seq = ArraySequence(images, labels, 16, shuffle=True, **kw)
    out = []
    for _ in range(epochs):
        out += [seq[i] for i in range(len(seq))]
        seq.on_epoch_end()
    return out


def test_a_streamed_folder_yields_the_in_memory_batches(att_crops):
    crops = load_crops(att_crops, exclude=EXCLUDE)
    streamed = scan_folder(att_crops, EXCLUDE, size=112).with_input_size(112)
    assert streamed.class_names == crops.class_names and streamed.paths == crops.paths
    np.testing.assert_array_equal(streamed.labels, crops.labels)
    expected = _expected(crops.images, crops.labels, seed=3, epoch=1)
    got = _batches(streamed, seed=3, epoch=1, epochs=3)
    assert len(got) == len(expected) == 10
    for (x, y), (ex, ey) in zip(got, expected):
        np.testing.assert_array_equal(y, ey)
        np.testing.assert_array_equal(x, ex)


def test_min_images_and_other_formats_match_the_loader(att_crops, tmp_path):
    # crops made elsewhere (no manifest): PGM and grey PNG files, some people with fewer images
    src = tmp_path / "crops"
    for k, person in enumerate(["a", "b", "c", "d"]):
        (src / person).mkdir(parents=True)
        for i, f in enumerate(sorted((att_crops / f"s{k + 1}").glob("*.png"))[: 8 - 2 * k]):
            grey = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2GRAY)
            cv2.imwrite(str(src / person / (f"{i}.pgm" if i % 2 else f"{i}.png")), grey)
    crops = load_crops(src, min_images=4, size=112, aligned_only=True)
    streamed = stream_folder(src, (), 4, 112, True)
    assert streamed.class_names == ["a", "b", "c"] == crops.class_names and len(streamed) == 8 + 6 + 4
    expected = _expected(crops.images, crops.labels, seed=1, epochs=1)
    got = _batches(streamed, seed=1)
    assert len(got) == len(expected) == 1
    np.testing.assert_array_equal(got[0][0], expected[0][0])
    np.testing.assert_array_equal(got[0][1], expected[0][1])
    # a photo among crops (no manifest): one line naming it when it is read, as the loader says before
    cv2.imwrite(str(src / "a" / "9.png"), np.zeros((120, 90, 3), np.uint8))
    with pytest.raises(UserError, match=r"holds photos, not aligned face crops \(a/9.png is 90x120"):
        stream_folder(src, (), 4, 112, True).encoded([8])


def test_auto_streaming_past_the_budget_trains_and_says_so(att_crops, tmp_path, monkeypatch):
    people = tmp_path / "people.txt"
    people.write_text("".join(f"{p}\n" for p in sorted(EXCLUDE)))
    assert stream_folder(att_crops, EXCLUDE, 1, 112, None) is None  # 80 crops: loaded
    monkeypatch.setattr(folder_stream, "memory_budget", lambda: decoded_bytes(79, 112))
    result = runner.invoke(app, ["train", str(att_crops), "--out", str(tmp_path / "run"), "--exclude-people",
                                 str(people), "--arch", "seed-cnn", "--head", "softmax", "--epochs", "1",
                                 "--batch-size", "16", "--no-augment", "--json"])
    assert result.exit_code == 0, result.output
    said = [ln for ln in result.stderr.splitlines() if ln.startswith("streaming ")]
    assert len(said) == 1 and "its 80 crops would take 0.0 GB decoded, over the budget" in said[0], result.stderr
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["dataset"]["format"] == "folder-streamed" and info["dataset"]["num_classes"] == 8
    assert info["dataset"]["train_images"] == 80 and info["dataset"]["excluded_people"] == 32
    # --no-stream loads it whatever the budget
    assert stream_folder(att_crops, EXCLUDE, 1, 112, False) is None


@pytest.mark.parametrize("args", [["--stream", "--val-split", "0.2"], ["--stream", "--val", "."]])
def test_validation_of_a_streamed_folder_is_refused_with_one_line(att_crops, tmp_path, args):
    result = runner.invoke(app, ["train", str(att_crops), "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {args[1]} cannot be used when "), result.output
    assert "--val-bin" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_unreadable_file_stops_a_streamed_run_with_one_line(att_crops, tmp_path):
    src = tmp_path / "crops"
    for person in ("s1", "s2"):
        (src / person).mkdir(parents=True)
        for f in sorted((att_crops / person).glob("*.png")):
            (src / person / f.name).write_bytes(f.read_bytes())
    (src / "s2" / "zz.png").write_bytes(b"not an image")
    (src / "manifest.jsonl").write_text("")
    result = runner.invoke(app, ["train", str(src), "--out", str(tmp_path / "r"), "--stream", "--arch", "seed-cnn",
                                 "--head", "softmax", "--epochs", "1", "--batch-size", "4"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {src / 's2' / 'zz.png'}: not a readable image"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "r" / "model.keras").exists()
