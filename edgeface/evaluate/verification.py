"""Running a model over a protocol: pair verification (LFW View 2) and closed-set identification.

The numbers come from :mod:`edgeface.evaluate.protocols`; this module only turns
images into embeddings (through any :mod:`~edgeface.evaluate.embedders` object)
and embeddings into scores.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np

from edgeface.errors import UserError
from edgeface.evaluate import protocols
from edgeface.evaluate.pairs import Pair, PairImages

EMBED_CHUNK = 256  # images aligned and embedded per step (progress granularity, bounded memory)
NO_FACE_SCORE = -1.0  # a prepared image without a face cannot match anything: lowest cosine
THRESHOLD_OTHER_FOLDS = "best on the other folds"
THRESHOLD_TEST_FOLD = "chosen on the test fold (optimistic)"

Progress = Optional[Callable[[int, int], None]]


@dataclass
class VerificationResult:
    """Verification figures on the evaluated folds; arrays (per pair) are left out of :meth:`to_dict`."""

    model: str
    n_pairs: int
    n_genuine: int
    n_impostor: int
    n_images: int
    folds: list[int]
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    threshold_source: str
    accuracy_mean: float
    accuracy_std: Optional[float]  # population std over the evaluated folds; None for one fold
    auc: float
    far: float
    tar_at_far: float  # pooled over the evaluated pairs, threshold set on them too (optimistic)
    threshold_at_far: float
    best_threshold: float  # best on the evaluated pairs themselves (optimistic); fold_thresholds are the ones used
    best_accuracy: float
    no_face: int  # images without a detected face (prepared crops: their pairs score NO_FACE_SCORE)
    no_face_images: list[str]
    images: str
    align_seconds: float
    embed_seconds: float
    no_face_pairs: int = 0  # pairs with at least one such image
    # TAR at `far` with the threshold set on the other folds, mean/std over the evaluated folds, and the FAR it
    # reached on them (None for a one-fold file)
    tar_at_far_cv: Optional[float] = None
    tar_at_far_cv_std: Optional[float] = None
    far_cv: Optional[float] = None
    scores: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    same: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, bool))
    pair_folds: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))

    ARRAYS = ("scores", "same", "pair_folds")

    @property
    def far_resolution(self) -> float:
        """The smallest non-zero FAR these pairs can measure (one impostor pair)."""
        return 1.0 / self.n_impostor if self.n_impostor else float("nan")

    def roc(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(far, tar, thresholds) over the evaluated pairs."""
        return protocols.roc_curve(self.scores, self.same)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in self.ARRAYS}
        d["far_resolution"] = self.far_resolution
        return d


def select_folds(pairs: Sequence[Pair], folds) -> list[int]:
    """The fold ids to evaluate (all when ``folds`` is None); :class:`UserError` for a fold not in the file."""
    available = sorted({p.fold for p in pairs})
    if folds is None:
        return available
    wanted = [int(folds)] if isinstance(folds, (int, np.integer)) else sorted({int(f) for f in folds})
    missing = [f for f in wanted if f not in available]
    if missing:
        span = f"fold {available[0]}" if len(available) == 1 else f"folds {available[0]}-{available[-1]}"
        raise UserError(f"the pairs file has {span}; fold {missing[0]} does not exist")
    return wanted


def embed_keys(embedder, images: PairImages, keys: Sequence[str], progress: Progress = None,
               timings: Optional[dict] = None) -> dict[str, Optional[np.ndarray]]:
    """Embeddings of unique ``keys`` (``None`` where a prepared folder has no face for the image)."""
    keys = list(dict.fromkeys(keys))
    out: dict[str, Optional[np.ndarray]] = {}
    align_s = embed_s = 0.0
    for start in range(0, len(keys), EMBED_CHUNK):
        chunk = keys[start : start + EMBED_CHUNK]
        t0 = time.perf_counter()
        crops = images.crops(chunk, spec=getattr(embedder, "spec", None))
        t1 = time.perf_counter()
        present = [i for i, c in enumerate(crops) if c is not None]
        if present:
            emb = embedder.embed(np.stack([crops[i] for i in present]))
            broken = ~np.isfinite(emb).all(axis=1)
            if broken.any():
                # NaN scores sort and threshold silently: every accuracy computed from them would be noise
                name = getattr(embedder, "name", type(embedder).__name__)
                first = chunk[present[int(np.argmax(broken))]]
                raise UserError(f"{name} gives NaN or infinite embeddings ({int(broken.sum())} of {len(present)} "
                                f"faces in this batch, first {first}): its weights are broken, e.g. by a training "
                                "run that diverged; train or export it again")
            for j, i in enumerate(present):
                out[chunk[i]] = emb[j]
        for i, c in enumerate(crops):
            if c is None:
                out[chunk[i]] = None
        embed_s += time.perf_counter() - t1
        align_s += t1 - t0
        if progress:
            progress(min(start + EMBED_CHUNK, len(keys)), len(keys))
    if timings is not None:
        timings["align"] = timings.get("align", 0.0) + align_s
        timings["embed"] = timings.get("embed", 0.0) + embed_s
    return out


