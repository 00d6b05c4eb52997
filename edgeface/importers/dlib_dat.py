"""Read dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) with numpy alone.

dlib saves a network as a nest of wrappers: the loss layer's record, one
version number per wrapper from the outermost in, the input layer's record,
then every layer's record in forward order, each followed by its wrapper's
training state (three flags and three tensors, empty in a saved model).  The
wrappers that make the residual connections (tags and skips) store nothing but
their version, so the file does not say which tensors an addition joins: the
reader knows ``anet_type``'s topology (:func:`anet_topology`), checks every
version, record name, size and stride in the file against it and refuses any
other network.

Encoding: an integer is a control byte (low 4 bits: how many magnitude bytes
follow, 0x80: negative) and its magnitude little-endian; a float is two
integers, mantissa then exponent (value = m * 2**e); a string is its length
and its bytes; a flag is the character '0' or '1'; a tensor is a version (2),
four dimensions and raw little-endian float32 values.

No dlib and no TensorFlow here: :mod:`edgeface.importers.dlib_keras` builds the
Keras model from what this module returns.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from edgeface.errors import UserError

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
FIX_HINT = f"pass the {MODEL_FILE} from face_recognition_models"
INPUT_SIZE = 150
# dlib's input layer computes (pixel - avg) / 256 per RGB channel; the averages are stored, the 256 is not.
ANET_AVG = (122.782, 117.001, 104.298)
INPUT_DIVISOR = 256.0
EMBEDDING_DIM = 128
# The real file is 22.5 MB.  A much larger one is refused before it is read into memory.
MAX_FILE_BYTES = 256 * 1024 * 1024

# The record name dlib writes for each layer kind (a trailing digit is that layer's format version).
RECORD_NAMES = {"con": "con_4", "affine": "affine_", "relu": "relu_", "max_pool": "max_pool_2",
                "avg_pool": "avg_pool_2", "add_prev": "add_prev_", "fc": "fc_2"}
LOSS_RECORD = "loss_metric_2"
INPUT_RECORD = "input_rgb_image_sized"
# Format versions of the wrappers: the loss, a layer, the layer that holds the input, a tag or skip.
LOSS_VERSION, LAYER_VERSION, INPUT_LAYER_VERSION, TAG_VERSION = 1, 2, 3, 1
TENSOR_VERSION, ALIAS_VERSION = 2, 1
AFFINE_CONV_MODE = 0  # one gamma and beta per channel (dlib's other mode has one per element)
FC_NO_BIAS = 1
# Exponents dlib writes for the special float values.
SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
AVG_TOLERANCE = 1e-3

# anet_type's residual levels, from the input side: (dlib's level number, filters, blocks, first block halves
# the size).  The first block of every level but level 4 is dlib's ares_down.
LEVELS = ((4, 32, 3, False), (3, 64, 4, True), (2, 128, 3, True), (1, 256, 3, True), (0, 256, 1, True))


class DlibFormatError(UserError):
    """The file is not dlib's face recognition ResNet (missing, truncated, another network, not dlib at all)."""


@dataclass(frozen=True, eq=False)
class DlibLayer:
    """One layer record of the network, in forward order.

    ``inputs`` names the layers whose outputs it takes ("image" is the input);
    ``filters``, ``kernel``, ``stride`` and ``padding`` (rows, columns) are as
    stored in the file (a pool of kernel (0, 0) averages everything).
    ``weights`` are float32 in Keras layout: ``con`` (kernel H,W,I,O, bias O),
    ``affine`` (gamma C, beta C), ``fc`` (kernel inputs,outputs).
    """

    kind: str
    name: str
    inputs: tuple[str, ...]
    filters: int = 0
    kernel: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    weights: tuple[np.ndarray, ...] = ()

    @property
    def param_count(self) -> int:
        return sum(int(w.size) for w in self.weights)


