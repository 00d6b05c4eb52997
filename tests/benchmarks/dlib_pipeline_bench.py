"""dlib's face encoder behind three front ends, on LFW View 2: edgeface's board alignment, dlib's chip on BlazeFace
boxes, and face_recognition's own pipeline.

    python tests/benchmarks/dlib_pipeline_bench.py [--pipelines board-short dlib-chip face_recognition]
        [--template-json FIT.json] [--full-template-json FIT.json] [--limit N] [--cache /work/runs/dlib_bench]
        [--pairs ../shared/data/lfw/pairs.txt] [--images lfw-deepfunneled] [--json]

Every pipeline ends in dlib's ResNet (``face_recognition_models``), so the figures differ only by how the 150x150
chip is made:

* ``board-short`` / ``board-full``: BlazeFace (short- or full-range) keypoints -> ``align_face(image, keypoints,
  150, TEMPLATE)`` (the fitted template of ``dlib_template_fit.py``) -> the encoder: what a board without dlib runs
  in front of a port of the ResNet.  ``board-full-fitted`` uses the template fitted on full-range keypoints.
* ``dlib-chip``: the shifted BlazeFace box -> dlib's 5-point predictor -> ``dlib.get_face_chip`` -> the encoder
  (edgeface's dlib distillation teacher); ``dlib-chip-cv2`` the same geometry resampled by OpenCV as the board is.
* ``face_recognition``: face_recognition 1.3.0's defaults reproduced with dlib calls: PIL decoding, the HOG
  detector with one upsampling, the largest box, the 5-point predictor, ``compute_face_descriptor(image, shape,
  num_jitters=1)``.

Photos without a face get edgeface evaluate's centre-crop fallback (counted); for ``face_recognition``, which
gives no encoding there, such pairs are also scored as non-matches.  Pairs are scored by cosine (the project's
protocol) and by -Euclidean distance (face_recognition's metric); accuracy is the 10-fold View 2 protocol, fold 10
uses the threshold of folds 1-9, TAR at FAR 1e-3 is pooled over all pairs.  Descriptors are cached per pipeline
under ``--cache`` (outside the repository), so a rerun only scores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

# dlib_template_fit.py sits beside this file: its chip geometry is shared, not repeated.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from dlib_template_fit import CHIP_PADDING, chip_transform, shifted_dlib_box  # noqa: E402

from edgeface.devices.probe import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))
DEFAULT_CACHE = Path(os.environ.get("EDGEFACE_RUNS", REPO.parent / "runs")) / "dlib_bench"
CACHE_VERSION = 1
CHIP_SIZE = 150
FOLD = 10
FAR = 1e-3
SAVE_EVERY = 250  # images between cache writes: an interrupted run loses at most this much work
# Fitted by dlib_template_fit.py (2,500 LFW photos, one per person, people of View 2 folds 1-9, seed 0): BlazeFace's
# image-left eye, image-right eye, nose tip and mouth centre in dlib's 150x150 chip (padding 0.25).
TEMPLATES = {
    "short": [[46.1322, 46.3866], [102.3370, 46.9603], [73.5710, 78.9567], [73.5115, 108.0266]],
    "full": [[46.4139, 46.1395], [101.8151, 46.9274], [73.6808, 79.9275], [73.6667, 107.6072]],
}
# A pair with a face that face_recognition cannot encode never matches: below every real score.  Cosine: -1 as
# edgeface's evaluation; distance: dlib descriptors are ~1.5 long, so no two are 100 apart.
NON_MATCH = {"cosine": -1.0, "euclidean": -100.0}


# --------------------------------------------------------------------------- one photo -> one descriptor


@dataclass
class Encoded:
    """One photo through a pipeline: the descriptor, the faces found, and whether the centre crop stood in."""

    descriptor: np.ndarray
    faces: int
    fallback: bool


class DlibModels:
    """dlib's shape predictor and encoder, loaded once and shared by the pipelines."""

    def __init__(self) -> None:
        import dlib

        from edgeface.distill.teachers import dlib_model_files
        from edgeface.runtime.bundle import sha256_file

        rec, landmarks = dlib_model_files()
        self.predictor = dlib.shape_predictor(str(landmarks))
        self.encoder = dlib.face_recognition_model_v1(str(rec))
        self.identity = {"encoder_sha256": sha256_file(rec), "landmarks_sha256": sha256_file(landmarks)}

    def encode_chip(self, chip: np.ndarray) -> np.ndarray:
        """The descriptor of a ready 150x150 RGB chip (num_jitters left at dlib's default)."""
        return np.asarray(self.encoder.compute_face_descriptor(np.ascontiguousarray(chip, np.uint8)), np.float32)

    def fallback(self, image: np.ndarray, faces: int = 0) -> Encoded:
        """edgeface evaluate's stand-in for a photo without a face: the centre crop, at the chip's size."""
        from edgeface.evaluate.pairs import centre_crop

        return Encoded(self.encode_chip(centre_crop(image, CHIP_SIZE)), faces, True)


