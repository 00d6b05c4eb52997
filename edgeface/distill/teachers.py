"""Teacher adapters: the original image plus one detected face in, the teacher's embedding out.

Every face model has its own alignment and input convention, so a teacher gets
the *original* photograph and the BlazeFace detection (box and keypoints) and
prepares its own input:

* ``dlib``: dlib's ResNet face encoder from the ``face_recognition_models``
  package (what ``face_recognition`` uses): dlib's 5-point shape predictor on the
  detection box, a 150x150 chip, a 128-d vector.
* ``onnx:PATH`` (onnxruntime) and ``tflite:PATH`` (the runtime's interpreter
  wrapper): any embedding model, with its input size, normalisation, colour
  order, layout and alignment template given by options or a small TOML file
  (:data:`TEACHER_OPTIONS` lists the keys).
* ``keras:PATH``: an edgeface ``.keras`` model (edgeface's 112x112 alignment),
  e.g. a bigger edgeface model teaching a smaller one.

:func:`parse_teacher_spec` reads ``--teacher``, :func:`load_teacher` builds the
adapter.  Preprocessing (:func:`face_crop`, :func:`to_model_input`) is pure
numpy/OpenCV, tested without a model.  A teacher returns its raw output
vectors; callers normalise them.
"""

from __future__ import annotations

import difflib
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from edgeface.errors import UserError

INSTALL_HINT = "pip install 'edgeface[distill]'"
DLIB_HINT = (f"the dlib teacher needs dlib and its models (the face_recognition_models package): {INSTALL_HINT} "
             "(or pip install dlib face_recognition_models)")
ONNX_HINT = f"the onnx teacher needs onnxruntime: {INSTALL_HINT} (or pip install onnxruntime)"

# The ArcFace/InsightFace 5-point template for 112x112 crops (eyes, nose tip, mouth corners).  BlazeFace gives a
# mouth centre, not corners, so a 5-point template is used with its mouth corners averaged (as edgeface's own
# TEMPLATE_112 is).
ARCFACE_TEMPLATE_112 = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]]
NAMED_TEMPLATES = {"arcface": (ARCFACE_TEMPLATE_112, (112, 112))}

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
TEACHER_OPTIONS: dict[str, OptionSpec] = {o.name: o for o in (
    OptionSpec("input_size", _MODEL_KINDS, "W,H (or one number for a square); default: the model's input shape"),
    OptionSpec("layout", _MODEL_KINDS, "NHWC or NCHW; default: read from the model's input shape"),
    OptionSpec("color", _MODEL_KINDS, "RGB or BGR channel order (default RGB)"),
    OptionSpec("mean", _MODEL_KINDS, "subtracted from the 0..255 pixels, one number or one per channel (default 0)"),
    OptionSpec("std", _MODEL_KINDS, "then divided by this, one number or one per channel (default 1)"),
    OptionSpec("scale", _MODEL_KINDS, "alternative to mean/std: pixel * scale + offset"),
    OptionSpec("offset", _MODEL_KINDS, "alternative to mean/std: pixel * scale + offset"),
    OptionSpec("alignment", _MODEL_KINDS, "template (similarity transform of eyes, nose and mouth onto the template, "
               "the default) or box (the detection box widened to the input's aspect, plus box_margin)"),
    OptionSpec("template", _MODEL_KINDS, "'arcface' (default) or 4 points [[x,y] eye, eye, nose, mouth centre] or "
               "5 points (mouth corners, averaged) in template_size coordinates"),
    OptionSpec("template_size", _MODEL_KINDS, "W,H the template points refer to (default 112,112); scaled to "
               "the input size"),
    OptionSpec("box_margin", _MODEL_KINDS, "alignment=box: extra margin, a fraction of the box (default 0)"),
    OptionSpec("output", _MODEL_KINDS, "which output is the embedding: an index or a name (default 0)"),
    OptionSpec("jitters", ("dlib",), "dlib num_jitters: re-sampled copies averaged (default 0; each costs a pass)"),
    OptionSpec("padding", ("dlib",), "dlib chip padding around the face (default 0.25, as face_recognition)"),
)}


