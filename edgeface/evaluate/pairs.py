"""Verification pairs: reading LFW-style pairs files and turning image keys into aligned crops.

A pairs file names images by key, ``Person_Name/Person_Name_0001`` (folder and
file stem, no extension).  :class:`PairImages` resolves a key against either a
folder of crops prepared by ``edgeface data prepare`` or the raw photographs,
which it detects and aligns with the same code as training and the board.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from edgeface.cpus import usable_cpus
from edgeface.errors import UserError
from edgeface.runtime.facemodel import FaceModelSpec

# Written by `edgeface data prepare` (edgeface.data.prepare.MANIFEST / SKIP_LOG; not imported: it is a driver module).
MANIFEST = "manifest.jsonl"
SKIP_LOG = "skipped.log"
# Side of the centre square used when no face is found, as a fraction of the image's shorter side.
# Measured on LFW deep-funneled (250x250): with a centred square of 0.55 x 250 = 137 px resized to 112,
# the median detected eyes, nose and mouth land within about a pixel of the alignment template.
CENTRE_CROP_FRACTION = 0.55


@dataclass(frozen=True)
class Pair:
    """One verification pair: ``fold`` is 1-based; ``a``/``b`` are image keys; ``same`` is the ground truth."""

    fold: int
    a: str
    b: str
    same: bool
    line: int = 0  # line number in the pairs file (for messages)


def image_key(name: str, number: str) -> str:
    """LFW's key for image ``number`` of ``name``: ``Name/Name_0001``."""
    return f"{name}/{name}_{int(number):04d}"


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """Read an LFW-style pairs file.

    Supported layouts (whitespace separated, like LFW's own files):

    * ``pairs.txt`` (View 2): header ``FOLDS<TAB>N``, then per fold N matched pairs
      ``name i j`` followed by N mismatched pairs ``name1 i name2 j``;
    * ``pairsDevTest.txt`` / ``pairsDevTrain.txt`` (View 1): header ``N``, then N matched and
      N mismatched pairs, all in one fold;
    * no header: every line is a pair, all in one fold.

    A pair is matched or mismatched by its number of fields, so only the fold
    boundaries depend on the header.  Anything else is a :class:`UserError` naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pairs file not found: {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text pairs file (like LFW's pairs.txt)") from None
    rows = [(i + 1, ln.split()) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    if not rows:
        raise UserError(f"pairs file is empty: {path}")
    head_line, head = rows[0]
    if all(tok.isdigit() for tok in head) and len(head) in (1, 2):
        n_folds, per_fold = (1, int(head[0])) if len(head) == 1 else (int(head[0]), 2 * int(head[1]))
        if len(head) == 1:
            per_fold *= 2  # View 1 header counts matched pairs; as many mismatched follow
        rows = rows[1:]
        if n_folds < 1 or per_fold < 1 or len(rows) != n_folds * per_fold:
            raise UserError(
                f"{path}:{head_line}: header '{' '.join(head)}' promises {n_folds * per_fold} pairs "
                f"({n_folds} fold(s) of {per_fold}) but the file has {len(rows)}"
            )
    else:
        n_folds, per_fold = 1, len(rows)
    pairs = []
    for index, (line, tok) in enumerate(rows):
        fold = index // per_fold + 1
        try:
            if len(tok) == 3:
                pairs.append(Pair(fold, image_key(tok[0], tok[1]), image_key(tok[0], tok[2]), True, line))
            elif len(tok) == 4:
                pairs.append(Pair(fold, image_key(tok[0], tok[1]), image_key(tok[2], tok[3]), False, line))
            else:
                raise ValueError
        except ValueError:
            raise UserError(
                f"{path}:{line}: expected 'name i j' (same person) or 'name1 i name2 j' (different), "
                f"got {' '.join(tok)!r}"
            ) from None
    return pairs


def centre_crop(image: np.ndarray, size: int = 112, fraction: float = CENTRE_CROP_FRACTION) -> np.ndarray:
    """The fallback crop when no face is found: a centred square resized to ``size``."""
    import cv2

    h, w = image.shape[:2]
    side = max(1, int(round(min(h, w) * fraction)))
    y0, x0 = (h - side) // 2, (w - side) // 2
    square = image[y0 : y0 + side, x0 : x0 + side]
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)


def centre_crop_for(image: np.ndarray, spec: FaceModelSpec) -> np.ndarray:
    """:func:`centre_crop` framed like the model's chip: the square is scaled by how much smaller the model's
    template draws the face than edgeface's (dlib's padded 150x150 chip shows more around the face)."""
    ours = FaceModelSpec.edgeface()
    fraction = CENTRE_CROP_FRACTION * _face_fraction(ours) / _face_fraction(spec)
    crop = centre_crop(image, spec.size[0], fraction)
    if spec.size[0] != spec.size[1]:
        import cv2

        crop = cv2.resize(crop, spec.size, interpolation=cv2.INTER_LINEAR)
    return crop


def _face_fraction(spec: FaceModelSpec) -> float:
    """Eye-to-mouth distance as a fraction of the chip's width (how large the template draws a face)."""
    t = spec.chip_template()
    return float(np.linalg.norm(t[:2].mean(axis=0) - t[3])) / spec.size[0]


