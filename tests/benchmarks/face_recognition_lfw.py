"""face_recognition 1.3.0 itself on LFW View 2: the baseline the default model is compared with.

    pip install --no-deps face_recognition==1.3.0     # its other requirements come with edgeface[distill]
    python tests/benchmarks/face_recognition_lfw.py [--json]

Every image of pairs.txt through ``face_recognition.face_encodings(load_image_file(path))`` with its defaults
(HOG detector upsampled once, 5-point landmarks, one jitter), the first encoding of each image (what its users
take), Euclidean distance; the 10-fold View 2 protocol and TAR at FAR 1e-3 (pooled) from edgeface's evaluation
code.  Images in which it finds no face have no encoding: their pairs are scored as no match (``non-match``), or
left out (``left out``).  ~13 min on 2 cores.  Not a dependency of edgeface: install it to run this.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))
NO_MATCH_DISTANCE = 9.0  # beyond any real distance between dlib descriptors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        import face_recognition
    except ImportError:
        raise SystemExit("needs face_recognition: pip install --no-deps face_recognition==1.3.0") from None
    from edgeface.evaluate import protocols
    from edgeface.evaluate.pairs import read_pairs

    lfw = DATA / "lfw"
    pairs = read_pairs(lfw / "pairs.txt")
    keys = sorted({k for p in pairs for k in (p.a, p.b)})
    encodings: dict[str, np.ndarray | None] = {}
    t0 = time.perf_counter()
    for i, key in enumerate(keys):
        found = face_recognition.face_encodings(face_recognition.load_image_file(lfw / "lfw-deepfunneled" /
                                                                                 f"{key}.jpg"))
        encodings[key] = found[0] if found else None
        if i % 500 == 0:
            print(f"{i}/{len(keys)} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    encoded = np.array([encodings[p.a] is not None and encodings[p.b] is not None for p in pairs])
    distance = np.array([np.linalg.norm(encodings[p.a] - encodings[p.b]) if ok else NO_MATCH_DISTANCE
                         for p, ok in zip(pairs, encoded)])
    out = {"images": len(keys), "no_face_images": sum(v is None for v in encodings.values()),
           "pairs_without_encoding": int((~encoded).sum()), "seconds": round(time.perf_counter() - t0, 1), "rows": []}
    for policy, keep in (("non-match", np.ones_like(encoded)), ("left out", encoded)):
        scores = -distance[keep]
        kfold = protocols.kfold_verification(scores, same[keep], folds[keep])
        tar, thr = protocols.tar_at_far(scores, same[keep], 1e-3)
        out["rows"].append({"no_encoding": policy, "pairs": int(keep.sum()), "accuracy_mean": kfold["mean"],
                            "accuracy_std": kfold["std"], "fold10": kfold["accuracies"][kfold["folds"].index(10)],
                            "tar_at_far_1e-3": float(tar), "distance_at_far_1e-3": float(-thr)})
    if args.json:
        print(json.dumps(out, indent=2))
        return
    from importlib.metadata import version

    # the 1.3.0 wheel's own __version__ still says 1.2.3: ask the installed distribution
    print(f"face_recognition {version('face_recognition')} on LFW View 2: {out['images']} images, "
          f"{out['no_face_images']} without a face ({out['pairs_without_encoding']} pairs)")
    for r in out["rows"]:
        print(f"  pairs without an encoding {r['no_encoding']:<9} ({r['pairs']} pairs): 10 folds "
              f"{100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_std']:.2f} %, fold 10 {100 * r['fold10']:.2f} %, "
              f"TAR {100 * r['tar_at_far_1e-3']:.1f} % at FAR 1e-3 (distance {r['distance_at_far_1e-3']:.3f})")


if __name__ == "__main__":
    main()
