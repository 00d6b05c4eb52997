"""The one place that imports a TFLite interpreter.

Order of preference: ``ai_edge_litert`` (LiteRT, numpy 2, XNNPACK for int8),
``tflite_runtime`` (last release 2.14: numpy<2, Python <= 3.11) and finally
``tensorflow.lite`` (workstation only).  Everything else in edgeface asks this
module for a :class:`TFLiteModel`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgeface.errors import UserError

BACKENDS = ("ai_edge_litert", "tflite_runtime", "tensorflow")
EDGETPU_LIBRARY = "libedgetpu.so.1"
EDGETPU_INSTALL_HINT = (
    "install the Edge TPU runtime: on Debian/Raspberry Pi OS add Coral's apt repository and "
    "`sudo apt-get install libedgetpu1-std` (see coral.ai/docs/accelerator/get-started)"
)


@dataclass(frozen=True)
class Backend:
    """An importable interpreter implementation."""

    name: str
    interpreter_cls: Callable[..., Any]
    load_delegate: Optional[Callable[..., Any]]


def _import_backend(name: str) -> Backend:
    if name == "ai_edge_litert":
        mod = importlib.import_module("ai_edge_litert.interpreter")
    elif name == "tflite_runtime":
        mod = importlib.import_module("tflite_runtime.interpreter")
    elif name == "tensorflow":
        tf = importlib.import_module("tensorflow")
        mod = tf.lite
        return Backend(name, mod.Interpreter, getattr(mod.experimental, "load_delegate", None))
    else:
        raise UserError(f"unknown interpreter backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return Backend(name, mod.Interpreter, getattr(mod, "load_delegate", None))


def get_backend(name: Optional[str] = None) -> Backend:
    """Return the requested backend, or the first importable one in :data:`BACKENDS` order."""
    if name:
        if name not in BACKENDS:
            raise UserError(f"unknown interpreter backend {name!r}: choose one of {', '.join(BACKENDS)}")
        try:
            return _import_backend(name)
        except ImportError as exc:
            raise UserError(f"interpreter backend {name!r} is not installed ({exc})") from None
    errors = []
    for candidate in BACKENDS:
        try:
            return _import_backend(candidate)
        except ImportError as exc:
            errors.append(f"{candidate}: {exc}")
    raise UserError("no TFLite interpreter is installed: `pip install ai-edge-litert` (" + "; ".join(errors) + ")")


# --- quantization helpers (pure numpy, tested without a model) -------------


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """Quantize float values to ``dtype`` with the tensor's affine parameters."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Dequantize integer values to float32.

    The values are widened to int64 before the zero point is subtracted: in
    uint8 arithmetic ``q - zero_point`` would wrap around.
    """
    return (np.asarray(q).astype(np.int64) - int(zero_point)).astype(np.float32) * np.float32(scale)


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Scale vectors to unit Euclidean length (zero vectors stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, eps)


@dataclass(frozen=True)
class TensorInfo:
    """What a caller needs to feed or read one tensor."""

    name: str
    index: int
    shape: tuple
    dtype: Any
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)


def _tensor_info(detail: dict) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(
        name=detail["name"],
        index=int(detail["index"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=detail["dtype"],
        scale=float(scale),
        zero_point=int(zero_point),
    )


def _first_line(exc: BaseException) -> str:
    """The first line of an interpreter's message (LiteRT appends node dumps), or the exception's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _structure_problem(path: Path) -> Optional[str]:
    """What the graph reader finds wrong with a model file before the interpreter is given it, or None.

    LiteRT's interpreter crashes the process (SIGSEGV, SIGABRT) on some damaged files instead of raising
    (found by fuzzing: :func:`edgeface.runtime.tflite_graph.structure_problem` lists what is checked).
    None as well when no flatbuffer schema is installed (a board with tflite_runtime alone): the interpreter's
    own checks are then all there is.
    """
    from edgeface.runtime.tflite_graph import structure_problem

    try:
        data = path.read_bytes()
    except OSError:  # unreadable: the interpreter says so
        return None
    # The walk costs 10-25 ms a file (80 % of loading the full-range detector); `auto` opens an interpreter per
    # frame size and tests open the same files hundreds of times: each content is checked once per process.  Keyed
    # by a digest of the bytes, not the path: a file rewritten in place is checked again.
    digest = hashlib.blake2b(data, digest_size=16).digest()
    if digest not in _STRUCTURE_VERDICTS:
        try:
            verdict = structure_problem(data)
        except UserError:  # no schema to read the file with
            verdict = None
        if len(_STRUCTURE_VERDICTS) >= 64:
            _STRUCTURE_VERDICTS.clear()
        _STRUCTURE_VERDICTS[digest] = verdict
    return _STRUCTURE_VERDICTS[digest]