@dataclass(frozen=True, eq=False)
class DlibResNet:
    """dlib's ``anet_type`` read from a ``.dat`` file: layers in forward order and the input convention.

    The network's input is an RGB ``input_size`` square chip, normalised as
    ``(pixel - input_avg) / input_divisor``; its output is the raw 128-d
    descriptor, compared by Euclidean distance (same person below
    ``distance_threshold``, the metric loss's threshold stored in the file).
    """

    path: Path
    layers: tuple[DlibLayer, ...]
    input_size: int
    input_avg: tuple[float, float, float]
    margin: float
    distance_threshold: float
    input_divisor: float = INPUT_DIVISOR

    @property
    def param_count(self) -> int:
        return sum(layer.param_count for layer in self.layers)

    @property
    def embedding_dim(self) -> int:
        return self.layers[-1].filters

    def counts(self) -> dict[str, int]:
        """Layer kind -> how many, in order of first appearance."""
        return dict(Counter(layer.kind for layer in self.layers))


# --------------------------------------------------------------------------- the topology


class _Topology:
    """Builds the forward list of anet_type's wrappers: layer templates (no weights) and "tag"/"skip" markers."""

    def __init__(self) -> None:
        self.steps: list[Union[DlibLayer, str]] = []
        self.last = "image"

    def layer(self, kind: str, name: str, inputs: tuple[str, ...] = (), **spec) -> str:
        self.steps.append(DlibLayer(kind, name, inputs or (self.last,), **spec))
        self.last = name
        return name

    def mark(self, wrapper: str) -> None:
        self.steps.append(wrapper)

    def residual(self, prefix: str, filters: int, down: bool) -> None:
        """dlib's ares (relu(block(x) + x)) or, with ``down``, ares_down (relu(block(x) + avg_pool(x)))."""
        x = self.last
        self.mark("tag")
        stride, pad = (2, 0) if down else (1, 1)
        self.layer("con", f"{prefix}_conv_a", filters=filters, kernel=(3, 3), stride=(stride, stride),
                   padding=(pad, pad))
        self.layer("affine", f"{prefix}_affine_a")
        self.layer("relu", f"{prefix}_relu_a")
        self.layer("con", f"{prefix}_conv_b", filters=filters, kernel=(3, 3), stride=(1, 1), padding=(1, 1))
        branch = self.layer("affine", f"{prefix}_affine_b")
        if down:
            # add_prev2<avg_pool<skip1<tag2<block<tag1<x>>>>>>: the pool reads the block's input (skip1).
            self.mark("tag")
            self.mark("skip")
            pooled = self.layer("avg_pool", f"{prefix}_pool", inputs=(x,), kernel=(2, 2), stride=(2, 2))
            self.layer("add_prev", f"{prefix}_add", inputs=(pooled, branch))
        else:
            self.layer("add_prev", f"{prefix}_add", inputs=(branch, x))
        self.layer("relu", f"{prefix}_relu")


def anet_topology() -> list[Union[DlibLayer, str]]:
    """anet_type (dlib's dnn_face_recognition_ex) in forward order: layer templates and "tag"/"skip" wrappers."""
    t = _Topology()
    t.layer("con", "conv1", filters=32, kernel=(7, 7), stride=(2, 2), padding=(0, 0))
    t.layer("affine", "conv1_affine")
    t.layer("relu", "relu1")
    t.layer("max_pool", "pool1", kernel=(3, 3), stride=(2, 2))
    for level, filters, blocks, down in LEVELS:
        for b in range(blocks):
            t.residual(f"level{level}_block{b}", filters, down and b == 0)
    t.layer("avg_pool", "global_pool", kernel=(0, 0), stride=(1, 1))
    t.layer("fc", "embedding", filters=EMBEDDING_DIM)
    return t.steps


def wrapper_versions(steps: list[Union[DlibLayer, str]]) -> list[int]:
    """The version numbers the file stores for the wrappers, outermost (last layer) first."""
    versions = [TAG_VERSION if isinstance(s, str) else LAYER_VERSION for s in steps]
    versions[0] = INPUT_LAYER_VERSION
    return versions[::-1]


# --------------------------------------------------------------------------- decoding


class _Bad(Exception):
    """Why the bytes are not anet_type; read_dlib_resnet turns it into one DlibFormatError line."""


