"""Reading images from disk as RGB uint8 arrays (the colour order of every edgeface model)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edgeface.fileio import atomic_write_bytes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class UnreadableImage(Exception):
    """The file exists but is not a decodable image."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3); grey and alpha images become 3-channel RGB."""
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None and Path(path).suffix.lower() == ".gif":
        # Older OpenCV builds have no GIF decoder; its video reader (FFmpeg) reads the first frame.
        cap = cv2.VideoCapture(str(path))
        ok, image = cap.read()
        cap.release()
        image = image if ok else None
    if image is None:
        raise UnreadableImage(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_image(path: str | os.PathLike, rgb: np.ndarray, private: bool = False) -> None:
    """Write an RGB image atomically (temp file + rename), format from the suffix; ``private``: a new file is
    0600 (a face crop)."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {path}")
    atomic_write_bytes(path, buf.tobytes(), private=private)
