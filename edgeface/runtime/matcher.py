"""Cosine matching of query embeddings against a gallery (pure numpy).

All gallery embeddings sit in one contiguous float32 (N, D) matrix, unit length,
so the similarities of M queries to every enrolled face are one matrix product
(M, D) @ (D, N) and the best match one ``argmax``: 100k x 128 answers in a few
milliseconds on a Raspberry-Pi-class CPU with no index structure to maintain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from edgeface.runtime.gallery import UNKNOWN
from edgeface.runtime.interpreter import l2_normalize


@dataclass(frozen=True)
class Match:
    """The answer for one face.

    ``identity`` is the best-matching person when ``score`` reaches the threshold,
    otherwise ``"unknown"``; ``nearest`` is that best person either way (``None``
    with an empty gallery), useful to tune the threshold.
    """

    identity: str
    score: float
    nearest: Optional[str]
    index: int

    @property
    def known(self) -> bool:
        return self.identity != UNKNOWN


class Matcher:
    """Best identity above a cosine threshold, else ``unknown``."""

    def __init__(self, embeddings: np.ndarray, labels: Sequence[str], threshold: float) -> None:
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(labels):
            raise ValueError(f"{len(labels)} labels for embeddings of shape {embeddings.shape}")
        # Re-normalise: a gallery written by hand or by an older tool may not be unit length,
        # and the dot product is only the cosine for unit vectors.
        self.matrix = np.ascontiguousarray(l2_normalize(embeddings)) if len(embeddings) else embeddings
        self.names = sorted(set(labels))
        index = {n: i for i, n in enumerate(self.names)}
        self.label_ids = np.array([index[n] for n in labels], np.int32)
        self.threshold = float(threshold)
        self.dim = embeddings.shape[1]

    @classmethod
    def from_gallery(cls, gallery, threshold: float) -> Matcher:
        """A matcher over every embedding of a :class:`edgeface.runtime.gallery.Gallery`."""
        return cls(gallery.embeddings, gallery.labels, threshold)

    def __len__(self) -> int:
        return len(self.label_ids)

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """Cosine similarity of each query (M, D) to each gallery row: (M, N)."""
        q = l2_normalize(np.asarray(queries, np.float32).reshape(-1, self.dim))
        # (M, D) @ (D, N): BLAS reads the big matrix once for all M faces and writes a C-ordered
        # (M, N) result, so the per-row argmax below runs over contiguous memory.
        return q @ self.matrix.T

    def match(self, queries: np.ndarray) -> list[Match]:
        """The best match of every query embedding (M, D) (or one (D,) vector)."""
        q = np.asarray(queries, np.float32).reshape(-1, self.dim)
        if len(q) == 0:
            return []
        if len(self) == 0:
            return [Match(UNKNOWN, 0.0, None, -1) for _ in range(len(q))]
        sims = self.similarities(q)  # (M, N)
        best = np.argmax(sims, axis=1)
        scores = sims[np.arange(len(q)), best]
        out = []
        for idx, score in zip(best.tolist(), scores.tolist()):
            name = self.names[self.label_ids[idx]]
            out.append(Match(name if score >= self.threshold else UNKNOWN, float(score), name, int(idx)))
        return out
