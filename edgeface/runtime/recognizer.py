"""One RGB image in, faces with identities out: :class:`Recognizer` (detect -> align -> embed -> match), and
:func:`load_recognizer`, which builds one from a bundle, its detector and a gallery as :class:`RunSettings` say.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from edgeface.errors import SettingError, UserError
from edgeface.runtime.bundle import EDGETPU_FORMAT
from edgeface.runtime.detector import largest_first
from edgeface.runtime.gallery import DEFAULT_GALLERY, Gallery, ModelId
from edgeface.runtime.gallery_crypto import GalleryKey
from edgeface.runtime.matcher import Match, Matcher
from edgeface.runtime.results import FaceResult
from edgeface.runtime.settings import RunSettings, SettingConflict, check_threshold

log = logging.getLogger(__name__)


class Recognizer:
    """Detector + embedder + matcher: one RGB image in, faces with identities out.

    Faces are aligned as the embedder's :class:`~edgeface.runtime.facemodel.FaceModelSpec` says (its
    template and chip size, from the bundle's manifest).
    """

    def __init__(self, detector, embedder, matcher: Matcher) -> None:
        self.detector = detector
        self.embedder = embedder
        self.matcher = matcher

    def align(self, image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """The aligned crop of one face."""
        return self.embedder.spec.align(image, keypoints)

    def process(self, image: np.ndarray, ms: Optional[dict] = None) -> list[FaceResult]:
        """Find, align, embed and match every face; stage times (ms) are added to ``ms``."""
        ms = {} if ms is None else ms
        t0 = time.perf_counter()
        dets = largest_first(self.detector.detect(image))
        t1 = time.perf_counter()
        crops = [self.align(image, d.keypoints) for d in dets]
        t2 = time.perf_counter()
        embeddings = self.embedder.embed(np.stack(crops)) if crops else np.zeros((0, self.matcher.dim), np.float32)
        t3 = time.perf_counter()
        matches: list[Match] = self.matcher.match(embeddings)
        t4 = time.perf_counter()
        for key, a, b in (("detect", t0, t1), ("align", t1, t2), ("embed", t2, t3), ("match", t3, t4)):
            ms[key] = ms.get(key, 0.0) + (b - a) * 1000.0
        return [FaceResult(d.box, d.keypoints, d.score, m.identity, m.score, m.nearest, crop, emb)
                for d, crop, emb, m in zip(dets, crops, embeddings, matches)]


@dataclass
class LoadedRuntime:
    """What :func:`load_recognizer` built, with what it came from."""

    recognizer: Recognizer
    bundle: object
    model_id: ModelId
    model_path: Path
    gallery: Gallery
    gallery_path: Optional[Path]
    threshold: float
    load_ms: float


def load_recognizer(settings: Optional[RunSettings] = None, require_gallery: bool = False, with_gallery: bool = True,
                    gallery_key: Optional[GalleryKey] = None) -> LoadedRuntime:
    """Load bundle, embedding model, detector and gallery, checking that they belong together.

    ``settings`` name the model, its file (``format``), detector, threshold, interpreter (``threads``,
    ``backend``, ``delegate``) and gallery; None: every default.  With no ``gallery`` the default
    ``gallery.npz`` is used if it exists, else an empty gallery (every face is ``unknown``) unless
    ``require_gallery``.  ``with_gallery=False`` reads no gallery file at all and attaches an empty one:
    for callers that open their own gallery (``edgeface enroll -g FILE``).  ``gallery_key`` opens an
    encrypted gallery.
    """
    from edgeface.runtime.bundle import Bundle
    from edgeface.runtime.detector import bundle_detector
    from edgeface.runtime.facemodel import SpecMismatch
    from edgeface.runtime.interpreter import Embedder, check_edgetpu_library

    s = settings or RunSettings()
    fmt, threads, backend, delegate = s.format, s.threads, s.backend, s.delegate
    t0 = time.perf_counter()
    bundle = Bundle.load(s.model)
    if delegate == "edgetpu":
        check_edgetpu_library()
        if fmt not in (None, EDGETPU_FORMAT):
            raise SettingConflict(f"{{delegate}} edgetpu runs the {EDGETPU_FORMAT!r} model; drop {{format}} {fmt}",
                                  ("delegate", "format"))
        fmt = EDGETPU_FORMAT
        if EDGETPU_FORMAT not in bundle.formats:
            raise UserError(f"bundle {bundle.root} has no {EDGETPU_FORMAT!r} model: compile it with "
                            "`edgeface export --format edgetpu` on a machine with edgetpu_compiler")
    entry = bundle.entry(fmt)
    fmt = entry["format"]
    model_path = bundle.model_path(fmt)
    try:
        embedder = Embedder(model_path, threads=threads, backend=backend, delegate=delegate, spec=bundle.spec)
    except SpecMismatch as exc:  # the file and its manifest disagree: the bundle was edited or mixed up
        raise UserError(f"{exc} (from {bundle.root / 'manifest.json'}): re-export the bundle") from None
    model_id = ModelId.from_bundle(bundle, fmt)
    if not model_id.embedding_dim:  # a hand-written manifest may leave it out: the model file says it
        model_id = dataclasses.replace(model_id, embedding_dim=embedder.dim)
    if with_gallery:
        gallery_obj, gallery_path = _load_gallery(s.gallery, model_id, require_gallery, gallery_key)
    else:
        gallery_obj, gallery_path = Gallery(model=model_id), None
    det = bundle_detector(bundle, s.detector, threads=threads, backend=backend, precision=s.detector_precision,
                          delegate=delegate)
    thr = bundle.threshold if s.threshold is None else float(s.threshold)
    check_threshold(thr)
    matcher = Matcher.from_gallery(gallery_obj, thr)
    return LoadedRuntime(Recognizer(det, embedder, matcher), bundle, model_id, model_path,
                         gallery_obj, gallery_path, thr, (time.perf_counter() - t0) * 1000)


def _load_gallery(path, model_id: ModelId, required: bool,
                  key: Optional[GalleryKey]) -> tuple[Gallery, Optional[Path]]:
    if path is not None:
        return Gallery.load(path, model_id, key=key), Path(path)
    if DEFAULT_GALLERY.exists():
        return Gallery.load(DEFAULT_GALLERY, model_id, key=key), DEFAULT_GALLERY
    if required:
        raise SettingError("gallery", f"is not set and there is no {DEFAULT_GALLERY} here: enroll people first "
                           f"(`edgeface enroll NAME PHOTO...` writes {DEFAULT_GALLERY})")
    log.warning("no gallery (%s not found, no --gallery): every face will be 'unknown'; enroll people with "
                "`edgeface enroll NAME PHOTO...`", DEFAULT_GALLERY)
    return Gallery(model=model_id), None
