"""Teacher adapters: the original image plus one detected face in, the teacher's embedding out.

Every face model has its own alignment and input convention, so a teacher gets
the *original* photograph and the BlazeFace detection (box and keypoints) and
prepares its own input:

* ``dlib``: dlib's ResNet face encoder from the ``face_recognition_models``
  package (what ``face_recognition`` uses): dlib's 5-point shape predictor on the
  detection box, a 150x150 chip, a 128-d vector.
* ``onnx:PATH`` (onnxruntime) and ``tflite:PATH`` (the runtime's embedder):
  any embedding model, with its input size, normalisation, colour order,
  layout and alignment template given by options or a small TOML file: a
  face-model spec (:mod:`edgeface.runtime.facemodel`; :data:`TEACHER_OPTIONS`
  lists the keys).  A TFLite file of a bundle brings its manifest's spec.
* ``keras:PATH``: an edgeface ``.keras`` model, trained or imported (aligned as
  its ``MODEL.toml`` says: ``edgeface import dlib``'s port of dlib teaches with
  dlib's chip geometry on the board's keypoints), or a bigger edgeface model
  teaching a smaller one.

:func:`parse_teacher_spec` reads ``--teacher``, :func:`load_teacher` builds the
adapter.  Preprocessing is the spec's (pure numpy/OpenCV, tested without a
model).  A teacher returns its output vectors; callers normalise them.
"""

from __future__ import annotations

import difflib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from edgeface.choices import unknown_choice
from edgeface.errors import UserError
from edgeface.runtime.facemodel import SPEC_OPTIONS, FaceModelSpec, read_toml, toml_module

INSTALL_HINT = "pip install 'edgeface[distill]'"
DLIB_HINT = (f"the dlib teacher needs dlib and its models (the face_recognition_models package): {INSTALL_HINT} "
             "(or pip install dlib face_recognition_models)")
ONNX_HINT = f"the onnx teacher needs onnxruntime: {INSTALL_HINT} (or pip install onnxruntime)"

# dlib's shape predictor was trained on boxes of dlib's own face detector.  A BlazeFace box has the same size
# but sits 5-6 % of its size lower and to the right (median over 296 LFW images); shifting it first puts the
# box where the predictor expects it.
DLIB_BOX_SHIFT = (-0.049, -0.060)
DLIB_CHIP_SIZE = 150


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class OptionSpec:
    """One row of the teacher option table."""

    name: str
    kinds: tuple[str, ...]
    help: str


_MODEL_KINDS = ("onnx", "tflite")
# A model-file teacher's options are the face-model spec's keys (a --teacher-config file is a spec file);
# dlib's chip has options of its own.
TEACHER_OPTIONS: dict[str, OptionSpec] = {
    **{o.name: OptionSpec(o.name, _MODEL_KINDS, o.help) for o in SPEC_OPTIONS.values()},
    "jitters": OptionSpec("jitters", ("dlib",), "dlib num_jitters: re-sampled copies averaged (default 0; each costs "
                          "a pass)"),
    "padding": OptionSpec("padding", ("dlib",), "dlib chip padding around the face (default 0.25, as "
                          "face_recognition)"),
}


