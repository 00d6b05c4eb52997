"""``edgeface import dlib``: dlib's face ResNet as an edgeface model (``model.keras`` and its spec).

The network is read with numpy (:mod:`edgeface.importers.dlib_dat`), rebuilt in Keras
(:mod:`edgeface.importers.dlib_keras`) and written with a face-model spec
(``model.toml``) that tells every other command how to feed it: a 150x150 RGB chip
aligned by :data:`DLIB_BLAZEFACE_TEMPLATE_150`, raw pixels (dlib's normalisation is
folded into the first convolution), 128-d embeddings compared by cosine.
``edgeface export`` then takes it like a trained model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edgeface.errors import SettingError, UserError
from edgeface.runtime.facemodel import FaceModelSpec, spec_path_for, spec_toml

MODEL_NAME = "dlib-resnet-v1"
MODEL_FILE = "model.keras"
LICENSE = ("dlib_face_recognition_resnet_model_v1.dat by Davis E. King: public domain (dlib-models README); "
           "shipped in the face_recognition_models package (MIT licence in its metadata)")
# Where BlazeFace's 4 alignment points (image-left eye centre, image-right eye centre, nose tip, mouth centre)
# land in dlib's 150x150 chip (get_face_chip, padding 0.25).  dlib aligns its chip on its own 5 landmarks (eye
# corners and the base of the nose), which the board cannot compute; these are the medians, over 2,500 LFW photos
# (one each of 2,500 people outside View 2 fold 10), of BlazeFace's short-range keypoints mapped through dlib's
# own chip transform (its predictor on the BlazeFace box).  `python tests/benchmarks/dlib_template_fit.py` prints
# them; the full-range detector's keypoints give the same points within 1 px.
DLIB_BLAZEFACE_TEMPLATE_150 = ((46.1322, 46.3866), (102.337, 46.9603), (73.571, 78.9567), (73.5115, 108.0266))
# The match threshold at FAR 1e-3: cosine of the float model on LFW View 2's 6,000 pairs through this template and
# BlazeFace short-range (tests/benchmarks/dlib_pipeline_bench.py, pipeline board-short; `edgeface export --pairs
# --far 1e-3` gives the same 0.924212).  An export calibrated on pairs replaces it with its own.
DLIB_THRESHOLD = 0.924212
THRESHOLD_NOTE = "cosine at FAR 1e-3 on LFW View 2 (6,000 pairs), float model, BlazeFace short-range"
TEMPLATE_NOTE = ("median of BlazeFace short-range keypoints mapped into dlib's 150x150 chip (padding 0.25) over "
                 "2,500 LFW photos of people outside View 2 fold 10: tests/benchmarks/dlib_template_fit.py")


def dlib_spec() -> FaceModelSpec:
    """The face-model spec of an imported dlib ResNet (its threshold: FAR 1e-3 on LFW, until an export calibrates
    one on pairs)."""
    return FaceModelSpec(size=(150, 150), layout="NHWC", color="RGB", alignment="template",
                         template=DLIB_BLAZEFACE_TEMPLATE_150, template_size=(150, 150), embedding_dim=128,
                         metric="cosine", threshold=DLIB_THRESHOLD, name=MODEL_NAME)


@dataclass
class ImportResult:
    """What ``edgeface import dlib`` read and wrote."""

    source: Path
    source_sha256: str
    model: Path
    spec_file: Path
    parameters: int
    layers: dict
    input_size: int
    embedding_dim: int
    seconds: float
    check: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"source": str(self.source), "source_sha256": self.source_sha256, "model": str(self.model),
                "spec": str(self.spec_file), "parameters": self.parameters, "layers": self.layers,
                "input_size": self.input_size, "embedding_dim": self.embedding_dim,
                "seconds": round(self.seconds, 2), "check": self.check}


def default_dat() -> Path:
    """dlib's model file from the installed face_recognition_models package."""
    from edgeface.distill.teachers import dlib_model_files

    try:
        return dlib_model_files()[0]
    except UserError:
        raise UserError("no --dat given and face_recognition_models is not installed: pip install "
                        "face_recognition_models (or pass --dat dlib_face_recognition_resnet_model_v1.dat)") from None


