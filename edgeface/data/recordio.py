"""MXNet RecordIO (``.rec`` + ``.idx``) read and written directly: the format InsightFace ships its face datasets in.

No MXNet: the format is small and stable (dmlc-core ``include/dmlc/recordio.h`` and ``src/recordio.cc`` since
2015, MXNet's ``python/mxnet/recordio.py``).  Checked against those sources:

* A record is ``magic`` (uint32 0xced7230a), ``lrecord`` (uint32: the upper 3 bits a continuation flag
  ``cflag``, the lower 29 bits the length), the payload, then zero bytes up to a multiple of 4.
* Where the payload holds the magic number at a 4-byte aligned position, the writer cuts it there and drops
  those 4 bytes: the pieces are written as parts with ``cflag`` 1 (first), 2 (middle) and 3 (last); 0 is a whole
  record.  A reader glues the parts back together with the magic in between.  (This keeps the magic a reliable
  record boundary for readers that split a file into chunks.)
* The ``.idx`` is text, one ``key<TAB>byte offset`` line per record, in the order written.
* An image record's payload is MXNet's ``IRHeader`` -- ``flag`` uint32, ``label`` float32, ``id`` uint64,
  ``id2`` uint64 (little-endian, 24 bytes) -- then, when ``flag`` > 0, ``flag`` float32 labels (the header's own
  ``label`` is then 0), then the encoded image (JPEG in InsightFace's packs).
* InsightFace's ``RecBuilder`` (recognition/arcface_mxnet/common/rec_builder.py) writes the images of each
  identity under keys 1, 2, ..., then one *identity record* per identity (empty payload, labels ``(first key,
  end key)`` of its images), then, last in the file, a *header record* under key 0 (empty payload, labels
  ``(first identity key, end key)``, ``id2`` 1).  Its loaders (arcface_torch/dataset.py) read key 0 and take
  keys ``1 .. label[0] - 1`` as the images; a pack without that header (``flag`` 0 at key 0) is all images.
  A ``property`` text file beside it holds ``classes,height,width``.

Every damage a file can have -- a truncated ``.rec``, an ``.idx`` pointing past its end, a bad magic number, a
malformed ``.idx`` line -- is a one-line :class:`~edgeface.errors.UserError` naming the file and the record.
Standard library and numpy only.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from edgeface.errors import UserError
from edgeface.fileio import PreadFile, atomic_output

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_BITS = 29
MAX_RECORD_BYTES = (1 << _LENGTH_BITS) - 1  # what 29 bits of length can say (dmlc refuses larger records)
_IR = struct.Struct("<IfQQ")  # MXNet's IRHeader: flag, label, id, id2
IR_SIZE = _IR.size  # 24
_FRAME = struct.Struct("<II")  # magic, lrecord

Label = Union[float, tuple[float, ...]]


@dataclass(frozen=True)
class IRHeader:
    """MXNet's image-record header.  ``label`` is one float, or a tuple of floats (``flag`` of them)."""

    flag: int
    label: Label
    id: int = 0
    id2: int = 0

    @property
    def first_label(self) -> float:
        """The class label as InsightFace's loaders take it: ``label``, or its first entry when it is a tuple."""
        return float(self.label[0]) if isinstance(self.label, tuple) else float(self.label)


def pack_payload(header: IRHeader, data: bytes = b"") -> bytes:
    """An image record's payload: ``header`` (its label a number, or a tuple written after it) then ``data``."""
    if isinstance(header.label, tuple):
        labels = np.asarray(header.label, "<f4").tobytes()
        return _IR.pack(len(header.label), 0.0, header.id, header.id2) + labels + bytes(data)
    return _IR.pack(0, float(header.label), header.id, header.id2) + bytes(data)


