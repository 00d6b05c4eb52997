"""A RecordIO pack (one ``.rec`` or several shards) as a training set that stays on disk.

:func:`open_records` reads the ``.idx`` files and the 32 header bytes of every image record -- nothing else: the
set in memory is an offset, a label and a shard number per image (14 bytes; 81 MB for MS1MV2's 5.8 M images),
and images are read and decoded only when asked for.  That pass also checks every record's frame (magic number,
length within the file), so damage is one line before training starts, not an exception an hour into it.

DATA for ``edgeface train`` is a record source when it is a ``.rec`` file, or a folder holding ``.rec`` files
(InsightFace's ``faces_emore/`` with ``train.rec``, or the shards ``edgeface data pack --shards`` writes).  The
shards of one source share one label space (the labels in the records are the classes); ``property`` says how many
classes there are (else the largest label + 1) and ``identities.txt`` names them (else they are numbered).
TensorFlow-free: :mod:`edgeface.train.stream` builds the tf.data pipeline on top.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edgeface.data.recordio import IR_SIZE, MAGIC, MAX_RECORD_BYTES, RecordFile, pack_layout, read_property
from edgeface.data.streamed import EncodedImages, StreamedCrops
from edgeface.errors import UserError

IDENTITIES = "identities.txt"  # written by `edgeface data pack` (edgeface.data.pack.IDENTITIES)
_HEAD = struct.Struct("<IIIf")  # magic, lrecord, then the IRHeader's flag and label
_LENGTH_BITS = 29


def record_shards(path: str | os.PathLike) -> list[Path]:
    """The ``.rec`` files of a record source (sorted), or [] when ``path`` is not one."""
    path = Path(path)
    if path.is_file() and path.suffix == ".rec":
        return [path]
    if path.is_dir():
        return sorted(p for p in path.glob("*.rec") if p.is_file())
    return []


def is_record_source(path: str | os.PathLike) -> bool:
    """True for a ``.rec`` file or a folder holding ``.rec`` files (training streams it instead of loading it)."""
    return bool(record_shards(path))


RecordImages = EncodedImages  # the decoder shared by every streamed source (kept under its old name)


@dataclass
class RecordCrops(StreamedCrops):
    """The image records of one or more ``.rec`` shards: per image its shard, byte offset and label.

    ``images`` decodes on demand (:class:`RecordImages`); ``encoded(positions)`` gives the image bytes as stored.
    """

    root: Path
    shards: list[RecordFile]
    shard_of: np.ndarray  # uint16
    offsets: np.ndarray  # int64
    labels: np.ndarray  # int32
    class_names: list[str]
    image_size: Optional[tuple[int, int]]  # (height, width) from `property`, None when unknown
    index_sha256: str
    seconds_to_index: float = 0.0
    images: EncodedImages = field(init=False, repr=False)
    paths: list = field(default_factory=list, repr=False)  # a folder's CropSet has file paths; records have none
    format: str = field(default="recordio", init=False)
    hash_covers: str = field(default="the .idx files and .rec sizes", init=False)

    def __post_init__(self) -> None:
        self.images = EncodedImages(self, None)

    def shard_names(self) -> list[str]:
        """The ``.rec`` files read."""
        return [r.path.name for r in self.shards]

    def where(self, position: int) -> str:
        """``FILE: record at byte N`` for messages."""
        return f"{self.shards[self.shard_of[position]].path}: record at byte {self.offsets[position]}"

    def encoded(self, positions: Sequence[int]) -> list[bytes]:
        """The stored image bytes (JPEG or PNG) of the records at ``positions``."""
        out = []
        for pos in positions:
            rec = self.shards[int(self.shard_of[pos])]
            payload = rec.read_at(int(self.offsets[pos]))
            flag = int.from_bytes(payload[:4], "little")
            out.append(payload[IR_SIZE + 4 * flag:])
        return out

    def close(self) -> None:
        """Release the shards' file descriptors."""
        for rec in self.shards:
            rec.close()


