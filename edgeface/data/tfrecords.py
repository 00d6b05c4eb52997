"""TFRecord shards of face crops as a training set that stays on disk (the TFRecord twin of :mod:`.records`).

DATA for ``edgeface train`` is a TFRecord source when it is one TFRecord file (``*.tfrecord``, or TFDS-style
``name.tfrecord-00000-of-00004``) or a folder holding such files (``edgeface data pack --format tfrecord``
writes ``train-00000-of-0000N.tfrecord``).  Every record must be a ``tf.train.Example`` with a single bytes feature
``image/encoded`` (JPEG or PNG) and a single int64 feature ``image/class/label`` (the class, 0, 1, ...).

In memory: per record its shard, byte offset, data length and label (18 bytes).  They come from each file's
index sidecar (``FILE.index``, :mod:`edgeface.data.tfrecord`), whose offsets are checked by reading each record's
12-byte header (length and its CRC); a file without one (written by TensorFlow or anyone else) is scanned once --
every frame and CRC checked, every Example parsed for its label -- and the sidecar written beside it (or, where the
folder is read-only, kept for this run).  Records are read with ``os.pread``; their data CRC is checked and the
Example parsed when they are read (:meth:`TFRecordCrops.encoded`), in the training pipeline's reader.
``identities.txt`` beside the shards names the labels, as for a RecordIO pack.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edgeface.data.example import IMAGE_KEY, LABEL_KEY, ExampleError, face_fields
from edgeface.data.records import class_names
from edgeface.data.streamed import EncodedImages, StreamedCrops
from edgeface.data.tfrecord import INDEX_SUFFIX, TFRecordFile, read_index, write_index
from edgeface.errors import UserError

Notify = Callable[[str], None]


def is_tfrecord_file(path: Path) -> bool:
    """A file named like a TFRecord file: ``*.tfrecord``, ``*.tfrecords`` or ``*.tfrecord-00000-of-00004``."""
    name = path.name
    if name.endswith((INDEX_SUFFIX, ".tmp")) or name.startswith("."):
        return False
    return name.endswith((".tfrecord", ".tfrecords")) or ".tfrecord-" in name


def tfrecord_shards(path: str | os.PathLike) -> list[Path]:
    """The TFRecord files of a source (sorted), or [] when ``path`` is not one."""
    path = Path(path)
    if path.is_file() and is_tfrecord_file(path):
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and is_tfrecord_file(p))
    return []


def is_tfrecord_source(path: str | os.PathLike) -> bool:
    """True for a TFRecord file or a folder holding TFRecord files."""
    return bool(tfrecord_shards(path))


@dataclass
class TFRecordCrops(StreamedCrops):
    """The records of one or more TFRecord files: per image its shard, offset, data length and label."""

    root: Path
    shards: list[TFRecordFile]
    shard_of: np.ndarray  # uint16
    offsets: np.ndarray  # int64
    lengths: np.ndarray  # int32, the Example's bytes (a record is at most 1 GiB)
    starts: np.ndarray  # int64, per shard: the position of its first record (record numbers for messages)
    labels: np.ndarray  # int32
    class_names: list[str]
    index_sha256: str
    seconds_to_index: float = 0.0
    scanned: list[str] = field(default_factory=list)  # files indexed by scanning this time
    images: EncodedImages = field(init=False, repr=False)
    paths: list = field(default_factory=list, repr=False)
    format: str = field(default="tfrecord", init=False)
    hash_covers: str = field(default="file names and sizes, record offsets and labels", init=False)

    def __post_init__(self) -> None:
        self.images = EncodedImages(self, None)

    def where(self, position: int) -> str:
        """``FILE: record N at byte B`` for messages."""
        s = int(self.shard_of[position])
        return self.shards[s].where(int(position) - int(self.starts[s]), int(self.offsets[position]))

    def shard_names(self) -> list[str]:
        """The TFRecord files read."""
        return [f.path.name for f in self.shards]

    def encoded(self, positions: Sequence[int]) -> list[bytes]:
        """The image bytes of the records at ``positions``: read (CRC checked) and parsed from their Examples."""
        positions = np.asarray(positions, np.int64).reshape(-1)
        out: list[bytes] = [b""] * len(positions)
        shards = self.shard_of[positions]
        for s in np.unique(shards).tolist():
            which = np.flatnonzero(shards == s)
            pos = positions[which]
            data = self.shards[s].read_many(self.offsets[pos], self.lengths[pos], pos - self.starts[s])
            for i, p, record in zip(which.tolist(), pos.tolist(), data):
                try:
                    image, label = face_fields(record)
                except ExampleError as exc:
                    raise UserError(f"{self.where(p)}: not a tf.train.Example with {IMAGE_KEY!r} bytes and "
                                    f"{LABEL_KEY!r} int64 ({exc})") from None
                if label != int(self.labels[p]):
                    raise UserError(f"{self.where(p)} has label {label}, its index says {int(self.labels[p])}: the "
                                    f"index {self.shards[s].path.name}{INDEX_SUFFIX} belongs to another file (delete "
                                    "it to index the file again)")
                out[i] = image
        return out

    def close(self) -> None:
        """Release the files' descriptors."""
        for f in self.shards:
            f.close()


