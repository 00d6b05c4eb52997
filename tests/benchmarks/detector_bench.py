"""Face detection modes measured on real faces (issue 21): which `--detector` to pick.

    python tests/benchmarks/detector_bench.py [--quick] [--modes short full auto ...] [--json]

Every set is built in memory from ../shared/data (and scikit-image's sample photos), seeded, nothing written:

- mosaics: 640x480, 1280x720 and 1920x1080 frames (smooth noise background) with LFW deep-funneled photos pasted
  at random places, face boxes inside the frame (corners and edges included), scaled so the face is 24-32, 32-48,
  48-96 or 96-200 px wide;
- close-ups (>200 px): LFW faces cropped square around their box with 0-100 % margin (0: the face box is the
  whole frame) and scaled up to fill a 360, 480 or 720 px high frame; and AT&T faces scaled up 4.3x to 394x480;
- the Hamilton clip (640x360): faces per mode and how far the modes agree (no ground truth);
- face-free images: scikit-image's sample photos that show no person (whole and cropped) and regions of the
  Hamilton stage frames away from every face any mode finds at a low threshold.

Ground truth in an LFW photo: deep-funneled photos are centred on the face, and the face box is taken from the
float full-range detector on the unscaled 250x250 photo: the detection nearest the photo's centre, kept only if
its centre lies within 20 px of (125, 134) (the median centre over LFW) and its width within 80-145 px (LFW's
faces are 99-126 px wide in that detector, 5th-95th percentile); a photo failing that is not used (the count is
printed).  Its keypoints are the reference of the keypoint error, given in px at a face 112 px wide.

A face counts as found when a detection overlaps its box by IoU >= 0.5; detections elsewhere on mosaics are not
counted (LFW photos often show a second person), only those on face-free images are.  AT&T faces have no box: one
is found when a detection centred in the middle half of the frame is at least a third of its width.

Timing is per detector call, as CPU time of this process (mean over the clip's frames at 640x360 and the 1920x1080
mosaics: the interpreters run one thread, so on a machine shared with other work this is what an idle one would
take; wall-clock medians are in --json), and the end-to-end `edgeface run` FPS over the Hamilton clip with the
default model (tests/benchmarks/runtime_bench.py's run_once, median of --repeats runs, wall-clock: run it on an
idle machine).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))
LFW = DATA / "lfw" / "lfw-deepfunneled"
CLIP = DATA / "media" / "short_hamilton_clip.mp4"

BANDS = ((24, 32), (32, 48), (48, 96), (96, 200), (200, None))
BAND_NAMES = tuple(f"{lo}-{hi}" if hi else f">{lo}" for lo, hi in BANDS)
MOSAIC_SIZES = ((640, 480), (1280, 720), (1920, 1080))
CLOSEUP_HEIGHTS = (360, 480, 720)
LFW_CENTRE = (125.0, 134.0)  # median centre of the full-range face box in a deep-funneled photo
LFW_CENTRE_TOLERANCE = 20.0
LFW_WIDTH_RANGE = (80.0, 145.0)
MATCH_IOU = 0.5
MAIN_KEYPOINTS = 4  # eyes, nose tip, mouth: what alignment uses (the ears are often hidden)
# scikit-image sample photos that show a person's face: not face-free.
SKIMAGE_WITH_FACES = {"astronaut", "camera"}
SKIMAGE_TOO_SMALL = 64  # px: chessboard icons and the like are no photos
HAMILTON_BUSY = 2  # stage frames have at most this many faces; audience frames (many faces, some unfound) are skipped
SKIMAGE_HINT = ("scikit-image is not installed: the face-free set has only Hamilton regions (`.venv/bin/pip install "
                "scikit-image` for its sample photos; it is not an edgeface dependency)")


# --- the evaluation sets ------------------------------------------------------------------------------------------


@dataclass
class Face:
    """A ground-truth face: box x1y1x2y2 and the reference keypoints (4 main ones), in frame pixels."""

    box: np.ndarray
    keypoints: Optional[np.ndarray]
    band: str

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])


@dataclass
class Frame:
    """An image of a set with its faces (none for face-free images)."""

    image: np.ndarray
    faces: list = field(default_factory=list)
    source: str = ""


@dataclass
class LfwRef:
    """An LFW photo with its reference face (box and keypoints from the float full-range detector)."""

    path: Path
    image: np.ndarray
    box: np.ndarray
    keypoints: np.ndarray


def band_of(width: float) -> Optional[str]:
    """The size band a face width (px) falls in, or None below the smallest."""
    for (lo, hi), name in zip(BANDS, BAND_NAMES):
        if width >= lo and (hi is None or width < hi):
            return name
    return None


def lfw_references(count: int, seed: int, log: Callable[[str], None] = print) -> list[LfwRef]:
    """``count`` LFW photos (one each of distinct people, seeded) with a validated reference face."""
    from edgeface.runtime.detector import create_detector
    from edgeface.runtime.images import read_image

    people = sorted(p for p in LFW.iterdir() if p.is_dir())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(people))
    full = create_detector("full", threads=1)
    refs, rejected = [], 0
    for i in order:
        photos = sorted(people[i].glob("*.jpg"))
        if not photos:
            continue
        path = photos[int(rng.integers(len(photos)))]
        image = read_image(path)
        near = [d for d in full.detect(image)
                if np.hypot((d.box[0] + d.box[2]) / 2 - LFW_CENTRE[0], (d.box[1] + d.box[3]) / 2 - LFW_CENTRE[1])
                <= LFW_CENTRE_TOLERANCE and LFW_WIDTH_RANGE[0] <= d.box[2] - d.box[0] <= LFW_WIDTH_RANGE[1]]
        if not near:
            rejected += 1
            continue
        best = max(near, key=lambda d: d.score)
        refs.append(LfwRef(path, image, best.box.astype(np.float64),
                           best.keypoints[:MAIN_KEYPOINTS].astype(np.float64)))
        if len(refs) == count:
            break
    log(f"LFW references: {len(refs)} photos used, {rejected} without a centred face in the full-range detector "
        "(not used)")
    return refs


def smooth_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A textured but face-free background: low-frequency colour noise plus fine grain."""
    coarse = rng.uniform(40, 215, size=(6, 8, 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, 8, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def paste(frame: np.ndarray, photo: np.ndarray, x: int, y: int) -> None:
    """Paste ``photo`` with its top-left at (x, y), clipped to the frame."""
    h, w = photo.shape[:2]
    fh, fw = frame.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(fw, x + w), min(fh, y + h)
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = photo[y0 - y:y1 - y, x0 - x:x1 - x]


def mosaics(refs: list[LfwRef], per_band: int, seed: int) -> list[Frame]:
    """Frames of MOSAIC_SIZES with LFW photos pasted so that ``per_band`` faces fall in each band below 200 px."""
    rng = np.random.default_rng(seed + 1)
    frames: list[Frame] = []
    ref_iter = itertools.cycle(range(len(refs)))
    for band_i, (lo, hi) in enumerate(BANDS[:-1]):
        placed, frame_i = 0, 0
        while placed < per_band:
            width, height = MOSAIC_SIZES[(frame_i + band_i) % len(MOSAIC_SIZES)]
            frame_i += 1
            image = smooth_background(rng, width, height)
            taken: list[tuple[int, int, int, int]] = []
            faces = []
            corner = frame_i % 2 == 0  # every other frame puts its first face in a corner
            for _ in range(40):  # tries
                if placed + len(faces) >= per_band or len(faces) >= 12:
                    break
                ref = refs[next(ref_iter)]
                face_w = rng.uniform(lo, hi)
                s = face_w / (ref.box[2] - ref.box[0])
                photo = cv2.resize(ref.image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1
                                   else cv2.INTER_LINEAR)
                box = ref.box * s
                if corner and not faces:
                    cx, cy = rng.integers(2), rng.integers(2)
                    x = int(round(-box[0] if cx == 0 else width - box[2]))
                    y = int(round(-box[1] if cy == 0 else height - box[3]))
                else:
                    x = int(rng.integers(int(np.ceil(-box[0])), max(int(np.ceil(-box[0])) + 1,
                                                                     int(width - box[2]))))
                    y = int(rng.integers(int(np.ceil(-box[1])), max(int(np.ceil(-box[1])) + 1,
                                                                     int(height - box[3]))))
                rect = (max(0, x), max(0, y), min(width, x + photo.shape[1]), min(height, y + photo.shape[0]))
                if any(rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3] for r in taken):
                    continue
                fbox = box + (x, y, x, y)
                if fbox[0] < 0 or fbox[1] < 0 or fbox[2] > width or fbox[3] > height:
                    continue
                paste(image, photo, x, y)
                taken.append(rect)
                faces.append(Face(fbox, ref.keypoints * s + (x, y), band_of(fbox[2] - fbox[0])))
            placed += len(faces)
            frames.append(Frame(image, faces, f"mosaic {width}x{height}"))
    return frames


def lfw_closeups(refs: list[LfwRef], count: int, seed: int) -> list[Frame]:
    """LFW faces cropped with 0-100 % margin and scaled up to fill a frame (faces over 200 px wide)."""
    rng = np.random.default_rng(seed + 2)
    frames = []
    for i in range(count):
        ref = refs[(i * 7919) % len(refs)]
        height = CLOSEUP_HEIGHTS[i % len(CLOSEUP_HEIGHTS)]
        wide = i % 2 == 1  # every other one 4:3 instead of square
        margin = 1.0 + float(rng.uniform(0.0, 1.0)) if i % 5 else 1.0  # every fifth: the face box is the frame
        cx, cy = (ref.box[0] + ref.box[2]) / 2, (ref.box[1] + ref.box[3]) / 2
        side = (ref.box[2] - ref.box[0]) * margin
        crop_w = side * (4 / 3 if wide else 1.0)
        s = height / side
        # the crop as an affine warp: no face cut by the photo's border, which is replicated where the crop leaves it
        m = np.float32([[s, 0, -(cx - crop_w / 2) * s], [0, s, -(cy - side / 2) * s]])
        width = int(round(crop_w * s))
        image = cv2.warpAffine(ref.image, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        box = np.array([ref.box[0] * s + m[0, 2], ref.box[1] * s + m[1, 2], ref.box[2] * s + m[0, 2],
                        ref.box[3] * s + m[1, 2]])
        kps = ref.keypoints * s + (m[0, 2], m[1, 2])
        frames.append(Frame(image, [Face(box, kps, band_of(box[2] - box[0]) or BAND_NAMES[-1])],
                            f"LFW close-up {width}x{height}"))
    return frames


def att_closeups(every: int = 1) -> list[Frame]:
    """AT&T faces (tightly cropped 92x112) scaled up to 394x480; no box (see the module docstring)."""
    from edgeface.runtime.images import read_image

    files = sorted((DATA / "att_faces").glob("s*/*.pgm"))[::every]
    return [Frame(cv2.resize(read_image(f), (394, 480), interpolation=cv2.INTER_LINEAR), [], f"AT&T {f.parent.name}")
            for f in files]


def hamilton_frames(every: int = 1) -> list[np.ndarray]:
    """Frames of the Hamilton clip (RGB), every ``every``-th."""
    from edgeface.importers.blazeface_int8 import video_frames

    return video_frames(CLIP, every)


def skimage_photos() -> Optional[list[tuple[str, np.ndarray]]]:
    """scikit-image's sample photos that show no face (from its installed files, nothing downloaded); None when
    scikit-image is not installed."""
    from edgeface.runtime.images import UnreadableImage, read_image

    try:
        files = importlib.metadata.files("scikit-image") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    out = []
    for f in sorted(files, key=str):
        p = Path(str(f))
        if p.parent.name != "data" or p.suffix.lower() not in (".png", ".jpg") or p.stem in SKIMAGE_WITH_FACES:
            continue
        try:
            image = read_image(f.locate())
        except UnreadableImage:
            continue
        if min(image.shape[:2]) >= SKIMAGE_TOO_SMALL:
            out.append((p.stem, image))
    return out


def face_free(seed: int, hamilton: list[np.ndarray], avoid: list[list[list[np.ndarray]]], crops_per_photo: int,
              crops_per_frame: int, log: Callable[[str], None] = print) -> list[Frame]:
    """Face-free images: scikit-image photos (whole and ``crops_per_photo`` random crops each) and up to
    ``crops_per_frame`` regions of each Hamilton stage frame that overlap none of the boxes in ``avoid`` (per frame,
    per detector: boxes found at a low threshold, each widened by its own size on every side); a frame where a
    detector finds more than HAMILTON_BUSY faces shows the audience and is skipped."""
    rng = np.random.default_rng(seed + 3)
    out = []
    photos = skimage_photos()
    if photos is None:
        log(SKIMAGE_HINT)
    for name, image in photos or []:
        out.append(Frame(image, [], f"skimage {name}"))
        h, w = image.shape[:2]
        for _ in range(crops_per_photo):
            side = int(rng.uniform(0.3, 0.7) * min(h, w))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = image[y:y + side, x:x + side]
            # shown at a camera's size, so the detectors see it as they would see a frame
            target = int(rng.choice([320, 480, 640]))
            out.append(Frame(cv2.resize(crop, (target, target), interpolation=cv2.INTER_LINEAR), [],
                             f"skimage {name} crop"))
    for frame, per_detector in zip(hamilton, avoid):
        if max(map(len, per_detector), default=0) > HAMILTON_BUSY:
            continue
        boxes = [b for found in per_detector for b in found]
        h, w = frame.shape[:2]
        widened = [np.array([b[0] - (b[2] - b[0]), b[1] - (b[3] - b[1]), b[2] + (b[2] - b[0]), b[3] + (b[3] - b[1])])
                   for b in boxes]
        got = 0
        for _ in range(50):
            if got == crops_per_frame:
                break
            cw, ch = int(rng.integers(128, 321)), int(rng.integers(128, 321))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            if any(x < b[2] and b[0] < x + cw and y < b[3] and b[1] < y + ch for b in widened):
                continue
            out.append(Frame(frame[y:y + ch, x:x + cw].copy(), [], "Hamilton region"))
            got += 1
    return out


# --- detectors under test -------------------------------------------------------------------------------------------


AUTO_VARIANT_KEYS = {"fine": "fine_face", "prop": "proposal_threshold", "score": "score_threshold",
                     "min": "min_face", "grid": "grid", "crop": "crop"}


def build_detector(mode: str, threads: Optional[int] = None):
    """A detector for ``mode``: one of edgeface's modes, or a variant tried here: ``full-tiles`` (full-range on
    overlapping square tiles plus short-range on the frame) or ``auto@KEY=VALUE,...`` (auto with other settings:
    fine = px a 32 px face gets in the fine pass, prop = proposal score, score = confirmation score, min = smallest
    face px, grid = confirming crops per side of full-range's input, crop = crop side / proposal box side)."""
    from edgeface.runtime.detector import AutoDetector, create_detector, find_blazeface_file

    if mode.startswith("auto@"):
        kwargs = {}
        for item in mode[5:].split(","):
            key, _, value = item.partition("=")
            if key not in AUTO_VARIANT_KEYS:
                raise SystemExit(f"unknown auto setting {key!r} in {mode!r}: use {', '.join(AUTO_VARIANT_KEYS)}")
            kwargs[AUTO_VARIANT_KEYS[key]] = int(value) if key == "grid" else float(value)
        return AutoDetector(find_blazeface_file("short"), find_blazeface_file("full"), threads=threads, **kwargs)
    if mode == "full-tiles":
        return FullTiles(threads)
    base, _, precision = mode.partition("+")  # short+int8: the int8 files (edgeface import blazeface)
    return create_detector(base, threads=threads, precision=precision or "float")


class FullTiles:
    """A variant: full-range on square tiles (side: the frame's short side, overlapping by at least a quarter of
    it) plus short-range on the letterboxed frame for faces larger than the overlap; detections touching an inner
    tile edge are dropped (the neighbouring tile sees the whole face), the rest fused by weighted NMS."""

    kind = "full-tiles"

    def __init__(self, threads: Optional[int] = None) -> None:
        from edgeface.runtime.detector import create_detector

        self.full = create_detector("full", threads=threads)
        self.short = create_detector("short", threads=threads)

    def detect(self, image: np.ndarray) -> list:
        from edgeface.runtime.detector import detections_from_rows

        h, w = image.shape[:2]
        side = min(h, w)
        n = max(1, int(np.ceil((max(h, w) - side * 0.25) / (side * 0.75))))
        step = (max(h, w) - side) / max(1, n - 1) if n > 1 else 0
        short_rows, short_scores = self.short.candidates(image)
        rows, scores = [short_rows], [short_scores]
        for i in range(n):
            off = int(round(i * step))
            tile = image[:, off:off + side] if w >= h else image[off:off + side, :]
            r, s = self.full.candidates(tile)
            dx, dy = (off, 0) if w >= h else (0, off)
            r = r + np.tile(np.float32([dx, dy]), 8)
            inner_lo, inner_hi = (off > 0, off + side < max(h, w))
            lo_edge = r[:, 0] if w >= h else r[:, 1]
            hi_edge = r[:, 2] if w >= h else r[:, 3]
            keep = ~((inner_lo & (lo_edge <= off + 1)) | (inner_hi & (hi_edge >= off + side - 1)))
            rows.append(r[keep])
            scores.append(s[keep])
        return detections_from_rows(np.concatenate(rows), np.concatenate(scores), 0.3)


# --- measuring --------------------------------------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boxes x1y1x2y2 (the runtime's :func:`edgeface.runtime.detector.iou`, for one pair)."""
    from edgeface.runtime.detector import iou

    return float(iou(np.asarray(a, np.float64), np.asarray(b, np.float64)[None])[0])


def match_faces(faces: list[Face], detections: list) -> list:
    """For each ground-truth face the detection matched to it (greedy by IoU >= MATCH_IOU), or None."""
    pairs = sorted(((box_iou(f.box, d.box), i, j) for i, f in enumerate(faces) for j, d in enumerate(detections)),
                   reverse=True)
    out: list = [None] * len(faces)
    used = set()
    for score, i, j in pairs:
        if score < MATCH_IOU:
            break
        if out[i] is None and j not in used:
            out[i], used = detections[j], used | {j}
    return out


def keypoint_error(face: Face, detection) -> float:
    """Mean distance of the main keypoints to the reference, in px at a face 112 px wide."""
    d = np.linalg.norm(detection.keypoints[:MAIN_KEYPOINTS] - face.keypoints, axis=1).mean()
    return float(d / face.width * 112.0)


def att_found(frame: Frame, detections: list) -> bool:
    """An AT&T close-up's face is found: a detection centred in the middle half, at least a third as wide."""
    h, w = frame.image.shape[:2]
    for d in detections:
        cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
        if w / 4 <= cx <= 3 * w / 4 and h / 4 <= cy <= 3 * h / 4 and d.box[2] - d.box[0] >= w / 3:
            return True
    return False


def timed_detect(detector, image: np.ndarray) -> tuple[list, float, float]:
    """Detections, wall-clock ms and CPU ms (this process) of one call."""
    t, c = time.perf_counter(), time.process_time()
    found = detector.detect(image)
    return found, (time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000


def evaluate_mode(mode: str, sets: dict, threads: Optional[int]) -> dict:
    """Every figure of one mode over the prepared sets (no end-to-end run)."""
    det = build_detector(mode, threads)
    det.detect(sets["hamilton"][0])  # warm-up: interpreters built, XNNPACK prepared
    hits = {b: [0, 0] for b in BAND_NAMES}
    kp_err: dict[str, list[float]] = {b: [] for b in BAND_NAMES}
    for frame in sets["mosaics"] + sets["closeups"]:
        found = det.detect(frame.image)
        for face, d in zip(frame.faces, match_faces(frame.faces, found)):
            hits[face.band][1] += 1
            if d is not None:
                hits[face.band][0] += 1
                kp_err[face.band].append(keypoint_error(face, d))
    att = sum(att_found(f, det.detect(f.image)) for f in sets["att"])
    # 1080p timed on its own, after a warm-up at that size: a camera's frames all have one size (the sets above
    # mix sizes, and a detector builds its interpreters again for sizes it has dropped).
    ms_1080, cpu_1080 = [], []
    big = [f.image for f in sets["mosaics"] if f.image.shape[:2] == (1080, 1920)]
    for image in big[:1] + big:
        _, ms, cpu = timed_detect(det, image)
        ms_1080.append(ms)
        cpu_1080.append(cpu)
    ms_1080, cpu_1080 = ms_1080[1:], cpu_1080[1:]
    false = {}
    for frame in sets["face_free"]:
        src = frame.source.split()[0]
        n = len(det.detect(frame.image))
        false[src] = false.get(src, 0) + n
    counts, ms_clip, cpu_clip, per_frame = [], [], [], []
    for image in sets["hamilton"]:
        found, ms, cpu = timed_detect(det, image)
        counts.append(len(found))
        ms_clip.append(ms)
        cpu_clip.append(cpu)
        per_frame.append([d.box.tolist() for d in found])
    all_err = [e for b in BAND_NAMES[1:] for e in kp_err[b]]
    n_free = len(sets["face_free"])
    return {
        "mode": mode,
        "recall": {b: round(100.0 * h / n, 1) if n else None for b, (h, n) in hits.items()},
        "faces": {b: n for b, (_, n) in hits.items()},
        "att_closeups": round(100.0 * att / max(1, len(sets["att"])), 1),
        "false_per_100": round(100.0 * sum(false.values()) / max(1, n_free), 2),
        "false_by_source": false,
        "keypoint_error_112": {b: round(float(np.median(v)), 2) if v else None for b, v in kp_err.items()},
        "keypoint_error_112_median": round(float(np.median(all_err)), 2) if all_err else None,
        "keypoint_error_112_p90": round(float(np.percentile(all_err, 90)), 2) if all_err else None,
        "ms_640x360": round(float(np.median(ms_clip)), 2),
        "ms_1920x1080": round(float(np.median(ms_1080)), 2) if ms_1080 else None,
        "cpu_ms_640x360": round(float(np.mean(cpu_clip)), 2),
        "cpu_ms_1920x1080": round(float(np.mean(cpu_1080)), 2) if cpu_1080 else None,
        "hamilton_faces": int(sum(counts)),
        "hamilton_frames_with_face": int(sum(c > 0 for c in counts)),
        "_hamilton_boxes": per_frame,
    }


def same_face(a: np.ndarray, b: np.ndarray) -> bool:
    """Two boxes show one face when either's centre lies inside the other: the modes' boxes differ in size and
    offset (short-range's, full-range's), so an IoU threshold would count one face twice."""
    ca, cb = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2), ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    return bool((b[0] <= ca[0] <= b[2] and b[1] <= ca[1] <= b[3]) or (a[0] <= cb[0] <= a[2] and a[1] <= cb[1] <= a[3]))


def agreement(results: list[dict]) -> dict:
    """On the Hamilton clip: for each mode, the share of its faces that each other mode also finds
    (:func:`same_face`)."""
    out = {}
    for a in results:
        row = {}
        for b in results:
            if a is b:
                continue
            total = found = 0
            for boxes_a, boxes_b in zip(a["_hamilton_boxes"], b["_hamilton_boxes"]):
                for box in boxes_a:
                    total += 1
                    found += any(same_face(np.array(box), np.array(o)) for o in boxes_b)
            row[b["mode"]] = round(100.0 * found / total, 1) if total else None
        out[a["mode"]] = row
    return out


def end_to_end_fps(mode: str, repeats: int, threads: Optional[int]) -> Optional[float]:
    """Median FPS of `edgeface run` over the clip with the default model (None for a variant the CLI lacks)."""
    from edgeface.runtime.detector import DETECTOR_KINDS

    if mode not in DETECTOR_KINDS:
        return None
    sys.path.insert(0, str(Path(__file__).parent))
    from runtime_bench import run_once

    return round(statistics.median(run_once(CLIP, "default", mode, None, threads)["fps"] for _ in range(repeats)), 1)


def cpu_fps(mode: str, repeats: int) -> Optional[float]:
    """The clip through the runtime's own loop (load_recognizer + run_loop: decode, detect, align, embed, match)
    in this process with the default model, as frames per CPU second of the process (median of ``repeats``): what
    `edgeface run` does per frame, with the interpreters' single thread, free of other work on the machine."""
    from edgeface.runtime.capture import open_source, parse_source
    from edgeface.runtime.detector import DETECTOR_KINDS
    from edgeface.runtime.pipeline import run_loop
    from edgeface.runtime.recognizer import load_recognizer
    from edgeface.runtime.settings import RunSettings

    if mode not in DETECTOR_KINDS:
        return None
    rt = load_recognizer(RunSettings(detector=mode), with_gallery=False)
    out = []
    for _ in range(repeats):
        with open_source(parse_source(str(CLIP))) as source:
            start = time.process_time()
            stats = run_loop(source, rt.recognizer)
            out.append(stats.frames / (time.process_time() - start))
    return round(statistics.median(out), 1)


def build_sets(quick: bool, seed: int, log: Callable[[str], None] = print) -> dict:
    """Every evaluation set: ``quick`` a small subset (about a tenth)."""
    per_band = 40 if quick else 200
    refs = lfw_references(per_band * 2 if quick else 600, seed, log)
    hamilton = hamilton_frames(5 if quick else 1)
    from edgeface.runtime.detector import create_detector

    # Everything any mode might take for a face, at a low threshold, is kept out of the face-free regions.
    sensitive = [create_detector("short", score_threshold=0.3), create_detector("full", score_threshold=0.3),
                 build_detector("auto@score=0.2")]
    avoid = [[[d.box for d in det.detect(f)] for det in sensitive] for f in hamilton]
    sets = {
        "mosaics": mosaics(refs, per_band, seed),
        "closeups": lfw_closeups(refs, per_band, seed),
        "att": att_closeups(8 if quick else 1),
        "hamilton": hamilton,
        "face_free": face_free(seed, hamilton, avoid, 2 if quick else 8, 1 if quick else 2, log),
    }
    log(f"sets: {len(sets['mosaics'])} mosaics, {len(sets['closeups'])} LFW close-ups, {len(sets['att'])} AT&T "
        f"close-ups, {len(hamilton)} clip frames, {len(sets['face_free'])} face-free images")
    return sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=["short", "full", "auto"],
                    help="edgeface modes and variants (auto@T: auto at score threshold T; full-tiles; MODE+int8: "
                         "the mode with the int8 detector files)")
    ap.add_argument("--quick", action="store_true", help="a subset: 40 faces per band, every 5th clip frame")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="interpreter threads (default: the interpreter's)")
    ap.add_argument("--repeats", type=int, default=3, help="end-to-end runs per mode (median)")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end `edgeface run` timing")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    if not LFW.is_dir():
        raise SystemExit(f"LFW not found at {LFW}: set EDGEFACE_DATA to the shared data folder")
    sets = build_sets(args.quick, args.seed, log)
    results = []
    for mode in args.modes:
        log(f"measuring {mode} ...")
        r = evaluate_mode(mode, sets, args.threads)
        r["run_cpu_fps"] = None if args.no_e2e else cpu_fps(mode, 1 if args.quick else args.repeats)
        r["run_fps"] = None if args.no_e2e else end_to_end_fps(mode, 1 if args.quick else args.repeats, args.threads)
        results.append(r)
    agree = agreement(results)
    figures = {"machine": {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]},
               "quick": args.quick, "seed": args.seed, "face_free_images": len(sets["face_free"]),
               "att_images": len(sets["att"]), "hamilton_frames": len(sets["hamilton"]),
               "modes": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
               "hamilton_agreement": agree}
    if args.json:
        print(json.dumps(figures, indent=2))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(width=220)
    faces = results[0]["faces"]
    table = Table(title=f"face detection modes: recall % by face width (faces per band: "
                        f"{', '.join(f'{b} {faces[b]}' for b in BAND_NAMES)}), "
                        f"{len(sets['face_free'])} face-free images, {len(sets['hamilton'])} clip frames")
    for c in ["mode", *[f"{b} px" for b in BAND_NAMES], "AT&T close-ups", "false /100 face-free",
              "kp err px@112 (p90)", "CPU ms 640x360", "CPU ms 1080p", "run FPS per CPU", "run FPS wall",
              "clip faces"]:
        table.add_column(c)
    for r in results:
        table.add_row(r["mode"], *[str(r["recall"][b]) for b in BAND_NAMES], str(r["att_closeups"]),
                      str(r["false_per_100"]), f"{r['keypoint_error_112_median']} ({r['keypoint_error_112_p90']})",
                      str(r["cpu_ms_640x360"]), str(r["cpu_ms_1920x1080"]), str(r["run_cpu_fps"] or "-"),
                      str(r["run_fps"] or "-"),
                      f"{r['hamilton_faces']} in {r['hamilton_frames_with_face']} frames")
    console.print(table)
    for r in results:
        console.print(f"{r['mode']}: false detections by source {r['false_by_source']}; keypoint error by band "
                      f"{r['keypoint_error_112']}; clip faces also found by " +
                      ", ".join(f"{m} {v} %" for m, v in agree[r["mode"]].items()))
    console.print(f"load average {figures['machine']['load_avg']} on {figures['machine']['cpus']} CPUs; goals for "
                  "the default: recall >= 97 % from 32 px up, <= 1 false detection per 100 face-free images, run "
                  ">= 60 FPS")


if __name__ == "__main__":
    main()
