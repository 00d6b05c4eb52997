"""``edgeface run --self-test``: does this board run this bundle correctly?

Loads the bundle's embedding model (checksums verified), embeds a face shipped
inside the package (``edgeface/models/self_test_face.png``, aligned by edgeface's
own detector and alignment) and checks the answer: the manifest's dimension,
finite, unit length, the same twice; the detector finds that face again; a
quantized model agrees with the bundle's fp32 reference.  The result is one JSON
object (``ok`` plus every check and timing), which ``edgeface flash`` reads after
installing on a board.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Optional

import numpy as np

from edgeface.errors import UserError
from edgeface.runtime.settings import RunSettings

SELF_TEST_FACE = Path(__file__).resolve().parent.parent / "models" / "self_test_face.png"
# A quantized model's embedding of the test face must stay this close to fp32's (cosine).
REFERENCE_MIN_COSINE = 0.8
UNIT_TOLERANCE = 1e-3


def board_model() -> str:
    """The board's name from the device tree (Raspberry Pi, Coral), else the CPU architecture."""
    try:
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ") or platform.machine()
    except OSError:
        return platform.machine()


def self_test(settings: Optional[RunSettings] = None, repeats: int = 10) -> dict:
    """Run the checks on the model, format, detector and interpreter ``settings`` name (None: the defaults); never
    raises for a failed check (``ok`` is False and ``error`` says why)."""
    result: dict = {"ok": False, "board": board_model(), "python": platform.python_version(), "checks": {}}
    try:
        _run_checks(result, settings or RunSettings(), repeats)
    except UserError as exc:
        result["error"] = str(exc)
    result["ok"] = bool(result["checks"]) and "error" not in result and all(result["checks"].values())
    return result


def _run_checks(result: dict, settings: RunSettings, repeats: int) -> None:
    from edgeface.runtime.bundle import EDGETPU_FORMAT, Bundle
    from edgeface.runtime.detector import bundle_detector
    from edgeface.runtime.facemodel import FaceModelSpec
    from edgeface.runtime.images import read_image
    from edgeface.runtime.interpreter import Embedder, check_edgetpu_library

    fmt, detector, threads, backend, delegate = (settings.format, settings.detector, settings.threads,
                                                 settings.backend, settings.delegate)
    checks = result["checks"]
    bundle = Bundle.load(settings.model)
    result["bundle"] = str(bundle.root)
    if delegate == "edgetpu":
        check_edgetpu_library()
        fmt = EDGETPU_FORMAT
    entry = bundle.entry(fmt)
    result["format"] = entry["format"]
    t0 = time.perf_counter()
    path = bundle.model_path(entry["format"])  # verifies the SHA-256
    checks["checksum"] = True
    embedder = Embedder(path, threads=threads, backend=backend, delegate=delegate, spec=bundle.spec)
    result["load_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    result.update(model=str(path), sha256=entry.get("sha256"), backend=embedder.model.backend.name,
                  delegate=delegate or "cpu")

    if not SELF_TEST_FACE.is_file():
        raise UserError(f"the self-test face {SELF_TEST_FACE} is missing from the installation: reinstall edgeface")
    shipped = read_image(SELF_TEST_FACE)

    # The detector and alignment: find the face again in the crop with a margin around it.
    import cv2

    det = bundle_detector(bundle, detector, threads=threads, backend=backend,
                          precision=settings.detector_precision, delegate=delegate)
    padded = cv2.copyMakeBorder(shipped, 32, 32, 32, 32, cv2.BORDER_REPLICATE)
    t = time.perf_counter()
    found = det.detect(padded)
    result["detect_ms"] = round((time.perf_counter() - t) * 1000, 3)
    result["detector"] = getattr(det, "kind", detector)
    checks["detector"] = len(found) == 1

    # The shipped face is aligned for edgeface's 112x112 template; a model aligned another way (an imported
    # dlib model's 150x150 chip) gets the face as the runtime would give it: detected, aligned by its spec.
    face = shipped
    if not embedder.spec.same_alignment(FaceModelSpec.edgeface()):
        if not found:
            raise UserError("the detector found no face in the self-test image, so it cannot be aligned for "
                            f"{path.name}")
        face = embedder.spec.align(padded, max(found, key=lambda d: d.area).keypoints)
    elif face.shape[:2] != (embedder.spec.size[1], embedder.spec.size[0]):
        face = cv2.resize(face, embedder.spec.size, interpolation=cv2.INTER_AREA)
    emb = embedder.embed(face)
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        again = embedder.embed(face)
        times.append((time.perf_counter() - t) * 1000)
    norm = float(np.linalg.norm(emb[0]))
    expected_dim = bundle.embedding_dim or emb.shape[1]
    result.update(embedding_dim=int(emb.shape[1]), norm=round(norm, 6), embed_ms=round(float(np.median(times)), 3))
    checks["dimension"] = emb.shape == (1, expected_dim)
    checks["finite"] = bool(np.isfinite(emb).all())
    checks["unit_length"] = bool(abs(norm - 1.0) <= UNIT_TOLERANCE)
    checks["deterministic"] = bool(np.allclose(emb, again, atol=1e-5))

    if entry["format"] != "fp32" and "fp32" in bundle.formats:
        reference = Embedder(bundle.model_path("fp32"), threads=threads, backend=backend,
                             spec=bundle.spec).embed(face)
        cosine = float(reference[0] @ emb[0])
        result["cosine_to_fp32"] = round(cosine, 4)
        checks["matches_fp32"] = cosine >= REFERENCE_MIN_COSINE
