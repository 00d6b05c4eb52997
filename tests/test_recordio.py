"""MXNet RecordIO read and written without MXNet: framing, split records, the index, InsightFace's pack layout,
and every kind of damage refused with one line naming the file and the record."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgeface.data.recordio import (
    MAGIC,
    IRHeader,
    RecordFile,
    RecordWriter,
    frame,
    pack_layout,
    pack_payload,
    read_index,
    unpack_payload,
)
from edgeface.errors import UserError

MAGIC_LE = struct.pack("<I", MAGIC)


def test_a_record_is_magic_length_payload_and_padding_by_hand():
    # magic 0xced7230a little-endian, lrecord = length (cflag 0), 5 payload bytes, 3 zero bytes to 4-byte alignment
    assert frame(b"hello") == b"\x0a\x23\xd7\xce" + struct.pack("<I", 5) + b"hello" + b"\0\0\0"
    assert frame(b"") == MAGIC_LE + struct.pack("<I", 0)


def test_a_payload_holding_the_magic_at_an_aligned_position_is_split_as_dmlc_does():
    payload = b"abcd" + MAGIC_LE + b"efg"
    # part 1 (cflag 1): "abcd"; the magic itself is dropped; part 2 (cflag 3): "efg" + 1 padding byte
    assert frame(payload) == (MAGIC_LE + struct.pack("<I", (1 << 29) | 4) + b"abcd"
                              + MAGIC_LE + struct.pack("<I", (3 << 29) | 3) + b"efg\0")
    # a magic at an unaligned position is left in place
    assert frame(b"a" + MAGIC_LE) == MAGIC_LE + struct.pack("<I", 5) + b"a" + MAGIC_LE + b"\0\0\0"
    # three parts: first, middle, last
    three = MAGIC_LE + b"wxyz" + MAGIC_LE
    flags = [struct.unpack_from("<I", frame(three), off)[0] >> 29 for off in (4, 12, 24)]
    assert flags == [1, 2, 3]


def test_the_header_struct_is_mxnets_irheader():
    one = pack_payload(IRHeader(0, 7.0, 42, 0), b"JPEG")
    assert one == struct.pack("<IfQQ", 0, 7.0, 42, 0) + b"JPEG"
    assert unpack_payload(one) == (IRHeader(0, 7.0, 42, 0), b"JPEG")
    # several labels: flag = their count, the header's label 0, the labels follow as float32
    many = pack_payload(IRHeader(2, (5.0, 9.0), 0, 1))
    assert many == struct.pack("<IfQQ", 2, 0.0, 0, 1) + struct.pack("<2f", 5.0, 9.0)
    header, rest = unpack_payload(many)
    assert header == IRHeader(2, (5.0, 9.0), 0, 1) and rest == b"" and header.first_label == 5.0


def test_round_trip_random_access_and_sequential_scan(tmp_path):
    rng = np.random.default_rng(0)
    payloads = {}
    with RecordWriter(tmp_path / "t.rec") as w:
        for key in range(50):
            body = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
            if key % 7 == 0:  # magic numbers inside, aligned and not
                body = body[: len(body) // 4 * 4] + MAGIC_LE + b"x" + MAGIC_LE + body
            payloads[key] = pack_payload(IRHeader(0, float(key % 5), key), body)
            w.write(key, payloads[key])
    assert (tmp_path / "t.idx").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    with RecordFile(tmp_path / "t.rec") as r:
        keys, offsets = r.index()
        assert keys.tolist() == list(range(50)) and offsets[0] == 0
        for key in rng.permutation(50):
            assert r.read(int(key)) == payloads[key]
        scanned = list(r.scan())
        assert [p for _, p in scanned] == [payloads[k] for k in range(50)]
        assert [o for o, _ in scanned] == offsets.tolist()
        assert r.header_at(int(offsets[3]), 3) == IRHeader(0, 3.0, 3)
        with pytest.raises(UserError, match="has no record 50"):
            r.read(50)


def test_a_writer_that_fails_leaves_no_files(tmp_path):
    with pytest.raises(RuntimeError), RecordWriter(tmp_path / "t.rec") as w:
        w.write(0, b"abc")
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def _small_pack(tmp_path, n=6):
    """An InsightFace-layout pack: images 1..n (labels 0,0,1,1,2,2), identity records, header last at key 0."""
    rec = tmp_path / "train.rec"
    with RecordWriter(rec) as w:
        for key in range(1, n + 1):
            w.write(key, pack_payload(IRHeader(0, float((key - 1) // 2), key), b"img%d" % key))
        first_id = n + 1
        for c in range(n // 2):
            w.write(first_id + c, pack_payload(IRHeader(2, (1.0 + 2 * c, 3.0 + 2 * c), first_id + c)))
        w.write(0, pack_payload(IRHeader(2, (float(first_id), float(first_id + n // 2)), 0, 1)))
    return rec


def test_insightface_layout_images_come_from_the_header_record(tmp_path):
    with RecordFile(_small_pack(tmp_path)) as r:
        layout = pack_layout(r)
        assert layout.has_header and layout.image_keys.tolist() == [1, 2, 3, 4, 5, 6]
        assert layout.identity_ranges.tolist() == [[1, 3], [3, 5], [5, 7]]
        # the header is the last record of the file, as InsightFace's RecBuilder writes it
        keys, offsets = r.index()
        assert keys[-1] == 0 and offsets[-1] == offsets.max()


# --------------------------------------------------------------------------- damage, one line each


def test_a_truncated_rec_names_the_file_and_record(tmp_path):
    rec = _small_pack(tmp_path)
    data = rec.read_bytes()
    keys, offsets = read_index(tmp_path / "train.idx")
    cut = int(offsets[2]) + 20  # inside record 3's payload
    rec.write_bytes(data[:cut])
    with RecordFile(rec) as r, pytest.raises(UserError) as err:
        r.read_at(int(offsets[2]), 3)
    message = str(err.value)
    assert "\n" not in message and str(rec) in message
    assert "record 3 at byte" in message and "cut short" in message and "truncated" in message


def test_an_idx_pointing_past_the_end_names_the_line_and_record(tmp_path):
    rec = _small_pack(tmp_path)
    idx = tmp_path / "train.idx"
    idx.write_text(idx.read_text() + f"99\t{rec.stat().st_size + 400}\n")
    with RecordFile(rec) as r, pytest.raises(UserError) as err:
        r.index()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{idx}:11: record 99 at byte {rec.stat().st_size + 400} is past the end of train.rec")


def test_bad_magic_names_the_file_record_and_byte(tmp_path):
    rec = _small_pack(tmp_path)
    keys, offsets = read_index(tmp_path / "train.idx")
    data = bytearray(rec.read_bytes())
    data[offsets[1]: offsets[1] + 4] = b"JUNK"
    rec.write_bytes(bytes(data))
    with RecordFile(rec) as r, pytest.raises(UserError) as err:
        r.read(2)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{rec}: record 2 at byte {offsets[1]}: bad magic number 0x4b4e554a")
    # the idx pointing into the middle of a record is the same mistake, found the same way
    with RecordFile(rec) as r, pytest.raises(UserError, match="bad magic number"):
        r.read_at(int(offsets[3]) + 4)


@pytest.mark.parametrize("text, message", [
    ("0\t0\n1\tx\n", r"t\.idx:2: expected 'key<TAB>offset', got '1\\tx'"),
    ("0\t0\n1\n", r"t\.idx:2: expected 'key<TAB>offset', got '1'"),
    ("0\t0\n0\t16\n", r"t\.idx:2: key 0 appears twice"),
    ("0\t-8\n", r"t\.idx:1: record 0 has a negative offset -8"),
])
def test_a_malformed_idx_names_its_line(tmp_path, text, message):
    (tmp_path / "t.idx").write_text(text)
    with pytest.raises(UserError, match=message):
        read_index(tmp_path / "t.idx")


def test_a_short_image_record_is_refused():
    with pytest.raises(UserError, match="record 5: 3 bytes, too short for an image record's 24-byte header"):
        unpack_payload(b"abc", "record 5")
    with pytest.raises(UserError, match="announces 4 labels but the record holds 1"):
        unpack_payload(struct.pack("<IfQQ", 4, 0.0, 0, 0) + b"abcd")