def read_teacher_config(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Teacher options from a TOML file: keys at the top level, under ``[teacher]`` or under ``[face_model]``
    (a face-model spec file, e.g. the one ``edgeface import`` writes)."""
    path = Path(path)
    data = read_toml(path, "teacher config")
    for table in ("teacher", "face_model"):
        if table in data:
            if not isinstance(data[table], dict):
                raise UserError(f"{path}: [{table}] must be a table")
            if table == "teacher" and len(data) > 1:
                raise UserError(f"{path}: put every teacher option under [teacher] or none of them")
            return dict(data[table])
    return dict(data)


def parse_option_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """``["mean=127.5", "color=BGR", "input_size=112,112"]`` -> dict; values read as TOML where they parse."""
    toml = toml_module()
    out: dict[str, Any] = {}
    for item in pairs:
        key, sep, text = item.partition("=")
        key, text = key.strip().replace("-", "_"), text.strip()
        if not sep or not key or not text:
            raise UserError(f"teacher option {item!r} is not KEY=VALUE (e.g. mean=127.5 or color=BGR)")
        try:
            out[key] = toml.loads(f"v = {text}")["v"]
        except toml.TOMLDecodeError:
            out[key] = text  # a bare word (BGR, NCHW) or a comma list ("112,112")
    return out


def check_option_keys(options: Mapping[str, Any], kind: str) -> None:
    """Unknown keys get a suggestion; keys of another teacher kind are refused by name."""
    for key in options:
        if key not in TEACHER_OPTIONS:
            raise unknown_choice("teacher option", key, list(TEACHER_OPTIONS))
        if kind not in TEACHER_OPTIONS[key].kinds:
            usable = [k for k, o in TEACHER_OPTIONS.items() if kind in o.kinds]
            tail = f"it takes {', '.join(usable)}" if usable else "it takes no options"
            raise UserError(f"teacher option {key!r} does not apply to the {kind} teacher: {tail}")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UserError(f"teacher option {key} must be one number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise UserError(f"teacher option {key} must be one number, got {value!r}") from None


def teacher_spec(options: Mapping[str, Any]) -> FaceModelSpec:
    """A model-file teacher's face-model spec from its options (the ArcFace template unless they say otherwise)."""
    try:
        return FaceModelSpec.from_options(options)
    except UserError as exc:
        raise UserError(f"teacher {exc}") from None


def as_vectors(out: np.ndarray, n: int, where: str, name: str = "") -> np.ndarray:
    """A model output as (n, D) vectors; :class:`UserError` when it is not one vector per face."""
    out = np.asarray(out)
    shape = out.shape
    if out.ndim >= 1 and shape[0] == n:
        rest = [s for s in shape[1:] if s != 1]
        if len(rest) == 1 and rest[0] >= 2:
            return out.reshape(n, rest[0]).astype(np.float32)
    label = f" {name!r}" if name else ""
    raise UserError(f"{where} is not an embedding model: its output{label} has shape {tuple(shape)}; a teacher "
                    f"must output one vector per face, shape (N, D)")


# --------------------------------------------------------------------------- adapters


class Teacher:
    """A face model that teaches: ``prepare`` one face's input from the photograph, ``run`` a batch of them.

    ``embed(image, detection)`` does both for one face.  Outputs are the model's
    raw vectors (float32, not normalised).  ``identity()`` says everything the
    output depends on, for the embedding cache.
    """

    kind = ""
    dim = 0
    batch_size = 1

    # A teacher of a model file aligns and feeds faces as this face-model spec says (None: its own way, dlib).
    spec = None

    def __init__(self, source: str) -> None:
        self.source = source  # the --teacher text
        self.model_sha256 = ""

    @property
    def name(self) -> str:
        return self.source

    def identity(self) -> dict:
        return {"kind": self.kind, "model_sha256": self.model_sha256, "dim": self.dim}

    def prepare(self, image: np.ndarray, detection) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, image: np.ndarray, detection) -> np.ndarray:
        """The teacher's raw embedding (D,) of one detected face of an RGB uint8 photograph."""
        return self.run([self.prepare(image, detection)])[0]

    def check_crops(self, where: str) -> None:
        """A :class:`UserError` unless this teacher can embed already aligned crops (a pack's records): only a
        teacher aligned like them -- edgeface's template, which is ArcFace's, at any size -- can; the others
        align from the photograph in a way a crop cannot give back."""
        from edgeface.runtime.facemodel import FaceModelSpec

        if self.spec is None:
            raise UserError(f"{where} holds aligned crops; the {self.kind} teacher aligns faces its own way from the "
                            "photograph (its landmarks, a larger chip): distil it from the photographs (e.g. "
                            "lfw-deepfunneled)")
        if not self.spec.same_alignment(FaceModelSpec.edgeface()):
            raise UserError(f"{where} holds crops aligned to edgeface's (ArcFace's) template; the teacher "
                            f"{self.name} takes {self.spec.size[0]}x{self.spec.size[1]} faces aligned another way "
                            f"({self.spec.alignment}): distil it from the photographs, or give its options "
                            "alignment=template template=arcface if that is how it was trained")

    def prepare_crop(self, crop: np.ndarray) -> np.ndarray:
        """The teacher's input from one aligned RGB uint8 crop (after :meth:`check_crops`): the crop resized to
        the teacher's input size, as ``prepare`` would have cut it from the photograph."""
        import cv2

        w, h = self.spec.size
        if crop.shape[:2] != (h, w):
            interpolation = cv2.INTER_AREA if crop.shape[0] > h else cv2.INTER_LINEAR
            crop = cv2.resize(crop, (w, h), interpolation=interpolation)
        return crop


