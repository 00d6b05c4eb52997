"""Face-recognition evaluation protocols as pure numpy functions (no model needed to test them)."""

from __future__ import annotations

import numpy as np


def rank1(gallery: np.ndarray, gallery_labels: np.ndarray, probe: np.ndarray, probe_labels: np.ndarray) -> float:
    """Closed-set rank-1 identification: fraction of probes whose most similar gallery embedding
    (cosine; inputs L2-normalised) has the probe's label."""
    gallery = np.asarray(gallery, np.float32)
    probe = np.asarray(probe, np.float32)
    if len(probe) == 0 or len(gallery) == 0:
        raise ValueError("rank-1 needs a non-empty gallery and probe set")
    best = np.argmax(probe @ gallery.T, axis=1)
    return float(np.mean(np.asarray(gallery_labels)[best] == np.asarray(probe_labels)))