def pair_scores(pairs: Sequence[Pair], embeddings: dict[str, Optional[np.ndarray]],
                second: Optional[dict[str, Optional[np.ndarray]]] = None) -> np.ndarray:
    """Cosine similarity of each pair (embeddings are unit length); :data:`NO_FACE_SCORE` without a face.

    ``second``, when given, embeds each pair's second image (the first still comes from ``embeddings``): two
    ways of embedding the same faces, e.g. an enrolled photo flip-averaged against a plain camera face."""
    second = embeddings if second is None else second
    scores = np.empty(len(pairs), np.float64)
    for i, p in enumerate(pairs):
        a, b = embeddings[p.a], second[p.b]
        scores[i] = NO_FACE_SCORE if a is None or b is None else float(np.dot(a, b))
    return scores


def evaluate_pairs(embedder, pairs: Sequence[Pair], images: PairImages, folds: Union[int, Iterable[int], None] = None,
                   far: float = 1e-3, progress: Progress = None) -> VerificationResult:
    """Verification accuracy of ``embedder`` on ``pairs`` (the LFW View 2 protocol for a 10-fold file).

    * Several folds: each evaluated fold's accuracy uses the threshold that is best on
      all the *other* folds (``folds=10`` scores fold 10 with the threshold of folds
      1-9, so every pair is still embedded).  Mean and std are over the evaluated folds.
    * A file with one fold (View 1 ``pairsDevTest.txt``, a custom list): there is
      nothing to choose the threshold on but the test pairs themselves, so the
      accuracy is at the best threshold on that fold, labelled
      :data:`THRESHOLD_TEST_FOLD` -- an optimistic figure.

    AUC, TAR at ``far``, the threshold at ``far`` and the best threshold are computed
    over the pairs of the evaluated folds pooled.  ``progress(done, total)`` counts images.
    """
    if not pairs:
        raise UserError("the pairs file lists no pairs")
    evaluated = select_folds(pairs, folds)
    timings: dict = {}
    embeddings = embed_keys(embedder, images, [k for p in pairs for k in (p.a, p.b)], progress, timings)
    scores = pair_scores(pairs, embeddings)
    same = np.array([p.same for p in pairs], bool)
    pair_folds = np.array([p.fold for p in pairs], np.int64)

    all_folds = sorted(set(pair_folds.tolist()))
    if len(all_folds) >= 2:
        kf = protocols.kfold_verification(scores, same, pair_folds)
        by_fold = dict(zip(kf["folds"], zip(kf["accuracies"], kf["thresholds"])))
        fold_acc = [by_fold[f][0] for f in evaluated]
        fold_thr = [by_fold[f][1] for f in evaluated]
        source = THRESHOLD_OTHER_FOLDS
    else:
        thr, acc = protocols.best_threshold(scores, same)
        fold_acc, fold_thr, source = [acc], [thr], THRESHOLD_TEST_FOLD
    cv = None
    if len(all_folds) >= 2:
        kt = protocols.kfold_tar_at_far(scores, same, pair_folds, far)
        picked = [i for i, f in enumerate(kt["folds"]) if f in evaluated]
        cv = ([kt["tars"][i] for i in picked], [kt["fars"][i] for i in picked])

    mask = np.isin(pair_folds, evaluated)
    s, y = scores[mask], same[mask]
    if y.all() or not y.any():
        raise UserError("the evaluated pairs need both same-person and different-person pairs")
    tar, thr_far = protocols.tar_at_far(s, y, far)
    best_thr, best_acc = protocols.best_threshold(s, y)
    keys = {k for p, m in zip(pairs, mask) if m for k in (p.a, p.b)}
    no_face = sorted(k for k in images.no_face if k in keys)
    faceless = set(no_face)
    no_face_pairs = sum(1 for p, m in zip(pairs, mask) if m and (p.a in faceless or p.b in faceless))
    return VerificationResult(
        model=getattr(embedder, "name", type(embedder).__name__),
        n_pairs=int(mask.sum()),
        n_genuine=int(y.sum()),
        n_impostor=int((~y).sum()),
        n_images=len(keys),
        folds=evaluated,
        fold_accuracies=fold_acc,
        fold_thresholds=fold_thr,
        threshold_source=source,
        accuracy_mean=float(np.mean(fold_acc)),
        accuracy_std=float(np.std(fold_acc)) if len(fold_acc) > 1 else None,
        auc=protocols.auc(s, y),
        far=float(far),
        tar_at_far=tar,
        threshold_at_far=thr_far,
        best_threshold=best_thr,
        best_accuracy=best_acc,
        no_face=len(no_face),
        no_face_images=no_face,
        images=images.source,
        align_seconds=round(timings.get("align", 0.0), 2),
        embed_seconds=round(timings.get("embed", 0.0), 2),
        no_face_pairs=no_face_pairs,
        tar_at_far_cv=float(np.nanmean(cv[0])) if cv else None,
        tar_at_far_cv_std=float(np.nanstd(cv[0])) if cv and len(cv[0]) > 1 else None,
        far_cv=float(np.nanmean(cv[1])) if cv else None,
        scores=s,
        same=y,
        pair_folds=pair_folds[mask],
    )