class Pipeline:
    """A way from a photo file to a dlib descriptor; :meth:`identity` names everything its output depends on."""

    name = ""

    def __init__(self, models: DlibModels) -> None:
        self.models = models

    def identity(self) -> dict:
        from edgeface.evaluate.pairs import CENTRE_CROP_FRACTION

        return {"pipeline": self.name, "version": CACHE_VERSION, "chip": CHIP_SIZE,
                "fallback": f"centre crop {CENTRE_CROP_FRACTION}", **self.models.identity}

    def encode(self, path: Path) -> Encoded:  # pragma: no cover - abstract
        raise NotImplementedError


class BlazeFacePipeline(Pipeline):
    """Pipelines that start from BlazeFace's largest face (threads=1: the machine is shared)."""

    def __init__(self, models: DlibModels, detector_kind: str) -> None:
        super().__init__(models)
        from edgeface.runtime.detector import create_detector

        self.detector_kind = detector_kind
        self.detector = create_detector(detector_kind, threads=1)

    def identity(self) -> dict:
        from edgeface.runtime.bundle import sha256_file

        return {**super().identity(), "detector": self.detector_kind,
                "detector_sha256": sha256_file(self.detector.model_path)}

    def encode(self, path: Path) -> Encoded:
        from edgeface.runtime.detector import largest
        from edgeface.runtime.images import read_image

        image = read_image(path)
        detections = self.detector.detect(image)
        face = largest(detections)
        if face is None:
            return self.models.fallback(image)
        return Encoded(self.models.encode_chip(self.chip(image, face)), len(detections), False)

    def chip(self, image: np.ndarray, face) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class BoardPipeline(BlazeFacePipeline):
    """(a) BlazeFace keypoints -> edgeface's align_face onto the fitted template: no dlib before the encoder."""

    def __init__(self, models: DlibModels, detector_kind: str, template: Sequence, name: str) -> None:
        super().__init__(models, detector_kind)
        self.name = name
        self.template = np.asarray(template, np.float32)

    def identity(self) -> dict:
        return {**super().identity(), "template": self.template.round(4).tolist()}

    def chip(self, image: np.ndarray, face) -> np.ndarray:
        from edgeface.runtime.align import align_face

        return align_face(image, face.keypoints, CHIP_SIZE, self.template)


class DlibChipPipeline(BlazeFacePipeline):
    """(b) the shifted BlazeFace box -> dlib's 5-point predictor -> dlib's chip; ``resample="opencv"`` warps
    dlib's chip geometry with OpenCV as the board does, to tell geometry from resampling."""

    def __init__(self, models: DlibModels, resample: str = "dlib") -> None:
        super().__init__(models, "short")
        self.resample = resample
        self.name = "dlib-chip" if resample == "dlib" else "dlib-chip-cv2"

    def identity(self) -> dict:
        from edgeface.distill.teachers import DLIB_BOX_SHIFT

        return {**super().identity(), "box_shift": list(DLIB_BOX_SHIFT), "padding": CHIP_PADDING,
                "resample": self.resample}

    def chip(self, image: np.ndarray, face) -> np.ndarray:
        import cv2
        import dlib

        img = np.ascontiguousarray(image, np.uint8)
        shape = self.models.predictor(img, shifted_dlib_box(face.box))
        if self.resample == "dlib":
            return np.asarray(dlib.get_face_chip(img, shape, size=CHIP_SIZE, padding=CHIP_PADDING))
        matrix = chip_transform(dlib.get_face_chip_details(shape, size=CHIP_SIZE, padding=CHIP_PADDING))
        return cv2.warpAffine(img, matrix, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)