def _unknown(what: str, value: str, choices: Sequence[str]) -> UserError:
    close = difflib.get_close_matches(value, list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UserError(f"unknown {what} {value!r}{hint}: choose one of {', '.join(choices)}")


def _toml_module():
    try:
        import tomllib  # Python 3.11+

        return tomllib
    except ImportError:
        try:
            import tomli

            return tomli
        except ImportError:
            raise UserError(f"reading TOML on Python < 3.11 needs tomli: {INSTALL_HINT} (or pip install tomli)") \
                from None


def read_teacher_config(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Teacher options from a TOML file: keys at the top level or under a ``[teacher]`` table."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"teacher config not found: {path}")
    toml = _toml_module()
    try:
        data = toml.loads(path.read_text())
    except (toml.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a valid TOML file: {str(exc).splitlines()[0]}") from None
    if "teacher" in data:
        if not isinstance(data["teacher"], dict) or len(data) > 1:
            raise UserError(f"{path}: put every teacher option under [teacher] or none of them")
        data = data["teacher"]
    return dict(data)


def parse_option_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """``["mean=127.5", "color=BGR", "input_size=112,112"]`` -> dict; values read as TOML where they parse."""
    toml = _toml_module()
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
            raise _unknown("teacher option", key, list(TEACHER_OPTIONS))
        if kind not in TEACHER_OPTIONS[key].kinds:
            usable = [k for k, o in TEACHER_OPTIONS.items() if kind in o.kinds]
            tail = f"it takes {', '.join(usable)}" if usable else "it takes no options"
            raise UserError(f"teacher option {key!r} does not apply to the {kind} teacher: {tail}")


def _numbers(key: str, value: Any, count: Optional[int] = None) -> list[float]:
    if isinstance(value, str):
        value = [v for v in value.replace("x", ",").split(",") if v.strip()]
    if isinstance(value, (int, float)):
        value = [value]
    try:
        nums = [float(v) for v in value]
    except (TypeError, ValueError):
        nums = []
    if not nums or (count is not None and len(nums) not in (1, count)):
        want = f"one number or {count}" if count else "numbers"
        raise UserError(f"teacher option {key} must be {want}, got {value!r}")
    return nums


def _size(key: str, value: Any) -> tuple[int, int]:
    nums = _numbers(key, value, 2)
    w, h = (nums * 2)[:2] if len(nums) == 1 else nums
    if w != int(w) or h != int(h) or w < 8 or h < 8:
        raise UserError(f"teacher option {key} must be whole numbers >= 8 (W,H), got {value!r}")
    return int(w), int(h)


def _per_channel(key: str, value: Any) -> tuple[float, float, float]:
    nums = _numbers(key, value, 3)
    return tuple(nums * 3)[:3] if len(nums) == 1 else tuple(nums)  # type: ignore[return-value]


@dataclass
class InputSpec:
    """How an ONNX/TFLite teacher's input is made from the photograph (resolved options).

    The model input is ``(pixel - mean) / std`` of the aligned crop in ``color``
    order and ``layout``; ``size`` is (width, height).
    """

    size: Optional[tuple[int, int]] = None
    layout: Optional[str] = None
    color: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    alignment: str = "template"
    template: list = field(default_factory=lambda: [list(p) for p in ARCFACE_TEMPLATE_112])
    template_size: tuple[int, int] = (112, 112)
    box_margin: float = 0.0
    output: Union[int, str] = 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> InputSpec:
        """Validate option values (one line per mistake) into an InputSpec."""
        o = dict(options)
        spec = cls()
        if "input_size" in o:
            spec.size = _size("input_size", o["input_size"])
        if "layout" in o:
            layout = str(o["layout"]).upper()
            if layout not in ("NHWC", "NCHW"):
                raise _unknown("layout", str(o["layout"]), ["NHWC", "NCHW"])
            spec.layout = layout
        if "color" in o:
            color = str(o["color"]).upper()
            if color not in ("RGB", "BGR"):
                raise _unknown("colour order", str(o["color"]), ["RGB", "BGR"])
            spec.color = color
        if ("scale" in o or "offset" in o) and ("mean" in o or "std" in o):
            raise UserError("give the teacher's normalisation as mean/std or as scale/offset, not both")
        if "mean" in o:
            spec.mean = _per_channel("mean", o["mean"])
        if "std" in o:
            spec.std = _per_channel("std", o["std"])
        if "scale" in o or "offset" in o:
            scale = _per_channel("scale", o.get("scale", 1.0))
            offset = _per_channel("offset", o.get("offset", 0.0))
            if any(s == 0 for s in scale):
                raise UserError("teacher option scale must not be 0")
            # pixel * scale + offset == (pixel - mean) / std with std = 1 / scale, mean = -offset / scale.
            spec.std = tuple(1.0 / s for s in scale)  # type: ignore[assignment]
            spec.mean = tuple(-b / s for s, b in zip(scale, offset))  # type: ignore[assignment]
        if any(s == 0 for s in spec.std):
            raise UserError("teacher option std must not be 0")
        if "alignment" in o:
            if o["alignment"] not in ("template", "box"):
                raise _unknown("alignment", str(o["alignment"]), ["template", "box"])
            spec.alignment = o["alignment"]
        if "template" in o:
            t = o["template"]
            if isinstance(t, str):
                if t not in NAMED_TEMPLATES:
                    raise _unknown("template", t, list(NAMED_TEMPLATES))
                points, size = NAMED_TEMPLATES[t]
                spec.template = [list(p) for p in points]
                spec.template_size = size
            else:
                try:
                    pts = np.asarray(t, dtype=np.float64)
                except (TypeError, ValueError):
                    pts = np.zeros((0,))
                if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) not in (4, 5):
                    raise UserError("teacher option template must be 4 or 5 [x, y] points (eye, eye, nose, mouth "
                                    "centre or mouth corners) or 'arcface'")
                spec.template = pts.tolist()
        if "template_size" in o:
            spec.template_size = _size("template_size", o["template_size"])
        if "box_margin" in o:
            margin = _numbers("box_margin", o["box_margin"], 1)[0]
            if not 0.0 <= margin <= 2.0:
                raise UserError(f"teacher option box_margin must be between 0 and 2, got {margin}")
            spec.box_margin = margin
        if "output" in o:
            out = o["output"]
            if not isinstance(out, (int, str)) or isinstance(out, bool):
                raise UserError(f"teacher option output must be an index or a name, got {out!r}")
            spec.output = out
        return spec

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size) if self.size else None
        return d


# --------------------------------------------------------------------------- preprocessing (pure numpy)


def template_points(spec: InputSpec, size: tuple[int, int]) -> np.ndarray:
    """The 4 alignment targets (eye, eye, nose, mouth centre) in pixels of a ``size`` = (W, H) input."""
    pts = np.asarray(spec.template, np.float64)
    if len(pts) == 5:
        pts = np.vstack([pts[:3], pts[3:5].mean(axis=0)])
    tw, th = spec.template_size
    return (pts * [size[0] / tw, size[1] / th]).astype(np.float32)


def box_transform(box: np.ndarray, size: tuple[int, int], margin: float = 0.0) -> np.ndarray:
    """2x3 affine matrix mapping the detection box (widened to the output's aspect, plus ``margin``) onto
    a ``size`` = (W, H) image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    aspect = size[0] / size[1]
    w, h = max(w, h * aspect), max(h, w / aspect)
    w, h = w * (1.0 + margin), h * (1.0 + margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    sx, sy = size[0] / w, size[1] / h
    return np.array([[sx, 0.0, size[0] / 2.0 - sx * cx], [0.0, sy, size[1] / 2.0 - sy * cy]], np.float32)


def face_crop(image: np.ndarray, detection, spec: InputSpec, size: tuple[int, int]) -> np.ndarray:
    """The teacher's RGB uint8 crop of one detected face, ``size`` = (W, H)."""
    import cv2

    from edgeface.runtime.align import alignment_points, umeyama

    if spec.alignment == "box":
        matrix = box_transform(detection.box, size, spec.box_margin)
    else:
        matrix = umeyama(alignment_points(detection.keypoints), template_points(spec, size))
    return cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def to_model_input(crop: np.ndarray, spec: InputSpec) -> np.ndarray:
    """RGB uint8 crop (H, W, 3) -> float32 model input in the teacher's colour order, normalisation and layout."""
    x = np.asarray(crop, np.float32)
    if spec.color == "BGR":
        x = x[..., ::-1]
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "NCHW":
        x = np.transpose(x, (2, 0, 1))
    return np.ascontiguousarray(x, np.float32)


def resolve_layout(shape: Sequence, spec: InputSpec, where: str) -> tuple[str, tuple[int, int], bool]:
    """(layout, (W, H), batch_is_dynamic) from a model's input shape and the options.

    Dynamic dimensions are ``None``, negative or strings (ONNX symbolic dims).
    """
    def static(d) -> Optional[int]:
        return int(d) if isinstance(d, (int, np.integer)) and int(d) > 0 else None

    if len(shape) != 4:
        raise UserError(f"{where} is not an image model: its input has shape {tuple(shape)}, expected 4 dims "
                        "(N, H, W, 3) or (N, 3, H, W)")
    d = [static(v) for v in shape]
    layout = spec.layout
    if layout is None:
        if d[3] == 3:
            layout = "NHWC"
        elif d[1] == 3:
            layout = "NCHW"
        else:
            raise UserError(f"{where}: cannot tell the layout of input shape {tuple(shape)}: give layout=NHWC or "
                            "layout=NCHW")
    channels, h, w = (d[3], d[1], d[2]) if layout == "NHWC" else (d[1], d[2], d[3])
    if channels not in (3, None):
        raise UserError(f"{where} takes {channels} channels in layout {layout}; a face teacher takes 3 (RGB/BGR)")
    if spec.size is not None:
        if (w is not None and w != spec.size[0]) or (h is not None and h != spec.size[1]):
            raise UserError(f"{where} takes {w}x{h} images but input_size says {spec.size[0]}x{spec.size[1]}")
        size = spec.size
    elif w is None or h is None:
        raise UserError(f"{where} has a dynamic input size {tuple(shape)}: give input_size=W,H")
    else:
        size = (w, h)
    return layout, size, d[0] is None


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

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.model_sha256 = ""

    @property
    def name(self) -> str:
        return self.spec

    def identity(self) -> dict:
        return {"kind": self.kind, "model_sha256": self.model_sha256, "dim": self.dim}

    def prepare(self, image: np.ndarray, detection) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, image: np.ndarray, detection) -> np.ndarray:
        """The teacher's raw embedding (D,) of one detected face of an RGB uint8 photograph."""
        return self.run([self.prepare(image, detection)])[0]


