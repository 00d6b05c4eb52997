"""The face-model contract: what a face-embedding model expects, and one way to embed faces with any of them.

:class:`FaceModelSpec` says everything a caller must know to feed a model and use what it returns: input size
and layout, colour order, pixel normalisation, the alignment (a 4-point template in chip pixels, or the
detection box), the embedding size, how two embeddings are compared and the match threshold.  It is read from
a bundle's ``manifest.json`` (:meth:`FaceModelSpec.from_manifest`), written into it
(:meth:`FaceModelSpec.manifest_blocks`), or given for a bare model file as a small TOML file
(:func:`read_spec_file`; the same keys as ``--teacher-option``), by default ``MODEL.toml`` beside ``MODEL``.

Every model that turns faces into embeddings (the runtime's TFLite :class:`~edgeface.runtime.interpreter.Embedder`,
evaluation's Keras models, distillation's teachers) carries a spec and implements :class:`FaceModel`: aligned
crops in, unit-length embeddings out.  :func:`embed_faces` goes from a photograph and its detections to
embeddings through the spec's own alignment, so a trained and an imported model (dlib's 150x150 chip) go
through every command the same way.

Pure numpy and OpenCV: nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence, Union

import cv2
import numpy as np

from edgeface.choices import unknown_choice
from edgeface.errors import UserError
from edgeface.runtime.align import TEMPLATE_POINTS_112, alignment_points, umeyama

METRICS = ("cosine",)
ALIGNMENTS = ("template", "box")
LAYOUTS = ("NHWC", "NCHW")
COLORS = ("RGB", "BGR")
# edgeface's template for 112x112 crops (eyes, nose tip, mouth centre): the one training crops are aligned to.
EDGEFACE_TEMPLATE_112 = TEMPLATE_POINTS_112
# The same template with both mouth corners (what ArcFace/InsightFace models are aligned with).
ARCFACE_TEMPLATE_112 = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655),
                        (70.7299, 92.2041))
NAMED_TEMPLATES: dict[str, tuple[tuple, tuple[int, int]]] = {
    "arcface": (ARCFACE_TEMPLATE_112, (112, 112)),
    "edgeface": (EDGEFACE_TEMPLATE_112, (112, 112)),
}
TEMPLATE_POINTS = ("eye_left", "eye_right", "nose", "mouth")
SPEC_SUFFIX = ".toml"
# What spec_for_model_file says when a model file has no spec of its own.
DEFAULT_SPEC_SOURCE = "edgeface default"


class SpecMismatch(UserError):
    """A model file and the spec that describes it disagree (input size, embedding size)."""


@dataclass(frozen=True)
class SpecOption:
    """One key of a face-model spec file (and of ``--teacher-option``)."""

    name: str
    help: str


SPEC_OPTIONS: dict[str, SpecOption] = {o.name: o for o in (
    SpecOption("input_size", "W,H (or one number for a square); default: the model's input shape"),
    SpecOption("layout", "NHWC or NCHW; default: read from the model's input shape"),
    SpecOption("color", "RGB or BGR channel order (default RGB)"),
    SpecOption("mean", "subtracted from the 0..255 pixels, one number or one per channel (default 0)"),
    SpecOption("std", "then divided by this, one number or one per channel (default 1)"),
    SpecOption("scale", "alternative to mean/std: pixel * scale + offset"),
    SpecOption("offset", "alternative to mean/std: pixel * scale + offset"),
    SpecOption("alignment", "template (similarity transform of eyes, nose and mouth onto the template, the "
               "default) or box (the detection box widened to the input's aspect, plus box_margin)"),
    SpecOption("template", "'arcface' (default), 'edgeface' or 4 points [[x,y] eye, eye, nose, mouth centre] or "
               "5 points (mouth corners, averaged) in template_size coordinates"),
    SpecOption("template_size", "W,H the template points refer to (default 112,112); scaled to the input size"),
    SpecOption("box_margin", "alignment=box: extra margin, a fraction of the box (default 0)"),
    SpecOption("output", "which output is the embedding: an index or a name (default 0)"),
    SpecOption("embedding_dim", "length of the embedding (default: read from the model)"),
    SpecOption("metric", "how two embeddings are compared: cosine (of the L2-normalised vectors)"),
    SpecOption("threshold", "match threshold: same person when the cosine similarity is at least this"),
    SpecOption("name", "the model's name"),
)}


def toml_module():
    """The TOML reader: ``tomllib`` (Python 3.11+) or ``tomli``."""
    try:
        import tomllib

        return tomllib
    except ImportError:
        try:
            import tomli

            return tomli
        except ImportError:
            raise UserError("reading TOML on Python < 3.11 needs tomli: pip install tomli") from None


def _numbers(key: str, value: Any, count: Optional[int] = None) -> list[float]:
    if isinstance(value, str):
        value = [v for v in value.replace("x", ",").split(",") if v.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    try:
        nums = [float(v) for v in value if not isinstance(v, bool)]
        if len(nums) != len(value):
            nums = []
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer of 400 digits is no float
        nums = []
    if not nums or (count is not None and len(nums) not in (1, count)) or not all(math.isfinite(n) for n in nums):
        want = f"one number or {count}" if count else "numbers"
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:76] + " ..."  # a hostile value: one line
        raise UserError(f"option {key} must be {want}, got {shown}")
    return nums


def _size(key: str, value: Any) -> tuple[int, int]:
    nums = _numbers(key, value, 2)
    w, h = (nums * 2)[:2] if len(nums) == 1 else nums
    if w != int(w) or h != int(h) or w < 8 or h < 8 or w > 4096 or h > 4096:
        raise UserError(f"option {key} must be whole numbers from 8 to 4096 (W,H), got {value!r}")
    return int(w), int(h)


def _per_channel(key: str, value: Any) -> tuple[float, float, float]:
    nums = _numbers(key, value, 3)
    return tuple(nums * 3)[:3] if len(nums) == 1 else tuple(nums)  # type: ignore[return-value]


def _points(value: Any) -> tuple[tuple[float, float], ...]:
    try:
        pts = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        pts = np.zeros((0,))
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) not in (4, 5) or not np.all(np.isfinite(pts)):
        raise UserError("option template must be 4 or 5 [x, y] points (eye, eye, nose, mouth centre or mouth "
                        "corners), 'arcface' or 'edgeface'")
    return tuple((float(x), float(y)) for x, y in pts)


@dataclass(frozen=True)
class FaceModelSpec:
    """What a face-embedding model expects and gives.

    The model input is ``(pixel - mean) / std`` of the aligned RGB crop, in ``color`` order and ``layout``;
    ``size`` is (width, height).  edgeface's own models take the raw 0..255 pixels (mean 0, std 1) and
    normalise inside the graph.  ``template`` holds the 4 or 5 alignment points in ``template_size``
    coordinates (scaled to ``size`` when used).  ``size`` and ``layout`` may be None until the model file
    says (:meth:`for_model_input`); ``embedding_dim`` 0 likewise.
    """

    size: Optional[tuple[int, int]] = None
    layout: Optional[str] = None
    color: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    alignment: str = "template"
    template: tuple[tuple[float, float], ...] = ARCFACE_TEMPLATE_112
    template_size: tuple[int, int] = (112, 112)
    box_margin: float = 0.0
    output: Union[int, str] = 0
    embedding_dim: int = 0
    metric: str = "cosine"
    threshold: Optional[float] = None
    name: str = ""
    extra: dict = field(default_factory=dict, compare=False)  # provenance and notes kept from a spec file

    # ---- construction

    @classmethod
    def edgeface(cls, size: Optional[int] = 112, **changes: Any) -> FaceModelSpec:
        """edgeface's own models: raw RGB pixels, NHWC, :data:`EDGEFACE_TEMPLATE_112` scaled to ``size`` (None:
        the size the model file says, see :meth:`for_model_input`)."""
        base = cls(size=(size, size) if size else None, layout="NHWC", template=EDGEFACE_TEMPLATE_112,
                   template_size=(112, 112))
        return dataclasses.replace(base, **changes)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], base: Optional[FaceModelSpec] = None) -> FaceModelSpec:
        """Validate option values (one line per mistake) into a spec; keys not given keep ``base``'s values."""
        o = dict(options)
        unknown = [k for k in o if k not in SPEC_OPTIONS]
        if unknown:
            raise unknown_choice("face-model option", unknown[0], list(SPEC_OPTIONS))
        s: dict[str, Any] = {}
        if "input_size" in o:
            s["size"] = _size("input_size", o["input_size"])
        if "layout" in o:
            layout = str(o["layout"]).upper()
            if layout not in LAYOUTS:
                raise unknown_choice("layout", str(o["layout"]), LAYOUTS)
            s["layout"] = layout
        if "color" in o:
            color = str(o["color"]).upper()
            if color not in COLORS:
                raise unknown_choice("colour order", str(o["color"]), COLORS)
            s["color"] = color
        if ("scale" in o or "offset" in o) and ("mean" in o or "std" in o):
            raise UserError("give the normalisation as mean/std or as scale/offset, not both")
        if "mean" in o:
            s["mean"] = _per_channel("mean", o["mean"])
        if "std" in o:
            s["std"] = _per_channel("std", o["std"])
        if "scale" in o or "offset" in o:
            scale = _per_channel("scale", o.get("scale", 1.0))
            offset = _per_channel("offset", o.get("offset", 0.0))
            if any(v == 0 for v in scale):
                raise UserError("option scale must not be 0")
            # pixel * scale + offset == (pixel - mean) / std with std = 1 / scale, mean = -offset / scale.
            s["std"] = tuple(1.0 / v for v in scale)
            s["mean"] = tuple(-b / v for v, b in zip(scale, offset))
            if not all(math.isfinite(v) for v in (*s["std"], *s["mean"])):  # scale 5e-324: 1 / scale overflows
                raise UserError(f"option scale {o.get('scale')!r} with offset {o.get('offset', 0.0)!r} gives no "
                                "finite mean and std: use a larger scale")
        if any(v == 0 for v in s.get("std", ())):
            raise UserError("option std must not be 0")
        if "alignment" in o:
            if o["alignment"] not in ALIGNMENTS:
                raise unknown_choice("alignment", str(o["alignment"]), ALIGNMENTS)
            s["alignment"] = o["alignment"]
        if "template" in o:
            t = o["template"]
            if isinstance(t, str):
                if t not in NAMED_TEMPLATES:
                    raise unknown_choice("template", t, list(NAMED_TEMPLATES))
                s["template"], s["template_size"] = NAMED_TEMPLATES[t]
            else:
                s["template"] = _points(t)
        if "template_size" in o:
            s["template_size"] = _size("template_size", o["template_size"])
        if "box_margin" in o:
            margin = _numbers("box_margin", o["box_margin"], 1)[0]
            if not 0.0 <= margin <= 2.0:
                raise UserError(f"option box_margin must be between 0 and 2, got {margin}")
            s["box_margin"] = margin
        if "output" in o:
            out = o["output"]
            if not isinstance(out, (int, str)) or isinstance(out, bool):
                raise UserError(f"option output must be an index or a name, got {out!r}")
            s["output"] = out
        if "embedding_dim" in o:
            dim = o["embedding_dim"]
            if isinstance(dim, bool) or not isinstance(dim, int) or not 2 <= dim <= 65536:
                raise UserError(f"option embedding_dim must be a whole number from 2 to 65536, got {dim!r}")
            s["embedding_dim"] = dim
        if "metric" in o:
            if o["metric"] not in METRICS:
                raise unknown_choice("metric", str(o["metric"]), METRICS)
            s["metric"] = o["metric"]
        if "threshold" in o:
            thr = _numbers("threshold", o["threshold"], 1)[0]
            if not -1.0 <= thr <= 1.0:
                raise UserError(f"option threshold is a cosine similarity: between -1 and 1, got {thr}")
            s["threshold"] = thr
        if "name" in o:
            s["name"] = str(o["name"])
        return dataclasses.replace(base or cls(), **s)

    def to_options(self) -> dict[str, Any]:
        """The spec as spec-file keys (what :meth:`from_options` reads back)."""
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        if self.size:
            out["input_size"] = list(self.size)
        if self.layout:
            out["layout"] = self.layout
        out.update(color=self.color, mean=list(self.mean), std=list(self.std), alignment=self.alignment)
        if self.alignment == "template":
            out["template"] = [[round(x, 4), round(y, 4)] for x, y in self.template]
            out["template_size"] = list(self.template_size)
        else:
            out["box_margin"] = self.box_margin
        if self.output != 0:
            out["output"] = self.output
        if self.embedding_dim:
            out["embedding_dim"] = self.embedding_dim
        out["metric"] = self.metric
        if self.threshold is not None:
            out["threshold"] = round(float(self.threshold), 6)
        return out

    def to_dict(self) -> dict:
        """Everything an embedding depends on, JSON-ready (cache keys, reports)."""
        d = dataclasses.asdict(self)
        d.pop("extra")
        d["size"] = list(self.size) if self.size else None
        return d

    # ---- the model file decides what the spec leaves open

    def for_model_input(self, shape: Sequence, where: str) -> tuple[FaceModelSpec, bool]:
        """This spec with layout and size read from a model's input shape; and whether the batch is dynamic.

        Dynamic dimensions are ``None``, negative or strings (ONNX symbolic dims).
        """
        def static(d) -> Optional[int]:
            return int(d) if isinstance(d, (int, np.integer)) and int(d) > 0 else None

        if len(shape) != 4:
            raise UserError(f"{where} is not an image model: its input has shape {tuple(shape)}, expected 4 dims "
                            "(N, H, W, 3) or (N, 3, H, W)")
        d = [static(v) for v in shape]
        layout = self.layout
        if layout is None:
            if d[3] == 3:
                layout = "NHWC"
            elif d[1] == 3:
                layout = "NCHW"
            else:
                raise UserError(f"{where}: cannot tell the layout of input shape {tuple(shape)}: give layout=NHWC "
                                "or layout=NCHW")
        channels, h, w = (d[3], d[1], d[2]) if layout == "NHWC" else (d[1], d[2], d[3])
        if channels not in (3, None):
            raise UserError(f"{where} takes {channels} channels in layout {layout}; a face model takes 3 (RGB/BGR)")
        if self.size is not None:
            if (w is not None and w != self.size[0]) or (h is not None and h != self.size[1]):
                raise SpecMismatch(f"{where} takes {w}x{h} images but its spec says {self.size[0]}x{self.size[1]}")
            size = self.size
        elif w is None or h is None:
            raise UserError(f"{where} has a dynamic input size {tuple(shape)}: give input_size=W,H")
        else:
            size = (w, h)
        return dataclasses.replace(self, layout=layout, size=size), d[0] is None

    # ---- preprocessing (pure numpy)

    @property
    def raw_pixels(self) -> bool:
        """True when the model takes the crop's RGB pixels as they are (edgeface's own models)."""
        return (self.color == "RGB" and self.layout in (None, "NHWC") and all(m == 0 for m in self.mean)
                and all(s == 1 for s in self.std))

    def chip_template(self) -> np.ndarray:
        """The 4 alignment targets (eye, eye, nose, mouth centre) in pixels of the model input."""
        return self._chip_template.copy()

    @functools.cached_property
    def _chip_template(self) -> np.ndarray:
        # Computed once per spec: align() runs for every face of every camera frame.
        if self.size is None:
            raise ValueError("the spec has no input size yet: call for_model_input first")
        pts = np.asarray(self.template, np.float64)
        if len(pts) == 5:
            pts = np.vstack([pts[:3], pts[3:5].mean(axis=0)])
        tw, th = self.template_size
        return (pts * [self.size[0] / tw, self.size[1] / th]).astype(np.float32)

    def align(self, image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """The RGB uint8 crop of a face whose BlazeFace keypoints are given, aligned to the template."""
        matrix = umeyama(alignment_points(keypoints), self._chip_template)
        return cv2.warpAffine(image, matrix, self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def align_detection(self, image: np.ndarray, detection) -> np.ndarray:
        """The crop of one detection (box and keypoints), by this spec's alignment."""
        if self.alignment == "box":
            matrix = box_transform(detection.box, self.size, self.box_margin)
            return cv2.warpAffine(image, matrix, self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return self.align(image, detection.keypoints)

    def to_input(self, crops: np.ndarray) -> np.ndarray:
        """RGB uint8 crops (N, H, W, 3) or one (H, W, 3) -> float32 model input in colour order, normalisation
        and layout."""
        x = np.asarray(crops, np.float32)
        if self.color == "BGR":
            x = x[..., ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = np.moveaxis(x, -1, -3)
        return np.ascontiguousarray(x, np.float32)

    def same_alignment(self, other: FaceModelSpec) -> bool:
        """True when crops aligned for ``other`` are crops for this model up to a resize (same template shape)."""
        if self.alignment != other.alignment or self.size is None or other.size is None:
            return False
        if self.alignment == "box":
            return (self.box_margin == other.box_margin
                    and self.size[0] * other.size[1] == self.size[1] * other.size[0])
        mine = self.chip_template() / np.asarray(self.size, np.float32)
        theirs = other.chip_template() / np.asarray(other.size, np.float32)
        return bool(np.allclose(mine, theirs, atol=2e-3))

    def check_crops(self, crops: np.ndarray, where: str) -> None:
        """A :class:`UserError` when crops are not this model's input size (aligned for another model)."""
        if self.size is not None and tuple(crops.shape[-3:-1]) != (self.size[1], self.size[0]):
            raise UserError(f"{where} takes {self.size[0]}x{self.size[1]} face crops, got "
                            f"{crops.shape[-2]}x{crops.shape[-3]}: align faces with the model's own spec")

    # ---- bundle manifests

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], where: str = "manifest.json") -> FaceModelSpec:
        """The spec a bundle's manifest describes (bundles written before the spec existed: edgeface's own)."""
        model = manifest.get("model") or {}
        alignment = manifest.get("alignment") or {}
        threshold_block = manifest.get("threshold") or {}
        if not all(isinstance(b, dict) for b in (model, alignment, threshold_block)):
            raise UserError(f"{where}: model, alignment and threshold must be JSON objects; re-export the bundle")
        threshold = threshold_block.get("cosine")
        size = alignment.get("size") or model.get("input_size") or 112  # from_options checks it is a size
        options: dict[str, Any] = {"input_size": size, "layout": "NHWC"}
        for key in ("color", "mean", "std", "metric"):
            if key in model:
                options[key] = model[key]
        if "color_order" in model and "color" not in model:
            options["color"] = model["color_order"]
        if model.get("embedding_dim"):
            options["embedding_dim"] = model["embedding_dim"]
        if model.get("name"):
            options["name"] = model["name"]
        if alignment.get("template"):
            options["template"] = alignment["template"]
            options["template_size"] = alignment.get("template_size") or size
        else:
            options["template"] = "edgeface"
        if threshold is not None:
            options["threshold"] = threshold
        try:
            spec = cls.from_options(options)
        except UserError as exc:
            raise UserError(f"{where}: {exc}; re-export the bundle") from None
        if spec.template_size != spec.size:  # a manifest's template is in input pixels
            spec = dataclasses.replace(spec, template=tuple(map(tuple, spec.chip_template().tolist())),
                                       template_size=spec.size)
        return spec

    def manifest_blocks(self) -> tuple[dict, dict]:
        """(model fields, alignment block) for a bundle manifest (the threshold block is the export's)."""
        if self.size is None or self.size[0] != self.size[1]:
            raise ValueError(f"a bundle model needs a square input size, the spec has {self.size}")
        if self.alignment != "template":
            raise ValueError("a bundle model is aligned by template")
        model = {"input_size": self.size[0], "color_order": self.color, "input_range": [0, 255],
                 "mean": list(self.mean), "std": list(self.std), "metric": self.metric}
        template = self.chip_template().tolist()
        alignment = {"size": self.size[0], "template": [[round(x, 4), round(y, 4)] for x, y in template],
                     "points": list(TEMPLATE_POINTS)}
        return model, alignment


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


# --------------------------------------------------------------------------- spec files


def read_toml(path: Union[str, os.PathLike], what: str = "file") -> dict[str, Any]:
    """A TOML file as a dict; a missing or invalid file is one :class:`UserError` line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    toml = toml_module()
    try:
        return toml.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # ValueError: TOMLDecodeError, or an int of 4300+ digits
        raise UserError(f"{path} is not a valid TOML file: {str(exc).splitlines()[0]}") from None
    except RecursionError:  # '[[[[...' nested past Python's stack: tomllib sets no depth limit of its own
        raise UserError(f"{path} is not a valid TOML file: arrays nested too deeply") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_spec_file(path: Union[str, os.PathLike], base: Optional[FaceModelSpec] = None) -> FaceModelSpec:
    """A face-model spec from TOML: keys under ``[face_model]`` (or at the top level); other tables
    (``[provenance]``) are kept in ``extra``."""
    data = read_toml(path, "face-model spec")
    if "face_model" in data:
        if not isinstance(data["face_model"], dict):
            raise UserError(f"{path}: [face_model] must be a table")
        options = data["face_model"]
        extra = {k: v for k, v in data.items() if k != "face_model"}
    else:
        options = {k: v for k, v in data.items() if not isinstance(v, dict)}
        extra = {k: v for k, v in data.items() if isinstance(v, dict)}
    try:
        spec = FaceModelSpec.from_options(options, base)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return dataclasses.replace(spec, extra=extra)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        import json

        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def spec_toml(spec: FaceModelSpec, tables: Optional[Mapping[str, Mapping[str, Any]]] = None) -> str:
    """The TOML text of a spec file: ``[face_model]`` and further flat tables (provenance, licence)."""
    lines = ["# What this face model expects: read by edgeface export, evaluate and distill.", "[face_model]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in spec.to_options().items()]
    for name, table in (tables or {}).items():
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def spec_path_for(model_path: Union[str, os.PathLike]) -> Path:
    """Where a model file's spec lives: ``MODEL.toml`` beside ``MODEL.keras`` / ``MODEL.tflite``."""
    p = Path(model_path)
    return p.with_suffix(SPEC_SUFFIX)


def spec_for_model_file(model_path: Union[str, os.PathLike], spec_file: Optional[Union[str, os.PathLike]] = None,
                        ) -> tuple[FaceModelSpec, str]:
    """The spec of a model file, and where it came from.

    In order: ``spec_file`` when given; the manifest of the bundle that lists the file; ``MODEL.toml`` beside
    it; else edgeface's own convention (raw RGB pixels, edgeface's template, size from the model).
    """
    if spec_file is not None:
        return read_spec_file(spec_file), str(spec_file)
    p = Path(model_path)
    manifest = p.parent / "manifest.json"
    if manifest.is_file():
        import json

        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError, RecursionError):
            data = None
        files = data.get("files") if isinstance(data, dict) else None
        listed = isinstance(files, list) and any(isinstance(e, dict) and e.get("path") == p.name for e in files)
        if listed:
            return FaceModelSpec.from_manifest(data, str(manifest)), str(manifest)
    sibling = spec_path_for(p)
    if sibling.is_file():
        return read_spec_file(sibling), str(sibling)
    return FaceModelSpec.edgeface(None), DEFAULT_SPEC_SOURCE


# --------------------------------------------------------------------------- the interface


class FaceModel(Protocol):
    """Any face-embedding model: aligned crops in, unit-length embeddings out."""

    spec: FaceModelSpec
    name: str
    kind: str
    dim: int

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Aligned RGB uint8 crops (N, H, W, 3) at ``spec.size`` -> (N, D) float32, L2-normalised."""
        ...


def align_faces(spec: FaceModelSpec, image: np.ndarray, detections: Sequence) -> np.ndarray:
    """The crops of ``detections`` in ``image``, aligned as the spec says: (N, H, W, 3) uint8."""
    if not len(detections):
        w, h = spec.size
        return np.zeros((0, h, w, 3), np.uint8)
    return np.stack([spec.align_detection(image, d) for d in detections])


def embed_faces(model: FaceModel, image: np.ndarray, detections: Sequence) -> np.ndarray:
    """Unit embeddings (N, D) of detected faces of an RGB photograph, through the model's own alignment."""
    crops = align_faces(model.spec, image, detections)
    if not len(crops):
        return np.zeros((0, model.dim), np.float32)
    return model.embed(crops)