class FaceRecognitionPipeline(Pipeline):
    """(c) face_recognition 1.3.0's ``face_encodings(load_image_file(path))`` with its defaults, as dlib calls.

    Several faces: the largest HOG box (face_recognition returns one encoding per face; LFW's subject is the
    large central one).  No face: face_recognition returns no encoding; the centre-crop descriptor is kept
    beside the flag so the pair can be scored either way.
    """

    name = "face_recognition"
    UPSAMPLE = 1  # face_locations(img, number_of_times_to_upsample=1, model="hog")
    JITTERS = 1  # face_encodings(..., num_jitters=1)

    def __init__(self, models: DlibModels) -> None:
        super().__init__(models)
        import dlib

        self.detector = dlib.get_frontal_face_detector()

    def identity(self) -> dict:
        return {**super().identity(), "detector": "hog", "upsample": self.UPSAMPLE, "jitters": self.JITTERS,
                "decode": "PIL"}

    def encode(self, path: Path) -> Encoded:
        from PIL import Image

        # face_recognition.load_image_file: PIL, converted to RGB (same pixels as OpenCV's decoder on LFW).
        with Image.open(path) as im:
            image = np.array(im.convert("RGB"))
        boxes = list(self.detector(image, self.UPSAMPLE))
        if not boxes:
            return self.models.fallback(image)
        box = max(boxes, key=lambda r: r.width() * r.height())
        shape = self.models.predictor(image, box)
        vector = self.models.encoder.compute_face_descriptor(image, shape, self.JITTERS)
        return Encoded(np.asarray(vector, np.float32), len(boxes), False)


@dataclass(frozen=True)
class PipelineKind:
    """One row of the pipeline table."""

    name: str
    help: str
    build: Callable[[DlibModels, dict], Pipeline]


PIPELINES: dict[str, PipelineKind] = {k.name: k for k in (
    PipelineKind("board-short", "(a) short-range BlazeFace keypoints -> align_face(150, short template)",
                 lambda m, t: BoardPipeline(m, "short", t["short"], "board-short")),
    PipelineKind("board-full", "(a) full-range BlazeFace keypoints -> align_face(150, short template)",
                 lambda m, t: BoardPipeline(m, "full", t["short"], "board-full")),
    PipelineKind("board-full-fitted", "(a) full-range BlazeFace keypoints -> align_face(150, full template)",
                 lambda m, t: BoardPipeline(m, "full", t["full"], "board-full-fitted")),
    PipelineKind("dlib-chip", "(b) shifted BlazeFace box -> dlib 5-point predictor -> dlib.get_face_chip",
                 lambda m, t: DlibChipPipeline(m, "dlib")),
    PipelineKind("dlib-chip-cv2", "(b) dlib's chip geometry resampled by cv2.warpAffine (as on the board)",
                 lambda m, t: DlibChipPipeline(m, "opencv")),
    PipelineKind("face_recognition", "(c) HOG(upsample 1) -> 5-point predictor -> compute_face_descriptor(img, "
                 "shape, 1)", lambda m, t: FaceRecognitionPipeline(m)),
)}
DEFAULT_PIPELINES = ("board-short", "dlib-chip", "face_recognition")


# --------------------------------------------------------------------------- the descriptor cache