def unpack_payload(payload: bytes, where: str = "record") -> tuple[IRHeader, bytes]:
    """(header, encoded image) of an image record's payload; :class:`UserError` naming ``where`` if it is short."""
    if len(payload) < IR_SIZE:
        raise UserError(f"{where}: {len(payload)} bytes, too short for an image record's 24-byte header "
                        "(not an InsightFace/MXNet image pack)")
    flag, label, rid, rid2 = _IR.unpack_from(payload)
    if flag == 0:
        return IRHeader(0, float(label), rid, rid2), payload[IR_SIZE:]
    end = IR_SIZE + 4 * flag
    if len(payload) < end:
        raise UserError(f"{where}: its header announces {flag} labels but the record holds "
                        f"{(len(payload) - IR_SIZE) // 4} (not an InsightFace/MXNet image pack)")
    labels = tuple(float(v) for v in np.frombuffer(payload, "<f4", flag, IR_SIZE))
    return IRHeader(flag, labels, rid, rid2), payload[end:]


def frame(payload: bytes) -> bytes:
    """``payload`` as RecordIO bytes: split at aligned magic numbers (cflag 1/2/3), framed and padded to 4."""
    if len(payload) > MAX_RECORD_BYTES:
        raise UserError(f"a record of {len(payload)} bytes is larger than RecordIO's limit of {MAX_RECORD_BYTES}")
    parts, start, pos = [], 0, payload.find(_MAGIC_BYTES)
    while pos >= 0:
        if pos % 4 == 0:  # only aligned occurrences are cut, as dmlc's writer does
            parts.append(payload[start:pos])
            start = pos + 4
        pos = payload.find(_MAGIC_BYTES, pos + 1)
    parts.append(payload[start:])
    out = bytearray()
    for i, part in enumerate(parts):
        cflag = 0 if len(parts) == 1 else 1 if i == 0 else 3 if i == len(parts) - 1 else 2
        out += _FRAME.pack(MAGIC, (cflag << _LENGTH_BITS) | len(part))
        out += part
        out += b"\0" * (-len(part) % 4)
    return bytes(out)


# --------------------------------------------------------------------------- the index


def idx_path_for(rec: str | os.PathLike) -> Path:
    """The ``.idx`` that goes with a ``.rec`` (same name, suffix ``.idx``)."""
    return Path(rec).with_suffix(".idx")


def read_index(idx: str | os.PathLike, rec_size: Optional[int] = None, rec_name: str = ".rec"
               ) -> tuple[np.ndarray, np.ndarray]:
    """(keys, offsets) of an ``.idx`` file, int64, in file order.

    Parsed by numpy in blocks of lines (MS1MV2's index has 5.8 M lines: a few seconds, and no Python object per
    line kept); a malformed line, a key that appears twice or (with ``rec_size``) an offset past the end of the
    ``.rec`` is a :class:`UserError` naming ``idx``'s line.
    """
    idx = Path(idx)
    blocks, line0 = [], 0
    try:
        with open(idx, "rb") as f:
            rest = b""
            while True:
                chunk = f.read(_IDX_BLOCK)
                text = rest + chunk
                if chunk:
                    cut = text.rfind(b"\n") + 1
                    text, rest = text[:cut], text[cut:]
                if text.strip():
                    blocks.append(_parse_block(idx, text, line0))
                line0 += text.count(b"\n")
                if not chunk:
                    break
    except OSError as exc:
        raise UserError(f"cannot read {idx}: {exc.strerror or exc}") from None
    pairs = np.concatenate(blocks) if blocks else np.zeros((0, 2), np.int64)
    keys, offsets = pairs[:, 0].copy(), pairs[:, 1].copy()
    del pairs, blocks
    if len(offsets) and offsets.min() < 0:
        line = int(np.argmax(offsets < 0)) + 1
        raise UserError(f"{idx}:{line}: record {keys[line - 1]} has a negative offset {offsets[line - 1]}")
    if rec_size is not None and len(offsets):
        past = offsets + _FRAME.size > rec_size
        if past.any():
            line = int(np.argmax(past)) + 1
            raise UserError(f"{idx}:{line}: record {keys[line - 1]} at byte {offsets[line - 1]} is past the end of "
                            f"{rec_name} ({rec_size} bytes): the .rec is truncated or the .idx belongs to another one")
    order = np.argsort(keys, kind="stable")
    dup = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if len(dup):
        line = int(order[dup[0] + 1]) + 1
        raise UserError(f"{idx}:{line}: key {keys[line - 1]} appears twice: not an index MXNet wrote")
    return keys, offsets