def is_prepared_folder(root: str | os.PathLike) -> bool:
    """True for a folder of aligned crops written by ``edgeface data prepare``."""
    return (Path(root) / MANIFEST).is_file()


class PairImages:
    """Aligned RGB crops for image keys, from prepared crops or raw photographs.

    * Prepared folder (has ``manifest.jsonl``): the crop is read as is (resized to the model's input
      when needed).  Such crops are aligned to edgeface's template: a model with another alignment
      (an imported dlib model's 150x150 chip) is refused and pointed at the raw photographs.  Images
      in which ``data prepare`` found no face have no crop; they are counted in :attr:`no_face` and
      their crop is ``None`` (a face that was never found cannot match: evaluation scores such pairs
      as non-matches).  Point ``images_root`` at the raw photographs to use the centre-crop fallback.
    * Raw photographs: the largest face is detected and aligned by the model's own spec
      (:func:`edgeface.runtime.faces.detect_and_align`).  When no face is found the image is not
      dropped: a centre crop stands in (the LFW convention, so every pair is scored) and the key is
      counted in :attr:`no_face`.

    Each image is decoded once per alignment; with ``cache`` the crops (one set per model alignment)
    and the detections stay in memory, so several models can be evaluated on the same pairs without
    detecting the faces again.
    """

    def __init__(self, images_root: str | os.PathLike, detector: str = "auto", cache: bool = True,
                 spec: Optional[FaceModelSpec] = None, workers: Optional[int] = None,
                 backend: Optional[str] = None) -> None:
        self.root = Path(images_root)
        if not self.root.is_dir():
            raise UserError(f"images folder not found: {self.root}")
        self.prepared = is_prepared_folder(self.root)
        self.detector_kind = detector
        self.cache = cache
        self.spec = spec or FaceModelSpec.edgeface()
        self.workers = workers or min(4, usable_cpus())
        self.backend = backend
        self.no_face: set[str] = set()
        self._crops: dict[tuple, dict[str, Optional[np.ndarray]]] = {}
        self._detections: dict[str, object] = {}  # key -> largest Detection or None, for a second alignment
        self._skipped: Optional[set[str]] = None
        self._lock = threading.Lock()
        # Idle detectors, one per worker thread at most, reused across calls (an interpreter is not thread-safe).
        self._detectors: queue.SimpleQueue = queue.SimpleQueue()
        if not self.prepared:
            # Fail now (one line) rather than in a worker thread if the detector is unknown or unloadable.
            self._detectors.put(self._new_detector())

    @property
    def source(self) -> str:
        return "prepared crops" if self.prepared else f"raw images, {self.detector_kind} detector"

    def _new_detector(self):
        from edgeface.runtime.detector import create_detector

        return create_detector(self.detector_kind, threads=1, backend=self.backend)

    def check_spec(self, spec: FaceModelSpec, model: str = "the model") -> None:
        """A :class:`UserError` when prepared crops cannot serve a model aligned another way."""
        if self.prepared and not spec.same_alignment(FaceModelSpec.edgeface()):
            raise UserError(f"{self.root} holds crops aligned by `edgeface data prepare` (edgeface's template); "
                            f"{model} takes {spec.size[0]}x{spec.size[1]} faces aligned its own way: give the raw "
                            "photographs as --images (e.g. lfw-deepfunneled)")

    def path_of(self, key: str) -> Path:
        """The file behind a key (any image extension).

        Raises :class:`FileNotFoundError` for a key that ``data prepare`` logged as
        having no face (no crop was written) and :class:`UserError` when there is no such image.
        """
        from edgeface.runtime.images import IMAGE_EXTENSIONS

        direct = self.root / key
        if direct.suffix.lower() in IMAGE_EXTENSIONS and direct.is_file():
            return direct
        preferred = (".png",) if self.prepared else (".jpg",)
        for ext in preferred + IMAGE_EXTENSIONS:
            p = self.root / f"{key}{ext}"
            if p.is_file():
                return p
        if self.prepared and _stem(key) in self._skipped_keys():
            raise FileNotFoundError(key)
        raise UserError(f"image {key!r} not found under {self.root}: is --images the folder of the pairs' images "
                        f"(e.g. lfw-deepfunneled or its prepared crops)?")

    def _skipped_keys(self) -> set[str]:
        """Keys `data prepare` skipped (no face / unreadable), from its skipped.log; read once."""
        if self._skipped is None:
            self._skipped = set()
            log = self.root / SKIP_LOG
            if log.is_file():
                for line in log.read_text().splitlines():
                    parts = line.split("\t")
                    if len(parts) >= 2:
                        self._skipped.add(_stem(parts[1]))
        return self._skipped

    def _load(self, key: str, spec: FaceModelSpec) -> Optional[np.ndarray]:
        from edgeface.runtime.images import UnreadableImage, read_image

        try:
            path = self.path_of(key)
        except FileNotFoundError:
            with self._lock:
                self.no_face.add(key)
            return None
        try:
            image = read_image(path)
        except (UnreadableImage, OSError):
            raise UserError(f"cannot read image {path}: not a decodable image file") from None
        if self.prepared:
            if image.shape[:2] != (spec.size[1], spec.size[0]):
                import cv2

                image = cv2.resize(image, spec.size, interpolation=cv2.INTER_AREA)
            return image
        if key in self._detections:
            det = self._detections[key]
        else:
            from edgeface.runtime.detector import largest_first

            try:
                detector = self._detectors.get_nowait()
            except queue.Empty:
                detector = self._new_detector()
            try:
                found = largest_first(detector.detect(image))
            finally:
                self._detectors.put(detector)
            det = found[0] if found else None
            if self.cache:
                self._detections[key] = det
        if det is not None:
            return spec.align_detection(image, det)
        with self._lock:
            self.no_face.add(key)
        return centre_crop_for(image, spec)

    def crops(self, keys: Sequence[str], progress: Optional[Callable[[int, int], None]] = None,
              spec: Optional[FaceModelSpec] = None) -> list[Optional[np.ndarray]]:
        """Crops for ``keys`` in order, aligned for ``spec`` (default: the one given at construction;
        ``None`` for a prepared image without a face).

        Detection runs on a few threads: the interpreter and OpenCV release the GIL.
        """
        spec = spec or self.spec
        self.check_spec(spec)
        known = self._crops.setdefault(_alignment_key(spec), {})
        todo = [k for k in dict.fromkeys(keys) if k not in known]
        found: dict[str, Optional[np.ndarray]] = {}
        if todo:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                for i, (key, crop) in enumerate(zip(todo, pool.map(lambda k: self._load(k, spec), todo))):
                    found[key] = crop
                    if progress:
                        progress(i + 1, len(todo))
        if self.cache:
            known.update(found)
        return [found[k] if k in found else known[k] for k in keys]

    def prefetch(self, keys: Iterable[str], progress: Optional[Callable[[int, int], None]] = None,
                 spec: Optional[FaceModelSpec] = None) -> None:
        """Detect and align ``keys`` now (with ``cache``), e.g. to show alignment and embedding as two stages."""
        if not self.cache:
            return
        self.crops(list(dict.fromkeys(keys)), progress, spec)


def _alignment_key(spec: FaceModelSpec) -> tuple:
    return (spec.size, spec.alignment, spec.box_margin, tuple(spec.chip_template().round(4).ravel().tolist()))


def _stem(key: str) -> str:
    """A key or relative path without its image extension."""
    from edgeface.runtime.images import is_image_file

    # Only an image extension is a suffix: LFW names may contain dots ("Mr._X").
    return key.rsplit(".", 1)[0] if is_image_file(key) else key
