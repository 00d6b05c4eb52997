"""Detect then align: the step shared by data preparation, evaluation, enrollment and the camera loop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeface.runtime.align import CROP_SIZE, align_face
from edgeface.runtime.detector import Detection, largest_first


@dataclass
class AlignedFace:
    detection: Detection
    crop: np.ndarray  # RGB uint8, size x size


def detect_and_align(image: np.ndarray, detector, size: int = CROP_SIZE) -> list[AlignedFace]:
    """Every face in an RGB image, aligned; the largest face first."""
    dets = largest_first(detector.detect(image))
    return [AlignedFace(d, align_face(image, d.keypoints, size)) for d in dets]
