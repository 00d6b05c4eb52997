"""Detect then align: the one path from a photograph to model-ready crops, shared by data preparation,
evaluation, export's calibration, enrollment and the camera loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edgeface.runtime.detector import Detection, largest_first
from edgeface.runtime.facemodel import FaceModelSpec


@dataclass
class AlignedFace:
    detection: Detection
    crop: np.ndarray  # RGB uint8, aligned as the model's spec says


def detect_and_align(image: np.ndarray, detector, spec: Optional[FaceModelSpec] = None) -> list[AlignedFace]:
    """Every face in an RGB image, aligned for the model ``spec`` describes (None: edgeface's 112x112);
    the largest face first."""
    spec = spec or FaceModelSpec.edgeface()
    dets = largest_first(detector.detect(image))
    return [AlignedFace(d, spec.align_detection(image, d)) for d in dets]
