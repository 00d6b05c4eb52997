"""The default model on the Hamilton clip, aligned two ways: the board's template on BlazeFace keypoints, and dlib's
own 5-point landmarks and chip on the same BlazeFace boxes (dlib's encoder; the imported model gives the same
descriptors).

    python tests/benchmarks/clip_alignment_bench.py [--detector short|full] [--threshold 0.924 0.91] [--json]

Enrolls lin-manuel-miranda.png and alex-lacamoire.png (each way), then for every face of the clip's 275 frames
counts the faces named Lin-Manuel Miranda (cosine at or above the threshold and nearer to him than to Alex
Lacamoire) and the faces named anything in frames 244-271, where Barack Obama sits in the audience (enrolled
nowhere: any name there is a wrong one).  Needs the distill extra (dlib).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))
AUDIENCE = range(244, 272)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", default="short", choices=("short", "full"))
    ap.add_argument("--threshold", type=float, nargs="+", default=None,
                    help="cosine thresholds (default: the bundle's own)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import cv2

    from edgeface.distill.teachers import DlibTeacher
    from edgeface.runtime.bundle import Bundle
    from edgeface.runtime.detector import create_detector, largest_first
    from edgeface.runtime.images import read_image
    from edgeface.runtime.interpreter import Embedder, l2_normalize

    media = DATA / "media"
    bundle = Bundle.load()
    board = Embedder(bundle.model_path("int8"), spec=bundle.spec)
    dlib = DlibTeacher("dlib", {})
    detector = create_detector(args.detector)

    def both(image, det) -> tuple[np.ndarray, np.ndarray]:
        ours = board.embed(bundle.spec.align(image, det.keypoints))[0]
        return ours, l2_normalize(dlib.embed(image, det)[None])[0]

    refs = []
    for photo in ("lin-manuel-miranda.png", "alex-lacamoire.png"):
        image = read_image(media / photo)
        refs.append(both(image, largest_first(detector.detect(image))[0]))
    rows = []  # frame, then (to lin, to alex) for the board and for dlib's chip
    cap = cv2.VideoCapture(str(media / "short_hamilton_clip.mp4"))
    frame = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        for det in detector.detect(image):
            ours, theirs = both(image, det)
            rows.append((frame, ours @ refs[0][0], ours @ refs[1][0], theirs @ refs[0][1], theirs @ refs[1][1]))
        frame += 1
    r = np.array(rows)
    audience = np.isin(r[:, 0], list(AUDIENCE))
    out = {"detector": args.detector, "frames": frame, "faces": len(r), "rows": []}
    for thr in args.threshold or [bundle.threshold]:
        for name, lin, alex in (("board template", 1, 2), ("dlib landmarks + chip", 3, 4)):
            named_lin = (r[:, lin] >= thr) & (r[:, lin] > r[:, alex])
            named_audience = (np.maximum(r[:, lin], r[:, alex]) >= thr) & audience
            out["rows"].append({"alignment": name, "threshold": thr, "lin_manuel_miranda_faces": int(named_lin.sum()),
                                "audience_named": int(named_audience.sum()),
                                "audience_best_cosine": round(float(np.max(r[audience][:, [lin, alex]])), 4)})
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"Hamilton clip, {args.detector}-range detector: {out['faces']} faces in {out['frames']} frames")
    for row in out["rows"]:
        print(f"  {row['alignment']:<22} threshold {row['threshold']:.3f}: Lin-Manuel Miranda named on "
              f"{row['lin_manuel_miranda_faces']} faces, audience named {row['audience_named']} (best cosine there "
              f"{row['audience_best_cosine']})")


if __name__ == "__main__":
    main()
