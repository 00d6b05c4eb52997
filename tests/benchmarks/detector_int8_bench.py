"""int8 BlazeFace: rebuild each detector from its own TFLite file, quantize it, and compare it with the float file.

    python tests/benchmarks/detector_int8_bench.py [--kinds short full] [--calib-count 300] [--test-count 400]
                                                   [--out DIR] [--no-equalize] [--whole-only]
                                                   [--no-bias-correction] [--json]

For each kind: the rebuilt float model's largest output difference from the shipped file, then the full-integer
file (int8 I/O, for CPUs) and the Edge TPU-ready one (uint8 I/O): size, the Edge TPU static check, and against the
float file's own detections on real photos the int8 detector never saw in calibration (LFW photos and every
5th Hamilton frame): recall (a float detection matched at IoU >= 0.5), extra detections, keypoint error (mean
absolute px over the 6 points, scaled to a 112 px wide face) and latency (median of 50 runs, 1 thread).
Calibration: other LFW photos and other Hamilton frames, letterboxed as the detector sees them, in the views and
with the classifier bias correction `edgeface import blazeface` uses (each can be switched off to see what it buys).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))


def clip_frames() -> list[np.ndarray]:
    from edgeface.importers.blazeface_int8 import video_frames

    return video_frames(DATA / "media" / "short_hamilton_clip.mp4")


def latency_ms(path: Path, size: int, runs: int = 50) -> float:
    from edgeface.runtime.interpreter import TFLiteModel

    model = TFLiteModel(path, threads=1)
    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    for _ in range(5):
        model.run(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.run(x)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", nargs="+", default=["short", "full"], choices=["short", "full"])
    ap.add_argument("--calib-count", type=int, default=300, help="LFW photos to calibrate with (+ clip frames)")
    ap.add_argument("--test-count", type=int, default=400, help="other LFW photos to compare on (+ clip frames)")
    ap.add_argument("--out", type=Path, help="keep the int8 files here (default: a temp folder)")
    ap.add_argument("--no-equalize", action="store_true", help="quantize without cross-layer equalization (before)")
    ap.add_argument("--whole-only", action="store_true", help="calibrate on whole images only (no close-up or "
                    "shrunk views, which the importer gives full-range)")
    ap.add_argument("--no-bias-correction", action="store_true", help="skip full-range's classifier bias correction")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from edgeface.converters.convert import convert
    from edgeface.converters.edgetpu import check_compatibility
    from edgeface.converters.formats import get_format
    from edgeface.importers.blazeface import quantizable_blazeface, rebuild_tflite_model
    from edgeface.importers.blazeface_int8 import (
        CALIBRATION_VIEWS,
        CORRECT_LOGIT_BIAS,
        agreement,
        calibration_views,
        correct_logit_bias,
    )
    from edgeface.runtime.detector import DETECTORS, BlazeFaceDetector, find_blazeface_file, letterbox, to_tensor
    from edgeface.runtime.images import read_image
    from edgeface.runtime.interpreter import TFLiteModel

    rng = random.Random(0)
    photos = sorted((DATA / "lfw" / "lfw-deepfunneled").glob("*/*.jpg"))
    rng.shuffle(photos)
    calib_photos = photos[:args.calib_count]
    test_photos = photos[args.calib_count:args.calib_count + args.test_count]
    frames = clip_frames()
    test_images = [read_image(p) for p in test_photos] + frames[2::5]
    out = args.out or Path(tempfile.mkdtemp(prefix="blazeface-int8-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in args.kinds:
        size = DETECTORS[kind].input_size
        source = find_blazeface_file(kind)
        # the rebuild against the shipped file, on the test images
        rebuilt = rebuild_tflite_model(source, f"blazeface_{kind}")
        shipped = TFLiteModel(source)
        worst = 0.0
        for image in test_images[:20]:
            x = to_tensor(letterbox(image, size)[0])[None]
            ref = sorted(shipped.run(x), key=lambda a: a.shape[-1])
            got = sorted((np.asarray(o) for o in rebuilt(x)), key=lambda a: a.shape[-1])
            worst = max(worst, max(float(np.abs(a - b).max()) for a, b in zip(ref, got)))
        # the importer's recipe (edgeface import blazeface): its views per network, its bias correction
        views, view_rng = (1 if args.whole_only else CALIBRATION_VIEWS[kind]), np.random.default_rng(0)
        calib = np.stack([to_tensor(letterbox(v, size)[0])
                          for im in [read_image(p) for p in calib_photos] + frames[::5]
                          for v in calibration_views(im, view_rng, views)])
        model = quantizable_blazeface(source, f"blazeface_{kind}", calibration=None if args.no_equalize else calib)
        reference = BlazeFaceDetector(source, kind)
        float_ms = latency_ms(source, size)
        for fmt_name in ("int8", "edgetpu"):
            t0 = time.perf_counter()
            data, graph = convert(model, get_format(fmt_name), calibration=calib)
            path = out / f"blazeface_{kind}_{fmt_name}.tflite"
            path.write_bytes(data)
            if fmt_name == "int8" and CORRECT_LOGIT_BIAS[kind] and not args.no_bias_correction:
                if correct_logit_bias(model, path, calib) is not None:  # then both files from the corrected network
                    data, graph = convert(model, get_format(fmt_name), calibration=calib)
                    path.write_bytes(data)
            tpu = check_compatibility(graph)
            mapped = f"{tpu.tpu_ops}/{tpu.tpu_ops + tpu.cpu_ops}"
            row = {"kind": kind, "format": fmt_name, "rebuild_max_abs_diff": worst, "kb": len(data) / 1024,
                   "convert_s": time.perf_counter() - t0, "edgetpu_mapped": mapped,
                   "float_ms": float_ms, "ms": latency_ms(path, size), "file": str(path)}
            row.update(agreement(reference, BlazeFaceDetector(path, kind), test_images))
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{len(test_images)} test images ({len(test_photos)} LFW photos + {len(frames[2::5])} clip frames), "
          f"calibrated on {len(calib_photos)} other photos + {len(frames[::5])} frames")
    head = ["kind", "format", "rebuild diff", "KB", "Edge TPU ops", "float ms", "int8 ms", "recall vs float",
            "extra", "kp err mean", "kp err p95"]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join([r["kind"], r["format"], f"{r['rebuild_max_abs_diff']:.2g}", f"{r['kb']:.0f}",
                          r["edgetpu_mapped"], f"{r['float_ms']:.2f}", f"{r['ms']:.2f}",
                          f"{100 * r['recall']:.1f} % of {r['reference_faces']}", str(r["extra"]),
                          f"{r['kp_err_mean']:.2f}", f"{r['kp_err_p95']:.2f}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
