"""Matching (edgeface.runtime.matcher): the best identity above the threshold, else unknown; one face among 100k."""

from __future__ import annotations

import numpy as np
import pytest

from edgeface.runtime.matcher import Matcher

# Every test in its own folder: `edgeface run` picks up ./gallery.npz when present.
pytestmark = [pytest.mark.board, pytest.mark.usefixtures("in_tmp_dir")]


def test_matcher_best_identity_above_threshold_else_unknown():
    emb = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0]], np.float32)
    m = Matcher(emb, ["ada", "ada", "grace"], threshold=0.8)
    q = np.array([[2, 0.1, 0], [0, 1, 0.2], [0, 0, 1], [0.6, 0.6, 0.5]], np.float32)  # not unit length
    out = m.match(q)
    assert [r.identity for r in out] == ["ada", "grace", "unknown", "unknown"]
    assert out[0].score == pytest.approx(2 / np.linalg.norm([2, 0.1, 0]), abs=1e-5)
    assert out[2].nearest in ("ada", "grace") and out[2].score == pytest.approx(0.0, abs=1e-6)
    assert out[3].nearest == "ada" and 0 < out[3].score < 0.8
    empty = Matcher(np.zeros((0, 3), np.float32), [], 0.5)
    assert [r.identity for r in empty.match(q[:2])] == ["unknown", "unknown"]
    assert m.match(np.zeros((0, 3))) == []


def test_matcher_finds_the_one_enrolled_face_among_100k():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(100_000, 128)).astype(np.float32)
    labels = [f"p{i // 4}" for i in range(len(emb))]
    m = Matcher(emb, labels, threshold=0.6)
    queries = emb[[73_421, 5]] + rng.normal(scale=0.3, size=(2, 128)).astype(np.float32)
    out = m.match(np.vstack([queries, rng.normal(size=(1, 128))]))
    assert [r.identity for r in out[:2]] == ["p18355", "p1"]
    assert out[2].identity == "unknown"  # random directions in 128-d are nearly orthogonal to everyone
