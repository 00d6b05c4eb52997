"""What every streamed training source (RecordIO pack, TFRecord shards, a folder too big for memory) offers.

A streamed source keeps only an index in memory -- a label per image and where its bytes are -- and gives the
encoded bytes of any images on request (``encoded(positions)``); :mod:`edgeface.train.stream` builds the tf.data
pipeline on that, and ``images[idx]`` decodes a few crops on the CPU with OpenCV, exactly as a folder's crops are
decoded (BatchNorm recalibration and evaluation sample a few that way).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from edgeface.errors import UserError


class EncodedImages:
    """The decoded crops of a streamed source, read from disk when indexed: ``images[idx]`` is an
    (len(idx), H, W, 3) uint8 RGB array, decoded with OpenCV exactly as a folder's crops are."""

    def __init__(self, crops: StreamedCrops, size: Optional[int]) -> None:
        self.crops = crops
        self.size = size

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index) -> np.ndarray:
        import cv2

        positions = np.atleast_1d(np.arange(len(self))[index])
        out = []
        for pos, data in zip(positions, self.crops.encoded(positions)):
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise UserError(f"{self.crops.where(int(pos))}: the image is not decodable (a damaged record)")
            if self.size and image.shape[:2] != (self.size, self.size):
                image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
            out.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        return np.stack(out)


class StreamedCrops:
    """Base of the streamed sources: ``labels`` (int32 per image), ``class_names``, ``index_sha256`` and
    ``format`` set by the subclass, which implements ``encoded``, ``where`` and ``shard_names``."""

    format: str = ""
    hash_covers: str = ""  # what index_sha256 is computed over (train.json)
    labels: np.ndarray
    class_names: list[str]
    index_sha256: str
    images: EncodedImages

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def where(self, position: int) -> str:  # pragma: no cover - abstract
        """Where image ``position`` is, for messages."""
        raise NotImplementedError

    def encoded(self, positions: Sequence[int]) -> list[bytes]:  # pragma: no cover - abstract
        """The stored image bytes (JPEG or PNG) of the images at ``positions``."""
        raise NotImplementedError

    def shard_names(self) -> list[str]:
        """The files the source reads (for train.json); a folder gives none."""
        return []

    def with_input_size(self, size: Optional[int]) -> StreamedCrops:
        """The same images, ``images`` resized to ``size`` x ``size`` where they differ (as a folder's are)."""
        self.images = EncodedImages(self, size)
        return self

    def close(self) -> None:
        """Release file descriptors (none by default)."""
