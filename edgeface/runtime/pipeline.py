"""The per-frame loop of ``edgeface run``: detect -> align -> embed -> match, timed stage by stage.

:class:`Recognizer` turns one RGB image into :class:`FaceResult` s; :func:`run_loop`
pulls frames from a source, feeds the recognizer and hands every
:class:`FrameResult` to the sinks (JSON events, status line, preview, unknown-face
saver); :class:`RunStats` makes the end-of-run summary.  Loading the models and
the gallery from a bundle is :func:`load_recognizer`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from edgeface.errors import UserError
from edgeface.runtime.bundle import EDGETPU_FORMAT
from edgeface.runtime.capture import FrameSource, Pacer
from edgeface.runtime.detector import DEFAULT_DETECTOR, largest_first
from edgeface.runtime.gallery import DEFAULT_GALLERY, UNKNOWN, Gallery, ModelId
from edgeface.runtime.gallery_crypto import GalleryKey
from edgeface.runtime.matcher import Match, Matcher

log = logging.getLogger(__name__)

STAGES = ("capture", "detect", "align", "embed", "match")


@dataclass
class FaceResult:
    """One face in one frame."""

    box: np.ndarray  # x1, y1, x2, y2 in frame pixels
    keypoints: np.ndarray  # (6, 2)
    det_score: float
    identity: str
    score: float  # cosine similarity to the nearest enrolled embedding
    nearest: Optional[str]
    crop: Optional[np.ndarray] = None  # the aligned 112x112 RGB crop
    embedding: Optional[np.ndarray] = None

    @property
    def known(self) -> bool:
        return self.identity != UNKNOWN

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "det_score": round(float(self.det_score), 4),
            "identity": self.identity,
            "score": round(float(self.score), 4),
            "nearest": self.nearest,
        }


@dataclass
class FrameResult:
    """Everything found in one processed frame, and what each stage cost."""

    frame: int  # processed-frame counter, from 0
    source_frame: int  # the frame's number in its source
    timestamp: float
    faces: list[FaceResult]
    ms: dict[str, float]
    image: Optional[np.ndarray] = None
    name: str = ""

    def to_event(self) -> dict:
        event = {"frame": self.frame, "source_frame": self.source_frame, "timestamp": round(self.timestamp, 3),
                 "detections": [f.to_dict() for f in self.faces],
                 "ms": {k: round(v, 3) for k, v in self.ms.items()}}
        if self.name:
            event["file"] = self.name
        return event


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


def load_recognizer(model: Optional[str | os.PathLike] = None, gallery: Optional[str | os.PathLike] = None,
                    fmt: Optional[str] = None, detector: str = DEFAULT_DETECTOR, threshold: Optional[float] = None,
                    threads: Optional[int] = None, backend: Optional[str] = None, delegate: Optional[str] = None,
                    require_gallery: bool = False, with_gallery: bool = True,
                    gallery_key: Optional[GalleryKey] = None) -> LoadedRuntime:
    """Load bundle, embedding model, detector and gallery, checking that they belong together.

    With no ``gallery`` the default ``gallery.npz`` is used if it exists, else an
    empty gallery (every face is ``unknown``) unless ``require_gallery``.
    ``with_gallery=False`` reads no gallery file at all and attaches an empty one:
    for callers that open their own gallery (``edgeface enroll -g FILE``).  ``gallery_key`` opens an
    encrypted gallery.
    """
    from edgeface.runtime.bundle import Bundle
    from edgeface.runtime.detector import bundle_detector
    from edgeface.runtime.facemodel import SpecMismatch
    from edgeface.runtime.interpreter import Embedder, check_edgetpu_library

    t0 = time.perf_counter()
    bundle = Bundle.load(model)
    if delegate == "edgetpu":
        check_edgetpu_library()
        if fmt not in (None, EDGETPU_FORMAT):
            raise UserError(f"--delegate edgetpu runs the {EDGETPU_FORMAT!r} model; drop --format {fmt}")
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
        gallery_obj, gallery_path = _load_gallery(gallery, model_id, require_gallery, gallery_key)
    else:
        gallery_obj, gallery_path = Gallery(model=model_id), None
    det = bundle_detector(bundle, detector, threads=threads, backend=backend)
    thr = bundle.threshold if threshold is None else float(threshold)
    check_threshold(thr)
    matcher = Matcher.from_gallery(gallery_obj, thr)
    return LoadedRuntime(Recognizer(det, embedder, matcher), bundle, model_id, model_path,
                         gallery_obj, gallery_path, thr, (time.perf_counter() - t0) * 1000)


def check_threshold(threshold: Optional[float]) -> None:
    """A match threshold must be a cosine similarity (None: the bundle's own)."""
    if threshold is not None and not -1.0 <= float(threshold) <= 1.0:
        raise UserError(f"--threshold {threshold} is not a cosine similarity: use a value between -1 and 1")


def _load_gallery(path, model_id: ModelId, required: bool,
                  key: Optional[GalleryKey]) -> tuple[Gallery, Optional[Path]]:
    if path is not None:
        return Gallery.load(path, model_id, key=key), Path(path)
    if DEFAULT_GALLERY.exists():
        return Gallery.load(DEFAULT_GALLERY, model_id, key=key), DEFAULT_GALLERY
    if required:
        raise UserError(f"no gallery: pass --gallery FILE or enroll people first (`edgeface enroll NAME PHOTO...` "
                        f"writes {DEFAULT_GALLERY})")
    log.warning("no gallery (%s not found, no --gallery): every face will be 'unknown'; enroll people with "
                "`edgeface enroll NAME PHOTO...`", DEFAULT_GALLERY)
    return Gallery(model=model_id), None


# --- the loop -------------------------------------------------------------------------


# Stage times of at most this many frames are kept for the run summary's medians: every frame's up to it (exact
# figures), a uniform sample of all frames beyond.  Keeping every frame's grew a service by ~160 bytes a frame, for
# ever (2 MB per 10,000 frames, 140 MB a day at 10 fps: issue 22's soak); this is a fixed 400 KB at most.
STAGE_SAMPLE_FRAMES = 10_000


class StageTimes:
    """Per-frame stage times (ms) for the summary's medians and percentiles, in bounded memory.

    The first ``capacity`` frames are all kept, so the figures of shorter runs are exact.  Beyond, frame ``n``
    replaces a random kept row with probability ``capacity / n`` (reservoir sampling, Vitter's algorithm R), so the
    rows stay a uniform sample of the whole run and its medians estimate the run's (to about half a percentile at
    10,000 rows).  Seeded, so one run's frames give one summary.
    """

    def __init__(self, stages: Iterable[str] = STAGES, capacity: int = STAGE_SAMPLE_FRAMES, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"StageTimes needs a capacity of at least 1 frame, got {capacity}")
        self.stages = tuple(stages)
        self.capacity = capacity
        self.seen = 0  # frames added, kept or not
        self._rows = np.zeros((min(capacity, 256), len(self.stages)))  # doubled as needed, up to capacity
        self._rng = random.Random(seed)

    def add(self, ms: dict) -> None:
        """Record one frame's stage times (a stage it lacks counts 0)."""
        if self.seen < self.capacity:
            slot = self.seen
            if slot == len(self._rows):
                grown = np.zeros((min(2 * len(self._rows), self.capacity), len(self.stages)))
                grown[:slot] = self._rows
                self._rows = grown
        else:
            slot = self._rng.randrange(self.seen + 1)
        if slot < self.capacity:
            self._rows[slot] = [ms.get(s, 0.0) for s in self.stages]
        self.seen += 1

    @property
    def rows(self) -> np.ndarray:
        """The kept frames' times, (frames kept, stages)."""
        return self._rows[:min(self.seen, self.capacity)]

    def median(self, stage: str) -> float:
        """Median time of one stage over the kept frames (0 with none)."""
        rows = self.rows
        return float(np.median(rows[:, self.stages.index(stage)])) if len(rows) else 0.0

    def frame_totals(self) -> np.ndarray:
        """Each kept frame's time summed over the stages."""
        return self.rows.sum(axis=1)


@dataclass
class RunStats:
    """Counts and stage times over a run, and the summary made from them."""

    frames: int = 0
    faces: int = 0
    identities: Counter = field(default_factory=Counter)
    stage_times: StageTimes = field(default_factory=StageTimes)
    started: Optional[float] = None  # perf_counter when the first frame was asked for
    first_result: Optional[float] = None  # perf_counter when the first frame was done
    finished: Optional[float] = None
    first_frame_s: Optional[float] = None  # process start -> first frame done (the cold-start figure)

    def add(self, result: FrameResult) -> None:
        now = time.perf_counter()
        if self.first_result is None:
            self.first_result = now
            self.first_frame_s = process_age()
        self.frames += 1
        self.faces += len(result.faces)
        self.identities.update(f.identity for f in result.faces)
        self.stage_times.add(result.ms)
        self.finished = now

    def fps(self) -> float:
        if not self.frames or self.started is None or self.finished is None:
            return 0.0
        return self.frames / max(self.finished - self.started, 1e-9)

    def summary(self, extra: Optional[dict] = None) -> dict:
        medians = {s: round(self.stage_times.median(s), 3) for s in self.stage_times.stages}
        total = self.stage_times.frame_totals()
        out = {
            "frames": self.frames,
            "faces": self.faces,
            "identities": dict(self.identities.most_common()),
            "fps": round(self.fps(), 2),
            "seconds": round((self.finished - self.started), 3) if self.frames else 0.0,
            "median_ms": medians,
            "median_frame_ms": round(float(np.median(total)), 3) if len(total) else 0.0,
            "p90_frame_ms": round(float(np.percentile(total, 90)), 3) if len(total) else 0.0,
        }
        if self.first_frame_s is not None:
            out["first_frame_s"] = round(self.first_frame_s, 3)
        rss = peak_rss_mb()
        if rss is not None:
            out["peak_rss_mb"] = round(rss, 1)
        out.update(extra or {})
        return out


def run_loop(source: FrameSource, recognizer: Recognizer, sinks: Iterable[Callable[[FrameResult], None]] = (),
             max_frames: Optional[int] = None, fps_limit: Optional[float] = None,
             stop: Optional[threading.Event] = None, keep_image: bool = False) -> RunStats:
    """Process frames until the source ends, ``max_frames`` are done or ``stop`` is set."""
    stats = RunStats()
    pacer = Pacer(fps_limit)
    stop = stop or threading.Event()
    sinks = list(sinks)
    stats.started = time.perf_counter()
    while not stop.is_set() and (max_frames is None or stats.frames < max_frames):
        pacer.wait(stop)
        if stop.is_set():
            break
        t0 = time.perf_counter()
        frame = source.read(stop)
        if frame is None:
            break
        ms = {"capture": (time.perf_counter() - t0) * 1000.0}
        faces = recognizer.process(frame.image, ms)
        result = FrameResult(stats.frames, frame.index, frame.timestamp, faces, ms,
                             image=frame.image if keep_image else None, name=frame.name)
        stats.add(result)
        for sink in sinks:
            sink(result)
    return stats


# --- sinks ------------------------------------------------------------------------------


class EventWriter:
    """JSON lines, one per processed frame, flushed as they come (a consumer may be tailing them).

    When the reader goes away (``edgeface run ... | head``) the run is stopped through ``stop``
    instead of dying with a BrokenPipeError traceback.
    """

    def __init__(self, stream, stop: Optional[threading.Event] = None) -> None:
        self.stream = stream
        self.stop = stop
        self.broken = False

    def _write(self, obj: dict) -> None:
        if self.broken:
            return
        try:
            self.stream.write(json.dumps(obj) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self.broken = True
            try:  # point the descriptor at /dev/null so Python's exit-time flush is quiet too
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stream.fileno())
                os.close(devnull)
            except (OSError, AttributeError, ValueError):
                pass
            if self.stop is not None:
                self.stop.set()

    def __call__(self, result: FrameResult) -> None:
        self._write(result.to_event())

    def write_summary(self, summary: dict) -> None:
        self._write({"summary": summary})


class UnknownSaver:
    """``--save-unknown DIR``: keep a crop of each unknown face, for enrolling later.

    A stranger in front of a camera is unknown in every frame; a crop is saved only
    when no crop saved in the last ``cooldown_s`` seconds looks like the same face
    (cosine >= threshold).  The crop is the detection box widened by half its size,
    from the original frame, so ``edgeface enroll`` can detect and align it again.
    Strangers' faces are biometric data kept without their consent: the folder is
    created 0700, each crop 0600, and the folder is capped (``max_files``,
    ``max_bytes``, oldest dropped first) and aged (``max_age_s``), at start and
    after every save, so a board running for months keeps days, not a library.
    """

    PATTERN = "unknown_*.png"

    def __init__(self, folder: str | os.PathLike, threshold: float, cooldown_s: float = 5.0,
                 margin: float = 0.5, max_files: int = 1000, max_bytes: int = 100 * 1024 * 1024,
                 max_age_s: float = 30 * 86400.0) -> None:
        self.folder = Path(folder)
        try:
            # Strangers' faces: a folder only the service's account can list, crops only it can read.
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--save-unknown {self.folder}: cannot create the folder ({exc.strerror or exc})") from None
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.margin = margin
        self.max_files, self.max_bytes, self.max_age_s = max_files, max_bytes, max_age_s
        self.recent: list[tuple[float, np.ndarray]] = []
        self.saved = 0
        self.failed = 0  # crops that could not be written
        self.pruned = 0  # crops deleted by the caps and the age limit
        self._failing = False  # warn once per run of failures, not on every frame of a full disk
        self.prune()

    def prune(self, now: Optional[float] = None) -> int:
        """Delete the crops over the age limit, then the oldest until the count and size caps hold; returns how
        many were deleted.  Only files this saver names (``unknown_*.png``) are touched."""
        now = time.time() if now is None else now
        crops = []
        for path in self.folder.glob(self.PATTERN):
            try:
                st = path.stat()
            except OSError:  # deleted meanwhile
                continue
            crops.append((st.st_mtime, path.name, path, st.st_size))
        crops.sort()  # oldest first (names carry the time too: ties by name)
        total = sum(c[3] for c in crops)
        doomed = []
        for i, (mtime, _, path, size) in enumerate(crops):
            left = len(crops) - i
            if now - mtime > self.max_age_s or left > self.max_files or total > self.max_bytes:
                doomed.append(path)
                total -= size
            else:
                break
        deleted = 0
        for path in doomed:
            try:
                path.unlink()
                deleted += 1
            except OSError:
                continue
        self.pruned += deleted
        return deleted

    def __call__(self, result: FrameResult) -> None:
        if result.image is None:
            return
        now = time.monotonic()
        # Only crops of earlier frames count: two faces in one frame are two people.
        earlier = [(t, e) for t, e in self.recent if now - t < self.cooldown_s]
        self.recent = list(earlier)
        for i, face in enumerate(result.faces):
            if face.known or face.embedding is None:
                continue
            if any(float(e @ face.embedding) >= self.threshold for _, e in earlier):
                continue
            from edgeface.runtime.images import write_image

            crop = context_crop(result.image, face.box, self.margin)
            if crop.size == 0:  # a box wholly outside the frame: nothing to keep
                continue
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.timestamp))
            path = self.folder / f"unknown_{stamp}_f{result.source_frame:06d}_{i}.png"
            try:
                write_image(path, crop, private=True)
            except OSError as exc:
                # A full disk or a vanished folder must not stop a long-running service: the crops are a
                # convenience, recognition goes on.
                self.failed += 1
                if not self._failing:
                    log.warning("cannot save an unknown face to %s (%s); going on without it (further failures "
                                "are not logged until a crop is saved again)", path, exc.strerror or exc)
                self._failing = True
                continue
            self._failing = False
            self.recent.append((now, face.embedding))
            self.saved += 1
            self.prune()


