"""Keras model -> TFLite bytes for one row of the format table.

TensorFlow is imported inside the functions.  Every file gets a fixed batch of 1
(a dynamic batch adds SHAPE/STRIDED_SLICE/PACK ops and is refused by the Edge
TPU compiler) and only TFLite builtin ops: a file that needs the Flex delegate
(SELECT_TF_OPS) would not run on a board, so conversion fails instead.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from edgeface.converters.formats import ExportFormat
from edgeface.runtime.tflite_graph import Graph, read_graph


class ConversionError(Exception):
    """A format could not be produced (reported as ❌ for that format; the others go on)."""


@contextlib.contextmanager
def captured_output() -> Iterator[Callable[[], str]]:
    """Capture everything printed while converting: Python's ``sys.stdout``/``sys.stderr`` and the
    process's file descriptors 1 and 2.

    The TFLite converter prints a multi-megabyte "Saved artifact" listing from
    Python and MLIR logs from C++ (which ``contextlib.redirect_stdout`` alone
    cannot catch).  Yields a function returning what was captured so far (used
    in error messages).
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    py_sink = io.StringIO()
    with tempfile.TemporaryFile() as sink:
        saved = []
        try:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                    os.dup2(sink.fileno(), fd)
                except OSError:  # no such descriptor (embedded interpreters)
                    pass

            def text() -> str:
                sink.flush()
                sink.seek(0)
                return py_sink.getvalue() + sink.read().decode("utf-8", "replace")

            with contextlib.redirect_stdout(py_sink), contextlib.redirect_stderr(py_sink):
                yield text
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            for fd, dup in saved:
                os.dup2(dup, fd)
                os.close(dup)


def last_error_line(log: str, exc: BaseException) -> str:
    """The most useful single line about a converter failure."""
    text = str(exc).strip()
    for line in text.splitlines():
        if "error:" in line:
            return line.strip()[:300]
    if text:
        return text.splitlines()[0][:300]
    lines = [ln for ln in log.splitlines() if "error" in ln.lower()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def batch_one(model: Any) -> Any:
    """The same network with a fixed batch of 1 (shares the weights; nothing is retrained)."""
    import keras

    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ConversionError(f"the model input has an unknown size {shape}; export needs a fixed (H, W, C)")
    inp = keras.Input(batch_shape=(1, *shape), name=model.inputs[0].name.split(":")[0] or "image")
    return keras.Model(inp, model(inp), name=model.name)


def representative_dataset(images: np.ndarray) -> Callable[[], Iterable[list]]:
    """A calibration generator over uint8 crops, fed as the float pixels the model expects."""

    def gen():
        for img in images:
            yield [np.asarray(img, np.float32)[None]]

    return gen


def make_converter(model1: Any, fmt: ExportFormat, calibration: Optional[np.ndarray] = None,
                   per_tensor: bool = False) -> Any:
    """A configured ``tf.lite.TFLiteConverter`` for a batch-1 Keras model and a format row.

    ``per_tensor`` quantizes a full-integer file's weights with one scale per tensor instead of one per output
    channel: each channel's scale and int64 zero point (and its bias's) cost 24 bytes, which in a
    depthwise-heavy network such as MobileFaceNet is ~18 % of the int8 file; the price is accuracy, measured
    by the export's verification like any other.
    """
    import tensorflow as tf

    dtypes = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}
    conv = tf.lite.TFLiteConverter.from_keras_model(model1)
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if fmt.ops == "builtins_int8" else tf.lite.OpsSet.TFLITE_BUILTINS
    ]
    if fmt.quantize:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt.quantize == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if fmt.quantize == "full_integer":
        if calibration is None or len(calibration) == 0:
            raise ConversionError(f"{fmt.name} needs calibration images (--calib)")
        conv.representative_dataset = representative_dataset(calibration)
        conv.inference_input_type = dtypes[fmt.input_dtype]
        conv.inference_output_type = dtypes[fmt.output_dtype]
        # The converter's only switch for this; private, but stable since TF 2.4 and checked by the tests.
        conv._experimental_disable_per_channel = bool(per_tensor)
    return conv


def run_converter(conv: Any) -> bytes:
    """``conv.convert()`` with the converter's console output captured; failures become ConversionError."""
    with captured_output() as log:
        try:
            return bytes(conv.convert())
        except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
            raise ConversionError(f"converter failed: {last_error_line(log(), exc)}") from None


def check_graph(graph: Graph, fmt: ExportFormat) -> None:
    """Refuse files a board could not run, or that break the format's promise."""
    flex = graph.flex_ops()
    if flex:
        raise ConversionError(f"the file needs TensorFlow Flex ops ({', '.join(flex)}); edgeface never ships them")
    custom = graph.custom_ops()
    if custom:
        raise ConversionError(f"the file has custom ops ({', '.join(custom)}) that stock TFLite cannot run")
    if graph.subgraphs != 1:
        raise ConversionError(f"the file has {graph.subgraphs} subgraphs; expected 1 (control flow in the model?)")
    for t in graph.input_tensors():
        if t.shape[:1] != (1,) or t.dynamic:
            raise ConversionError(f"input {t.name} has shape {t.shape} (signature {t.shape_signature}); "
                                  "expected a fixed batch of 1")
    io = [*graph.input_tensors(), *graph.output_tensors()]
    expected = [fmt.input_dtype] * len(graph.inputs) + [fmt.output_dtype] * len(graph.outputs)
    for t, want in zip(io, expected):
        if t.dtype != want:
            raise ConversionError(f"tensor {t.name} is {t.dtype}; the {fmt.name} format promises {want}")
    if fmt.integer_only:
        problems = integer_only_problems(graph)
        if problems:
            raise ConversionError(f"not integer-only: {problems[0]}")


def integer_only_problems(graph: Graph) -> list[str]:
    """Ops of a full-integer file that touch a float tensor (int32 biases and shapes are fine)."""
    problems = []
    for op in graph.operators:
        floats = [t.name for t in graph.op_tensors(op) if t.dtype.startswith("float")]
        if floats:
            problems.append(f"{op.name} (op {op.index}) uses float tensor {floats[0]}")
    return problems


def convert(model1: Any, fmt: ExportFormat, calibration: Optional[np.ndarray] = None,
            per_tensor: bool = False) -> tuple[bytes, Graph]:
    """Convert a batch-1 Keras model to one format; returns the file's bytes and its parsed graph."""
    data = run_converter(make_converter(model1, fmt, calibration, per_tensor=per_tensor))
    graph = read_graph(data)
    check_graph(graph, fmt)
    return data, graph