@dataclass
class Descriptors:
    """Cached output of one pipeline: per image key, the descriptor, faces found, fallback flag, seconds."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    faces: dict[str, int] = field(default_factory=dict)
    fallback: dict[str, bool] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, enc: Encoded, seconds: float) -> None:
        self.vectors[key], self.faces[key], self.fallback[key] = enc.descriptor, enc.faces, enc.fallback
        self.seconds[key] = seconds


def cache_path(cache_dir: Path, pipeline: Pipeline) -> Path:
    """One file per pipeline and configuration: any change of template, model or detector gets a new file."""
    digest = hashlib.sha256(json.dumps(pipeline.identity(), sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / f"{pipeline.name}-{digest}.npz"


def load_cache(path: Path) -> Descriptors:
    """The cached descriptors at ``path`` (empty when there is no file yet)."""
    out = Descriptors()
    if not path.is_file():
        return out
    with np.load(path) as z:
        # Each z[name] reads its array from the file again: once per array, not once per image.
        keys, vectors = z["keys"].tolist(), z["vectors"]
        faces, fallback, seconds = z["faces"].tolist(), z["fallback"].tolist(), z["seconds"].tolist()
    for i, key in enumerate(keys):
        out.vectors[key] = vectors[i]
        out.faces[key], out.fallback[key], out.seconds[key] = faces[i], fallback[i], seconds[i]
    return out


def save_cache(path: Path, d: Descriptors, identity: dict) -> None:
    """Write the cache atomically (a run killed mid-write keeps the previous file)."""
    from edgeface.fileio import atomic_output

    keys = list(d.vectors)
    with atomic_output(path, suffix=".npz") as tmp:
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([d.vectors[k] for k in keys]),
                 faces=np.array([d.faces[k] for k in keys], np.int32),
                 fallback=np.array([d.fallback[k] for k in keys], bool),
                 seconds=np.array([d.seconds[k] for k in keys], np.float64),
                 identity=np.array(json.dumps(identity, sort_keys=True)))


def describe_images(pipeline: Pipeline, keys: Sequence[str], images: Path, cache_dir: Path) -> Descriptors:
    """Descriptors of ``keys``, computed only where the cache lacks them; progress on stderr."""
    path = cache_path(cache_dir, pipeline)
    done = load_cache(path)
    todo = [k for k in keys if k not in done.vectors]
    print(f"{pipeline.name}: {len(keys) - len(todo)} of {len(keys)} images cached in {path}", file=sys.stderr)
    start = time.perf_counter()
    for i, key in enumerate(todo, 1):
        t0 = time.perf_counter()
        enc = pipeline.encode(images / f"{key}.jpg")
        done.add(key, enc, time.perf_counter() - t0)
        if i % SAVE_EVERY == 0 or i == len(todo):
            save_cache(path, done, pipeline.identity())
            rate = i / (time.perf_counter() - start)
            print(f"{pipeline.name}: {i}/{len(todo)} images, {rate:.1f} images/s, "
                  f"{(len(todo) - i) / rate / 60:.1f} min left", file=sys.stderr)
    return done


# --------------------------------------------------------------------------- scores and figures


def limited_pairs(pairs: list, per_fold: Optional[int]) -> list:
    """The first ``per_fold`` / 2 matched and mismatched pairs of every fold (all with None): a quick run keeps
    all 10 folds, so the 10-fold protocol still applies."""
    if per_fold is None:
        return pairs
    half = max(1, per_fold // 2)
    seen: dict = {}
    out = []
    for p in pairs:
        n = seen.get((p.fold, p.same), 0)
        if n < half:
            out.append(p)
            seen[(p.fold, p.same)] = n + 1
    return out


def pair_scores(pairs: Sequence, d: Descriptors, metric: str, no_face_matches: bool) -> np.ndarray:
    """Similarity of each pair: cosine, or -Euclidean distance (higher is "same" in both).

    ``no_face_matches`` False: a pair with a fallback image gets :data:`NON_MATCH` (face_recognition's user has
    no encoding for it) instead of the centre crop's score.
    """
    scores = np.empty(len(pairs), np.float64)
    for i, p in enumerate(pairs):
        if not no_face_matches and (d.fallback[p.a] or d.fallback[p.b]):
            scores[i] = NON_MATCH[metric]
            continue
        a, b = d.vectors[p.a].astype(np.float64), d.vectors[p.b].astype(np.float64)
        if metric == "cosine":
            scores[i] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        else:
            scores[i] = -float(np.linalg.norm(a - b))
    return scores


def figures(scores: np.ndarray, pairs: Sequence) -> dict:
    """10-fold accuracy (mean, std, fold 10 with the threshold of folds 1-9), pooled and cross-validated TAR at
    FAR 1e-3, through edgeface's protocol functions."""
    from edgeface.evaluate import protocols

    same = np.array([p.same for p in pairs], bool)
    folds = np.array([p.fold for p in pairs], np.int64)
    kf = protocols.kfold_verification(scores, same, folds)
    kt = protocols.kfold_tar_at_far(scores, same, folds, FAR)
    tar, threshold = protocols.tar_at_far(scores, same, FAR)
    fold10 = kf["accuracies"][kf["folds"].index(FOLD)] if FOLD in kf["folds"] else None
    return {"accuracy_mean": kf["mean"], "accuracy_std": kf["std"], "fold10": fold10,
            "fold10_threshold": kf["thresholds"][kf["folds"].index(FOLD)] if fold10 is not None else None,
            "tar_at_far": tar, "threshold_at_far": threshold, "tar_at_far_cv": kt["tar_mean"],
            "far_cv": kt["far_mean"], "auc": protocols.auc(scores, same)}


