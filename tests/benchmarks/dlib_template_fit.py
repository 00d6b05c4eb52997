"""Fit a 4-point alignment template that takes BlazeFace's keypoints to dlib's 150x150 face chip.

    python tests/benchmarks/dlib_template_fit.py [--detector short|full] [--count 2500] [--seed 0]
        [--exclude-people ../shared/data/lfw/people.txt:10] [--images lfw-deepfunneled] [--json]

A board without dlib aligns with ``align_face(image, blazeface_keypoints, 150, TEMPLATE)`` and then runs a port of
dlib's ResNet, which was trained on dlib's own chips: its 5-point shape predictor (eye corners, base of the nose)
mapped onto a fixed template with padding 0.25.  BlazeFace gives other points (eye centres, nose tip, mouth centre),
so their place in dlib's chip is measured: for each photo, BlazeFace's largest face, dlib's predictor on its box
(shifted as :class:`~edgeface.distill.teachers.DlibTeacher` does), dlib's chip transform from
``dlib.get_face_chip_details``, the 4 BlazeFace points mapped into the chip; the template is the per-coordinate
median.  The transform is checked pixel by pixel against ``dlib.get_face_chip``.  Photos come from LFW people that
are not in View 2 fold 10, one photo per person, so fold 10 stays unseen.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))
CHIP_SIZE = 150
CHIP_PADDING = 0.25  # face_recognition's and dlib's example padding
POINT_NAMES = ("left eye", "right eye", "nose tip", "mouth centre")  # alignment_points' order (image left/right)
# A chip that differs from dlib's by more than this mean grey level was not made by the transform derived here
# (e.g. dlib's pyramid step for faces over twice the chip size): such photos are left out of the fit and counted.
CHECK_MEAN_ABS_LIMIT = 0.5
GRID_STEP = 10  # chip pixels between the sample points used to measure how far two chip transforms disagree


# --------------------------------------------------------------------------- dlib's chip geometry


def shifted_dlib_box(box: np.ndarray):
    """A ``dlib.rectangle`` from a BlazeFace box, moved where dlib's own detector would have put it.

    The same shift as ``DlibTeacher.prepare``: the shape predictor was trained on dlib's detector boxes.
    """
    import dlib

    from edgeface.distill.teachers import DLIB_BOX_SHIFT

    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = DLIB_BOX_SHIFT[0] * (x2 - x1), DLIB_BOX_SHIFT[1] * (y2 - y1)
    return dlib.rectangle(int(round(x1 + dx)), int(round(y1 + dy)), int(round(x2 + dx)), int(round(y2 + dy)))


def _rotate(centre: np.ndarray, point: np.ndarray, angle: float) -> np.ndarray:
    """``point`` rotated by ``angle`` radians about ``centre`` (dlib's rotate_point convention)."""
    c, s = np.cos(angle), np.sin(angle)
    d = point - centre
    return centre + np.array([c * d[0] - s * d[1], s * d[0] + c * d[1]])


def chip_transform(details) -> np.ndarray:
    """The 2x3 image -> chip affine matrix (float64) of a ``dlib.chip_details``.

    A chip is the rectangle ``details.rect`` rotated by ``details.angle`` about its centre and stretched to
    ``rows`` x ``cols``: its top-left, top-right and bottom-right corners land on chip pixels (0, 0),
    (cols-1, 0) and (cols-1, rows-1).  Three point pairs fix the affine map.
    """
    r = details.rect
    tl, tr, br = (np.array([p.x, p.y], np.float64) for p in (r.tl_corner(), r.tr_corner(), r.br_corner()))
    centre = (tl + br) / 2.0  # drectangle.center() in Python rounds to integers; dlib's C++ centre does not
    src = np.stack([_rotate(centre, p, details.angle) for p in (tl, tr, br)])
    dst = np.array([[0.0, 0.0], [details.cols - 1.0, 0.0], [details.cols - 1.0, details.rows - 1.0]])
    # Solve [x y 1] @ A = dst for the 3x2 matrix A; its transpose is the 2x3 matrix warpAffine takes.
    return np.linalg.solve(np.hstack([src, np.ones((3, 1))]), dst).T


def sample_like_dlib(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """A ``size`` x ``size`` chip sampled as dlib does: bilinear in float64, truncated to uint8, black outside.

    Only for checking :func:`chip_transform` against ``dlib.get_face_chip`` pixel by pixel (OpenCV's warpAffine
    rounds with 5-bit weights and would hide a small error in the transform among its own differences).
    """
    inv = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    px = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    py = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    left, top = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    h, w = image.shape[:2]
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    lc, tc = np.clip(left, 0, w - 2), np.clip(top, 0, h - 2)
    fx, fy = (px - left)[..., None], (py - top)[..., None]
    img = image.astype(np.float64)
    upper = (1 - fx) * img[tc, lc] + fx * img[tc, lc + 1]
    lower = (1 - fx) * img[tc + 1, lc] + fx * img[tc + 1, lc + 1]
    value = (1 - fy) * upper + fy * lower
    return np.where(inside[..., None], np.trunc(value), 0).astype(np.uint8)


def transform_disagreement(a: np.ndarray, b: np.ndarray, size: int = CHIP_SIZE) -> float:
    """Mean distance in chip pixels between where two image -> chip transforms put the same image point,
    over a grid on chip ``a`` (how far chip ``a``'s content sits from where chip ``b`` has it)."""
    grid = np.arange(0, size, GRID_STEP, dtype=np.float64)
    q = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    inv_a = np.linalg.inv(np.vstack([a, [0.0, 0.0, 1.0]]))[:2]
    image_pts = q @ inv_a[:, :2].T + inv_a[:, 2]
    in_b = image_pts @ b[:, :2].T + b[:, 2]
    return float(np.linalg.norm(in_b - q, axis=1).mean())


# --------------------------------------------------------------------------- the fitting set


def fitting_photos(images: Path, exclude_spec: str, count: int, seed: int) -> tuple[list[Path], dict]:
    """One photo each of ``count`` people drawn (seeded) from the people that ``exclude_spec`` does not name."""
    from edgeface.data.dataset import read_people_file, scan_identity_folder

    excluded = read_people_file(exclude_spec)
    by_person: dict[str, list[Path]] = {}
    for person, path in scan_identity_folder(images, exclude=excluded):
        by_person.setdefault(person, []).append(path)
    rng = random.Random(seed)
    people = sorted(by_person)
    chosen = sorted(rng.sample(people, min(count, len(people))))
    photos = [rng.choice(by_person[p]) for p in chosen]
    how = {"people_file": exclude_spec, "people_excluded": len(excluded), "people_available": len(people),
           "photos_available": sum(len(v) for v in by_person.values()), "people_drawn": len(chosen),
           "photos_per_person": 1, "seed": seed}
    return photos, how


# --------------------------------------------------------------------------- measuring one photo


@dataclass
class Measurement:
    """One photo: BlazeFace's 4 alignment points in dlib's chip, and how well the derived transform matched dlib."""

    points: np.ndarray  # (4, 2) chip pixels
    dlib_matrix: np.ndarray  # (2, 3) image -> chip
    check_mean_abs: float  # mean |grey level difference| between our resampling and dlib.get_face_chip
    check_identical: float  # fraction of identical chip values
    chip_side: float  # the chip's side in photo pixels (its scale)
    chip_centre: np.ndarray  # the chip's centre in photo pixels


def measure(image: np.ndarray, detection, predictor) -> Measurement:
    """Map ``detection``'s alignment points into the chip dlib makes from its own landmarks on this face."""
    import dlib

    from edgeface.runtime.align import alignment_points, transform_points

    img = np.ascontiguousarray(image, np.uint8)
    shape = predictor(img, shifted_dlib_box(detection.box))
    details = dlib.get_face_chip_details(shape, size=CHIP_SIZE, padding=CHIP_PADDING)
    matrix = chip_transform(details)
    reference = np.asarray(dlib.get_face_chip(img, shape, size=CHIP_SIZE, padding=CHIP_PADDING))
    ours = sample_like_dlib(img, matrix, CHIP_SIZE)
    diff = np.abs(ours.astype(np.int16) - reference.astype(np.int16))
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    inv = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    centre = inv @ np.array([(CHIP_SIZE - 1) / 2.0, (CHIP_SIZE - 1) / 2.0, 1.0])
    points = transform_points(matrix.astype(np.float64), alignment_points(detection.keypoints).astype(np.float64))
    return Measurement(np.asarray(points, np.float64), matrix, float(diff.mean()), float((diff == 0).mean()),
                       CHIP_SIZE / scale, centre)


# --------------------------------------------------------------------------- the fit


def percentile_summary(values: np.ndarray) -> dict:
    """Median, 90th percentile and maximum, rounded for printing."""
    v = np.asarray(values, np.float64)
    return {"median": round(float(np.median(v)), 3), "p90": round(float(np.percentile(v, 90)), 3),
            "max": round(float(v.max()), 3)}


def summarise(measurements: list[Measurement], shapes: list[tuple[int, int]]) -> dict:
    """The template (per-coordinate median), its spread and the residuals it leaves."""
    from edgeface.runtime.align import umeyama

    pts = np.stack([m.points for m in measurements])  # (N, 4, 2)
    template = np.median(pts, axis=0)
    q25, q75 = np.percentile(pts, [25, 75], axis=0)
    point_residual = np.linalg.norm(pts - template, axis=2)  # (N, 4)
    # What the board's alignment leaves: the similarity transform of the 4 points onto the template against
    # dlib's own chip transform, as a mean displacement over the chip.
    board = [umeyama(m.points, template).astype(np.float64) for m in measurements]
    # umeyama above maps chip -> chip; composed with dlib's image -> chip it is the board's image -> chip.
    chip_error = np.array([transform_disagreement(_compose(b, m.dlib_matrix), m.dlib_matrix)
                           for b, m in zip(board, measurements)])
    short_side = np.array([min(h, w) for h, w in shapes], np.float64)
    centres = np.stack([m.chip_centre for m in measurements])
    frame_centres = np.array([[(w - 1) / 2.0, (h - 1) / 2.0] for h, w in shapes])
    return {
        "template": [[round(float(x), 4), round(float(y), 4)] for x, y in template],
        "points": list(POINT_NAMES),
        "spread_iqr": [[round(float(a), 3), round(float(b), 3)] for a, b in (q75 - q25)],
        "spread_std": [[round(float(a), 3), round(float(b), 3)] for a, b in pts.std(axis=0)],
        "point_residual_px": percentile_summary(point_residual.reshape(-1)),
        "point_residual_px_by_point": {n: percentile_summary(point_residual[:, i]) for i, n in enumerate(POINT_NAMES)},
        "chip_error_px": percentile_summary(chip_error),
        "chip_side_over_photo_side": percentile_summary(np.array([m.chip_side for m in measurements]) / short_side),
        "chip_centre_offset_px": [round(float(v), 2) for v in np.median(centres - frame_centres, axis=0)],
    }


def _compose(chip_to_chip: np.ndarray, image_to_chip: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of ``chip_to_chip`` applied after ``image_to_chip``."""
    a = np.vstack([chip_to_chip, [0.0, 0.0, 1.0]]) @ np.vstack([image_to_chip, [0.0, 0.0, 1.0]])
    return a[:2]


def fit(photos: list[Path], detector_kind: str, progress: bool = True) -> dict:
    """Measure every photo and summarise; photos without a BlazeFace face or failing the pixel check are counted."""
    import dlib

    from edgeface.distill.teachers import dlib_model_files
    from edgeface.runtime.detector import create_detector, largest
    from edgeface.runtime.images import read_image

    _, landmarks = dlib_model_files()
    predictor = dlib.shape_predictor(str(landmarks))
    detector = create_detector(detector_kind, threads=1)
    kept: list[Measurement] = []
    shapes: list[tuple[int, int]] = []
    no_face, failed_check, checks = 0, 0, []
    start = time.perf_counter()
    for i, path in enumerate(photos):
        if progress and i and i % 250 == 0:
            print(f"{i}/{len(photos)} photos, {time.perf_counter() - start:.0f} s", file=sys.stderr)
        image = read_image(path)
        det = largest(detector.detect(image))
        if det is None:
            no_face += 1
            continue
        m = measure(image, det, predictor)
        checks.append((m.check_mean_abs, m.check_identical))
        if m.check_mean_abs > CHECK_MEAN_ABS_LIMIT:
            failed_check += 1
            continue
        kept.append(m)
        shapes.append(image.shape[:2])
    if not kept:
        raise SystemExit("no photo gave a face and a matching chip: nothing to fit")
    check = np.array(checks)
    out = summarise(kept, shapes)
    out.update({
        "detector": detector_kind, "photos": len(photos), "photos_fitted": len(kept), "no_face": no_face,
        "failed_pixel_check": failed_check,
        "pixel_check": {"mean_abs_median": round(float(np.median(check[:, 0])), 4),
                        "mean_abs_max": round(float(check[:, 0].max()), 4),
                        "identical_fraction_median": round(float(np.median(check[:, 1])), 5),
                        "identical_fraction_min": round(float(check[:, 1].min()), 5)},
        "seconds": round(time.perf_counter() - start, 1),
    })
    return out


def print_report(r: dict) -> None:
    """Human-readable summary of :func:`fit`'s result."""
    how = r["fitting_set"]
    print(f"template ({r['detector']}-range BlazeFace keypoints -> dlib {CHIP_SIZE}x{CHIP_SIZE} chip, "
          f"padding {CHIP_PADDING}):")
    for name, (x, y), (ix, iy) in zip(r["points"], r["template"], r["spread_iqr"]):
        print(f"  {name:13s} ({x:9.4f}, {y:9.4f})   IQR {ix:.2f} x {iy:.2f} px")
    print("TEMPLATE = np.array(" + json.dumps(r["template"]) + ", dtype=np.float32)")
    print(f"fitting set: {r['photos_fitted']} photos fitted of {r['photos']} drawn ({r['no_face']} without a "
          f"BlazeFace face, {r['failed_pixel_check']} failing the pixel check): one photo each of "
          f"{how['people_drawn']} people (seed {how['seed']}) of the {how['people_available']} LFW people not named "
          f"by {how['people_file']}")
    pr, ce = r["point_residual_px"], r["chip_error_px"]
    print(f"point residual |point - template|: median {pr['median']:.2f} px, p90 {pr['p90']:.2f} px "
          f"(max {pr['max']:.1f})")
    for name, s in r["point_residual_px_by_point"].items():
        print(f"  {name:13s} median {s['median']:.2f} px, p90 {s['p90']:.2f} px")
    print(f"board alignment vs dlib's chip (mean displacement over the chip): median {ce['median']:.2f} px, "
          f"p90 {ce['p90']:.2f} px")
    pc = r["pixel_check"]
    print(f"transform check vs dlib.get_face_chip: mean |diff| median {pc['mean_abs_median']}, max "
          f"{pc['mean_abs_max']}; identical values median {100 * pc['identical_fraction_median']:.3f} %, min "
          f"{100 * pc['identical_fraction_min']:.3f} %")
    cs = r["chip_side_over_photo_side"]
    print(f"dlib chip side / photo side: median {cs['median']:.3f} (p90 {cs['p90']:.3f}); chip centre offset from "
          f"the photo centre: {r['chip_centre_offset_px']} px")
    print(f"{r['seconds']:.0f} s")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=DATA / "lfw" / "lfw-deepfunneled", help="LFW photos")
    ap.add_argument("--exclude-people", default=str(DATA / "lfw" / "people.txt") + ":10",
                    help="people left out of the fit (FILE or FILE:FOLD; default View 2 fold 10)")
    ap.add_argument("--detector", choices=("short", "full"), default="short", help="BlazeFace model")
    ap.add_argument("--count", type=int, default=2500, help="people drawn, one photo each")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)

    from edgeface.errors import UserError

    try:
        photos, how = fitting_photos(args.images, args.exclude_people, args.count, args.seed)
        result = fit(photos, args.detector)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result["fitting_set"] = how
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
