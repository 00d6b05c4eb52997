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
# still guards a header too damaged to read here.
MAX_PIXELS = 1 << 28


class UnreadableImage(UserError):
    """The file exists but is not a decodable image (a UserError: one line when it reaches a command)."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def declared_size(data: bytes | memoryview) -> Optional[tuple[int, int]]:
    """(width, height) that an image header declares (JPEG, PNG, GIF, BMP, WebP, TIFF, PNM), without decoding;
    None for other formats or a header too damaged to say (the decoder then decides)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:4] == b"GIF8" and len(data) >= 13:
        return _gif_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        return _bmp_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    if len(data) >= 3 and data[0] == 0x50 and 0x31 <= data[1] <= 0x36:  # P1..P6: netpbm (.pgm, .ppm)
        return _pnm_size(data)
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


def _bmp_size(data: bytes | memoryview) -> Optional[tuple[int, int]]:
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # a negative height is a top-down bitmap


def _webp_size(data: bytes | memoryview) -> Optional[tuple[int, int]]:
    chunk = bytes(data[12:16])
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        w, h = data[24] | data[25] << 8 | data[26] << 16, data[27] | data[28] << 8 | data[29] << 16
        return w + 1, h + 1
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14-bit width-1 and height-1 after the signature
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes after the start code
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _tiff_size(data: bytes | memoryview) -> Optional[tuple[int, int]]:
    """ImageWidth and ImageLength of a TIFF's first image (the one OpenCV decodes)."""
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        return None
    (ifd,) = struct.unpack(order + "I", data[4:8])
    if ifd + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
    found = {}
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(data):
            break
        tag, kind = struct.unpack(order + "HH", data[entry:entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            value = data[entry + 8:entry + 12]
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value[:2] if kind == 3 else value)[0]
    return (found[256], found[257]) if 256 in found and 257 in found else None


def _pnm_size(data: bytes | memoryview) -> Optional[tuple[int, int]]:
    """Width and height of a netpbm header: magic, then whitespace-separated numbers, # comments to line end."""
    head = bytes(data[2:256])
    numbers: list[int] = []
    pos = 0
    while len(numbers) < 2 and pos < len(head):
        c = head[pos:pos + 1]
        if c == b"#":
            end = head.find(b"\n", pos)
            pos = len(head) if end < 0 else end + 1
        elif c.isspace():
            pos += 1
        elif c.isdigit():
            end = pos
            while end < len(head) and head[end:end + 1].isdigit():
                end += 1
            numbers.append(int(head[pos:end]))
            pos = end
        else:
            return None
    return (numbers[0], numbers[1]) if len(numbers) == 2 else None


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