_STRUCTURE_VERDICTS: dict[bytes, Optional[str]] = {}  # blake2b digest of a model file -> structure_problem's verdict


@contextlib.contextmanager
def quiet_stderr():
    """Silence C-level stderr for a moment (the interpreters' delegate messages, FFmpeg's parse errors)."""
    try:
        fd = 2
        saved = os.dup(fd)
    except OSError:  # no real stderr (e.g. captured by pytest)
        yield
        return
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)


class TFLiteModel:
    """A TFLite file ready to run: float in, float out, quantization handled here.

    ``run`` takes float input in the model's own float domain (for edgeface
    embedders: RGB pixels 0..255) and returns dequantized float output.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        threads: Optional[int] = None,
        backend: Optional[str] = None,
        delegate: Optional[str] = None,
        input_shape: Optional[Sequence[int]] = None,
    ) -> None:
        """``input_shape`` resizes the (first) input before the tensors are allocated: a fully convolutional
        model such as BlazeFace short-range then runs on a larger frame in one pass."""
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"model file not found: {self.path}")
        problem = _structure_problem(self.path)
        if problem is not None:
            raise UserError(f"cannot load {self.path} as a TFLite model: {problem}")
        self.backend = get_backend(backend)
        delegates = []
        if delegate == "edgetpu":
            delegates.append(load_edgetpu_delegate(self.backend))
        elif delegate not in (None, "", "none", "cpu", "xnnpack"):
            raise UserError(f"unknown delegate {delegate!r}: use 'edgetpu' or leave it out for CPU (XNNPACK)")
        kwargs: dict = {"model_path": str(self.path)}
        if threads:
            kwargs["num_threads"] = int(threads)
        if delegates:
            kwargs["experimental_delegates"] = delegates
        try:
            with quiet_stderr():
                self.interpreter = self.backend.interpreter_cls(**kwargs)
                if input_shape is not None:
                    index = self.interpreter.get_input_details()[0]["index"]
                    self.interpreter.resize_tensor_input(index, [int(v) for v in input_shape])
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"cannot load {self.path} as a TFLite model: {_first_line(exc)}") from None
        self.inputs = [_tensor_info(d) for d in self.interpreter.get_input_details()]
        self.outputs = [_tensor_info(d) for d in self.interpreter.get_output_details()]

    @property
    def input(self) -> TensorInfo:
        return self.inputs[0]

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Run one inference; returns every output, dequantized to float32."""
        if len(arrays) != len(self.inputs):
            raise ValueError(f"{self.path.name} takes {len(self.inputs)} inputs, got {len(arrays)}")
        for info, arr in zip(self.inputs, arrays):
            arr = np.asarray(arr)
            if arr.shape != info.shape:
                arr = arr.reshape(info.shape)
            if info.quantized:
                arr = quantize(arr, info.scale, info.zero_point, info.dtype)
            else:
                arr = arr.astype(info.dtype, copy=False)
            self.interpreter.set_tensor(info.index, arr)
        try:
            self.interpreter.invoke()
        except RuntimeError as exc:  # a file that loads but cannot run (a constant with no data): the file's fault
            raise UserError(f"{self.path} failed to run: {_first_line(exc)}") from None
        outs = []
        for info in self.outputs:
            out = self.interpreter.get_tensor(info.index)
            # get_tensor already returns a copy: a float32 output is handed on as it is (no second copy per run).
            outs.append(dequantize(out, info.scale, info.zero_point) if info.quantized
                        else out.astype(np.float32, copy=False))
        return outs

    def op_names(self) -> list[str]:
        """Builtin operator names of the graph, in execution order (where the backend exposes them)."""
        getter = getattr(self.interpreter, "_get_ops_details", None)
        if getter is None:
            return []
        return [op["op_name"] for op in getter()]


