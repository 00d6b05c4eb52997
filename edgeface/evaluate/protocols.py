"""Face-recognition evaluation protocols as pure numpy functions (no model needed to test them).

Conventions shared by every function here:

* ``scores`` are similarities (cosine of L2-normalised embeddings): higher means
  "more likely the same person".  A pair is accepted as "same" when
  ``score >= threshold``.
* ``same`` is a boolean array: True for a genuine (same-person) pair, False for
  an impostor pair.
* FAR (false accept rate) is the fraction of impostor pairs accepted, TAR (true
  accept rate) the fraction of genuine pairs accepted.

Scores are handled in float64 so thresholds built with ``np.nextafter`` sit
strictly between neighbouring float32 scores.
"""

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


def _check(scores, same) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float64).reshape(-1)
    same = np.asarray(same, bool).reshape(-1)
    if scores.shape != same.shape:
        raise ValueError(f"scores ({scores.size}) and labels ({same.size}) differ in length")
    if scores.size == 0:
        raise ValueError("no pairs to evaluate")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    return scores, same


def _need_both(same: np.ndarray) -> None:
    if same.all() or not same.any():
        raise ValueError("this measure needs both genuine (same) and impostor (different) pairs")


def accuracy_at(scores, same, threshold: float) -> float:
    """Fraction of pairs classified correctly when ``score >= threshold`` means "same"."""
    scores, same = _check(scores, same)
    return float(np.mean((scores >= threshold) == same))


def best_threshold(scores, same) -> tuple[float, float]:
    """The threshold with the highest verification accuracy on these pairs, and that accuracy.

    Every distinct way of splitting the sorted scores is tried: accept all, accept
    none, and a cut half way between each pair of neighbouring distinct scores
    (the mid-point generalises better to new pairs than a cut right at a score).
    Among equally accurate cuts the lowest threshold wins.
    """
    scores, same = _check(scores, same)
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order]
    n = s.size
    # Cut i accepts s[i:]: correct = genuine pairs at or above i + impostor pairs below i.
    genuine_above = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    impostor_below = np.concatenate([[0], np.cumsum(~y)])
    correct = genuine_above + impostor_below  # length n + 1, cut i for i = 0..n
    # Only cuts between distinct values are realisable (equal scores fall on the same side).
    valid = np.ones(n + 1, bool)
    valid[1:n] = s[1:] > s[:-1]
    correct = np.where(valid, correct, -1)
    i = int(np.argmax(correct))
    if i == 0:
        threshold = s[0]
    elif i == n:
        threshold = np.nextafter(s[-1], np.inf)
    else:
        threshold = (s[i - 1] + s[i]) / 2.0
        if threshold <= s[i - 1]:  # neighbours one ulp apart: the mid-point rounds down onto s[i-1]
            threshold = s[i]
    return float(threshold), float(correct[i] / n)


def kfold_verification(scores, same, folds) -> dict:
    """The LFW View 2 protocol: for each fold, pick the best threshold on the *other* folds and
    measure accuracy on this one.

    Returns ``{"folds": [fold ids], "accuracies": [...], "thresholds": [...], "mean", "std"}``;
    ``std`` is the population standard deviation over folds (``np.std``), as in the
    reference LFW evaluation code of FaceNet and InsightFace.
    """
    scores, same = _check(scores, same)
    folds = np.asarray(folds).reshape(-1)
    if folds.shape != scores.shape:
        raise ValueError(f"fold ids ({folds.size}) and scores ({scores.size}) differ in length")
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise ValueError("k-fold verification needs at least two folds")
    accuracies, thresholds = [], []
    for k in fold_ids:
        test = folds == k
        threshold, _ = best_threshold(scores[~test], same[~test])
        thresholds.append(threshold)
        accuracies.append(float(np.mean((scores[test] >= threshold) == same[test])))
    acc = np.asarray(accuracies)
    return {
        "folds": [v.item() for v in fold_ids],
        "accuracies": accuracies,
        "thresholds": thresholds,
        "mean": float(acc.mean()),
        "std": float(acc.std()),
    }


def kfold_tar_at_far(scores, same, folds, far: float) -> dict:
    """TAR at ``far`` cross-validated like the accuracy: for each fold, the threshold at ``far`` is set on
    the impostor pairs of the *other* folds, then TAR and the FAR actually reached are measured on this one
    (FaceNet's validation-rate protocol).  The pooled :func:`tar_at_far` sets the threshold on the very pairs
    it measures, so it is the optimistic one; this is what a threshold fixed in advance delivers.

    Returns ``{"folds", "tars", "fars", "thresholds", "tar_mean", "tar_std", "far_mean"}`` (std over folds,
    population, as for accuracy).
    """
    scores, same = _check(scores, same)
    folds = np.asarray(folds).reshape(-1)
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise ValueError("k-fold TAR at FAR needs at least two folds")
    tars, fars, thresholds = [], [], []
    for k in fold_ids:
        test = folds == k
        threshold = threshold_at_far(scores[~test], same[~test], far)
        accept = scores[test] >= threshold
        thresholds.append(threshold)
        tars.append(float(np.mean(accept[same[test]])) if same[test].any() else float("nan"))
        fars.append(float(np.mean(accept[~same[test]])) if (~same[test]).any() else float("nan"))
    return {"folds": [v.item() for v in fold_ids], "tars": tars, "fars": fars, "thresholds": thresholds,
            "tar_mean": float(np.nanmean(tars)), "tar_std": float(np.nanstd(tars)), "far_mean": float(np.nanmean(fars))}


def roc_curve(scores, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points for every distinct threshold, from accepting nothing to accepting everything.

    Returns ``(far, tar, thresholds)``, each of length (distinct scores + 1); the
    first point is (0, 0) at threshold +inf, the last (1, 1) at the lowest score.
    """
    scores, same = _check(scores, same)
    _need_both(same)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    # Last index of each run of equal scores: tied pairs enter the accepted set together.
    ends = np.r_[np.flatnonzero(s[1:] < s[:-1]), s.size - 1]
    tp = np.cumsum(y)[ends]
    fp = np.cumsum(~y)[ends]
    far = np.r_[0.0, fp / (~y).sum()]
    tar = np.r_[0.0, tp / y.sum()]
    thresholds = np.r_[np.inf, s[ends]]
    return far, tar, thresholds


def auc(scores, same) -> float:
    """Area under the ROC curve (trapezoids; ties count half, like the Mann-Whitney statistic)."""
    far, tar, _ = roc_curve(scores, same)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def threshold_at_far(scores, same, far: float) -> float:
    """The smallest threshold whose false accept rate on the impostor pairs is <= ``far``.

    With ``n`` impostor pairs at most ``k = floor(far * n)`` of them may be accepted,
    so the threshold sits one float step above the (k+1)-th highest impostor score.
    When ``far`` allows every impostor, the lowest score is returned (accept all).
    """
    scores, same = _check(scores, same)
    _need_both(same)
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"FAR must be within [0, 1], got {far}")
    impostor = np.sort(scores[~same])[::-1]
    allowed = int(np.floor(far * impostor.size + 1e-9))  # 1e-3 * 3000 must give 3, not 2.9999
    if allowed >= impostor.size:
        return float(scores.min())
    return float(np.nextafter(impostor[allowed], np.inf))


def tar_at_far(scores, same, far: float) -> tuple[float, float]:
    """True accept rate at the threshold given by :func:`threshold_at_far`; returns (tar, threshold)."""
    threshold = threshold_at_far(scores, same, far)
    scores, same = _check(scores, same)
    return float(np.mean(scores[same] >= threshold)), threshold
