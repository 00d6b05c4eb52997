"""TFRecord written and read without TensorFlow: CRC-32C, framing and tf.train.Example checked against TensorFlow
itself; AT&T crops packed as TFRecord shards stream the very batches of the folder and of the RecordIO pack; a file
TensorFlow wrote (no index) is scanned once; every damage is one `error:` line naming the file and the record."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.data.crc32c import crc32c, crc32c_many
from edgeface.data.dataset import load_crops
from edgeface.data.example import encode_example, face_example, face_fields
from edgeface.data.pack import PackConfig, pack
from edgeface.data.tfrecord import INDEX_SUFFIX, frame_many
from edgeface.data.tfrecords import open_tfrecords, tfrecord_shards
from edgeface.errors import UserError

runner = CliRunner()
EXCLUDE = [f"s{i}" for i in range(9, 41)]  # packs of the other 8 AT&T people keep the tests quick


@pytest.fixture(scope="module")
def people8(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("people") / "people.txt"
    path.write_text("".join(f"{p}\n" for p in EXCLUDE))
    return str(path)


@pytest.fixture(scope="module")
def tfr(att_crops, people8, tmp_path_factory):
    """The 8 people as lossless TFRecord (one file and 2 shards) and as a lossless RecordIO pack."""
    base = tmp_path_factory.mktemp("tfr")
    pack(PackConfig(src=att_crops, out=base / "png", encoding="png", format="tfrecord", exclude_people=people8))
    pack(PackConfig(src=att_crops, out=base / "shards", encoding="png", format="tfrecord", shards=2,
                    exclude_people=people8))
    pack(PackConfig(src=att_crops, out=base / "rec", encoding="png", exclude_people=people8))
    return base


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_crc32c_is_castagnolis_and_agrees_with_tensorflow(tmp_path):
    import tensorflow as tf

    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    rng = np.random.default_rng(0)
    messages = [rng.bytes(int(n)) for n in rng.integers(0, 5000, 50)] + [b"", b"a", b"ab", b"abc"]
    slow = []
    for m in messages:  # the textbook bitwise algorithm
        c = 0xFFFFFFFF
        for b in m:
            c ^= b
            for _ in range(8):
                c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        slow.append(c ^ 0xFFFFFFFF)
    assert crc32c_many(messages).tolist() == slow
    # TensorFlow's writer frames records byte for byte as ours does (lengths, masked CRCs, data)
    records = [encode_example({"image/encoded": m, "image/class/label": i}) for i, m in enumerate(messages)]
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as w:
        for r in records:
            w.write(r)
    assert (tmp_path / "tf.tfrecord").read_bytes() == frame_many(records)


def test_examples_parse_both_ways_with_tensorflow():
    import tensorflow as tf

    ours = encode_example({"a": [1, -5, 2**40], "b": [1.5, 2.0], "c": b"xy"})
    spec = {"a": tf.io.FixedLenFeature([3], tf.int64), "b": tf.io.FixedLenFeature([2], tf.float32),
            "c": tf.io.FixedLenFeature([], tf.string)}
    parsed = tf.io.parse_single_example(ours, spec)
    assert parsed["a"].numpy().tolist() == [1, -5, 2**40] and parsed["b"].numpy().tolist() == [1.5, 2.0]
    assert parsed["c"].numpy() == b"xy"
    theirs = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\xff\xd8jpeg"])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[41])),
        "extra": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5]))})).SerializeToString()
    assert face_fields(theirs) == (b"\xff\xd8jpeg", 41)
    assert tf.train.Example.FromString(face_example(b"png", 3, "png", 112, 112)).features.feature[
        "image/class/label"].int64_list.value == [3]


def test_a_tfrecord_pack_is_what_tensorflow_reads(tfr, att_crops):
    import tensorflow as tf

    files = tfrecord_shards(tfr / "shards")
    assert [f.name for f in files] == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert all((f.parent / (f.name + INDEX_SUFFIX)).is_file() for f in files)
    assert not (tfr / "shards" / "property").exists() and (tfr / "shards" / "identities.txt").is_file()
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64),
            "image/format": tf.io.FixedLenFeature([], tf.string)}
    labels, images = [], []
    for r in tf.data.TFRecordDataset([str(f) for f in files]):  # TensorFlow checks every CRC as it reads
        e = tf.io.parse_single_example(r, spec)
        labels.append(int(e["image/class/label"]))
        images.append(tf.io.decode_png(e["image/encoded"], channels=3).numpy())
        assert e["image/format"].numpy() == b"png"
    crops = load_crops(att_crops, exclude=set(EXCLUDE))
    assert labels == crops.labels.tolist()
    np.testing.assert_array_equal(np.stack(images), crops.images)  # lossless: the folder's pixels


def _stream_batches(source, **kw):
    from edgeface.data.sources import open_pack
    from edgeface.train.stream import StreamInput

    s = StreamInput(open_pack(source), kw.pop("batch_size", 16), input_size=kw.pop("input_size", 112), **kw)
    return list(s.dataset.as_numpy_iterator())


def test_tfrecord_streams_the_batches_of_the_folder_and_of_recordio(tfr, att_crops):
    from edgeface.train.data import ArraySequence

    crops = load_crops(att_crops, exclude=set(EXCLUDE))
    seq = ArraySequence(crops.images, crops.labels, 16, shuffle=True, seed=3, epoch=1)
    expected = []
    for _ in range(2):  # epochs 1 and 2 of seed 3: what a run resumed at epoch 1 sees
        expected += [seq[i] for i in range(len(seq))]
        seq.on_epoch_end()
    recordio = _stream_batches(tfr / "rec", seed=3, epoch=1, epochs=3)
    for source in (tfr / "png", tfr / "shards"):
        got = _stream_batches(source, seed=3, epoch=1, epochs=3)
        assert len(got) == len(expected) == len(recordio) == 2 * (80 // 16)
        for (x, y), (ex, ey), (rx, ry) in zip(got, expected, recordio):
            np.testing.assert_array_equal(y, ey)
            np.testing.assert_array_equal(x, ex)  # the very pixels
            np.testing.assert_array_equal(y, ry)
            np.testing.assert_array_equal(x, rx)
    one = _stream_batches(tfr / "shards" / "train-00001-of-00002.tfrecord", shuffle=False)
    assert sorted(set(np.concatenate([y for _, y in one]).tolist())) == [4, 5, 6, 7]  # one shard: labels kept


def test_a_file_tensorflow_wrote_is_indexed_once_by_scanning(tfr, tmp_path):
    import tensorflow as tf

    folder = tmp_path / "foreign"
    folder.mkdir()
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(tfr / "png" / "train-00000-of-00001.tfrecord"))]
    with tf.io.TFRecordWriter(str(folder / "faces.tfrecord-00000-of-00001")) as w:
        for r in records:
            w.write(r)
    lines = []
    crops = open_tfrecords(folder, lines.append)
    assert len(lines) == 1 and lines[0].startswith(f"indexing {folder / 'faces.tfrecord-00000-of-00001'}")
    assert crops.scanned and (folder / ("faces.tfrecord-00000-of-00001" + INDEX_SUFFIX)).is_file()
    ours = open_tfrecords(tfr / "png")
    np.testing.assert_array_equal(crops.labels, ours.labels)
    np.testing.assert_array_equal(crops.offsets, ours.offsets)
    assert crops.encoded([5, 70]) == ours.encoded([5, 70])
    again = []
    assert not open_tfrecords(folder, again.append).scanned and again == []  # the index written is reused


def test_training_one_epoch_from_tfrecord(tfr, tmp_path):
    result = runner.invoke(app, ["train", str(tfr / "shards"), "--out", str(tmp_path / "run"), "--arch", "seed-cnn",
                                 "--head", "softmax", "--epochs", "1", "--batch-size", "16",
                                 "--no-augment", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["dataset"]["format"] == "tfrecord" and info["dataset"]["num_classes"] == 8
    assert info["dataset"]["shards"] == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert info["dataset"]["train_images"] == 80 and np.isfinite(info["history"][0]["loss"])


def _damage(folder, record: int, what: str):
    """Damage record ``record`` of the single-file pack in ``folder``; return (file, offset of that record)."""
    path = folder / "train-00000-of-00001.tfrecord"
    crops = open_tfrecords(folder)
    off, n = int(crops.offsets[record]), int(crops.lengths[record])
    crops.close()
    data = bytearray(path.read_bytes())
    if what == "length crc":
        data[off + 8] ^= 0xFF
    elif what == "data crc":
        data[off + 12 + n // 2] ^= 0xFF
    elif what == "truncate":
        data = data[:off + 12 + n // 2]
    path.write_bytes(bytes(data))
    return path, off


def _train(data, tmp_path):
    # batch 16: every one of the 80 records is read in the epoch
    return runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "r"), "--arch", "seed-cnn", "--batch-size",
                               "16", "--epochs", "1", "--head", "softmax"])


@pytest.mark.parametrize("what, message", [
    ("length crc", "bad CRC of its length header"),
    ("truncate", "is cut short"),
])
def test_damage_found_by_the_index_pass_is_one_line_before_training(tfr, tmp_path, what, message):
    folder = _copy(tfr / "png", tmp_path / "p")
    path, off = _damage(folder, 40, what)
    if what == "truncate":  # the index now belongs to a file of another size: refused, then scanned when deleted
        with pytest.raises(UserError, match="belongs to another version of the file"):
            open_tfrecords(folder)
        (folder / (path.name + INDEX_SUFFIX)).unlink()
    with pytest.raises(UserError, match=rf"{path}: record 40 at byte {off}.*{message}"):
        open_tfrecords(folder)
    result = _train(folder, tmp_path)
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert result.exit_code == 2 and len(errors) == 1 and message in errors[0], result.output
    assert f"{path}: record 40 at byte {off}" in errors[0]  # (after the line saying the file is being scanned)
    assert not (tmp_path / "r" / "model.keras").exists()


def test_a_bad_data_crc_is_found_when_read_and_by_a_scan(tfr, tmp_path):
    folder = _copy(tfr / "png", tmp_path / "p")
    path, off = _damage(folder, 33, "data crc")
    crops = open_tfrecords(folder)  # the index pass reads headers only
    with pytest.raises(UserError, match=rf"{path}: record 33 at byte {off}: bad CRC of its data"):
        crops.encoded([32, 33])
    result = _train(folder, tmp_path)  # met while streaming: the run stops with the one line
    assert result.exit_code == 2 and "record 33" in result.stderr and "bad CRC of its data" in result.stderr, \
        result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "r" / "model.keras").exists()
    (folder / (path.name + INDEX_SUFFIX)).unlink()  # a scan checks every CRC before training
    with pytest.raises(UserError, match=rf"record 33 at byte {off}: bad CRC of its data"):
        open_tfrecords(folder)


def test_records_that_are_not_face_examples_are_refused(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    good = face_example(b"\xff\xd8x", 0, "jpeg", 112, 112)
    for name, bad, message in (
        ("garbage.tfrecord", b"\x07not a protobuf", "not a tf.train.Example"),
        ("nolabel.tfrecord", encode_example({"image/encoded": b"x"}), "no single int64 feature 'image/class/label'"),
        ("floatlabel.tfrecord", encode_example({"image/encoded": b"x", "image/class/label": 1.5}),
         "no single int64 feature"),
        ("negative.tfrecord", encode_example({"image/encoded": b"x", "image/class/label": -1}), "not a class number"),
    ):
        (folder / name).write_bytes(frame_many([good, good, bad]))
        with pytest.raises(UserError, match=rf"{name}: record 2 at byte \d+.*{message}"):
            open_tfrecords(folder / name)
        (folder / name).unlink()
    (folder / "x.tfrecord").write_bytes(b"\x01\x02\x03")
    result = _train(folder / "x.tfrecord", tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 2 and lines[0].startswith("indexing "), result.output
    assert lines[1].startswith("error: ") and "x.tfrecord: record 0 at byte 0 is cut short" in lines[1]
    (folder / "x.tfrecord.index").write_bytes(b"nonsense")
    result = _train(folder / "x.tfrecord", tmp_path)
    assert result.exit_code == 2 and "is not an edgeface TFRecord index" in result.stderr, result.output


def test_pack_refuses_a_folder_already_holding_tfrecords(att_crops, tfr):
    result = runner.invoke(app, ["data", "pack", str(att_crops), "--out", str(tfr / "png"), "--format", "tfrecord"])
    assert result.exit_code == 2 and "already holds a pack (train-00000-of-00001.tfrecord)" in result.stderr
    result = runner.invoke(app, ["data", "pack", str(att_crops), "--out", str(tfr / "x"), "--format", "tar"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "format" in result.stderr