def load_edgetpu_delegate(backend: Backend):
    """Load the Edge TPU delegate, or fail with one line saying what to install."""
    if backend.load_delegate is None:
        raise UserError(f"the {backend.name} backend cannot load delegates; use ai_edge_litert or tflite_runtime")
    try:
        with quiet_stderr():
            return backend.load_delegate(EDGETPU_LIBRARY)
    except (ValueError, OSError, RuntimeError):
        raise UserError(f"cannot load the Edge TPU delegate ({EDGETPU_LIBRARY}): {EDGETPU_INSTALL_HINT}") from None


def check_edgetpu_library() -> None:
    """Fail with one line when the Edge TPU runtime library is not installed.

    Only the shared library is loaded (``ctypes``), not the delegate, so the TPU
    device itself is not opened twice; call it before anything slow so a board
    without the runtime learns it at once.
    """
    import ctypes

    try:
        ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError:
        raise UserError(f"the Edge TPU runtime library {EDGETPU_LIBRARY} is not installed: {EDGETPU_INSTALL_HINT}") \
            from None


class Embedder:
    """A TFLite face-embedding model (:class:`edgeface.runtime.facemodel.FaceModel`): aligned RGB crops in,
    unit-length embeddings out.

    ``spec`` says what the model expects (from its bundle's manifest, or a spec file); None is edgeface's own
    convention (raw RGB pixels, edgeface's template at the model's input size).
    """

    kind = "tflite"

    def __init__(self, path: str | os.PathLike, threads: Optional[int] = None, backend: Optional[str] = None,
                 delegate: Optional[str] = None, spec=None) -> None:
        from edgeface.runtime.facemodel import FaceModelSpec, SpecMismatch

        self.path = Path(path)
        self.name = self.path.name
        self.model = TFLiteModel(path, threads=threads, backend=backend, delegate=delegate)
        base = spec if spec is not None else FaceModelSpec.edgeface(None)
        if len(self.model.inputs) != 1:
            raise UserError(f"{path} is not a face-embedding model: it takes {len(self.model.inputs)} inputs, "
                            "a face model takes one image")
        spec, _ = base.for_model_input(self.model.input.shape, str(path))
        self._output = _output_index([o.name for o in self.model.outputs], spec.output, str(path))
        out_shape = self.model.outputs[self._output].shape
        if len(out_shape) != 2:
            raise UserError(f"{path} is not a face-embedding model: its output shape is {out_shape}, expected (1, D)")
        self.dim = int(out_shape[-1])
        if spec.embedding_dim and spec.embedding_dim != self.dim:
            raise SpecMismatch(f"{path} gives {self.dim}-d embeddings but its spec says {spec.embedding_dim}")
        self.spec = dataclasses.replace(spec, embedding_dim=self.dim)
        self.input_size = self.spec.size

    def embed(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Embed aligned RGB uint8 crops (N, H, W, 3) -> (N, D) float32, L2-normalised."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        self.spec.check_crops(crops, self.name)
        x = crops.astype(np.float32) if self.spec.raw_pixels else self.spec.to_input(crops)
        out = np.empty((len(crops), self.dim), np.float32)
        for i in range(len(x)):
            out[i] = self.model.run(x[i:i + 1])[self._output].reshape(-1)
        return l2_normalize(out)


def _output_index(names: list[str], which: int | str, where: str) -> int:
    """The index of the embedding output: by name, or by position."""
    if isinstance(which, str):
        if which not in names:
            from edgeface.choices import unknown_choice

            raise unknown_choice(f"output of {where}", which, names)
        return names.index(which)
    if not -len(names) <= which < len(names):
        raise UserError(f"{where} has {len(names)} output(s); output {which} does not exist")
    return which % len(names)