def open_records(path: str | os.PathLike, progress: Optional[Callable[[int, int], None]] = None) -> RecordCrops:
    """Index a record source: every image record's shard, offset and label (see the module docstring).

    A missing ``.idx``, damage in any record's frame, a label that is not a class number, or more classes in the
    records than ``property`` says: a :class:`UserError` naming the file and the record.
    """
    t0 = time.perf_counter()
    path = Path(path)
    files = record_shards(path)
    if not files:
        raise UserError(f"no .rec file in {path}")
    root = path if path.is_dir() else path.parent
    shards = [RecordFile(f, need_index=True) for f in files]
    digest = hashlib.sha256()
    offsets, labels, shard_of = [], [], []
    layouts = [pack_layout(rec) for rec in shards]
    total = sum(len(lay.image_keys) for lay in layouts)
    done = 0
    for s, (rec, layout) in enumerate(zip(shards, layouts)):
        digest.update(rec.path.name.encode() + b"\0" + str(rec.size).encode() + b"\0")
        with open(rec.idx_path, "rb") as f:  # in blocks: Glint360K's index is 300 MB of text
            for block in iter(lambda: f.read(8 << 20), b""):
                digest.update(block)
        offs = rec.offsets_of(layout.image_keys)
        labels.append(_labels(rec, offs, layout.image_keys, lambda n, d=done: progress(d + n, total)
                              if progress else None))
        offsets.append(offs)
        shard_of.append(np.full(len(offs), s, np.uint16))
        done += len(offs)
    offsets_all, labels_all = np.concatenate(offsets), np.concatenate(labels)
    if len(labels_all) == 0:
        raise UserError(f"{path} holds no image records")
    prop = read_property(root)
    classes = int(labels_all.max()) + 1
    if prop is not None:
        if classes > prop[0]:
            worst = int(np.argmax(labels_all))
            raise UserError(f"{root / 'property'} says {prop[0]} classes but label {classes - 1} is in "
                            f"{files[int(np.concatenate(shard_of)[worst])]}: the property file belongs to another pack")
        classes = prop[0]
    return RecordCrops(root=root, shards=shards, shard_of=np.concatenate(shard_of), offsets=offsets_all,
                       labels=labels_all, class_names=class_names(root, classes),
                       image_size=(prop[1], prop[2]) if prop else None, index_sha256=digest.hexdigest(),
                       seconds_to_index=time.perf_counter() - t0)


def _labels(rec: RecordFile, offsets: np.ndarray, keys: np.ndarray, progress) -> np.ndarray:
    """The class label of each record at ``offsets`` from its first 32 bytes, every frame checked on the way."""
    out = np.empty(len(offsets), np.int32)
    fd, size = os.open(rec.path, os.O_RDONLY), rec.size
    try:
        for i, off in enumerate(offsets.tolist()):
            head = os.pread(fd, _HEAD.size, off)
            ok = len(head) == _HEAD.size
            if ok:
                magic, lrec, flag, label = _HEAD.unpack(head)
                length = lrec & MAX_RECORD_BYTES
                ok = magic == MAGIC and lrec >> _LENGTH_BITS == 0 and flag == 0 and off + 8 + length <= size \
                    and length >= IR_SIZE
            if not ok:  # the full read names the damage (or reads a split / multi-label record correctly)
                label = rec.header_at(off, int(keys[i])).first_label
                rec.read_at(off, int(keys[i]))
            if not (label >= 0 and label == int(label) and label < 2**31):
                raise UserError(f"{rec.path}: record {int(keys[i])} at byte {off} has label {label}, not a class "
                                "number (0, 1, 2, ...)")
            out[i] = int(label)
            if progress and (i + 1) % 65536 == 0:
                progress(i + 1)
    finally:
        os.close(fd)
    if progress:
        progress(len(offsets))
    return out


def class_names(root: Path, classes: int, exact: bool = True) -> list[str]:
    """Names of the labels from ``identities.txt`` beside a pack, else numbers.  ``exact``: the file must name
    ``classes`` people (a RecordIO pack's ``property`` says how many); otherwise it may name more (the classes
    are counted from the labels seen, and one shard of several may hold some of the people only)."""
    path = root / IDENTITIES
    if not path.is_file():
        return [str(i) for i in range(classes)]
    names = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if len(names) != classes if exact else len(names) < classes:
        what = f"the pack has {classes} classes" if exact else f"the records hold label {classes - 1}"
        raise UserError(f"{path} names {len(names)} people but {what}: it belongs to another pack (delete it to "
                        "number the classes)")
    return names