def import_dlib(out: str | os.PathLike, dat: Optional[str | os.PathLike] = None) -> ImportResult:
    """Read ``dat`` (default: face_recognition_models' file), write ``OUT/model.keras`` and ``OUT/model.toml``.

    Both files are written to temporary names and renamed, so an interrupted import leaves the folder as it
    was.  When dlib itself is installed, the model is checked against it on the bundled self-test face.
    """
    from edgeface.importers.dlib_dat import read_dlib_resnet
    from edgeface.runtime.bundle import sha256_file

    t0 = time.perf_counter()
    source = Path(dat) if dat is not None else default_dat()
    net = read_dlib_resnet(source)  # a file that is not the network: one line, before TensorFlow loads
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SettingError("out", f"{out} is a file: give a folder for model.keras and model.toml")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingError("out", f"{out}: cannot create the folder ({exc.strerror or exc})") from None
    from edgeface.importers.dlib_keras import build_dlib_keras

    model = build_dlib_keras(net)
    model_path = out / MODEL_FILE
    tmp = out / f".{MODEL_FILE}.tmp-{os.getpid()}.keras"
    try:
        model.save(tmp)
        os.replace(tmp, model_path)
    finally:
        tmp.unlink(missing_ok=True)
    sha = sha256_file(source)
    spec_path = spec_path_for(model_path)
    from edgeface import __version__
    from edgeface.fileio import atomic_write_text

    provenance = {"source": str(source.resolve()), "source_sha256": sha, "license": LICENSE,
                  "network": "dlib anet_type (29 conv, 128-d), affine layers and input normalisation folded into "
                             "the convolutions",
                  "normalization": "(x - (122.782, 117.001, 104.298)) / 256 inside the model (folded into conv1)",
                  "dlib_metric": f"euclidean distance of raw descriptors, same person below "
                                 f"{net.distance_threshold:g}",
                  "alignment": TEMPLATE_NOTE, "threshold": THRESHOLD_NOTE, "imported_by": f"edgeface {__version__}",
                  "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(spec_path, spec_toml(dlib_spec(), {"provenance": provenance}))
    return ImportResult(source, sha, model_path, spec_path, net.param_count, net.counts(), net.input_size,
                        net.embedding_dim, time.perf_counter() - t0, check_against_dlib(model, source))


def check_against_dlib(model, dat: Path) -> dict:
    """Cosine between the Keras model and dlib's own ``compute_face_descriptor`` on one chip of the bundled
    self-test face (dlib's predictor and chip); ``{}`` where dlib is not installed (it is optional)."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return {}
    import cv2
    import numpy as np

    from edgeface.distill.teachers import DlibTeacher
    from edgeface.runtime.detector import create_detector, largest_first
    from edgeface.runtime.images import read_image
    from edgeface.runtime.selftest import SELF_TEST_FACE

    try:
        teacher = DlibTeacher("dlib", {})
    except UserError:  # dlib without its landmark model: nothing to check against
        return {}
    image = cv2.copyMakeBorder(read_image(SELF_TEST_FACE), 40, 40, 40, 40, cv2.BORDER_REPLICATE)
    dets = largest_first(create_detector("short").detect(image))
    if not dets:
        return {}
    chip = teacher.prepare(image, dets[0])
    reference = teacher.run([chip])[0]
    ours = np.asarray(model(chip[None].astype(np.float32), training=False))[0]
    cosine = float(ours @ reference / (np.linalg.norm(ours) * np.linalg.norm(reference)))
    return {"against": "dlib compute_face_descriptor", "faces": 1, "cosine": round(cosine, 7)}
