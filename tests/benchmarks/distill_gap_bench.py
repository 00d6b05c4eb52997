"""Why a distilled student falls short of its teacher: too little training (it underfits) or too little data
(it memorises the training faces and does not carry over to new people)?

    python tests/benchmarks/distill_gap_bench.py --student RUN/model.keras --cache CACHE.sqlite \\
        --crops runs/default/lfw_crops [--images lfw-deepfunneled] [--exclude-people people.txt:10]
        [--teacher dlib] [--sample 1500] [--json]

Measures the student's agreement with its teacher as distillation trained it: the cosine between the student's
embedding of each aligned crop (from `edgeface data prepare`) and the teacher's cached embedding of the same
photo, centred on the training faces' mean as `edgeface distill` does.  Two figures: over ``--sample`` training
faces (people distillation saw) and over every cached face of the excluded people (never seen).  Similar
figures, both far below 1, say the student generalises what it learns and needs more training steps or
capacity; a high training figure with a low unseen one would say it needs more (or more varied) photos.
Only photos whose teacher embedding is in the cache count (distillation caches every training photo;
`distill_bench.py` adds the LFW pair photos of the held-out fold).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))


def cached_faces(images: Path, crops: Path, cache, excluded: set[str]) -> tuple[list, list]:
    """([(crop path, teacher vector)] of training people, the same of excluded people), cached photos only."""
    from edgeface.distill.cache import image_sha256
    from edgeface.runtime.images import is_image_file

    paths = [(person.name, f) for person in sorted(p for p in images.iterdir() if p.is_dir())
             for f in sorted(person.iterdir()) if is_image_file(f)]
    crop_of = {}
    for person, f in paths:
        found = [c for c in (crops / person).glob(f.stem + ".*") if is_image_file(c)]
        if found:
            crop_of[f] = found[0]
    hashes = {f: image_sha256(f) for f in crop_of}
    vectors = cache.get_many(set(hashes.values()))
    seen, unseen = [], []
    for person, f in paths:
        if f in crop_of and hashes[f] in vectors:
            (unseen if person in excluded else seen).append((crop_of[f], vectors[hashes[f]]))
    return seen, unseen


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", type=Path, required=True, help=".keras or .tflite student")
    ap.add_argument("--cache", type=Path, required=True, help="the teacher-embedding cache distillation used")
    ap.add_argument("--crops", type=Path, required=True, help="aligned crops of the same photos (data prepare)")
    ap.add_argument("--images", type=Path, default=DATA / "lfw" / "lfw-deepfunneled", help="the original photos")
    ap.add_argument("--exclude-people", default=str(DATA / "lfw" / "people.txt") + ":10",
                    help="the people distillation left out (as `edgeface distill --exclude-people`)")
    ap.add_argument("--teacher", default="dlib")
    ap.add_argument("--teacher-config", type=Path, default=None)
    ap.add_argument("--detector", default="short", help="the detector distillation used (part of the cache key)")
    ap.add_argument("--sample", type=int, default=1500, help="training faces to measure (random, seed 0)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from edgeface.data.dataset import read_people_file
    from edgeface.distill import data as ddata
    from edgeface.distill.cache import EmbeddingCache
    from edgeface.distill.distill import teacher_targets
    from edgeface.distill.teachers import load_teacher
    from edgeface.evaluate.embedders import make_embedder
    from edgeface.runtime.detector import create_detector
    from edgeface.runtime.images import read_image
    from edgeface.runtime.interpreter import l2_normalize

    teacher = load_teacher(args.teacher, args.teacher_config)
    identity = ddata.cache_identity(teacher, create_detector(args.detector, threads=1))
    with EmbeddingCache(args.cache, identity, teacher.dim) as cache:
        seen, unseen = cached_faces(args.images, args.crops, cache, read_people_file(args.exclude_people))
    if not seen or not unseen:
        raise SystemExit(f"need cached teacher embeddings of both groups: {len(seen)} training faces, "
                         f"{len(unseen)} of excluded people")
    # The very targets `edgeface distill` trains on: centred on the training faces' mean, re-normalised.
    faces = seen + unseen
    target, _ = teacher_targets(np.stack([v for _, v in faces]), np.arange(len(seen)), center=True)
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(seen), min(args.sample, len(seen)), replace=False))
    student = make_embedder(args.student)
    report = {"student": str(args.student), "teacher": teacher.name, "training_faces_cached": len(seen)}
    for name, index in (("training_people", sample), ("unseen_people", np.arange(len(seen), len(faces)))):
        crops = np.stack([read_image(faces[i][0]) for i in index])
        s = l2_normalize(np.concatenate([student.embed(crops[i:i + 256]) for i in range(0, len(crops), 256)]))
        cos = np.sum(s * target[index], axis=1)
        report[name] = {"faces": len(index), "cosine_mean": round(float(cos.mean()), 4),
                        "cosine_median": round(float(np.median(cos)), 4),
                        "cosine_p10": round(float(np.percentile(cos, 10)), 4)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name in ("training_people", "unseen_people"):
        r = report[name]
        print(f"{name.replace('_', ' ')}: {r['faces']} faces, student-teacher cosine mean {r['cosine_mean']:.3f}, "
              f"median {r['cosine_median']:.3f}, 10th percentile {r['cosine_p10']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
