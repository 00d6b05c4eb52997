"""Photographs -> what distillation trains on: the student's aligned crops and the teacher's embeddings.

DATA is a folder of original photographs (the teacher needs the original image:
it aligns faces its own way), either flat (``DATA/*.jpg``, no identities) or in
identity folders (``DATA/<person>/*.jpg``; names are used only for
``--exclude-people``, ``--labels`` and rank-1).  Each image is read and hashed,
its largest face detected once; the student crop is aligned as
``edgeface data prepare`` does and kept in memory, and the teacher embeds the
face from the original image unless the cache already holds it.  Detection and
preparation run on a few threads; the teacher runs batches on the calling thread.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from edgeface.distill.cache import EmbeddingCache, image_sha256
from edgeface.errors import UserError

CHUNK = 64  # images per step: detection in parallel, then one teacher batch and one cache transaction
NO_FACE_LISTED = 20  # no-face paths kept for the report


@dataclass(frozen=True)
class ImageItem:
    """One photograph and its identity folder (None for a flat folder's images)."""

    path: Path
    identity: Optional[str] = None


def scan_images(root: str | os.PathLike, exclude: Iterable[str] = ()) -> list[ImageItem]:
    """Images directly in ``root`` (no identity) and in ``root/<person>/`` (identity = folder name), sorted.

    Identity folders named in ``exclude`` are skipped.  Refuses a folder of
    crops from ``edgeface data prepare``: the teacher needs the original photos.
    """
    from edgeface.data.prepare import MANIFEST
    from edgeface.runtime.images import is_image_file

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    if (root / MANIFEST).is_file():
        raise UserError(f"{root} holds aligned crops from `edgeface data prepare`: distillation needs the original "
                        "photographs (each teacher aligns faces its own way), e.g. lfw-deepfunneled")
    excluded = set(exclude)
    items: list[ImageItem] = []
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    items += [ImageItem(p) for p in entries if p.is_file() and is_image_file(p)]
    for person in (p for p in entries if p.is_dir() and p.name not in excluded):
        items += [ImageItem(f, person.name) for f in sorted(person.iterdir())
                  if f.is_file() and not f.name.startswith(".") and is_image_file(f)]
    if not items:
        hint = " after --exclude-people" if excluded else ""
        raise UserError(f"no images found in {root}{hint}: expected photos in {root}/ or {root}/<person>/")
    return items


@dataclass
class DistillData:
    """Faces found in DATA: student crops (N, S, S, 3) uint8 RGB, raw teacher embeddings (N, D), labels
    (-1 where the image has no identity folder) and what happened to the other images."""

    crops: np.ndarray
    teacher: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    paths: list[Path]
    image_hashes: list[str]
    images: int = 0
    no_face: int = 0
    unreadable: int = 0
    multiple_faces: int = 0
    no_face_paths: list[str] = field(default_factory=list)
    cache_hits: int = 0
    teacher_computed: int = 0
    teacher_seconds: float = 0.0
    seconds: float = 0.0
    pack: Optional[object] = None  # the StreamedCrops of a pack (crops are then its lazily decoded images)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def labeled(self) -> bool:
        """Every face has an identity and there are at least two identities."""
        return len(self.labels) > 0 and bool(np.all(self.labels >= 0)) and len(np.unique(self.labels)) >= 2

    @property
    def teacher_ms_per_face(self) -> Optional[float]:
        """The teacher's own time per face (preparation + inference) over the faces it computed."""
        return 1000.0 * self.teacher_seconds / self.teacher_computed if self.teacher_computed else None

    def summary(self) -> dict:
        """Counts for train.json and the CLI."""
        ms = self.teacher_ms_per_face
        return {"images": self.images, "faces": len(self), "no_face": self.no_face, "unreadable": self.unreadable,
                "multiple_faces": self.multiple_faces, "identities": len(self.class_names),
                "labeled_faces": int(np.sum(self.labels >= 0)), "cache_hits": self.cache_hits,
                "teacher_computed": self.teacher_computed,
                "teacher_ms_per_face": round(ms, 2) if ms is not None else None,
                "seconds": round(self.seconds, 2), "no_face_examples": self.no_face_paths}


def cache_identity(teacher, detector) -> dict:
    """What a cached vector depends on: the teacher, and the detector whose box and keypoints it was given."""
    from edgeface.runtime.bundle import sha256_file

    path = getattr(detector, "model_path", None)
    det = {"kind": getattr(detector, "kind", type(detector).__name__),
           "sha256": sha256_file(path) if path and Path(path).is_file() else None,
           "score_threshold": getattr(detector, "score_threshold", None)}
    return {**teacher.identity(), "detector": det}


class _Worker:
    """Per-thread detector; read, hash, detect, align and prepare the teacher input for one image."""

    def __init__(self, make_detector: Callable, teacher, size: int, cached: set[str]) -> None:
        self.make_detector, self.teacher, self.size, self.cached = make_detector, teacher, size, cached
        self._local = threading.local()

    def __call__(self, item: ImageItem) -> dict:
        from edgeface.runtime.align import align_face
        from edgeface.runtime.images import UnreadableImage, read_image

        try:
            sha = image_sha256(item.path)
            image = read_image(item.path)
        except (UnreadableImage, OSError):
            return {"status": "unreadable"}
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = self.make_detector()
        dets = detector.detect(image)
        if not dets:
            return {"status": "no_face"}
        det = max(dets, key=lambda d: d.area)
        out = {"status": "ok", "sha": sha, "crop": align_face(image, det.keypoints, self.size), "faces": len(dets),
               "input": None, "prepare_s": 0.0}
        if sha not in self.cached:
            t0 = time.perf_counter()
            out["input"] = self.teacher.prepare(image, det)
            out["prepare_s"] = time.perf_counter() - t0
        return out


def collect(items: Sequence[ImageItem], teacher, cache: Optional[EmbeddingCache], make_detector: Callable,
            size: int = 112, workers: int = 2, progress: Optional[Callable[[int, int], None]] = None) -> DistillData:
    """Detect, align and get the teacher's embedding of the largest face of every image.

    ``make_detector()`` builds one detector per worker thread (an interpreter is
    not thread-safe).  Cached embeddings are read back; the others are computed
    a chunk at a time and committed to ``cache`` before the next chunk, so an
    interrupted run loses at most one chunk of teacher work.
    """
    t_start = time.perf_counter()
    cached = cache.keys() if cache is not None else set()
    worker = _Worker(make_detector, teacher, size, cached)
    n = len(items)
    crops = np.zeros((n, size, size, 3), np.uint8)
    targets = np.zeros((n, teacher.dim), np.float32)
    keep = np.zeros(n, bool)
    hashes = [""] * n
    names = sorted({it.identity for it in items if it.identity is not None})
    index = {name: i for i, name in enumerate(names)}
    d = DistillData(crops, targets, np.array([], np.int32), names, [], [], images=n)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, n, CHUNK):
            chunk = list(range(start, min(n, start + CHUNK)))
            results = list(pool.map(worker, [items[i] for i in chunk]))
            new = [(i, r) for i, r in zip(chunk, results) if r["status"] == "ok" and r["input"] is not None]
            if new:
                t0 = time.perf_counter()
                vectors = np.asarray(teacher.run([r["input"] for _, r in new]), np.float32)
                finite = np.all(np.isfinite(vectors), axis=1)
                if not finite.all():
                    where = items[new[int(np.argmin(finite))][0]].path
                    raise UserError(f"the teacher gave a non-finite embedding (NaN or inf) for {where}: check its "
                                    "input options (normalisation, colour order, input size)")
                d.teacher_seconds += time.perf_counter() - t0 + sum(r["prepare_s"] for _, r in new)
                d.teacher_computed += len(new)
                fresh = {r["sha"]: v for (_, r), v in zip(new, vectors)}
                if cache is not None:
                    cache.put_many(fresh)
            else:
                fresh = {}
            old = [r["sha"] for r in results if r["status"] == "ok" and r["sha"] not in fresh]
            stored = cache.get_many(old) if cache is not None and old else {}
            d.cache_hits += len(stored)
            for i, r in zip(chunk, results):
                if r["status"] != "ok":
                    if r["status"] == "no_face":
                        d.no_face += 1
                        if len(d.no_face_paths) < NO_FACE_LISTED:
                            d.no_face_paths.append(str(items[i].path))
                    else:
                        d.unreadable += 1
                    continue
                vec = fresh.get(r["sha"])
                if vec is None:
                    vec = stored.get(r["sha"])
                if vec is None:  # listed as cached when the run started, gone now (another process cleared it)
                    vec = teacher.run([teacher.prepare(*_reload(items[i], make_detector))])[0]
                    d.teacher_computed += 1
                crops[i], targets[i], keep[i], hashes[i] = r["crop"], vec, True, r["sha"]
                d.multiple_faces += r["faces"] > 1
            if progress:
                progress(chunk[-1] + 1, n)
    idx = np.flatnonzero(keep)
    d.crops, d.teacher = crops[idx], targets[idx]
    d.labels = np.array([index[items[i].identity] if items[i].identity is not None else -1 for i in idx], np.int32)
    d.paths = [items[i].path for i in idx]
    d.image_hashes = [hashes[i] for i in idx]
    d.seconds = time.perf_counter() - t_start
    return d


def _reload(item: ImageItem, make_detector: Callable):
    from edgeface.runtime.images import read_image

    image = read_image(item.path)
    det = max(make_detector().detect(image), key=lambda x: x.area)
    return image, det


def subset(data: DistillData, index: np.ndarray) -> DistillData:
    """The faces at ``index`` (class list kept, so labels stay valid)."""
    return DistillData(data.crops[index], data.teacher[index], data.labels[index], data.class_names,
                       [data.paths[i] for i in index], [data.image_hashes[i] for i in index])
