"""In-memory training data: stratified splits, label mapping, a dataset hash and a batch sequence.

Crops are decoded once (:func:`edgeface.data.dataset.load_crops`) and batches are
sliced from the arrays every epoch, the fastest way to feed a CPU or one GPU
with face crops (13k LFW crops at 112x112 are 0.5 GB of uint8).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Optional

import keras
import numpy as np

from edgeface.data.dataset import CropSet


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held-out) holding out ``fraction`` of each identity's images.

    Every identity with two or more images gives at least one image to each side
    (so closed-set accuracy covers every identity); identities with one image stay
    in training.  The same seed gives the same split.
    """
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, int(round(fraction * len(idx)))))
        held.extend(idx[:k].tolist())
        train.extend(idx[k:].tolist())
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(held, dtype=np.int64))


def subset(crops: CropSet, index: np.ndarray) -> CropSet:
    """The crops at ``index``, keeping the class list (labels stay valid)."""
    return CropSet(images=crops.images[index], labels=crops.labels[index], class_names=crops.class_names,
                   paths=[crops.paths[i] for i in index] if crops.paths else [])


def map_labels(other: CropSet, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Labels of ``other`` in the index space of ``class_names``; -1 for identities not among them.

    Returns (labels, known mask).  A separate validation folder numbers its people
    on its own, so its labels must be translated before they mean anything to the head.
    """
    index = {n: i for i, n in enumerate(class_names)}
    table = np.array([index.get(n, -1) for n in other.class_names], dtype=np.int32)
    labels = table[other.labels]
    return labels, labels >= 0


def dataset_hash(crops: CropSet, root: Optional[os.PathLike] = None) -> str:
    """SHA-256 over identity names, relative paths and pixels: the same crops give the same hash anywhere."""
    h = hashlib.sha256()
    for name in crops.class_names:
        h.update(name.encode() + b"\n")
    for i in range(len(crops)):
        p = crops.paths[i] if crops.paths else Path(str(i))
        rel = os.path.relpath(p, root) if root is not None else str(p)
        h.update(rel.replace(os.sep, "/").encode() + b"\0")
        h.update(int(crops.labels[i]).to_bytes(4, "little"))
        h.update(np.ascontiguousarray(crops.images[i]).tobytes())
    return h.hexdigest()


class ArraySequence(keras.utils.PyDataset):
    """Batches ``(x[i].astype(float32), y[i])`` from in-memory arrays, reshuffled every epoch.

    ``y`` can be anything indexable by the batch indices (class labels here,
    teacher embeddings for distillation).  With ``shuffle`` the last incomplete
    batch is dropped (each epoch sees a new order, so no image is lost for good):
    a tiny last batch gives noisy BatchNorm statistics and can leave a replica
    empty under a distribution strategy.

    Each order is a function of (``seed``, epoch count), and ``epoch`` is where the
    count starts: a run resumed at epoch k (``epoch=k``) sees the orders the
    uninterrupted run would have, not the first epochs' orders again.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False, seed: int = 0,
                 epoch: int = 0):
        super().__init__(workers=1, use_multiprocessing=False)
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self._epoch = int(epoch)
        self._order = self._order_for(self._epoch)

    def _order_for(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.x))
        return np.random.default_rng((self.seed % 2**32, epoch)).permutation(len(self.x))

    def __len__(self) -> int:
        n = len(self.x)
        if self.shuffle and n >= self.batch_size:
            return n // self.batch_size
        return max(1, math.ceil(n / self.batch_size))

    @property
    def images_per_epoch(self) -> int:
        """Images one pass over the sequence feeds (the dropped remainder not counted)."""
        return min(len(self.x), len(self) * self.batch_size)

    def __getitem__(self, i: int):
        idx = np.sort(self._order[i * self.batch_size:(i + 1) * self.batch_size])
        return self.x[idx].astype(np.float32), self.y[idx]

    def on_epoch_end(self) -> None:
        self._epoch += 1
        self._order = self._order_for(self._epoch)