_IDX_BLOCK = 8 << 20  # bytes of .idx text parsed at a time (~400 k lines)


def _parse_block(idx: Path, text: bytes, line0: int) -> np.ndarray:
    """The (key, offset) rows of whole lines ``text``, which start at line ``line0 + 1`` of ``idx``."""
    lines = text.count(b"\n") + (0 if text.endswith(b"\n") else 1)
    try:
        numbers = np.array(text.split(), dtype=np.int64)  # C conversion of each token
    except (ValueError, OverflowError):
        numbers = None
    if numbers is None or len(numbers) != 2 * lines:
        for n, raw in enumerate(text.splitlines(), line0 + 1):
            fields = raw.split()
            if len(fields) != 2 or not all(f.lstrip(b"-").isdigit() for f in fields):
                shown = raw.decode("utf-8", "replace")[:60]
                raise UserError(f"{idx}:{n}: expected 'key<TAB>offset', got {shown!r}: not an MXNet .idx file")
        raise UserError(f"{idx}: not an MXNet .idx file (expected 'key<TAB>offset' lines)")
    return numbers.reshape(-1, 2)


# --------------------------------------------------------------------------- reading


class RecordFile(PreadFile):
    """One ``.rec`` file, read with ``os.pread`` (safe to share between threads), with its ``.idx`` when present.

    ``read_at(offset)`` reads the record at a byte offset, ``read(key)`` the record an ``.idx`` key names,
    ``scan()`` every record from the start of the file without an index.
    """

    def __init__(self, rec: str | os.PathLike, idx: Optional[str | os.PathLike] = None, need_index: bool = False):
        super().__init__(rec, "record file")
        self.idx_path = Path(idx) if idx is not None else idx_path_for(self.path)
        if need_index and not self.idx_path.is_file():
            self.close()
            raise UserError(f"{self.path} has no index {self.idx_path.name} beside it: random access and "
                            "shuffling need the .idx MXNet writes with the .rec")
        self._keys: Optional[np.ndarray] = None
        self._offsets: Optional[np.ndarray] = None
        self._sorted: Optional[tuple[np.ndarray, np.ndarray]] = None

    # ---- the index

    @property
    def has_index(self) -> bool:
        return self.idx_path.is_file()

    def index(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, offsets) from the ``.idx`` (read once, checked against this file's size)."""
        if self._keys is None:
            if not self.has_index:
                raise UserError(f"{self.path} has no index {self.idx_path.name} beside it")
            self._keys, self._offsets = read_index(self.idx_path, self.size, self.path.name)
        return self._keys, self._offsets

    def offsets_of(self, keys) -> np.ndarray:
        """Byte offsets of records ``keys`` (an array; vectorised, no table per key); :class:`UserError` for a key
        the index does not have."""
        all_keys, offsets = self.index()
        if self._sorted is None:
            # Sorted keys and where each sits: InsightFace's index ends with key 0, so position != key.
            order = np.argsort(all_keys, kind="stable")
            self._sorted = (all_keys[order], order)
        sorted_keys, order = self._sorted
        wanted = np.asarray(keys, np.int64).reshape(-1)
        pos = np.minimum(np.searchsorted(sorted_keys, wanted), max(len(sorted_keys) - 1, 0))
        missing = (sorted_keys[pos] != wanted) if len(sorted_keys) else np.ones(len(wanted), bool)
        if missing.any():
            raise UserError(f"{self.idx_path} has no record {int(wanted[np.argmax(missing)])}")
        return offsets[order[pos]]

    def offset_of(self, key: int) -> int:
        """The byte offset of record ``key``; :class:`UserError` when the index has no such key."""
        return int(self.offsets_of([key])[0])

    def read(self, key: int) -> bytes:
        """The payload of record ``key`` (through the ``.idx``)."""
        return self.read_at(self.offset_of(key), key)

    # ---- records

    def read_at(self, offset: int, key: Optional[int] = None) -> bytes:
        """The payload of the record starting at byte ``offset`` (parts glued back together).

        A bad magic number or a record running past the end of the file is a :class:`UserError`
        naming the file, the record (``key`` when given) and the byte.
        """
        return self._read_at(offset, key)[0]

    def _read_at(self, offset: int, key: Optional[int]) -> tuple[bytes, int]:
        """(payload, offset of the next record)."""
        parts, pos = [], offset
        while True:
            head = self._pread(_FRAME.size, pos)
            if len(head) < _FRAME.size:
                raise UserError(f"{self.where(key, offset)} is cut short: the file ends at byte {self.size} inside "
                                "its 8-byte frame header (the .rec is truncated: copy or download it again)")
            magic, lrec = _FRAME.unpack(head)
            if magic != MAGIC:
                raise UserError(f"{self.where(key, offset)}: bad magic number 0x{magic:08x} at byte {pos} "
                                f"(RecordIO records start with 0x{MAGIC:08x}): the file is damaged, not a .rec, "
                                "or its .idx belongs to another file")
            cflag, length = lrec >> _LENGTH_BITS, lrec & MAX_RECORD_BYTES
            start = pos + _FRAME.size
            if start + length > self.size:
                raise UserError(f"{self.where(key, offset)} is cut short: it needs {length} bytes from byte {start}, "
                                f"the file ends at byte {self.size} (the .rec is truncated: copy or download it again)")
            parts.append(self._pread(length, start))
            pos = start + length + (-length % 4)
            if cflag in (0, 3):
                break
            if cflag > 3:
                raise UserError(f"{self.where(key, offset)}: continuation flag {cflag} at byte {pos} is not one "
                                "RecordIO uses (0-3): the file is damaged")
            if pos >= self.size:
                raise UserError(f"{self.where(key, offset)} is cut short: a part with continuation flag {cflag} is "
                                f"the last thing in the file (the .rec is truncated)")
        return (parts[0] if len(parts) == 1 else _MAGIC_BYTES.join(parts)), pos

    def scan(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """(offset, payload) of every record from byte ``start`` to the end of the file, no index needed."""
        pos = start
        while pos < self.size:
            payload, nxt = self._read_at(pos, None)
            yield pos, payload
            pos = nxt

    def header_at(self, offset: int, key: Optional[int] = None) -> IRHeader:
        """The ``IRHeader`` of the record at ``offset``, reading only its first bytes when the record is whole."""
        head = self._pread(_FRAME.size + IR_SIZE, offset)
        if len(head) == _FRAME.size + IR_SIZE:
            magic, lrec = _FRAME.unpack_from(head)
            length = lrec & MAX_RECORD_BYTES
            if (magic == MAGIC and lrec >> _LENGTH_BITS == 0 and length >= IR_SIZE
                    and offset + _FRAME.size + length <= self.size):
                flag = _IR.unpack_from(head, _FRAME.size)[0]
                if flag == 0:
                    return unpack_payload(head[_FRAME.size:], self.where(key, offset))[0]
        # Several labels, a split record or damage: the full read says exactly what is wrong.
        return unpack_payload(self._read_at(offset, key)[0], self.where(key, offset))[0]


# --------------------------------------------------------------------------- InsightFace packs


@dataclass
class PackLayout:
    """Which keys of an InsightFace pack are images, from its header record (key 0) when it has one."""

    image_keys: np.ndarray  # int64, in key order
    identity_ranges: Optional[np.ndarray]  # (K, 2) [first, end) image keys per identity record, or None
    has_header: bool


def pack_layout(rec: RecordFile) -> PackLayout:
    """The image keys of a pack, the way InsightFace's loaders find them.

    A header record at key 0 (``flag`` > 0, labels ``(a, b)``) means images are keys ``1 .. a-1`` and keys
    ``a .. b-1`` are identity records; otherwise every key is an image.
    """
    keys, _ = rec.index()
    if len(keys) == 0:
        raise UserError(f"{rec.idx_path} lists no records")
    key_set_has_0 = bool(np.any(keys == 0))
    if key_set_has_0:
        h = rec.header_at(rec.offset_of(0), 0)
        if h.flag > 0 and isinstance(h.label, tuple) and len(h.label) >= 2:
            a, b = int(h.label[0]), int(h.label[1])
            if not 1 <= a <= b:
                raise UserError(f"{rec.path}: header record 0 gives the range ({a}, {b}), which is not an "
                                "InsightFace pack layout")
            images = np.arange(1, a, dtype=np.int64)
            ranges = None
            if b > a:
                ranges = np.array([_range_of(rec, k) for k in range(a, b)], np.int64).reshape(-1, 2)
            return PackLayout(images, ranges, True)
    return PackLayout(np.sort(keys), None, False)


def _range_of(rec: RecordFile, key: int) -> tuple[int, int]:
    h = rec.header_at(rec.offset_of(key), key)
    if not (isinstance(h.label, tuple) and len(h.label) >= 2):
        raise UserError(f"{rec.path}: record {key} should be an identity record (a (first, end) key range), "
                        f"its label is {h.label!r}")
    return int(h.label[0]), int(h.label[1])


def read_property(folder: str | os.PathLike, name: str = "property") -> Optional[tuple[int, int, int]]:
    """(classes, height, width) from an InsightFace ``property`` file, None when there is none."""
    path = Path(folder) / name
    if not path.is_file():
        return None
    first = path.read_text(errors="replace").strip().splitlines()[:1]
    fields = first[0].split(",") if first else []
    try:
        classes, height, width = (int(v) for v in fields[:3])
    except ValueError:
        raise UserError(f"{path}: expected 'classes,height,width' on its first line, got "
                        f"{(first[0] if first else '')[:60]!r}") from None
    return classes, height, width


# --------------------------------------------------------------------------- writing


class RecordWriter:
    """Writes ``REC`` and its ``.idx`` atomically: both appear under their names only when the block ends well.

    ``write(key, payload)`` appends a record and its index line and returns its byte offset::

        with RecordWriter("train.rec") as w:
            w.write(1, pack_payload(IRHeader(0, 3.0, 1), jpeg_bytes))
    """

    def __init__(self, rec: str | os.PathLike, idx: Optional[str | os.PathLike] = None):
        self.path = Path(rec)
        self.idx_path = Path(idx) if idx is not None else idx_path_for(self.path)
        self.records = 0
        self.bytes = 0
        self._stack: Optional[contextlib.ExitStack] = None

    def __enter__(self) -> RecordWriter:
        with contextlib.ExitStack() as stack:
            rec_tmp = stack.enter_context(atomic_output(self.path, suffix=".rec"))
            idx_tmp = stack.enter_context(atomic_output(self.idx_path, suffix=".idx"))
            self._rec = stack.enter_context(open(rec_tmp, "wb"))
            self._idx = stack.enter_context(open(idx_tmp, "w"))
            self._stack = stack.pop_all()
        return self

    def write(self, key: int, payload: bytes) -> int:
        """Append one record under ``key``; its byte offset."""
        offset = self.bytes
        data = frame(payload)
        self._rec.write(data)
        self._idx.write(f"{int(key)}\t{offset}\n")
        self.bytes += len(data)
        self.records += 1
        return offset

    def __exit__(self, exc_type, exc, tb) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            # Files close before the renames (the atomic_output contexts, entered first, exit last).
            stack.__exit__(exc_type, exc, tb)