class ModelFileTeacher(Teacher):
    """Shared by the ONNX and TFLite adapters: options -> crop -> normalised tensor -> output vector."""

    def __init__(self, spec: str, path: Path, options: Mapping[str, Any]) -> None:
        super().__init__(spec)
        from edgeface.runtime.bundle import sha256_file

        self.path = path
        self.input = InputSpec.from_options(options)
        self.model_sha256 = sha256_file(path)

    def identity(self) -> dict:
        return {**super().identity(), "input": self.input.to_dict()}

    def prepare(self, image: np.ndarray, detection) -> np.ndarray:
        return to_model_input(face_crop(image, detection, self.input, self.input.size), self.input)

    def _check_output(self) -> None:
        """Run a blank face once: proves the file runs and that its output is one vector per face."""
        h, w = self.input.size[1], self.input.size[0]
        shape = (h, w, 3) if self.input.layout == "NHWC" else (3, h, w)
        out = self._run_raw(np.zeros((1, *shape), np.float32))
        self.dim = as_vectors(out, 1, str(self.path), self._output_name).shape[1]

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        inputs = list(inputs)
        if not inputs:
            return np.zeros((0, self.dim), np.float32)
        outs = []
        for i in range(0, len(inputs), self.batch_size):
            batch = np.stack(inputs[i:i + self.batch_size])
            outs.append(as_vectors(self._run_raw(batch), len(batch), str(self.path), self._output_name))
        return np.concatenate(outs)

    _output_name = ""

    def _run_raw(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class OnnxTeacher(ModelFileTeacher):
    """Any ONNX embedding model through onnxruntime (CPU)."""

    kind = "onnx"

    def __init__(self, spec: str, path: Path, options: Mapping[str, Any], threads: Optional[int] = None) -> None:
        super().__init__(spec, path, options)
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
        if self._input_dtype == np.uint8 and (any(m != 0 for m in self.input.mean)
                                              or any(s != 1 for s in self.input.std)):
            # A uint8 input takes the 0..255 pixels as they are and normalises inside the model; a normalised
            # value cast to uint8 would wrap (-1.0 becomes 255), so these options can only be a mistake.
            raise UserError(f"{path} takes uint8 pixels (0..255) and normalises them itself: drop the teacher's "
                            "mean/std/scale/offset options")
        self.input.layout, self.input.size, dynamic_batch = resolve_layout(inputs[0].shape, self.input, str(path))
        self.batch_size = 32 if dynamic_batch else 1
        outputs = [o.name for o in self.session.get_outputs()]
        self._output_name = _pick_output(outputs, self.input.output, str(path))
        self._check_output()

    def _run_raw(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(self._input_dtype, copy=False)
        return self.session.run([self._output_name], {self._input_name: x})[0]


class TFLiteTeacher(ModelFileTeacher):
    """Any TFLite embedding model through :mod:`edgeface.runtime.interpreter` (float or quantized)."""

    kind = "tflite"

    def __init__(self, spec: str, path: Path, options: Mapping[str, Any], threads: Optional[int] = None) -> None:
        super().__init__(spec, path, options)
        from edgeface.runtime.interpreter import TFLiteModel

        self.model = TFLiteModel(path, threads=threads)
        if len(self.model.inputs) != 1:
            raise UserError(f"{path} takes {len(self.model.inputs)} inputs; a face teacher takes one image")
        self.input.layout, self.input.size, _ = resolve_layout(self.model.input.shape, self.input, str(path))
        names = [o.name for o in self.model.outputs]
        self._output_name = _pick_output(names, self.input.output, str(path))
        self._output_index = names.index(self._output_name)
        self._check_output()

    def _run_raw(self, batch: np.ndarray) -> np.ndarray:
        return self.model.run(batch)[self._output_index]


class KerasTeacher(Teacher):
    """An edgeface ``.keras`` embedding model: edgeface's own alignment at the model's input size."""

    kind = "keras"
    batch_size = 64

    def __init__(self, spec: str, path: Path) -> None:
        super().__init__(spec)
        from edgeface.runtime.bundle import sha256_file
        from edgeface.train.models import load_embedding_model

        self.path = path
        self.model = load_embedding_model(path)
        shape = tuple(self.model.input_shape)
        if len(shape) != 4 or shape[-1] != 3 or shape[1] != shape[2] or not shape[1]:
            raise UserError(f"{path} is not an edgeface embedding model: input shape {shape}, expected "
                            "(N, S, S, 3)")
        self.size = int(shape[1])
        out = tuple(self.model.output_shape)
        if len(out) != 2 or not out[-1] or out[-1] < 2:
            raise UserError(f"{path} is not an embedding model: its output has shape {out}; a teacher must "
                            "output one vector per face, shape (N, D)")
        self.dim = int(out[-1])
        self.model_sha256 = sha256_file(path)

    def identity(self) -> dict:
        return {**super().identity(), "alignment": "edgeface TEMPLATE_112", "size": self.size}

    def prepare(self, image: np.ndarray, detection) -> np.ndarray:
        from edgeface.runtime.align import align_face

        return align_face(image, detection.keypoints, self.size)

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        inputs = list(inputs)
        outs = [np.asarray(self.model.predict_on_batch(np.stack(inputs[i:i + self.batch_size]).astype(np.float32)),
                           np.float32) for i in range(0, len(inputs), self.batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, self.dim), np.float32)


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

        jitters = _numbers("jitters", options.get("jitters", 0), 1)[0]
        if not float(jitters).is_integer():  # also refuses inf and nan, which int() would choke on
            raise UserError(f"teacher option jitters must be a whole number (dlib's num_jitters), got {jitters:g}")
        self.jitters = int(jitters)
        self.padding = float(_numbers("padding", options.get("padding", 0.25), 1)[0])
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
            raise _unknown(f"output of {where}", which, names)
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
                lambda spec, path, options, threads: TFLiteTeacher(spec, path, options, threads)),
    TeacherKind("keras", ".keras", "an edgeface .keras model (edgeface alignment)",
                lambda spec, path, options, threads: KerasTeacher(spec, path)),
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
