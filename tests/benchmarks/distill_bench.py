"""Figures of distillation (issue: `edgeface distill`): the teacher's own LFW accuracy and speed, and the students'.

    python tests/benchmarks/distill_bench.py --teacher dlib --cache CACHE.sqlite [--fold 10] [--time-faces 50]
        [--student RUN/model.keras] [--student BUNDLE/model_int8.tflite ...] [--json]

Prints:
- the teacher's LFW View 2 verification accuracy on ``--fold`` (its threshold chosen on the other nine folds,
  as `edgeface evaluate` does) and the 10-fold mean, on the raw deep-funneled photos: BlazeFace finds the face,
  the teacher aligns it its own way (for dlib: 5-point landmarks and a 150x150 chip).  Embeddings go through the
  same on-disk cache as `edgeface distill`, so a cache filled by `edgeface distill --teacher-only` on LFW minus
  the fold's people makes only the fold's images cost teacher time;
- the teacher's time per face on this CPU (its own preparation + inference, detection excluded): median and p90
  over ``--time-faces`` faces timed one by one after a warm-up, without the cache;
- for each ``--student`` (.keras or .tflite, e.g. the distilled model and its int8 export): the same fold's
  accuracy through `edgeface.evaluate` and its time per face (embedding one aligned crop, median), and how
  many times faster than the teacher it is.

Run it on an idle machine: the timings are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))


def teacher_embeddings(teacher, keys: list[str], images: Path, cache_path: Path, detector: str) -> dict:
    """Unit teacher embeddings of LFW keys (None where no face was found), through the cache."""
    from edgeface.console import progress_bar
    from edgeface.distill import data as ddata
    from edgeface.distill.cache import EmbeddingCache
    from edgeface.runtime.detector import create_detector
    from edgeface.runtime.interpreter import l2_normalize

    def make():
        return create_detector(detector, threads=1)

    items = [ddata.ImageItem(images / f"{k}.jpg") for k in keys]
    with EmbeddingCache(cache_path, ddata.cache_identity(teacher, make()), teacher.dim) as cache, \
            progress_bar("teacher embeddings of the pair images") as advance:
        d = ddata.collect(items, teacher, cache, make, workers=2, progress=advance)
    by_path = dict(zip(map(str, d.paths), l2_normalize(d.teacher)))
    return {k: by_path.get(str(it.path)) for k, it in zip(keys, items)}, d


def time_teacher(teacher, keys: list[str], images: Path, n: int, detector: str) -> list[float]:
    """Milliseconds per face of the teacher alone (prepare + run), one face at a time, after 3 warm-up faces."""
    from edgeface.runtime.detector import create_detector
    from edgeface.runtime.images import read_image

    det = create_detector(detector, threads=1)
    faces = []
    for k in keys:
        image = read_image(images / f"{k}.jpg")
        found = det.detect(image)
        if found:
            faces.append((image, max(found, key=lambda d: d.area)))
        if len(faces) >= n + 3:
            break
    for image, d in faces[:3]:
        teacher.embed(image, d)
    out = []
    for image, d in faces[3:]:
        t0 = time.perf_counter()
        teacher.embed(image, d)
        out.append(1000 * (time.perf_counter() - t0))
    return out


def time_student(path: Path, n: int = 50) -> list[float]:
    """Milliseconds per face of a .keras/.tflite student embedding one aligned 112x112 crop."""
    from edgeface.evaluate.embedders import make_embedder

    emb = make_embedder(path, threads=None)
    crop = np.random.default_rng(0).integers(0, 255, (1, 112, 112, 3), dtype=np.uint8)
    for _ in range(5):
        emb.embed(crop)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        emb.embed(crop)
        out.append(1000 * (time.perf_counter() - t0))
    return out


def p90(values: list[float]) -> float:
    return float(np.percentile(values, 90)) if values else float("nan")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default="dlib", help="teacher spec (as `edgeface distill --teacher`)")
    ap.add_argument("--teacher-config", type=Path, default=None)
    ap.add_argument("--cache", type=Path, required=True, help="teacher-embedding cache (SQLite)")
    ap.add_argument("--pairs", type=Path, default=DATA / "lfw" / "pairs.txt")
    ap.add_argument("--images", type=Path, default=DATA / "lfw" / "lfw-deepfunneled")
    ap.add_argument("--fold", type=int, default=10)
    ap.add_argument("--detector", default="short")
    ap.add_argument("--time-faces", type=int, default=50)
    ap.add_argument("--student", type=Path, action="append", default=[], help=".keras or .tflite (repeatable)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from edgeface.distill.teachers import load_teacher
    from edgeface.evaluate import protocols
    from edgeface.evaluate.pairs import read_pairs
    from edgeface.evaluate.verification import pair_scores

    pairs = read_pairs(args.pairs)
    keys = list(dict.fromkeys(k for p in pairs for k in (p.a, p.b)))
    teacher = load_teacher(args.teacher, args.teacher_config)
    embeddings, d = teacher_embeddings(teacher, keys, args.images, args.cache, args.detector)
    scores = pair_scores(pairs, embeddings)
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    kf = protocols.kfold_verification(scores, same, folds)
    at = kf["folds"].index(args.fold)
    ms = time_teacher(teacher, keys, args.images, args.time_faces, args.detector)
    report = {
        "teacher": teacher.name, "pairs": str(args.pairs), "fold": args.fold,
        "fold_accuracy": kf["accuracies"][at], "fold_threshold": kf["thresholds"][at],
        "threshold_source": "best on the other folds (cosine)", "accuracy_10fold_mean": kf["mean"],
        "accuracy_10fold_std": kf["std"], "images": len(keys), "no_face": sum(v is None for v in embeddings.values()),
        "teacher_computed": d.teacher_computed, "cache_hits": d.cache_hits,
        "teacher_ms_per_face_median": statistics.median(ms), "teacher_ms_per_face_p90": p90(ms),
        "timed_faces": len(ms), "students": [],
    }
    if args.student:
        from edgeface.evaluate.embedders import make_embedder
        from edgeface.evaluate.pairs import PairImages
        from edgeface.evaluate.verification import evaluate_pairs

        pair_images = PairImages(args.images, detector=args.detector)
        for path in args.student:
            r = evaluate_pairs(make_embedder(path), pairs, pair_images, folds=args.fold)
            sms = time_student(path)
            report["students"].append({"model": str(path), "fold_accuracy": r.fold_accuracies[0],
                                       "fold_threshold": r.fold_thresholds[0],
                                       "ms_per_face_median": statistics.median(sms),
                                       "speedup_vs_teacher": statistics.median(ms) / statistics.median(sms)})
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from edgeface.console import print_table

    rows = [[report["teacher"] + " (teacher)", f"{100 * report['fold_accuracy']:.2f} %",
             f"{100 * report['accuracy_10fold_mean']:.2f} ± {100 * report['accuracy_10fold_std']:.2f} %",
             f"{report['teacher_ms_per_face_median']:.1f} (p90 {report['teacher_ms_per_face_p90']:.1f})", "1x"]]
    for s in report["students"]:
        rows.append([s["model"], f"{100 * s['fold_accuracy']:.2f} %", "-", f"{s['ms_per_face_median']:.2f}",
                     f"{s['speedup_vs_teacher']:.0f}x"])
    print_table(f"LFW View 2 fold {args.fold} (600 pairs, threshold from the other folds)",
                ["model", f"fold {args.fold} accuracy", "10-fold mean", "ms/face", "speed"], rows)
    print(f"pair images: {report['images']} ({report['no_face']} without a face), teacher embeddings "
          f"{report['cache_hits']} cached + {report['teacher_computed']} computed; teacher time over "
          f"{report['timed_faces']} faces, detection excluded", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
