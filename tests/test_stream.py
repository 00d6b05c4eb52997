"""Streaming training from a RecordIO pack: AT&T crops -> `data pack` -> the tf.data pipeline yields the very batches
of the in-memory folder path; shuffle-buffer mode, shards, resume, a 1-epoch training run, and damage as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.data.dataset import load_crops
from edgeface.data.pack import PackConfig, pack
from edgeface.data.recordio import read_index
from edgeface.data.records import is_record_source, open_records
from edgeface.errors import UserError

runner = CliRunner()


@pytest.fixture(scope="module")
def crops8(att_crops, tmp_path_factory):
    """(people file leaving 8 people, their crops in memory as `edgeface train` loads them)."""
    people = tmp_path_factory.mktemp("people") / "people.txt"
    people.write_text("".join(f"s{i}\n" for i in range(9, 41)))
    return str(people), load_crops(att_crops, exclude={f"s{i}" for i in range(9, 41)})


@pytest.fixture(scope="module")
def packs(att_crops, crops8, tmp_path_factory):
    """The 8 people packed lossless (one file and 2 shards) and as JPEG."""
    base = tmp_path_factory.mktemp("packs")
    people = crops8[0]
    pack(PackConfig(src=att_crops, out=base / "png", encoding="png", exclude_people=people))
    pack(PackConfig(src=att_crops, out=base / "shards", encoding="png", shards=2, exclude_people=people))
    pack(PackConfig(src=att_crops, out=base / "jpeg", exclude_people=people))
    return base


def _stream_batches(source, **kw) -> list[tuple[np.ndarray, np.ndarray]]:
    from edgeface.train.stream import StreamInput

    s = StreamInput(open_records(source), kw.pop("batch_size", 16), input_size=kw.pop("input_size", 112), **kw)
    return list(s.dataset.as_numpy_iterator())


def test_the_stream_yields_the_in_memory_pipelines_batches(packs, crops8):
    from edgeface.train.data import ArraySequence

    crops = crops8[1]
    # epochs 1 and 2 of seed 3 (a run resumed at epoch 1): the folder path's sequence, batch by batch
    seq = ArraySequence(crops.images, crops.labels, 16, shuffle=True, seed=3, epoch=1)
    expected = []
    for _ in range(2):
        expected += [seq[i] for i in range(len(seq))]
        seq.on_epoch_end()
    for source in (packs / "png", packs / "shards", packs / "shards" / "train_001.rec"):
        got = _stream_batches(source, seed=3, epoch=1, epochs=3)
        if source.suffix == ".rec":  # one shard alone: its people only, labels kept
            assert sorted(set(np.concatenate([y for _, y in got]).tolist())) == [4, 5, 6, 7]
            continue
        assert len(got) == len(expected) == 2 * (80 // 16)
        for (x, y), (ex, ey) in zip(got, expected):
            assert x.dtype == np.float32 and y.dtype == np.int32
            np.testing.assert_array_equal(y, ey)
            np.testing.assert_array_equal(x, ex)  # lossless pack: the very pixels


def test_a_jpeg_pack_decodes_to_opencvs_pixels(packs):
    records = open_records(packs / "jpeg")
    got = _stream_batches(packs / "jpeg", shuffle=False, batch_size=32)
    assert [len(y) for _, y in got] == [32, 32, 16]  # unshuffled: every record in order, the last batch partial
    images = np.concatenate([x for x, _ in got])
    np.testing.assert_array_equal(images, records.images[np.arange(80)].astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]), records.labels)


def test_shuffle_buffer_mode_is_deterministic_and_resumable(packs):
    kw = dict(seed=5, shuffle_buffer=32, input_size=56, epochs=3)
    whole = _stream_batches(packs / "png", **kw)
    assert len(whole) == 3 * 5 and all(x.shape == (16, 56, 56, 3) for x, _ in whole)
    epochs = [np.concatenate([y for _, y in whole[5 * e: 5 * e + 5]]) for e in range(3)]
    assert len({tuple(e) for e in epochs}) == 3  # a new order each epoch
    again = _stream_batches(packs / "png", **kw)
    assert all((a[1] == b[1]).all() and (a[0] == b[0]).all() for a, b in zip(whole, again))
    resumed = _stream_batches(packs / "png", **{**kw, "epoch": 2})
    assert np.array_equal(np.concatenate([y for _, y in resumed]), epochs[2])
    # the buffer mixes the runs it reads: epoch 0 is not the reading order itself
    from edgeface.train.stream import StreamInput

    reading = StreamInput(open_records(packs / "png"), 16, input_size=56, seed=5, shuffle_buffer=32)
    read_labels = reading.crops.labels[reading.epoch_positions(0)][:len(epochs[0])]
    assert not np.array_equal(epochs[0], read_labels)


@pytest.mark.parametrize("shuffle_buffer", [0, 32])
def test_a_stream_resumed_mid_epoch_gives_the_rest_and_skips_reading_it(packs, shuffle_buffer):
    from edgeface.train.stream import StreamInput

    kw = dict(seed=4, shuffle_buffer=shuffle_buffer, input_size=56, epoch=1, epochs=3)
    whole = _stream_batches(packs / "png", **kw)  # epochs 1 and 2, 5 batches each
    records = open_records(packs / "png")
    read: list[int] = []
    encoded = records.encoded
    records.encoded = lambda pos: (read.extend(int(p) for p in pos), encoded(pos))[1]
    stream = StreamInput(records, 16, input_size=56, seed=4, shuffle_buffer=shuffle_buffer, epoch=1, epochs=3)
    resumed = list(stream.at_epoch(1, start_step=3).dataset.as_numpy_iterator())
    assert len(resumed) == 2 + 5  # the epoch's last two batches, then the next epoch
    for (x, y), (ex, ey) in zip(resumed, whole[3:]):
        np.testing.assert_array_equal(y, ey)
        np.testing.assert_array_equal(x, ex)
    if shuffle_buffer == 0:
        # the three skipped batches were never read: records of epoch 1 read = the two batches trained on
        assert len(read) == 2 * 16 + 5 * 16
        assert sorted(read[:32]) == sorted(np.concatenate(stream.epoch_positions(1).reshape(5, 16)[3:]).tolist())
    else:  # the buffer's mixing needs every record before: read, but only the batches trained on are decoded
        assert len(read) == 2 * 80
    with pytest.raises(ValueError, match="start_step 6 is outside"):
        stream.at_epoch(1, start_step=6)


def test_training_one_epoch_from_a_pack_and_resuming(packs, crops8, tmp_path):
    from edgeface.train.augment import AugmentConfig
    from edgeface.train.trainer import TrainConfig, train

    def config(data, out, **kw):
        base = dict(arch="seed-cnn", head="softmax", epochs=1, batch_size=16, input_size=56,
                    augment=AugmentConfig.off(), patience=0)
        return TrainConfig(data=data, out=out, **{**base, **kw})

    result = train(config(packs / "jpeg", tmp_path / "run"))
    info = json.loads(result.train_json.read_text())
    assert (result.num_classes, result.train_images, result.epochs_run) == (8, 80, 1)
    assert info["dataset"]["format"] == "recordio" and info["dataset"]["shards"] == ["train.rec"]
    assert np.isfinite(info["history"][0]["loss"]) and result.model_path.is_file()
    # the pack names its people: the run has the folder's classes, so the fingerprint resumes across formats
    more = train(config(packs / "jpeg", tmp_path / "run", resume=True, epochs=2))
    assert json.loads(more.train_json.read_text())["epochs_this_session"] == 1


def test_a_pack_refuses_folder_only_options_and_damage_with_one_line(packs, tmp_path):
    assert is_record_source(packs / "png") and is_record_source(packs / "png" / "train.rec")
    assert not is_record_source(tmp_path)
    for args, message in (
        (["--val-split", "0.2"], "error: --val-split needs a folder of crops; "),
        (["--exclude-people", "x.txt"], "error: --exclude-people chooses people from a folder; "),
    ):
        result = runner.invoke(app, ["train", str(packs / "png"), "--out", str(tmp_path / "r"), *args])
        assert result.exit_code == 2 and result.stderr.startswith(message), result.output
        assert "edgeface data pack" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["train", str(tmp_path / "nope.rec"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and result.stderr.startswith("error: record file not found"), result.output

    # a record whose magic number is damaged: found by the index pass, before any training
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in (packs / "png").iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    keys, offsets = read_index(damaged / "train.idx")
    data = bytearray((damaged / "train.rec").read_bytes())
    data[offsets[40]: offsets[40] + 4] = b"\0\0\0\0"
    (damaged / "train.rec").write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"train\.rec: record {keys[40]} at byte {offsets[40]}: bad magic number"):
        open_records(damaged)
    result = runner.invoke(app, ["train", str(damaged), "--out", str(tmp_path / "r"), "--epochs", "1"])
    assert result.exit_code == 2 and "bad magic number" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "r" / "model.keras").exists()