class _Truncated(_Bad):
    pass


class _Reader:
    """dlib's serialization primitives over the file's bytes; every size is checked against what is left."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.where = "the header"

    def _need(self, n: int) -> int:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise _Truncated(f"the file ends after {len(self.data):,} bytes, inside {self.where}: a truncated copy?")
        return end

    def take(self, n: int) -> bytes:
        end = self._need(n)
        out, self.pos = self.data[self.pos:end], end
        return out

    def skip(self, n: int) -> None:
        self.pos = self._need(n)

    def integer(self) -> int:
        at = self.pos
        ctrl = self.take(1)[0]
        size = ctrl & 0x0F
        if ctrl & 0x70 or size > 8:
            raise _Bad(f"byte {at:,}, in {self.where}, is not a dlib integer")
        value = int.from_bytes(self.take(size), "little")
        return -value if ctrl & 0x80 else value

    def expect(self, what: str, want: int) -> None:
        got = self.integer()
        if got != want:
            raise _Bad(f"{self.where}: {what} is {got}, anet_type's is {want}")

    def scalar(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        if exponent in SPECIAL_EXPONENTS:
            return SPECIAL_EXPONENTS[exponent]
        if not -(2**15) <= exponent < 2**15:  # dlib writes a 16-bit exponent
            raise _Bad(f"{self.where}: a float with exponent {exponent}")
        try:
            return math.ldexp(mantissa, exponent)
        except OverflowError:
            return math.copysign(math.inf, mantissa)

    def flag(self) -> bool:
        at = self.pos
        c = self.take(1)
        if c not in (b"0", b"1"):
            raise _Bad(f"byte {at:,}, in {self.where}, is not a dlib flag ('0' or '1')")
        return c == b"1"

    def string(self, limit: int = 64) -> bytes:
        """A string of at most ``limit`` bytes (a longer one is not a record name: it is not read)."""
        length = self.integer()
        if not 0 <= length <= limit:
            raise _Bad(f"{self.where}: a name of {length:,} bytes where a record name belongs")
        return self.take(length)

    def record(self, want: str) -> None:
        got = self.string()
        if got != want.encode():
            raise _Bad(f"{self.where}: record {_quoted(got)} where anet_type has {want!r}")

    def dims(self) -> tuple[int, int, int, int]:
        self.expect("a tensor's format version", TENSOR_VERSION)
        shape = (self.integer(), self.integer(), self.integer(), self.integer())
        if min(shape) < 0:
            raise _Bad(f"{self.where}: a tensor of shape {shape}")
        return shape

    def floats(self, count: int) -> np.ndarray:
        # take() checks the size against the file before anything is allocated.
        return np.frombuffer(self.take(4 * count), "<f4").astype(np.float32)

    def params(self, size: int, shape: Optional[tuple[int, int, int, int]] = None) -> np.ndarray:
        """A layer's parameter tensor: ``size`` values, flat (shape (size, 1, 1, 1)) unless ``shape`` says."""
        want = shape or (size, 1, 1, 1)
        got = self.dims()
        if got != want:
            raise _Bad(f"{self.where}: parameters of shape {got}, anet_type's are {want}")
        return self.floats(size)

    def skip_tensor(self) -> None:
        self.skip(4 * math.prod(self.dims()))

    def alias(self, want: tuple[int, int, int, int]) -> None:
        """A view into the parameters (weights or biases): version and shape, no data."""
        self.expect("a parameter view's format version", ALIAS_VERSION)
        shape = (self.integer(), self.integer(), self.integer(), self.integer())
        if shape != want:
            raise _Bad(f"{self.where}: a parameter view of shape {shape}, anet_type's is {want}")


def _quoted(raw: bytes) -> str:
    return repr(raw.decode("latin-1"))[:60]


def _shown(path: Union[str, os.PathLike]) -> str:
    """The path for a one-line message (control characters such as newlines escaped)."""
    text = str(os.fspath(path))
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


# --------------------------------------------------------------------------- records


