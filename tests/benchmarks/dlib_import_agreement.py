"""How closely the imported dlib ResNet (Keras, no dlib) reproduces dlib's own face descriptors.

    python tests/benchmarks/dlib_import_agreement.py [--faces 500] [--batch 16] [--lfw DIR] [--json]

Takes LFW photos in a fixed shuffled order (seed 0), makes dlib's own 150x150 chip of the face nearest each photo's
centre (dlib's frontal face detector, its 5-point shape predictor, ``dlib.get_face_chip(img, shape, 150, 0.25)``:
photos without a detection are passed over) and runs both networks on the same chips.  Prints the number of faces;
the min, mean and 1st-percentile cosine between ``compute_face_descriptor`` and the Keras model's output; the largest
|difference| between the Keras output (unit length) and dlib's descriptor divided by its norm, and between the raw
"embedding" layer and dlib's raw descriptor (dlib's same-person threshold is a Euclidean distance of 0.6); and the
time per face of each: dlib one chip per call, Keras in batches of --batch (median over calls after a warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))
CHIP_SIZE, CHIP_PADDING = 150, 0.25


def lfw_photos(root: Path, seed: int = 0) -> list[Path]:
    """Every LFW photo (``root/<Person>/<Person>_NNNN.jpg``) in a fixed shuffled order, so a prefix spans people."""
    paths = sorted(root.glob("*/*.jpg"))
    if not paths:
        raise SystemExit(f"no LFW photos under {root}: pass --lfw (the lfw-deepfunneled folder)")
    order = np.random.default_rng(seed).permutation(len(paths))
    return [paths[i] for i in order]


def dlib_chips(paths: Iterable[Path], count: int) -> tuple[np.ndarray, list[Path]]:
    """dlib's own aligned chips (uint8 RGB, N x 150 x 150 x 3) of the first ``count`` photos with a face."""
    import dlib

    from edgeface.distill.teachers import dlib_model_files

    _, landmarks = dlib_model_files()
    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(landmarks))
    chips, used = [], []
    for path in paths:
        if len(chips) == count:
            break
        img = dlib.load_rgb_image(str(path))
        faces = detector(img, 0)
        if not faces:
            continue
        # LFW centres the labelled person; other faces in the photo are bystanders.
        cy, cx = img.shape[0] / 2, img.shape[1] / 2
        face = min(faces, key=lambda r: (r.center().x - cx) ** 2 + (r.center().y - cy) ** 2)
        chips.append(np.asarray(dlib.get_face_chip(img, predictor(img, face), size=CHIP_SIZE, padding=CHIP_PADDING)))
        used.append(path)
    return np.stack(chips) if chips else np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8), used


def dlib_descriptors(chips: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """dlib's ``compute_face_descriptor`` of each chip (float32, N x 128) and seconds per call."""
    import dlib

    from edgeface.distill.teachers import dlib_model_files

    encoder = dlib.face_recognition_model_v1(str(dlib_model_files()[0]))
    out, times = [], []
    for chip in chips:
        t0 = time.perf_counter()
        out.append(np.asarray(encoder.compute_face_descriptor(np.ascontiguousarray(chip)), np.float32))
        times.append(time.perf_counter() - t0)
    return np.stack(out), times


def keras_outputs(model, chips: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The imported model's unit output and raw "embedding" layer on the chips, and seconds per face per batch."""
    import keras

    both = keras.Model(model.input, [model.output, model.get_layer("embedding").output])
    both.predict_on_batch(chips[:batch].astype(np.float32))  # warm-up: graph tracing is not inference time
    units, raws, times = [], [], []
    for start in range(0, len(chips), batch):
        x = chips[start:start + batch].astype(np.float32)
        t0 = time.perf_counter()
        unit, raw = both.predict_on_batch(x)
        times.append((time.perf_counter() - t0) / len(x))
        units.append(np.asarray(unit))
        raws.append(np.asarray(raw))
    return np.concatenate(units), np.concatenate(raws), times


def agreement(reference: np.ndarray, unit: np.ndarray, raw: Sequence | None = None) -> dict:
    """Cosine between dlib's descriptors and the model's unit outputs; max |difference| after rescaling dlib's."""
    ref, unit = np.asarray(reference, np.float64), np.asarray(unit, np.float64)  # float64: the cosine's rounding
    ref_unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)                  # stays far below the differences
    cos = np.sum(ref_unit * unit, axis=1) / np.linalg.norm(unit, axis=1)
    out = {"faces": len(ref), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
           "p1_cosine": float(np.percentile(cos, 1)), "max_abs_diff_unit": float(np.abs(unit - ref_unit).max())}
    if raw is not None:
        out["max_abs_diff_raw"] = float(np.abs(np.asarray(raw, np.float64) - ref).max())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=500)
    ap.add_argument("--batch", type=int, default=16, help="Keras batch size")
    ap.add_argument("--lfw", type=Path, default=DATA / "lfw" / "lfw-deepfunneled")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.faces < 1 or args.batch < 1:
        ap.error("--faces and --batch must be at least 1")

    from edgeface.distill.teachers import dlib_model_files
    from edgeface.errors import UserError
    from edgeface.importers.dlib_dat import read_dlib_resnet
    from edgeface.importers.dlib_keras import build_dlib_keras

    try:
        model = build_dlib_keras(read_dlib_resnet(dlib_model_files()[0]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    chips, _ = dlib_chips(lfw_photos(args.lfw), args.faces)
    if len(chips) == 0:
        raise SystemExit(f"dlib found no face in the photos under {args.lfw}")
    reference, dlib_times = dlib_descriptors(chips)
    unit, raw, keras_times = keras_outputs(model, chips, args.batch)
    result = agreement(reference, unit, raw)
    result["dlib_ms_per_face"] = round(1000 * float(np.median(dlib_times)), 2)
    result["keras_ms_per_face"] = round(1000 * float(np.median(keras_times)), 2)
    result["keras_batch"] = args.batch
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"faces: {result['faces']}")
        print(f"cosine dlib vs Keras: min {result['min_cosine']:.10f}, mean {result['mean_cosine']:.10f}, "
              f"1st percentile {result['p1_cosine']:.10f} (1 - min = {1 - result['min_cosine']:.1e})")
        print(f"max |difference|: unit vectors {result['max_abs_diff_unit']:.2e}, raw descriptors "
              f"{result['max_abs_diff_raw']:.2e}")
        print(f"ms per face (median): dlib {result['dlib_ms_per_face']} (one chip per call), "
              f"Keras {result['keras_ms_per_face']} (batches of {args.batch})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