def counts(pairs: Sequence, d: Descriptors) -> dict:
    """Images and pairs affected by a missing face, images with several faces, and the speed."""
    keys = list(dict.fromkeys(k for p in pairs for k in (p.a, p.b)))
    fallback = {k for k in keys if d.fallback[k]}
    seconds = sum(d.seconds[k] for k in keys)
    return {"images": len(keys), "no_face_images": len(fallback),
            "no_face_pairs": sum(1 for p in pairs if p.a in fallback or p.b in fallback),
            "several_faces_images": sum(1 for k in keys if d.faces[k] > 1),
            "images_per_s": len(keys) / seconds if seconds else None, "no_face_list": sorted(fallback)}


def evaluate(pipeline_name: str, pairs: Sequence, d: Descriptors) -> list[dict]:
    """Rows for one pipeline: cosine and Euclidean; face_recognition also with its no-encoding pairs as
    non-matches (its headline) besides the centre-crop fallback."""
    base = counts(pairs, d)
    policies = ([("non-match", False), ("centre crop", True)] if pipeline_name == "face_recognition"
                else [("centre crop", True)])
    rows = []
    for metric in ("cosine", "euclidean"):
        for policy, matches in policies:
            row = {"pipeline": pipeline_name, "metric": metric, "no_face": policy, **base,
                   **figures(pair_scores(pairs, d, metric, matches), pairs)}
            rows.append(row)
    return rows


def print_table(rows: list[dict], total_s: float) -> None:
    """The results as a fixed-width table."""
    print(f"{'pipeline':18s} {'metric':9s} {'no face':11s} {'10-fold acc':>15s} {'fold 10':>8s} "
          f"{'TAR@1e-3':>9s} {'(cv)':>7s} {'no-face img/pairs':>17s} {'img/s':>6s}")
    for r in rows:
        speed = f"{r['images_per_s']:.1f}" if r["images_per_s"] else "-"
        fold10 = f"{100 * r['fold10']:7.2f}%" if r["fold10"] is not None else "       -"
        print(f"{r['pipeline']:18s} {r['metric']:9s} {r['no_face']:11s} "
              f"{100 * r['accuracy_mean']:6.2f} ± {100 * r['accuracy_std']:.2f}% {fold10} "
              f"{100 * r['tar_at_far']:8.2f}% {100 * r['tar_at_far_cv']:6.2f}% "
              f"{r['no_face_images']:>8d} / {r['no_face_pairs']:<6d} {speed:>6s}")
    print(f"{rows[0]['images'] if rows else 0} images; fold 10 uses the threshold of folds 1-9; TAR pooled over all "
          f"pairs (cv: threshold from the other folds); {total_s:.0f} s")