def _read_con(r: _Reader, spec: DlibLayer, channels_in: int) -> DlibLayer:
    out, (kh, kw) = spec.filters, spec.kernel
    n_kernel = out * channels_in * kh * kw
    params = r.params(n_kernel + out)
    stored = tuple(r.integer() for _ in range(7))  # filters, rows, cols, stride y/x, padding y/x
    want = (out, kh, kw, *spec.stride, *spec.padding)
    if stored != want:
        raise _Bad(f"{r.where}: filters, kernel, stride and padding {stored}, anet_type's are {want}")
    r.alias((out, channels_in, kh, kw))
    r.alias((1, out, 1, 1))
    for _ in range(4):
        r.scalar()  # learning-rate and weight-decay multipliers: training only
    # dlib stores filters O,I,H,W then the biases; Keras wants H,W,I,O.
    kernel = np.ascontiguousarray(params[:n_kernel].reshape(out, channels_in, kh, kw).transpose(2, 3, 1, 0))
    return replace(spec, filters=stored[0], kernel=stored[1:3], stride=stored[3:5], padding=stored[5:7],
                   weights=(kernel, params[n_kernel:]))


def _read_affine(r: _Reader, spec: DlibLayer, channels_in: int) -> DlibLayer:
    params = r.params(2 * channels_in)
    r.alias((1, channels_in, 1, 1))
    r.alias((1, channels_in, 1, 1))
    r.expect("the affine mode", AFFINE_CONV_MODE)
    return replace(spec, filters=channels_in, weights=(params[:channels_in], params[channels_in:]))


def _read_pool(r: _Reader, spec: DlibLayer, channels_in: int) -> DlibLayer:
    stored = tuple(r.integer() for _ in range(6))  # rows, cols, stride y/x, padding y/x
    want = (*spec.kernel, *spec.stride, *spec.padding)
    if stored != want:
        raise _Bad(f"{r.where}: size, stride and padding {stored}, anet_type's are {want}")
    return replace(spec, filters=channels_in, kernel=stored[0:2], stride=stored[2:4], padding=stored[4:6])


def _read_plain(r: _Reader, spec: DlibLayer, channels_in: int) -> DlibLayer:
    return replace(spec, filters=channels_in)  # relu_ and add_prev_ store nothing but their name


def _read_fc(r: _Reader, spec: DlibLayer, channels_in: int) -> DlibLayer:
    stored = (r.integer(), r.integer())  # outputs, inputs
    if stored != (spec.filters, channels_in):
        raise _Bad(f"{r.where}: {stored[0]} outputs from {stored[1]} inputs, anet_type's fc maps "
                   f"{channels_in} to {spec.filters}")
    params = r.params(channels_in * spec.filters, (channels_in, spec.filters, 1, 1))
    r.alias((channels_in, spec.filters, 1, 1))
    r.alias((0, 0, 0, 0))  # no bias
    r.expect("the bias mode", FC_NO_BIAS)
    for _ in range(4):
        r.scalar()
    return replace(spec, weights=(params.reshape(channels_in, spec.filters),))


_RECORD_READERS: dict[str, Callable[[_Reader, DlibLayer, int], DlibLayer]] = {
    "con": _read_con, "affine": _read_affine, "relu": _read_plain, "max_pool": _read_pool,
    "avg_pool": _read_pool, "add_prev": _read_plain, "fc": _read_fc,
}


def _read_wrapper_state(r: _Reader, holds_input: bool) -> None:
    for _ in range(3):
        r.flag()  # set up, gradient stale, gradient disabled: training state
    for _ in range(3):
        r.skip_tensor()  # input gradient, cached output, parameter gradient: empty in a saved model
    if holds_input:
        r.expect("the sample expansion factor", 1)


