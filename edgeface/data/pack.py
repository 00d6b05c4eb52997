"""``edgeface data pack``: a folder of aligned crops written as an InsightFace RecordIO pack (``train.rec/.idx``).

The layout is InsightFace's own (``RecBuilder``): every image of identity 0, then identity 1, ... under keys
1..N, one identity record per identity (its key range), the header record at key 0 written last, and a
``property`` file (``classes,height,width``), so InsightFace's loaders and edgeface's streaming training read
the same file.  ``identities.txt`` beside it names the labels (line k: the person folder of label k), which an
InsightFace pack does not carry.

``--format tfrecord`` writes TFRecord shards instead (``train-00000-of-0000N.tfrecord``, TensorFlow's naming), each
record a ``tf.train.Example`` with the fields TensorFlow's image datasets use (``image/encoded``,
``image/class/label``, ``image/format``, ``image/height``, ``image/width``), each file with its index sidecar
(:mod:`edgeface.data.tfrecord`) and ``identities.txt``; no ``property`` file (that is InsightFace's).

Labels are numbered exactly as ``edgeface train`` numbers a folder (sorted person folders after
``--exclude-people`` and ``--min-images``), so a model trained from the pack and one trained from the folder
have the same classes.  Crops are stored as they are: JPEG files keep their bytes, and PNG files too with
``--encoding png`` (lossless: training sees exactly the pixels of the folder); anything else is encoded once.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edgeface.cpus import usable_cpus
from edgeface.data.dataset import MANIFEST, count_excluded, read_people_file, scan_identity_folder
from edgeface.data.example import face_example
from edgeface.data.recordio import IRHeader, RecordWriter, pack_payload
from edgeface.data.tfrecord import INDEX_SUFFIX, TFRecordWriter
from edgeface.data.tfrecords import is_tfrecord_file
from edgeface.errors import SettingError, UserError
from edgeface.fileio import atomic_write_text

# encoding -> (file signature kept byte for byte, OpenCV suffix for the rest, what it is)
ENCODINGS: dict[str, tuple[bytes, str, str]] = {
    "jpeg": (b"\xff\xd8", ".jpg", "JPEG at --quality (InsightFace's packs: quality 95); JPEG crops keep their bytes"),
    "png": (b"\x89PNG\r\n\x1a\n", ".png", "lossless PNG; PNG crops (edgeface data prepare's) keep their bytes"),
}
# format -> what it writes
FORMATS: dict[str, str] = {
    "recordio": "InsightFace's train.rec/.idx (+ property), or train_000.rec ... with --shards",
    "tfrecord": "TFRecord shards train-00000-of-0000N.tfrecord of tf.train.Example, each with an index sidecar",
}
IDENTITIES = "identities.txt"
PROPERTY = "property"
CHUNK = 256  # images read and encoded per step: bounded memory, steady progress


@dataclass
class PackConfig:
    """What ``edgeface data pack`` does: SRC (crops) into OUT as ``shards`` RecordIO or TFRecord files."""

    src: Path
    out: Path
    encoding: str = "jpeg"
    format: str = "recordio"
    quality: int = 95
    shards: int = 1
    exclude_people: Optional[str] = None
    min_images: int = 1
    workers: int = 0  # 0: one per CPU core

    def check(self) -> None:
        """One line for each bad value, before any image is read."""
        from edgeface.choices import choice

        choice("encoding", self.encoding, ENCODINGS)
        choice("format", self.format, FORMATS)
        if not 1 <= self.quality <= 100:
            raise SettingError("quality", f"must be 1 to 100 (JPEG quality), got {self.quality}")
        if self.shards < 1:
            raise SettingError("shards", f"must be at least 1, got {self.shards}")
        if self.min_images < 1:
            raise SettingError("min_images", f"must be at least 1, got {self.min_images}")
        if self.workers < 0:
            raise SettingError("workers", f"{self.workers} is negative: give a count, or 0 for one per CPU core")
        src, out = Path(self.src), Path(self.out)
        if not src.is_dir():
            raise UserError(f"crop folder not found: {src}")
        if out.exists() and not out.is_dir():
            raise SettingError("out", f"{out} exists and is not a folder")
        if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
            raise SettingError("out", f"{out} is inside {src}: it would become a person folder of the crops; "
                            "choose a folder outside")
        held = sorted(p for p in out.iterdir() if p.suffix == ".rec" or is_tfrecord_file(p)) if out.is_dir() else []
        if held:
            raise SettingError("out", f"{out} already holds a pack ({held[0].name}): choose another folder or "
                               "delete it")


@dataclass
class PackSummary:
    """What was written: counts, sizes, time and the files."""

    images: int = 0
    identities: int = 0
    unreadable: int = 0
    kept_bytes: int = 0  # images stored with the file's own bytes
    encoded: int = 0  # images encoded here
    bytes: int = 0
    seconds: float = 0.0
    excluded_people: int = 0
    size: tuple[int, int] = (0, 0)  # (height, width) of the crops
    files: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["images_per_second"] = round(self.images_per_second, 1)
        d["seconds"] = round(self.seconds, 2)
        d["megabytes"] = round(self.bytes / 1e6, 2)
        d["size"] = list(self.size)
        return d


def shard_names(shards: int) -> list[str]:
    """``train.rec`` for one shard (InsightFace's name), ``train_000.rec`` ... for several."""
    return ["train.rec"] if shards == 1 else [f"train_{k:03d}.rec" for k in range(shards)]


def split_identities(counts: list[int], shards: int) -> list[range]:
    """Consecutive label ranges, one per shard, of about equal image counts (every identity in one shard)."""
    if shards > len(counts):
        raise SettingError("shards", f"{shards} is more than the {len(counts)} identities: a shard holds whole people")
    cum = np.cumsum(counts)
    bounds = [0]
    for k in range(1, shards):
        # the first identity past this shard's share of the images, keeping one identity for each shard left
        cut = int(np.searchsorted(cum, cum[-1] * k / shards, side="right"))
        bounds.append(min(max(cut, bounds[-1] + 1), len(counts) - (shards - k)))
    bounds.append(len(counts))
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def pack(cfg: PackConfig, progress: Optional[Callable[[int, int], None]] = None) -> PackSummary:
    """Write ``cfg.src`` as RecordIO shards in ``cfg.out``; ``progress(done, total)`` as images are written."""
    cfg.check()
    src, out = Path(cfg.src), Path(cfg.out)
    exclude = read_people_file(cfg.exclude_people) if cfg.exclude_people else set()
    summary = PackSummary(excluded_people=count_excluded(src, exclude))
    items = scan_identity_folder(src, exclude)
    counts: dict[str, int] = {}
    for person, _ in items:
        counts[person] = counts.get(person, 0) + 1
    names = sorted(p for p, c in counts.items() if c >= cfg.min_images)
    if not names:
        raise UserError(f"no identity in {src} has at least {cfg.min_images} images")
    bad = next((n for n in names if "\n" in n or "\r" in n), None)
    if bad is not None:
        raise UserError(f"person folder {bad!r} has a line break in its name: rename it ({IDENTITIES} lists one "
                        "name per line)")
    label_of = {n: i for i, n in enumerate(names)}
    by_label: list[list[Path]] = [[] for _ in names]
    for person, path in items:
        if person in label_of:
            by_label[label_of[person]].append(path)
    groups = split_identities([len(p) for p in by_label], cfg.shards)
    prepared = (src / MANIFEST).is_file()
    workers = cfg.workers or usable_cpus()
    total = sum(len(p) for p in by_label)
    want: Optional[tuple[int, int]] = None
    signature, suffix, _ = ENCODINGS[cfg.encoding]
    start = time.perf_counter()
    done = 0

    def load(path: Path) -> tuple[Optional[bytes], Optional[tuple[int, int]], bool]:
        """(record image bytes, (height, width), kept the file's bytes) of one crop; (None, None, _) unreadable."""
        import cv2

        data = np.fromfile(str(path), np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            return None, None, False
        raw = data.tobytes()
        if raw.startswith(signature) and _plain_colour(raw, cfg.encoding):
            return raw, image.shape[:2], True
        params = [cv2.IMWRITE_JPEG_QUALITY, cfg.quality] if cfg.encoding == "jpeg" else []
        ok, buf = cv2.imencode(suffix, image, params)  # image is BGR, as OpenCV encodes it
        if not ok:
            raise UserError(f"cannot encode {path} as {cfg.encoding}")
        return buf.tobytes(), image.shape[:2], False

    out.mkdir(parents=True, exist_ok=True)
    tfrecord = cfg.format == "tfrecord"

    def images_of(labels: range):
        """(label, image bytes, kept) of every readable crop of ``labels``, in order; progress as chunks end."""
        nonlocal done, want
        for label in labels:
            paths = by_label[label]
            for i in range(0, len(paths), CHUNK):
                chunk = paths[i:i + CHUNK]
                for path, (data, shape, kept) in zip(chunk, pool.map(load, chunk)):
                    if data is None:
                        summary.unreadable += 1
                        summary.skipped_files.append(str(path.relative_to(src)))
                        continue
                    want = want or shape
                    if shape != want or (not prepared and shape[0] != shape[1]):
                        need = f"{want[1]}x{want[0]}" if shape[0] == shape[1] else "square"
                        raise UserError(
                            f"{src} holds photos, not aligned face crops ({path.relative_to(src)} is "
                            f"{shape[1]}x{shape[0]}, a pack holds {need} crops aligned as the runtime "
                            f"aligns camera faces): run `edgeface data prepare {src} --out CROPS` and pack "
                            "CROPS")
                    summary.kept_bytes += kept
                    summary.encoded += not kept
                    yield label, data
                done += len(chunk)
                if progress:
                    progress(done, total)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        names_out = tfrecord_names(cfg.shards) if tfrecord else shard_names(cfg.shards)
        for name, labels in zip(names_out, groups):
            if tfrecord:
                with TFRecordWriter(out / name) as tw:
                    batch: list[tuple[int, bytes]] = []
                    for label, data in images_of(labels):
                        batch.append((label, data))
                        if len(batch) == CHUNK:
                            _write_examples(tw, batch, cfg.encoding, want)
                    _write_examples(tw, batch, cfg.encoding, want)
                    summary.images += len(tw.labels)
                    summary.identities += len(set(tw.labels))
                summary.bytes += tw.bytes
                summary.files += [name, name + INDEX_SUFFIX]
                continue
            with RecordWriter(out / name) as w:
                key = 1
                ranges = []
                for label in labels:  # one identity record per label, as RecBuilder writes (empty ones too)
                    first = key
                    for _, data in images_of(range(label, label + 1)):
                        w.write(key, pack_payload(IRHeader(0, float(label), key, 0), data))
                        key += 1
                    ranges.append((first, key))
                    summary.identities += key > first
                # InsightFace's layout: identity records (their image key ranges), then the header at key 0
                first_identity = key
                for a, b in ranges:
                    w.write(key, pack_payload(IRHeader(2, (float(a), float(b)), key, 0)))
                    key += 1
                w.write(0, pack_payload(IRHeader(2, (float(first_identity), float(key)), 0, 1)))
                summary.images += first_identity - 1
            summary.bytes += w.bytes
            summary.files += [name, Path(name).with_suffix(".idx").name]
    if summary.images == 0:
        for name in summary.files:
            (out / name).unlink(missing_ok=True)
        raise UserError(f"no readable images in {src}")
    summary.size = (int(want[0]), int(want[1]))
    if not tfrecord:  # InsightFace's property file (classes,height,width) belongs to its RecordIO packs
        atomic_write_text(out / PROPERTY, f"{len(names)},{want[0]},{want[1]}\n")
        summary.files.append(PROPERTY)
    atomic_write_text(out / IDENTITIES, "".join(f"{n}\n" for n in names))
    summary.files.append(IDENTITIES)
    summary.seconds = time.perf_counter() - start
    return summary


def tfrecord_names(shards: int) -> list[str]:
    """``train-00000-of-00004.tfrecord`` ...: the shard names of TensorFlow's datasets."""
    return [f"train-{k:05d}-of-{shards:05d}.tfrecord" for k in range(shards)]


def _write_examples(writer: TFRecordWriter, batch: list[tuple[int, bytes]], encoding: str,
                    size: Optional[tuple[int, int]]) -> None:
    """Write ``batch`` (label, image bytes) as face Examples and empty it."""
    if batch:
        height, width = size or (0, 0)
        writer.write([face_example(data, label, encoding, height, width) for label, data in batch],
                     [label for label, _ in batch])
        batch.clear()


def _plain_colour(data: bytes, encoding: str) -> bool:
    """True for a file whose bytes a record can keep: 8-bit RGB PNG, or a JPEG (grey or colour, baseline or not).

    Other PNGs (grey, palette, alpha, 16-bit) are encoded again so every decoder gives the same 3 channels.
    """
    if encoding == "png":
        return len(data) > 26 and data[12:16] == b"IHDR" and data[24] == 8 and data[25] == 2
    return True
