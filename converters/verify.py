"""Check an exported file against the Keras model it came from, on real aligned faces.

Each file runs through the runtime's own interpreter wrapper
(:class:`edgeface.runtime.interpreter.Embedder`), so what is verified is exactly
what the board will execute; the embeddings are compared face by face with the
Keras model's (cosine similarity, min and mean).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from edgeface.runtime.facemodel import FaceModelSpec
from edgeface.runtime.interpreter import l2_normalize


def row_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``candidate`` with the same row of ``reference``."""
    reference = np.asarray(reference, np.float32)
    candidate = np.asarray(candidate, np.float32)
    if reference.shape != candidate.shape:
        raise ValueError(f"embedding shapes differ: {reference.shape} vs {candidate.shape}")
    return np.sum(l2_normalize(reference) * l2_normalize(candidate), axis=1)


@dataclass
class CosineCheck:
    """How closely a file reproduces the Keras embeddings."""

    cosine_min: float
    cosine_mean: float
    faces: int
    bound: float  # per face
    mean_bound: float = 0.0  # average over the faces
    score_max_diff: float = 0.0  # largest change of a face-to-face similarity vs Keras (what thresholds see)

    @property
    def passed(self) -> bool:
        return self.cosine_min >= self.bound and self.cosine_mean >= self.mean_bound

    def failures(self) -> list[str]:
        """Which bound was missed, in words."""
        out = []
        if self.cosine_min < self.bound:
            out.append(f"cosine min {self.cosine_min:.4f} < {self.bound}")
        if self.cosine_mean < self.mean_bound:
            out.append(f"cosine mean {self.cosine_mean:.4f} < {self.mean_bound}")
        return out

    def to_dict(self) -> dict:
        return {"cosine_min": round(self.cosine_min, 6), "cosine_mean": round(self.cosine_mean, 6),
                "faces": self.faces, "bound": self.bound, "mean_bound": self.mean_bound,
                "score_max_diff": round(self.score_max_diff, 6),
                "passed": self.passed}


def keras_embeddings(model: Any, crops: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Unit-length embeddings of uint8 crops from a Keras model (pixels fed as float 0..255)."""
    out = []
    for i in range(0, len(crops), batch_size):
        x = np.asarray(crops[i:i + batch_size], np.float32)
        out.append(np.asarray(model(x, training=False)))
    return l2_normalize(np.concatenate(out)) if out else np.zeros((0, 0), np.float32)


def tflite_embeddings(path: str | os.PathLike, crops: np.ndarray, threads: Optional[int] = None,
                      spec: Optional[FaceModelSpec] = None) -> np.ndarray:
    """Embeddings of a TFLite file through the runtime wrapper (quantized I/O handled there)."""
    from edgeface.runtime.interpreter import Embedder

    return Embedder(path, threads=threads, spec=spec).embed(crops)


def check_cosine(path: str | os.PathLike, crops: np.ndarray, reference: np.ndarray, bound: float,
                 mean_bound: float = 0.0, threads: Optional[int] = None,
                 spec: Optional[FaceModelSpec] = None) -> CosineCheck:
    """Run ``path`` on ``crops`` and compare with the reference (Keras) embeddings."""
    emb = tflite_embeddings(path, crops, threads, spec)
    cos = row_cosines(reference, emb)
    return CosineCheck(float(cos.min()), float(cos.mean()), len(cos), bound, mean_bound,
                       float(np.abs(similarity_matrix(emb) - similarity_matrix(reference)).max()))


def similarity_matrix(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of faces."""
    e = l2_normalize(embeddings)
    return e @ e.T


def mean_pairwise_similarity(embeddings: np.ndarray) -> float:
    """Mean cosine between different faces: near 1 means the model maps every face to the same point."""
    n = len(embeddings)
    if n < 2:
        return 0.0
    s = similarity_matrix(embeddings)
    return float((s.sum() - np.trace(s)) / (n * (n - 1)))