class FaceModelTeacher(Teacher):
    """A teacher that is a :class:`~edgeface.runtime.facemodel.FaceModel` (the runtime's TFLite embedder,
    evaluation's Keras model): its spec aligns the crop, the model embeds it."""

    batch_size = 64

    def __init__(self, spec: str, path: Path, model) -> None:
        super().__init__(spec)
        from edgeface.runtime.bundle import sha256_file

        self.path = path
        self.model = model
        self.spec = model.spec
        self.dim = model.dim
        self.model_sha256 = sha256_file(path)

    def identity(self) -> dict:
        return {**super().identity(), "input": self.spec.to_dict()}

    def prepare(self, image: np.ndarray, detection) -> np.ndarray:
        return self.spec.align_detection(image, detection)

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        inputs = list(inputs)
        outs = [self.model.embed(np.stack(inputs[i:i + self.batch_size]))
                for i in range(0, len(inputs), self.batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, self.dim), np.float32)


class TFLiteTeacher(FaceModelTeacher):
    kind = "tflite"


class KerasTeacher(FaceModelTeacher):
    kind = "keras"


class OnnxTeacher(Teacher):
    """Any ONNX embedding model through onnxruntime (CPU): options -> crop -> normalised tensor -> vector."""

    kind = "onnx"

    def __init__(self, spec: str, path: Path, options: Mapping[str, Any], threads: Optional[int] = None) -> None:
        super().__init__(spec)
        from edgeface.runtime.bundle import sha256_file

        self.path = path
        self.spec = teacher_spec(options)
        self.model_sha256 = sha256_file(path)
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError(ONNX_HINT) from None
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise UserError(f"cannot load {path} as an ONNX model: {_first_line(exc)}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise UserError(f"{path} takes {len(inputs)} inputs; a face teacher takes one image")
        self._input_name = inputs[0].name
        self._input_dtype = {"tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
                             "tensor(double)": np.float64}.get(inputs[0].type, np.float32)
        if self._input_dtype == np.uint8 and (any(m != 0 for m in self.spec.mean)
                                              or any(s != 1 for s in self.spec.std)):
            # A uint8 input takes the 0..255 pixels as they are and normalises inside the model; a normalised
            # value cast to uint8 would wrap (-1.0 becomes 255), so these options can only be a mistake.
            raise UserError(f"{path} takes uint8 pixels (0..255) and normalises them itself: drop the teacher's "
                            "mean/std/scale/offset options")
        self.spec, dynamic_batch = self.spec.for_model_input(inputs[0].shape, str(path))
        self.batch_size = 32 if dynamic_batch else 1
        outputs = [o.name for o in self.session.get_outputs()]
        self._output_name = _pick_output(outputs, self.spec.output, str(path))
        # Run a blank face once: proves the file runs and that its output is one vector per face.
        w, h = self.spec.size
        blank = self.spec.to_input(np.zeros((1, h, w, 3), np.uint8))
        self.dim = as_vectors(self._run_raw(blank), 1, str(self.path), self._output_name).shape[1]

    def identity(self) -> dict:
        return {**super().identity(), "input": self.spec.to_dict()}

    def prepare(self, image: np.ndarray, detection) -> np.ndarray:
        return self.spec.to_input(self.spec.align_detection(image, detection))

    def prepare_crop(self, crop: np.ndarray) -> np.ndarray:
        return self.spec.to_input(super().prepare_crop(crop))

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        inputs = list(inputs)
        if not inputs:
            return np.zeros((0, self.dim), np.float32)
        outs = []
        for i in range(0, len(inputs), self.batch_size):
            batch = np.stack(inputs[i:i + self.batch_size])
            outs.append(as_vectors(self._run_raw(batch), len(batch), str(self.path), self._output_name))
        return np.concatenate(outs)

    def _run_raw(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(self._input_dtype, copy=False)
        return self.session.run([self._output_name], {self._input_name: x})[0]


def tflite_teacher(spec: str, path: Path, options: Mapping[str, Any], threads: Optional[int] = None) -> Teacher:
    """Any TFLite embedding model through the runtime's embedder; options, else the bundle manifest or
    ``MODEL.toml`` that describes the file, else the ArcFace template."""
    from edgeface.runtime.facemodel import DEFAULT_SPEC_SOURCE, spec_for_model_file
    from edgeface.runtime.interpreter import Embedder

    own, source = spec_for_model_file(path)
    face_spec = teacher_spec({**(own.to_options() if source != DEFAULT_SPEC_SOURCE else {}), **options})
    return TFLiteTeacher(spec, path, Embedder(path, threads=threads, spec=face_spec))


def keras_teacher(spec: str, path: Path) -> Teacher:
    """An edgeface ``.keras`` model (trained, distilled or imported), aligned as its spec says (``MODEL.toml``
    beside it, else edgeface's 112x112 template)."""
    from edgeface.evaluate.embedders import KerasEmbedder

    model = KerasEmbedder(path)
    if model.dim < 2:
        raise UserError(f"{path} is not an embedding model: a teacher must output one vector per face, shape (N, D)")
    return KerasTeacher(spec, path, model)


def dlib_model_files() -> tuple[Path, Path]:
    """(face recognition ResNet, 5-point shape predictor) from the face_recognition_models package.

    Located through the package's installed-file list, without importing it: its
    ``__init__`` needs ``pkg_resources``, which recent setuptools no longer ship.
    """
    import importlib.metadata

    wanted = {"dlib_face_recognition_resnet_model_v1.dat": None, "shape_predictor_5_face_landmarks.dat": None}
    try:
        for f in importlib.metadata.files("face_recognition_models") or []:
            if f.name in wanted:
                wanted[f.name] = Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        raise UserError(DLIB_HINT) from None
    found = [p for p in wanted.values() if p is not None and p.is_file()]
    if len(found) != 2:
        raise UserError(f"face_recognition_models is installed without its model files; reinstall it: {DLIB_HINT}")
    return found[0], found[1]


class DlibTeacher(Teacher):
    """dlib's ResNet face encoder (``face_recognition``'s model): 5-point landmarks -> 150x150 chip -> 128-d."""

    kind = "dlib"
    dim = 128

    def __init__(self, spec: str, options: Mapping[str, Any]) -> None:
        super().__init__(spec)
        try:
            import dlib
        except ImportError:
            raise UserError(DLIB_HINT) from None
        from edgeface.runtime.bundle import sha256_file

        jitters = _number("jitters", options.get("jitters", 0))
        if not float(jitters).is_integer():  # also refuses inf and nan, which int() would choke on
            raise UserError(f"teacher option jitters must be a whole number (dlib's num_jitters), got {jitters:g}")
        self.jitters = int(jitters)
        self.padding = _number("padding", options.get("padding", 0.25))
        if self.jitters < 0 or not 0.0 <= self.padding <= 1.0:
            raise UserError(f"dlib options need jitters >= 0 and 0 <= padding <= 1, got jitters={self.jitters}, "
                            f"padding={self.padding}")
        rec, landmarks = dlib_model_files()
        self._dlib = dlib
        self.shape_predictor = dlib.shape_predictor(str(landmarks))
        self.encoder = dlib.face_recognition_model_v1(str(rec))
        self.model_sha256 = sha256_file(rec)
        self.landmarks_sha256 = sha256_file(landmarks)
        # Detection and alignment run on worker threads; one dlib predictor is not documented thread-safe.
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "dlib (face_recognition_models ResNet)"

    def identity(self) -> dict:
        return {**super().identity(), "landmarks_sha256": self.landmarks_sha256, "chip": DLIB_CHIP_SIZE,
                "padding": self.padding, "jitters": self.jitters, "box_shift": list(DLIB_BOX_SHIFT)}

    def prepare(self, image: np.ndarray, detection) -> np.ndarray:
        x1, y1, x2, y2 = (float(v) for v in detection.box)
        w, h = x2 - x1, y2 - y1
        dx, dy = DLIB_BOX_SHIFT[0] * w, DLIB_BOX_SHIFT[1] * h
        rect = self._dlib.rectangle(int(round(x1 + dx)), int(round(y1 + dy)), int(round(x2 + dx)),
                                    int(round(y2 + dy)))
        img = np.ascontiguousarray(image, np.uint8)
        with self._lock:
            shape = self.shape_predictor(img, rect)
            return np.asarray(self._dlib.get_face_chip(img, shape, size=DLIB_CHIP_SIZE, padding=self.padding))

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        # One chip per call: dlib's batched call measured slower on this CPU.
        out = [np.asarray(self.encoder.compute_face_descriptor(np.ascontiguousarray(c), self.jitters), np.float32)
               for c in inputs]
        return np.stack(out) if out else np.zeros((0, self.dim), np.float32)


def _pick_output(names: list[str], which: Union[int, str], where: str) -> str:
    if isinstance(which, str):
        if which not in names:
            raise unknown_choice(f"output of {where}", which, names)
        return which
    if not -len(names) <= which < len(names):
        raise UserError(f"{where} has {len(names)} output(s); output {which} does not exist")
    return names[which]


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (onnxruntime puts the summary there), or its type's name."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# --------------------------------------------------------------------------- the table and the spec


@dataclass(frozen=True)
class TeacherKind:
    """One row of the teacher table."""

    name: str
    suffix: str  # model file suffix ("" for teachers without a file)
    help: str
    build: Callable[..., Teacher]


TEACHERS: dict[str, TeacherKind] = {k.name: k for k in (
    TeacherKind("dlib", "", "dlib's ResNet from face_recognition_models (128-d, 150x150 chips)",
                lambda spec, path, options, threads: DlibTeacher(spec, options)),
    TeacherKind("onnx", ".onnx", "an ONNX embedding model through onnxruntime",
                lambda spec, path, options, threads: OnnxTeacher(spec, path, options, threads)),
    TeacherKind("tflite", ".tflite", "a TFLite embedding model through the runtime's interpreter",
                lambda spec, path, options, threads: tflite_teacher(spec, path, options, threads)),
    TeacherKind("keras", ".keras", "an edgeface .keras model (edgeface alignment)",
                lambda spec, path, options, threads: keras_teacher(spec, path)),
)}
SPEC_FORMS = "dlib, onnx:PATH, tflite:PATH or keras:PATH"


@dataclass(frozen=True)
class TeacherSpec:
    """A parsed ``--teacher``: the kind and, for file teachers, the model path."""

    kind: str
    path: Optional[Path] = None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def parse_teacher_spec(spec: str) -> TeacherSpec:
    """``dlib`` | ``onnx:PATH`` | ``tflite:PATH`` | ``keras:PATH`` | a path ending in .onnx/.tflite/.keras.

    Checks the form and that the file exists (cheap: loads nothing).
    """
    text = str(spec).strip()
    if not text:
        raise UserError(f"--teacher is empty: use {SPEC_FORMS}")
    kind, sep, rest = text.partition(":")
    if sep and len(kind) > 1:  # "C:\..." is a Windows path, not a kind
        kind = kind.strip().lower()
        if kind not in TEACHERS:
            close = difflib.get_close_matches(kind, list(TEACHERS), n=1)
            hint = f" (did you mean '{close[0]}:{rest}'?)" if close else ""
            raise UserError(f"unknown teacher kind {kind!r}{hint}: use {SPEC_FORMS}")
        row = TEACHERS[kind]
        if not row.suffix:
            raise UserError(f"the {kind} teacher takes no model path: use --teacher {kind}")
        if not rest.strip():
            raise UserError(f"--teacher {kind}: needs a model path, e.g. {kind}:model{row.suffix}")
        path = Path(rest.strip()).expanduser()
    elif text.lower() in TEACHERS and not TEACHERS[text.lower()].suffix:
        return TeacherSpec(text.lower())
    else:
        path = Path(text).expanduser()
        by_suffix = {row.suffix: row.name for row in TEACHERS.values() if row.suffix}
        kind = by_suffix.get(path.suffix.lower(), "")
        if not kind:
            close = difflib.get_close_matches(text.lower(), list(TEACHERS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"unknown teacher {text!r}{hint}: use {SPEC_FORMS}")
    if not path.is_file():
        raise UserError(f"teacher model file not found: {path}")
    return TeacherSpec(kind, path)


def load_teacher(spec: Union[str, TeacherSpec], config: Optional[Union[str, os.PathLike]] = None,
                 options: Optional[Mapping[str, Any]] = None, threads: Optional[int] = None) -> Teacher:
    """Build the teacher for ``spec`` with options from the TOML ``config`` file, overridden by ``options``."""
    parsed = spec if isinstance(spec, TeacherSpec) else parse_teacher_spec(spec)
    merged: dict[str, Any] = read_teacher_config(config) if config is not None else {}
    merged.update(options or {})
    check_option_keys(merged, parsed.kind)
    return TEACHERS[parsed.kind].build(str(parsed), parsed.path, merged, threads)
