"""Where the flip test's gain comes from: both faces of a pair mirrored, or only one of them?

    python tests/benchmarks/flip_side_bench.py MODEL [MODEL ...] --images runs/default/lfw_crops \\
        [--pairs ../shared/data/lfw/pairs.txt] [--threads 1] [--json]

`edgeface evaluate --flip` mirrors every face (two model runs per face, on the board too).  A board could instead
mirror only the enrolled photos: enrollment runs once per person, offline, and the camera's faces keep one model run
each.  This prints LFW View 2 accuracy (fold 10 with the threshold of folds 1-9, and the 10-fold mean) with no face
mirrored, both, only the first image of each pair (the "gallery"), and only the second, so the free half of the
gain can be read off.  Each MODEL is a `.keras` or `.tflite` embedding file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))
FOLD = 10


def side_scores(pairs, plain: dict, mirrored: dict) -> dict[str, np.ndarray]:
    """Pair cosines with no face, both faces, the first face only and the second face only flip-averaged."""
    from edgeface.evaluate.verification import pair_scores

    return {"none": pair_scores(pairs, plain), "both": pair_scores(pairs, mirrored),
            "first (gallery)": pair_scores(pairs, mirrored, plain), "second": pair_scores(pairs, plain, mirrored)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--images", type=Path, required=True, help="prepared LFW crops (edgeface data prepare)")
    ap.add_argument("--pairs", type=Path, default=DATA / "lfw" / "pairs.txt")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from edgeface.errors import UserError
    from edgeface.evaluate.embedders import FlipEmbedder, make_embedder
    from edgeface.evaluate.pairs import PairImages, read_pairs
    from edgeface.evaluate.protocols import kfold_verification
    from edgeface.evaluate.verification import embed_keys

    try:
        pairs = read_pairs(args.pairs)
        images = PairImages(args.images)
        keys = [k for p in pairs for k in (p.a, p.b)]
        same = np.array([p.same for p in pairs])
        folds = np.array([p.fold for p in pairs])
        if FOLD not in set(folds.tolist()):
            raise UserError(f"{args.pairs} has no fold {FOLD}: give LFW View 2's pairs.txt")
        rows = []
        for model in args.models:
            embedder = make_embedder(model, threads=args.threads)
            plain = embed_keys(embedder, images, keys)
            mirrored = embed_keys(FlipEmbedder(embedder), images, keys)
            for side, scores in side_scores(pairs, plain, mirrored).items():
                r = kfold_verification(scores, same, folds)
                rows.append({"model": str(model), "mirrored": side,
                             "fold10": r["accuracies"][r["folds"].index(FOLD)], "mean": r["mean"], "std": r["std"]})
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'model':45s} {'mirrored':16s} {'fold 10':>8s} {'10 folds':>16s}")
        for r in rows:
            print(f"{Path(r['model']).name:45s} {r['mirrored']:16s} {100 * r['fold10']:7.2f}% "
                  f"{100 * r['mean']:7.2f} ± {100 * r['std']:.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
