"""Reading images from disk as RGB uint8 arrays (the colour order of every edgeface model)."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from edgeface.errors import UserError
from edgeface.fileio import atomic_write_bytes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# OpenCV sizes its output from the header before decoding, and its JPEG and GIF decoders fill what a file lacks:
# a 7 kB JPEG or a 2 kB GIF declaring 32767x32767 pixels decodes to 3.2 GB (6-7 GB resident with the colour
# conversion; the OOM killer on a board).  Headers declaring more than this are refused before decoding; 2**28
# pixels (268 MP) is above any camera's photo (200 MP sensors) and below OpenCV's own limit (2**30), which
# still guards the formats not checked here.
MAX_PIXELS = 1 << 28


class UnreadableImage(UserError):
    """The file exists but is not a decodable image (a UserError: one line when it reaches a command)."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def declared_size(data: bytes | memoryview) -> Optional[tuple[int, int]]:
    """(width, height) that a JPEG, PNG or GIF header declares, without decoding; None for other formats or a
    header too damaged to say (the decoder then decides)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:4] == b"GIF8" and len(data) >= 13:
        return _gif_size(data)
    if data[:2] == b"\xff\xd8":
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF:
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte before a marker
                pos += 1
                continue
            (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
            # SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and pos + 9 <= len(data):
                height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
                return width, height
            if marker == 0xDA or length < 2:  # image data follows, or a broken segment
                return None
            pos += 2 + length
    return None


def _gif_size(data: bytes | memoryview) -> tuple[int, int]:
    """The larger of a GIF's logical screen and its first frame (OpenCV's decoder allocates both)."""
    sizes = [struct.unpack("<HH", data[6:10])]
    pos = 13
    if data[10] & 0x80:  # a global colour table of 2**(N+1) RGB entries
        pos += 3 << ((data[10] & 7) + 1)
    while pos < len(data):
        if data[pos] == 0x21:  # an extension: its label, then sub-blocks up to an empty one
            pos += 2
            while pos < len(data) and data[pos]:
                pos += data[pos] + 1
            pos += 1
        elif data[pos] == 0x2C and pos + 9 <= len(data):  # the first frame's descriptor
            sizes.append(struct.unpack("<HH", data[pos + 5:pos + 9]))
            break
        else:
            break
    return max(sizes, key=lambda wh: wh[0] * wh[1])


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3); grey and alpha images become 3-channel RGB.

    Raises :class:`UnreadableImage` for a file that is not a decodable image, or whose header declares more
    than :data:`MAX_PIXELS` pixels.
    """
    data = np.fromfile(str(path), dtype=np.uint8)
    size = declared_size(memoryview(data))
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise UnreadableImage(f"{path}: its header declares {size[0]}x{size[1]} pixels, more than the "
                              f"{MAX_PIXELS // 1_000_000} MP this reads: a damaged file, or resize it")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None and Path(path).suffix.lower() == ".gif":
            # Older OpenCV builds have no GIF decoder; its video reader (FFmpeg) reads the first frame.
            cap = cv2.VideoCapture(str(path))
            ok, image = cap.read()
            cap.release()
            image = image if ok else None
    except cv2.error as exc:
        # OpenCV raises (rather than returning None) for a header past its own size limit, or an allocation
        # that fails: both are this file's fault.
        text = " ".join(str(exc).split())  # "OpenCV(4.x) /path/file.cpp:79: error: (-215:...) what"
        reason = text.split("error: ", 1)[-1] if text else "OpenCV error"
        raise UnreadableImage(f"{path}: not a readable image ({reason[:160]})") from None
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