def time_pipelines(pipelines: Sequence[Pipeline], keys: Sequence[str], images: Path, count: int,
                   warmup: int = 5) -> dict:
    """Seconds per photo of each pipeline on ``count`` photos spread over ``keys``, the pipelines taking turns
    photo by photo, so a load that comes and goes on a shared machine falls on all of them alike."""
    sample = list(keys[:: max(1, len(keys) // count)])[:count]
    for key in sample[:warmup]:
        for p in pipelines:
            p.encode(images / f"{key}.jpg")
    seconds: dict[str, list[float]] = {p.name: [] for p in pipelines}
    load = os.getloadavg()[0]
    for key in sample:
        for p in pipelines:
            t0 = time.perf_counter()
            p.encode(images / f"{key}.jpg")
            seconds[p.name].append(time.perf_counter() - t0)
    rows = []
    for name, s in seconds.items():
        v = np.asarray(s)
        rows.append({"pipeline": name, "images": len(v), "median_s": float(np.median(v)),
                     "p90_s": float(np.percentile(v, 90)), "images_per_s": float(1.0 / np.median(v)),
                     "images_per_s_mean": float(len(v) / v.sum())})
    return {"rows": rows, "warmup": warmup, "load_before": load, "load_after": os.getloadavg()[0],
            "cpu": cpu_model()}


def print_timing(t: dict) -> None:
    """The interleaved timing as a table."""
    print(f"\ntiming: {t['rows'][0]['images']} photos each, pipelines in turn, {t['warmup']} warm-up photos, one "
          f"thread; {t['cpu']}; load average {t['load_before']:.2f} -> {t['load_after']:.2f}")
    for r in t["rows"]:
        print(f"  {r['pipeline']:18s} median {1000 * r['median_s']:6.1f} ms  p90 {1000 * r['p90_s']:6.1f} ms  "
              f"{r['images_per_s']:5.1f} images/s (mean {r['images_per_s_mean']:.1f})")


def read_template(path: Optional[Path], default: list) -> list:
    """The ``template`` of a dlib_template_fit.py --json file, or ``default``."""
    if path is None:
        return default
    try:
        template = json.loads(path.read_text())["template"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"error: {path} is not a dlib_template_fit.py --json result: {exc}") from None
    if np.asarray(template).shape != (4, 2):
        raise SystemExit(f"error: {path}: the template must be 4 (x, y) points")
    return template


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipelines", nargs="+", choices=list(PIPELINES), default=list(DEFAULT_PIPELINES),
                    help="; ".join(f"{k.name}: {k.help}" for k in PIPELINES.values()))
    ap.add_argument("--pairs", type=Path, default=DATA / "lfw" / "pairs.txt")
    ap.add_argument("--images", type=Path, default=DATA / "lfw" / "lfw-deepfunneled")
    ap.add_argument("--template-json", type=Path, help="dlib_template_fit.py --json output for short-range "
                    "keypoints (default: the template fitted on LFW folds 1-9)")
    ap.add_argument("--full-template-json", type=Path, help="the same, fitted on full-range keypoints")
    ap.add_argument("--limit", type=int, help="pairs per fold (half matched, half not) for a quick run")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="descriptor cache folder")
    ap.add_argument("--timing", type=int, metavar="N", help="also time the pipelines in turn on N photos")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)

    from edgeface.errors import UserError
    from edgeface.evaluate.pairs import read_pairs

    templates = {"short": read_template(args.template_json, TEMPLATES["short"]),
                 "full": read_template(args.full_template_json, TEMPLATES["full"])}
    start = time.perf_counter()
    try:
        pairs = limited_pairs(read_pairs(args.pairs), args.limit)
        keys = list(dict.fromkeys(k for p in pairs for k in (p.a, p.b)))
        models = DlibModels()
        rows, pipelines = [], []
        for name in args.pipelines:
            pipelines.append(PIPELINES[name].build(models, templates))
            rows += evaluate(name, pairs, describe_images(pipelines[-1], keys, args.images, args.cache))
        timing = time_pipelines(pipelines, keys, args.images, args.timing) if args.timing else None
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = time.perf_counter() - start
    if args.json:
        print(json.dumps({"rows": rows, "timing": timing, "templates": templates, "pairs": len(pairs),
                          "seconds": round(total, 1)}, indent=2))
    else:
        print_table([{k: v for k, v in r.items() if k != "no_face_list"} for r in rows], total)
        if timing:
            print_timing(timing)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