def _scan(f: TFRecordFile, notify: Optional[Notify]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, lengths, labels) of every record of a file without an index, every frame, CRC and Example
    checked; the sidecar is written beside it when the folder allows."""
    if notify:
        notify(f"indexing {f.path} ({f.size / 1e6:.1f} MB): it has no {INDEX_SUFFIX} beside it, so every record is "
               "read once (CRC checked, Example parsed) to find its offset and label")
    offsets, lengths, labels = [], [], []
    for n, (off, data) in enumerate(f.scan()):
        try:
            _, label = face_fields(data)
        except ExampleError as exc:
            raise UserError(f"{f.where(n, off)}: not a tf.train.Example with {IMAGE_KEY!r} bytes and {LABEL_KEY!r} "
                            f"int64 ({exc})") from None
        offsets.append(off)
        lengths.append(len(data))
        labels.append(_class_number(f, n, off, label))
    offs = np.asarray(offsets, np.int64)
    labs = np.asarray(labels, np.int32)
    try:
        write_index(f.path, offs, labs, f.size)
    except OSError as exc:
        if notify:
            notify(f"cannot write {f.path.name}{INDEX_SUFFIX} beside it ({exc.strerror}): the index is kept for this "
                   "run only")
    return offs, np.asarray(lengths, np.int64), labs


def _class_number(f: TFRecordFile, n: int, off: int, label: int) -> int:
    if not 0 <= label < 2**31:
        raise UserError(f"{f.where(n, off)} has label {label}, not a class number (0, 1, 2, ...)")
    return int(label)


def open_tfrecords(path: str | os.PathLike, notify: Optional[Notify] = None) -> TFRecordCrops:
    """Index a TFRecord source (see the module docstring); ``notify`` gets a line for each file scanned.

    A frame cut short, a bad CRC, a record that is not a face Example, an index of another file, or more
    labels than ``identities.txt`` names: a :class:`UserError` naming the file and the record.
    """
    t0 = time.perf_counter()
    path = Path(path)
    files = tfrecord_shards(path)
    if not files:
        raise UserError(f"no TFRecord file in {path}")
    root = path if path.is_dir() else path.parent
    shards = [TFRecordFile(f) for f in files]
    digest = hashlib.sha256()
    offsets, lengths, labels, shard_of, starts, scanned = [], [], [], [], [0], []
    for s, f in enumerate(shards):
        index = read_index(f.path, f.size)
        if index is None:
            offs, lens, labs = _scan(f, notify)
            scanned.append(str(f.path))
        else:
            offs, labs = index
            lens = f.lengths_at(offs)
            bad = np.flatnonzero(labs < 0)
            if len(bad):
                i = int(bad[0])
                raise UserError(f"{f.where(i, int(offs[i]))} has label {int(labs[i])} in its index, not a class "
                                "number (0, 1, 2, ...)")
        digest.update(f.path.name.encode() + b"\0" + str(f.size).encode() + b"\0")
        digest.update(offs.astype("<i8").tobytes() + labs.astype("<i4").tobytes())
        offsets.append(offs)
        lengths.append(lens.astype(np.int32))
        labels.append(labs)
        starts.append(starts[-1] + len(offs))
        shard_of.append(np.full(len(offs), s, np.uint16))
    labels_all = np.concatenate(labels)
    if len(labels_all) == 0:
        raise UserError(f"{path} holds no records")
    classes = int(labels_all.max()) + 1
    return TFRecordCrops(root=root, shards=shards, shard_of=np.concatenate(shard_of),
                         offsets=np.concatenate(offsets), lengths=np.concatenate(lengths),
                         starts=np.asarray(starts[:-1], np.int64), labels=labels_all,
                         class_names=class_names(root, classes, exact=False), index_sha256=digest.hexdigest(),
                         seconds_to_index=time.perf_counter() - t0, scanned=scanned)
