"""A folder of crops streamed instead of loaded: only the file paths and labels stay in memory.

``edgeface train CROPS`` decodes every crop into one array (:func:`edgeface.data.dataset.load_crops`), the fastest
way to feed a model while it fits.  When it does not -- ``--stream``, or on its own when the decoded crops would
take more than :data:`BUDGET_FRACTION` of the memory available when the run starts (:func:`memory_budget`) --
the folder becomes a streamed source like a pack: the tf.data pipeline of :mod:`edgeface.train.stream` reads each
file's bytes when its batch comes and decodes them there.

The people, their labels and the order of the images are :func:`load_crops`'s (``--exclude-people`` and
``--min-images`` apply, person folders sorted, files sorted), so the streamed batches are the in-memory path's.
JPEG and 8-bit RGB PNG files are passed on as they are; other images (PGM, BMP, grey or 16-bit PNG, ...) are
decoded here with OpenCV, as the loader decodes them, and handed on as lossless PNG.  What the loader does once
for all files happens here per file as it is read: an unreadable file, or (in a folder without ``edgeface data
prepare``'s manifest) an image that is not a ``size`` x ``size`` crop, stops the run with one line naming it.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from edgeface.data.dataset import MANIFEST, select_people
from edgeface.data.streamed import EncodedImages, StreamedCrops
from edgeface.errors import UserError

BUDGET_FRACTION = 0.4  # of MemAvailable: loading briefly holds the crops twice (list + stacked array)
_PNG = b"\x89PNG\r\n\x1a\n"


def available_memory() -> int:
    """Bytes of memory available now: MemAvailable from /proc/meminfo, else the free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: never stream on our own


def memory_budget() -> int:
    """The most bytes of decoded crops a run loads into memory: :data:`BUDGET_FRACTION` of the available memory."""
    return int(BUDGET_FRACTION * available_memory())


def decoded_bytes(images: int, size: int) -> int:
    """What ``images`` crops at ``size`` x ``size`` RGB uint8 take decoded."""
    return int(images) * int(size) * int(size) * 3


@dataclass
class FolderCrops(StreamedCrops):
    """The crops of an identity folder, streamed: paths and labels in memory, bytes read when asked for."""

    root: Path
    paths: list[Path]
    labels: np.ndarray  # int32
    class_names: list[str]
    index_sha256: str
    size: Optional[int] = None  # the crop size a folder without manifest must have
    prepared: bool = True  # edgeface data prepare's crops (manifest present): any size is a crop
    seconds_to_index: float = 0.0
    images: EncodedImages = field(init=False, repr=False)
    format: str = field(default="folder-streamed", init=False)
    hash_covers: str = field(default="people, relative paths, labels and file sizes (not pixels)", init=False)

    def __post_init__(self) -> None:
        self.images = EncodedImages(self, None)

    def where(self, position: int) -> str:
        return str(self.paths[int(position)])

    def encoded(self, positions: Sequence[int]) -> list[bytes]:
        """The JPEG or PNG bytes of the files at ``positions`` (other formats decoded and given as PNG)."""
        return [self._bytes(self.paths[int(p)]) for p in np.asarray(positions).reshape(-1)]

    def _bytes(self, path: Path) -> bytes:
        from edgeface.runtime.images import UnreadableImage, declared_size, read_image

        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"{path}: cannot read it ({exc.strerror}): the folder changed while training") from None
        shape = declared_size(data)
        if not self.prepared and shape is not None and self.size and tuple(shape) != (self.size, self.size):
            self._not_a_crop(path, shape)
        if data.startswith(b"\xff\xd8") or (data.startswith(_PNG) and len(data) > 26 and data[12:16] == b"IHDR"
                                             and data[24] == 8 and data[25] == 2):
            return data
        import cv2

        try:
            rgb = read_image(path)
        except UnreadableImage as exc:
            raise UserError(f"{exc} (a streamed folder cannot skip it as loading does: remove it)") from None
        if not self.prepared and self.size and rgb.shape[:2] != (self.size, self.size):
            self._not_a_crop(path, (rgb.shape[1], rgb.shape[0]))
        ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise UserError(f"{path}: cannot re-encode it as PNG")
        return buf.tobytes()

    def _not_a_crop(self, path: Path, shape) -> None:
        raise UserError(f"{self.root} holds photos, not aligned face crops ({path.relative_to(self.root)} is "
                        f"{shape[0]}x{shape[1]}, training needs {self.size}x{self.size} crops aligned as the runtime "
                        f"aligns camera faces): run `edgeface data prepare {self.root} --out CROPS` and train on CROPS")


def scan_folder(root: str | os.PathLike, exclude: Iterable[str] = (), min_images: int = 1,
                size: Optional[int] = None) -> FolderCrops:
    """The streamed view of an identity folder: :func:`load_crops`'s people, labels and order, nothing decoded.

    The index hash covers the people, the relative paths and each file's size (not the pixels: hashing them would
    read the whole folder).
    """
    t0 = time.perf_counter()
    root = Path(root)
    items, names, index = select_people(root, exclude, min_images)
    labels = np.array([index[p] for p, _ in items], np.int32)
    paths = [f for _, f in items]
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\n")
    for (_, f), label in zip(items, labels.tolist()):
        rel = os.path.relpath(f, root).replace(os.sep, "/")
        h.update(f"{rel}\0{label}\0{f.stat().st_size}\n".encode())
    return FolderCrops(root=root, paths=paths, labels=labels, class_names=names, index_sha256=h.hexdigest(),
                       size=size, prepared=(root / MANIFEST).is_file(), seconds_to_index=time.perf_counter() - t0)


def stream_folder(root: str | os.PathLike, exclude: Iterable[str], min_images: int, size: int,
                  stream: Optional[bool], notify: Optional[Callable[[str], None]] = None) -> Optional[FolderCrops]:
    """The folder as a streamed source when ``stream`` is True, or when it is None (auto) and its decoded crops
    would exceed :func:`memory_budget`; None when it should be loaded into memory."""
    if stream is False:
        return None
    if stream is None:
        # a count first: a folder that fits is not hashed here (no one kept: the same error loading would give)
        n = len(select_people(root, exclude, min_images)[0])
        need, budget = decoded_bytes(n, size), memory_budget()
        if need <= budget:
            return None
        if notify:
            notify(f"streaming {root} instead of loading it: its {n} crops would take {need / 1e9:.1f} GB "
                   f"decoded, over the budget of {budget / 1e9:.1f} GB ({BUDGET_FRACTION:.0%} of the memory "
                   "available); --no-stream loads it anyway")
    return scan_folder(root, exclude, min_images, size).with_input_size(size)
