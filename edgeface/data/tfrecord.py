"""TFRecord files read and written directly (no TensorFlow), with a small index sidecar for random access.

A TFRecord file is records back to back, each framed as (tensorflow/core/lib/io/record_writer.cc)::

    uint64 length | uint32 masked_crc32c(length) | data (length bytes) | uint32 masked_crc32c(data)

all little-endian, nothing between records and no header.  The CRC is CRC-32C (:mod:`edgeface.data.crc32c`),
masked.  The format has no index, so random reads need one: beside each file edgeface keeps
``FILE.index`` (written by ``edgeface data pack --format tfrecord``, or built once by scanning a file that has
none).  It is binary, little-endian:

    8 bytes  b"EFTFIDX1"
    uint64   the record count N
    uint64   the TFRecord file's size in bytes (an index of another version of the file is refused)
    N int64  byte offset of each record's frame
    N int32  the class label in each record's Example

No pickle, no code: numpy reads the two arrays from their byte ranges.  Every damage a file can have -- a frame
cut short, a bad CRC, an index that does not fit the file -- is a one-line :class:`~edgeface.errors.UserError`
naming the file and the record.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from edgeface.data.crc32c import masked_crc32c_many
from edgeface.errors import UserError
from edgeface.fileio import PreadFile, atomic_output

INDEX_SUFFIX = ".index"
_INDEX_MAGIC = b"EFTFIDX1"
_INDEX_HEAD = struct.Struct("<8sQQ")
_HEAD = struct.Struct("<QI")  # length, masked crc of the length
HEAD_SIZE = _HEAD.size  # 12
FOOT_SIZE = 4  # masked crc of the data
MAX_RECORD_BYTES = 1 << 30  # a face crop's record is kilobytes; a larger length is damage, not a record
SCAN_BLOCK = 16 << 20  # bytes read at a time when scanning a file without an index


def index_path_for(path: str | os.PathLike) -> Path:
    """``FILE.index``: where the sidecar of a TFRecord file lives."""
    path = Path(path)
    return path.with_name(path.name + INDEX_SUFFIX)


def frame_many(records: Sequence[bytes]) -> bytes:
    """``records`` framed as TFRecord bytes (CRCs computed together)."""
    lengths = [struct.pack("<Q", len(r)) for r in records]
    crcs = masked_crc32c_many(list(lengths) + list(records))
    n = len(records)
    return b"".join(length + struct.pack("<I", int(crcs[i])) + bytes(records[i]) + struct.pack("<I", int(crcs[n + i]))
                    for i, length in enumerate(lengths))


# --------------------------------------------------------------------------- the index sidecar


def write_index(path: str | os.PathLike, offsets: np.ndarray, labels: np.ndarray, file_size: int) -> Path:
    """Write the sidecar of TFRecord file ``path`` (temp + rename); its path."""
    out = index_path_for(path)
    offsets = np.ascontiguousarray(offsets, "<i8")
    labels = np.ascontiguousarray(labels, "<i4")
    with atomic_output(out, suffix=".index") as tmp, open(tmp, "wb") as f:
        f.write(_INDEX_HEAD.pack(_INDEX_MAGIC, len(offsets), int(file_size)))
        f.write(offsets.tobytes())
        f.write(labels.tobytes())
    return out


def read_index(path: str | os.PathLike, file_size: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(offsets, labels) from the sidecar of ``path``; None when there is none.

    A sidecar that is not one, is cut short or was made for a file of another size: :class:`UserError` (delete it
    and the file is indexed again by scanning).
    """
    idx = index_path_for(path)
    if not idx.is_file():
        return None
    raw = idx.read_bytes()
    fix = "delete it and the file is indexed again by scanning"
    if len(raw) < _INDEX_HEAD.size or raw[:8] != _INDEX_MAGIC:
        raise UserError(f"{idx} is not an edgeface TFRecord index: {fix}")
    _, n, size = _INDEX_HEAD.unpack_from(raw)
    if len(raw) != _INDEX_HEAD.size + 12 * n:
        raise UserError(f"{idx} is cut short ({len(raw)} bytes for {n} records): {fix}")
    if size != file_size:
        raise UserError(f"{idx} indexes a file of {size} bytes, {Path(path).name} has {file_size}: the index belongs "
                        f"to another version of the file ({fix})")
    offsets = np.frombuffer(raw, "<i8", n, _INDEX_HEAD.size).astype(np.int64)
    labels = np.frombuffer(raw, "<i4", n, _INDEX_HEAD.size + 8 * n).astype(np.int32)
    return offsets, labels


# --------------------------------------------------------------------------- reading