def _identity_keys(root: Path) -> tuple[list[str], list[str]]:
    from edgeface.data.dataset import scan_identity_folder

    items = scan_identity_folder(root)
    return [str(path.relative_to(root)) for _, path in items], [identity for identity, _ in items]


def evaluate_identification(embedder, gallery_dir: str | os.PathLike, probe_dir: str | os.PathLike,
                            detector: str = "auto", progress: Progress = None) -> dict:
    """Closed-set rank-1 identification: each probe image is matched to its nearest gallery image.

    Both folders are identity folders (``DIR/<person>/<image>``) of raw photographs
    (faces detected and aligned, centre crop where none is found) or of crops from
    ``edgeface data prepare``.  Probes of people absent from the gallery cannot be
    identified in a closed set: they are left out and counted.
    """
    gallery_dir, probe_dir = Path(gallery_dir), Path(probe_dir)
    g_images, p_images = PairImages(gallery_dir, detector), PairImages(probe_dir, detector)
    g_keys, g_ids = _identity_keys(gallery_dir)
    p_keys, p_ids = _identity_keys(probe_dir)
    # A probe that is a gallery image matches itself at cosine 1: it would count as identified for free.
    g_files = {os.path.realpath(gallery_dir / k) for k in g_keys}
    in_gallery = [i for i, k in enumerate(p_keys) if os.path.realpath(probe_dir / k) in g_files]
    if len(in_gallery) == len(p_keys):
        raise UserError(f"every probe image in {probe_dir} is also in the gallery {gallery_dir}: give probe photos "
                        "the gallery does not hold")
    skip = set(in_gallery)
    known = set(g_ids)
    kept = [i for i, ident in enumerate(p_ids) if ident in known and i not in skip]
    if not kept:
        raise UserError(f"no probe identity in {probe_dir} is in the gallery {gallery_dir}: "
                        "folder names must match between gallery and probe")
    total = len(g_keys) + len(kept)

    def stage(offset: int):
        return (lambda done, _n: progress(offset + done, total)) if progress else None

    timings: dict = {}
    g_emb = embed_keys(embedder, g_images, g_keys, stage(0), timings)
    p_emb = embed_keys(embedder, p_images, [p_keys[i] for i in kept], stage(len(g_keys)), timings)
    names = sorted(known)
    index = {n: i for i, n in enumerate(names)}
    gallery = np.stack([g_emb[k] for k in g_keys])
    probe = np.stack([p_emb[p_keys[i]] for i in kept])
    g_labels = np.array([index[n] for n in g_ids])
    p_labels = np.array([index[p_ids[i]] for i in kept])
    accuracy = protocols.rank1(gallery, g_labels, probe, p_labels)
    return {
        "model": getattr(embedder, "name", type(embedder).__name__),
        "rank1": accuracy,
        "correct": int(round(accuracy * len(kept))),
        "n_probe": len(kept),
        "n_gallery": len(g_keys),
        "gallery_identities": len(names),
        "probe_unknown_excluded": len(p_keys) - len(kept) - len(skip),
        "probe_in_gallery_excluded": len(skip),
        "chance": 1.0 / len(names),
        "no_face": len(g_images.no_face) + len(p_images.no_face),
        "no_face_images": sorted(g_images.no_face) + sorted(p_images.no_face),
        "images": g_images.source if g_images.source == p_images.source else f"{g_images.source} / {p_images.source}",
        "align_seconds": round(timings.get("align", 0.0), 2),
        "embed_seconds": round(timings.get("embed", 0.0), 2),
    }


class FileAccuracy:
    """Verification accuracy of TFLite files on one pairs list: what ``edgeface benchmark --pairs`` adds to each
    file's latency row.

    Built once before anything is measured (a bad pairs file fails at once), then called per file.  Each file is
    fed faces aligned as its bundle's manifest says, through the runtime's embedder, which takes the delegate: an
    ``edgetpu_compiled`` file runs only on the TPU.
    """

    def __init__(self, pairs_file: str | os.PathLike, images: str | os.PathLike, detector: str = "auto",
                 backend: Optional[str] = None, delegate: Optional[str] = None) -> None:
        from edgeface.evaluate.pairs import read_pairs

        self.pairs = read_pairs(pairs_file)
        self.images = PairImages(images, detector=detector, backend=backend)
        self.backend = backend
        self.delegate = delegate

    def __call__(self, path: str | os.PathLike, threads: Optional[int] = None) -> float:
        """Mean 10-fold accuracy of the file at ``path``."""
        from edgeface.runtime.facemodel import spec_for_model_file
        from edgeface.runtime.interpreter import Embedder

        embedder = Embedder(path, threads=threads, backend=self.backend, delegate=self.delegate,
                            spec=spec_for_model_file(path)[0])
        return evaluate_pairs(embedder, self.pairs, self.images).accuracy_mean