def context_crop(image: np.ndarray, box: np.ndarray, margin: float = 0.5) -> np.ndarray:
    """The box widened by ``margin`` of its size on every side, clipped to the image."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = [float(v) for v in box]
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    xa, ya = max(0, int(x1 - mx)), max(0, int(y1 - my))
    xb, yb = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
    return np.ascontiguousarray(image[ya:yb, xa:xb])


# --- process figures ----------------------------------------------------------------------


def peak_rss_mb() -> Optional[float]:
    """Peak resident memory of this process in MiB (None where the OS does not say)."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
    except (ImportError, OSError):
        return None


def process_age() -> Optional[float]:
    """Seconds since this process started (exec, so interpreter start-up included); Linux only, 10 ms steps."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22 (starttime, clock ticks since boot) comes after the parenthesised command name.
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# --- status line ---------------------------------------------------------------------------


class StatusLine(logging.Handler):
    """The rolling human-readable status on stderr, and the logging handler that writes around it.

    On a terminal one line is redrawn in place (``\\r``) every ``interval_s``; to a
    file or journal (systemd) a full line is written every ``log_interval_s``.
    Log records clear the status line first so the two never interleave.
    """

    def __init__(self, stream, interval_s: float = 0.5, log_interval_s: float = 10.0, enabled: bool = True) -> None:
        super().__init__(level=logging.INFO)
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval_s = interval_s if self.tty else log_interval_s
        self.enabled = enabled
        self._last = 0.0
        self._shown = False
        self._window: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.clear()
            self.stream.write(f"{record.levelname.lower()}: {record.getMessage()}\n")
            self.stream.flush()
        except Exception:  # logging must never break the run
            self.handleError(record)

    def clear(self) -> None:
        if self._shown and self.tty:
            self.stream.write("\r\033[K")
            self._shown = False

    def __call__(self, result: FrameResult) -> None:
        now = time.monotonic()
        self._window.append(now)
        if len(self._window) > 60:
            del self._window[:-60]
        if not self.enabled or now - self._last < self.interval_s:
            return
        self._last = now
        fps = (len(self._window) - 1) / (self._window[-1] - self._window[0]) if len(self._window) > 1 else 0.0
        names = ", ".join(f"{f.identity} {f.score:.2f}" for f in result.faces) or "no face"
        stage = " ".join(f"{k} {v:.1f}" for k, v in result.ms.items())
        line = f"frame {result.frame + 1} | {fps:5.1f} fps | {names} | ms: {stage}"
        if self.tty:
            self.stream.write("\r\033[K" + line[:200])
            self._shown = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


# --- enrollment ---------------------------------------------------------------------------


@dataclass
class EnrollRow:
    """What happened to one photo."""

    photo: str
    faces: int
    status: str  # "enrolled", "no face", "several faces", "unreadable" ("already enrolled": set by enroll)
    detail: str = ""

    def to_dict(self) -> dict:
        return {"photo": self.photo, "faces": self.faces, "status": self.status, "detail": self.detail}


def enroll_photos(recognizer: Recognizer, photos: Iterable[Path], pick: Optional[str] = None,
                  progress: Optional[Callable[[int, int], None]] = None,
                  ) -> tuple[np.ndarray, list[str], list[EnrollRow]]:
    """Detect, align and embed one face per photo.

    A photo with no face, or with several faces when ``pick`` is not "largest", is
    reported and skipped.  Returns the embeddings (K, D), their source photos, and
    one report row per photo.
    """
    from edgeface.runtime.images import UnreadableImage, read_image

    photos = list(photos)
    embeddings, sources, rows = [], [], []
    for i, path in enumerate(photos):
        if progress:
            progress(i + 1, len(photos))
        try:
            image = read_image(path)
        except (UnreadableImage, OSError):
            rows.append(EnrollRow(str(path), 0, "unreadable", "not a readable image"))
            continue
        dets = largest_first(recognizer.detector.detect(image))
        if not dets:
            rows.append(EnrollRow(str(path), 0, "no face", "no face detected"))
            continue
        if len(dets) > 1 and pick != "largest":
            rows.append(EnrollRow(str(path), len(dets), "several faces",
                                  f"{len(dets)} faces: use a photo of this person alone, or --pick largest"))
            continue
        crop = recognizer.align(image, dets[0].keypoints)
        embeddings.append(recognizer.embedder.embed(crop)[0])
        sources.append(str(path))
        detail = f"largest of {len(dets)} faces" if len(dets) > 1 else ""
        rows.append(EnrollRow(str(path), len(dets), "enrolled", detail))
    dim = recognizer.matcher.dim
    return (np.stack(embeddings) if embeddings else np.zeros((0, dim), np.float32)), sources, rows