class TFRecordFile(PreadFile):
    """One TFRecord file read with ``os.pread`` (safe to share between threads)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, "TFRecord file")

    def lengths_at(self, offsets: np.ndarray, first: int = 0) -> np.ndarray:
        """The data length of the record at each offset, every length CRC checked and each frame checked to end
        within the file (12 bytes read per record).  Records are numbered from ``first`` in messages."""
        heads = [self._pread(HEAD_SIZE, int(off)) for off in offsets.tolist()]
        short = [i for i, h in enumerate(heads) if len(h) < HEAD_SIZE]
        if short:
            i = short[0]
            raise UserError(f"{self.where(first + i, int(offsets[i]))} is cut short: the file ends at byte "
                            f"{self.size} inside its 12-byte header (the file is truncated or the index belongs "
                            "to another file)")
        raw = np.frombuffer(b"".join(heads), np.dtype([("len", "<u8"), ("crc", "<u4")]), len(heads))
        lengths = raw["len"].astype(np.int64)
        crcs = masked_crc32c_many([h[:8] for h in heads])
        bad = np.flatnonzero(crcs != raw["crc"])
        if len(bad):
            i = int(bad[0])
            raise UserError(f"{self.where(first + i, int(offsets[i]))}: bad CRC of its length header: the file is "
                            "damaged, not a TFRecord file, or its index belongs to another file")
        ends = offsets + HEAD_SIZE + lengths + FOOT_SIZE
        past = np.flatnonzero((lengths > MAX_RECORD_BYTES) | (ends > self.size))
        if len(past):
            i = int(past[0])
            raise UserError(f"{self.where(first + i, int(offsets[i]))} is cut short: it needs {int(lengths[i])} bytes "
                            f"of data, the file ends at byte {self.size} (the file is truncated: copy it again)")
        return lengths

    def read_many(self, offsets: Sequence[int], lengths: Sequence[int], records: Sequence[int]) -> list[bytes]:
        """The data of the records at ``offsets`` (``lengths`` from the index pass), data CRCs checked;
        ``records`` are their numbers in the file, for messages."""
        frames = [self._pread(HEAD_SIZE + int(n) + FOOT_SIZE, int(off)) for off, n in zip(offsets, lengths)]
        data = []
        for fr, off, n, rec in zip(frames, offsets, lengths, records):
            if len(fr) < HEAD_SIZE + int(n) + FOOT_SIZE:
                raise UserError(f"{self.where(int(rec), int(off))} is cut short: the file ends at byte "
                                f"{os.fstat(self._fd).st_size} (it was truncated after indexing)")
            data.append(fr[HEAD_SIZE:HEAD_SIZE + int(n)])
        crcs = masked_crc32c_many(data)
        stored = [struct.unpack_from("<I", fr, HEAD_SIZE + int(n))[0] for fr, n in zip(frames, lengths)]
        bad = np.flatnonzero(crcs != np.asarray(stored, np.uint32))
        if len(bad):
            i = int(bad[0])
            raise UserError(f"{self.where(int(records[i]), int(offsets[i]))}: bad CRC of its data: the record is "
                            "damaged (copy the file again)")
        return data

    def scan(self, progress: Optional[Callable[[int], None]] = None) -> Iterator[tuple[int, bytes]]:
        """(offset, data) of every record from the start, CRCs checked, reading the file in large blocks."""
        pos, buf, buf_at = 0, b"", 0  # buf holds the file from byte buf_at
        batch: list[tuple[int, bytes, int]] = []
        count = 0

        def flush():
            crcs = masked_crc32c_many([d for _, d, _ in batch])
            for j, ((off, _, stored), crc) in enumerate(zip(batch, crcs.tolist())):
                if crc != stored:
                    raise UserError(f"{self.where(count - len(batch) + j, off)}: bad CRC of its data: the record is "
                                    "damaged (copy the file again)")
            out = [(off, d) for off, d, _ in batch]
            batch.clear()
            return out

        while pos < self.size:
            need = pos + HEAD_SIZE
            if need > buf_at + len(buf):
                buf, buf_at = buf[pos - buf_at:] + self._pread(SCAN_BLOCK, buf_at + len(buf)), pos
            if pos + HEAD_SIZE > buf_at + len(buf):
                raise UserError(f"{self.where(count, pos)} is cut short: the file ends at byte {self.size} inside "
                                "its 12-byte header (the file is truncated: copy it again)")
            length, crc = _HEAD.unpack_from(buf, pos - buf_at)
            if int(masked_crc32c_many([buf[pos - buf_at:pos - buf_at + 8]])[0]) != crc:
                raise UserError(f"{self.where(count, pos)}: bad CRC of its length header: the file is damaged or "
                                "not a TFRecord file")
            end = pos + HEAD_SIZE + length + FOOT_SIZE
            if length > MAX_RECORD_BYTES or end > self.size:
                raise UserError(f"{self.where(count, pos)} is cut short: it needs {length} bytes of data, the file "
                                f"ends at byte {self.size} (the file is truncated: copy it again)")
            if end > buf_at + len(buf):
                buf, buf_at = buf[pos - buf_at:] + self._pread(max(SCAN_BLOCK, end - (buf_at + len(buf))),
                                                              buf_at + len(buf)), pos
            start = pos - buf_at + HEAD_SIZE
            data = buf[start:start + length]
            (stored,) = struct.unpack_from("<I", buf, start + length)
            batch.append((pos, data, stored))
            count += 1
            pos = end
            if len(batch) == 256:
                yield from flush()
                if progress:
                    progress(pos)
        if batch:
            yield from flush()
        if progress:
            progress(pos)


# --------------------------------------------------------------------------- writing


class TFRecordWriter:
    """Writes a TFRecord file and its index sidecar atomically: both appear only when the block ends well.

    ``write(records, labels)`` appends framed records::

        with TFRecordWriter("train-00000-of-00001.tfrecord") as w:
            w.write([example_bytes], [label])
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.offsets: list[int] = []
        self.labels: list[int] = []
        self.bytes = 0
        self._stack: Optional[contextlib.ExitStack] = None

    def __enter__(self) -> TFRecordWriter:
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_output(self.path, suffix=".tfrecord"))
            self._f = stack.enter_context(open(tmp, "wb"))
            self._stack = stack.pop_all()
        return self

    def write(self, records: Sequence[bytes], labels: Sequence[int]) -> None:
        """Append ``records`` (serialized Examples) whose class labels are ``labels``."""
        for r, label in zip(records, labels):
            self.offsets.append(self.bytes)
            self.labels.append(int(label))
            self.bytes += HEAD_SIZE + len(r) + FOOT_SIZE
        self._f.write(frame_many(records))

    def __exit__(self, exc_type, exc, tb) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)  # closes and renames the file (or removes it on an error)
        if exc_type is None:
            write_index(self.path, np.asarray(self.offsets, np.int64), np.asarray(self.labels, np.int32), self.bytes)