def _read_header(r: _Reader) -> tuple[float, float]:
    """The loss record: (margin, distance threshold)."""
    try:
        r.expect("the format version", LOSS_VERSION)
        name = r.string()
    except _Truncated:
        raise
    except _Bad:
        raise _Bad(f"it does not start like a dlib network saved with {LOSS_RECORD}") from None
    if name != LOSS_RECORD.encode():
        if name.startswith(b"loss_") and name.isascii():
            raise _Bad(f"a dlib network with loss {_quoted(name)}, not {LOSS_RECORD}")
        raise _Bad(f"it does not start like a dlib network saved with {LOSS_RECORD}")
    return r.scalar(), r.scalar()


def _read_input(r: _Reader) -> tuple[int, tuple[float, float, float]]:
    r.where = "the input layer"
    r.record(INPUT_RECORD)
    avg = (r.scalar(), r.scalar(), r.scalar())
    rows, cols = r.integer(), r.integer()
    if (rows, cols) != (INPUT_SIZE, INPUT_SIZE):
        raise _Bad(f"input size {rows}x{cols}, anet_type's is {INPUT_SIZE}x{INPUT_SIZE}")
    if not all(abs(a - b) <= AVG_TOLERANCE for a, b in zip(avg, ANET_AVG)):
        shown = ", ".join(f"{a:.3f}" for a in avg)
        raise _Bad(f"input channel averages ({shown}) differ from anet_type's {ANET_AVG}")
    return rows, avg


def _channels_out(layer: DlibLayer, channels: dict[str, int]) -> int:
    if layer.kind in ("con", "fc"):
        return layer.filters
    return max(channels[name] for name in layer.inputs)  # add_prev: the larger input


def _parse(r: _Reader, path: Path) -> DlibResNet:
    margin, threshold = _read_header(r)
    steps = anet_topology()
    r.where = "the layer nesting"
    for i, want in enumerate(wrapper_versions(steps)):
        if r.integer() != want:
            raise _Bad(f"the layer nesting differs from anet_type at wrapper {i + 1}: another dlib network")
    size, avg = _read_input(r)
    specs = [s for s in steps if isinstance(s, DlibLayer)]
    channels = {"image": 3}
    layers = []
    for i, spec in enumerate(specs):
        r.where = f"layer {i + 1} of {len(specs)} ({RECORD_NAMES[spec.kind]}, {spec.name})"
        r.record(RECORD_NAMES[spec.kind])
        layer = _RECORD_READERS[spec.kind](r, spec, channels[spec.inputs[0]])
        if not all(np.isfinite(w).all() for w in layer.weights):
            raise _Bad(f"{r.where} has weights that are not finite numbers")
        _read_wrapper_state(r, holds_input=i == 0)
        channels[layer.name] = _channels_out(layer, channels)
        layers.append(layer)
    if r.pos != len(r.data):
        raise _Bad(f"{len(r.data) - r.pos:,} extra bytes after the last layer")
    return DlibResNet(path=path, layers=tuple(layers), input_size=size, input_avg=avg, margin=margin,
                      distance_threshold=threshold)


def read_dlib_resnet(path: Union[str, os.PathLike]) -> DlibResNet:
    """Parse dlib's face recognition ResNet (``anet_type``) from its ``.dat`` file.

    Raises :class:`DlibFormatError` (one line: what is wrong and what to pass
    instead) for a missing, unreadable, truncated or different file.
    """
    shown = _shown(path)
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise DlibFormatError(f"dlib model file not found: {shown}: {FIX_HINT}") from None
    except OSError as exc:
        raise DlibFormatError(f"cannot read {shown} ({exc.strerror}): {FIX_HINT}") from None
    if not p.is_file():
        raise DlibFormatError(f"{shown} is not a file: {FIX_HINT}")

    def refuse(why: str) -> DlibFormatError:
        return DlibFormatError(f"{shown} is not dlib's face recognition ResNet ({why}): {FIX_HINT}")

    if size == 0:
        raise refuse("the file is empty")
    if size > MAX_FILE_BYTES:
        raise refuse(f"{size:,} bytes, where the model has about 22.5 MB")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DlibFormatError(f"cannot read {shown} ({exc.strerror}): {FIX_HINT}") from None
    try:
        return _parse(_Reader(data), p)
    except _Bad as exc:
        raise refuse(str(exc)) from None
