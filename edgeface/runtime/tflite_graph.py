"""Read a ``.tflite`` flatbuffer into plain Python: operators, tensors, dtypes, shapes and options.

The interpreter hides what a converter or the Edge TPU rules need to see (Flex
custom ops, shape signatures, per-op options such as strides and fused
activations, and it reports a whole delegated graph as one DELEGATE op), so the
file itself is read through the flatbuffer schema shipped with ``ai_edge_litert``
(or TensorFlow).  No interpreter, no TensorFlow needed.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Union

from edgeface.errors import UserError

_SMALL_INT_DTYPES = {"int32": "<i4", "int64": "<i8"}


@lru_cache(maxsize=1)
def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated as schema
        except ImportError:
            raise UserError("reading .tflite files needs ai-edge-litert: `pip install ai-edge-litert`") from None
    return schema


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass(frozen=True)
class TensorDesc:
    """One tensor of the graph."""

    index: int
    name: str
    dtype: str  # lower-case numpy-style name: float32, int8, uint8, int32, ...
    shape: tuple
    shape_signature: Optional[tuple]  # -1 marks a dynamic dimension
    constant: bool  # backed by data in the file (weights, biases)
    scale: tuple = ()
    zero_point: tuple = ()
    values: Optional[tuple] = field(default=None, compare=False)  # small integer constants (axes, paddings)

    @property
    def dynamic(self) -> bool:
        return self.shape_signature is not None and any(d < 0 for d in self.shape_signature)

    @property
    def quantized(self) -> bool:
        return bool(self.scale)


@dataclass(frozen=True)
class OperatorDesc:
    """One operator: its name (builtin name, or the custom code, e.g. ``FlexConv2D``) and tensors."""

    index: int
    name: str
    custom: bool
    inputs: tuple
    outputs: tuple
    options: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Graph:
    """The main subgraph of a TFLite model."""

    tensors: list[TensorDesc]
    operators: list[OperatorDesc]
    inputs: list[int]
    outputs: list[int]
    subgraphs: int = 1
    size_bytes: int = 0
    # raw bytes of each constant tensor's buffer, by tensor index (see :meth:`constant`)
    buffers: dict = field(default_factory=dict, repr=False, compare=False)

    def constant(self, index: int):
        """The values of constant tensor ``index`` as a numpy array of its dtype and shape (weights, biases,
        paddings); a :class:`UserError` for a tensor without data or of a type numpy cannot hold."""
        import numpy as np

        t = self.tensors[index]
        raw = self.buffers.get(index)
        if raw is None:
            raise UserError(f"tensor {t.name!r} holds no constant data")
        dtypes = {"float32": "<f4", "float16": "<f2", "int32": "<i4", "int64": "<i8", "int8": "i1", "uint8": "u1",
                  "int16": "<i2"}
        if t.dtype not in dtypes:
            raise UserError(f"tensor {t.name!r} is {t.dtype}: not a constant type this reader knows")
        values = np.frombuffer(raw, dtypes[t.dtype])
        if values.size != int(np.prod(t.shape)):
            raise UserError(f"tensor {t.name!r} of shape {t.shape} has {values.size} values in the file: damaged")
        return values.reshape(t.shape)

    def op_counts(self) -> dict[str, int]:
        """Operator name -> count, in order of first appearance."""
        return dict(Counter(op.name for op in self.operators))

    def flex_ops(self) -> list[str]:
        """Names of TensorFlow (Flex / SELECT_TF_OPS) ops: they need the Flex delegate, which boards lack."""
        return sorted({op.name for op in self.operators if op.custom and op.name.startswith("Flex")})

    def custom_ops(self) -> list[str]:
        return sorted({op.name for op in self.operators if op.custom})

    def input_tensors(self) -> list[TensorDesc]:
        return [self.tensors[i] for i in self.inputs]

    def output_tensors(self) -> list[TensorDesc]:
        return [self.tensors[i] for i in self.outputs]

    def op_tensors(self, op: OperatorDesc) -> list[TensorDesc]:
        """Every tensor an operator reads or writes (optional inputs, index -1, skipped)."""
        return [self.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]

    def weight_quantization(self) -> Optional[str]:
        """How the 8-bit constant tensors (weights) are scaled: "per-channel" (any with several scales),
        "per-tensor", or None when no weight is 8-bit quantized (a float file)."""
        scales = [len(t.scale) for t in self.tensors
                  if t.constant and t.quantized and t.dtype in ("int8", "uint8")]
        if not scales:
            return None
        return "per-channel" if max(scales) > 1 else "per-tensor"


def _options(op, schema) -> dict[str, Any]:
    opts = getattr(op, "builtinOptions", None)
    if opts is None:
        return {}
    out = {}
    act_names = _enum_names(schema.ActivationFunctionType)
    pad_names = _enum_names(schema.Padding)
    for key, value in vars(opts).items():
        if key == "fusedActivationFunction":
            value = act_names.get(value, str(value))
        elif key == "padding":
            value = pad_names.get(value, str(value))
        elif hasattr(value, "tolist"):
            value = value.tolist()
        out[key] = value
    return out


# Bytes per element of the tensor types of fixed size (strings, resources and packed 2/4-bit types are not
# checked against their buffers).
_ELEMENT_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "BFLOAT16": 2, "FLOAT64": 8, "INT8": 1, "UINT8": 1, "INT16": 2,
                  "UINT16": 2, "INT32": 4, "UINT32": 4, "INT64": 8, "UINT64": 8, "BOOL": 1, "COMPLEX64": 8,
                  "COMPLEX128": 16, "FLOAT8_E4M3FN": 1, "FLOAT8_E5M2": 1}


def structure_problem(data: bytes) -> Optional[str]:
    """What makes ``data`` a TFLite file the interpreter must not be given, or None.

    LiteRT's interpreter trusts parts of the file it loads: found by fuzzing (tests/test_fuzz.py), one flipped
    bit that enlarges a weight tensor's shape past its buffer, a subgraph table gone, or zero points without
    scales crash the process (SIGSEGV, SIGABRT) instead of raising.  This checks those invariants and every
    index the file holds (operator codes, tensors, buffers) with the flatbuffer's read-only accessors: no copy
    of the weights, a few milliseconds for a 6 MB model.  It cannot prove a file safe (the kernels trust more:
    operator options, types); it turns the damage seen so far into an error.
    """
    schema = _schema()
    try:
        model = schema.Model.GetRootAs(data, 0)
        n_buffers, n_codes = model.BuffersLength(), model.OperatorCodesLength()
        if model.SubgraphsLength() == 0:
            return "it has no subgraph"
        type_names = _enum_names(schema.TensorType)
        op_names = _enum_names(schema.BuiltinOperator)
        for s in range(model.SubgraphsLength()):
            g = model.Subgraphs(s)
            n_tensors = g.TensorsLength()
            for i in range(n_tensors):
                t = g.Tensors(i)
                shape = [] if t.ShapeIsNone() else [int(d) for d in t.ShapeAsNumpy()]
                if any(d < -1 for d in shape):
                    return f"tensor {i} has shape {tuple(shape)}"
                if t.Buffer() >= max(n_buffers, 1):
                    return f"tensor {i} names buffer {t.Buffer()} of {n_buffers}"
                q = t.Quantization()
                if q is not None:
                    n_scales, n_zero = q.ScaleLength(), q.ZeroPointLength()
                    if (n_scales or n_zero) and n_scales != n_zero:
                        return f"tensor {i} has {n_scales} quantization scales and {n_zero} zero points"
                    if n_scales > 1 and not 0 <= q.QuantizedDimension() < max(len(shape), 1):
                        return f"tensor {i} is quantized along dimension {q.QuantizedDimension()} of {len(shape)}"
                if 0 < t.Buffer() < n_buffers:
                    buf = model.Buffers(t.Buffer())
                    external = buf.Offset() > 1  # models over 2 GB: the data sit after the flatbuffer
                    nbytes = buf.Size() if external else buf.DataLength()
                    if external and buf.Offset() + buf.Size() > len(data):
                        return f"buffer {t.Buffer()} lies past the end of the file"
                    size = _ELEMENT_BYTES.get(type_names.get(t.Type(), ""))
                    if nbytes and size and t.Sparsity() is None and all(d >= 0 for d in shape):
                        need = size
                        for d in shape:
                            need *= d
                        if need > nbytes:
                            return (f"tensor {i} of shape {tuple(shape)} needs {need:,} bytes, its buffer holds "
                                    f"{nbytes:,}")
            for k in range(g.OperatorsLength()):
                op = g.Operators(k)
                if not 0 <= op.OpcodeIndex() < n_codes:
                    return f"operator {k} has operator code {op.OpcodeIndex()} of {n_codes}"
                inputs, outputs = _ints(op, "Inputs"), _ints(op, "Outputs")
                for idx in (*inputs, *outputs):
                    if not -1 <= idx < n_tensors:
                        return f"operator {k} uses tensor {idx} of {n_tensors}"
                problem = _operator_problem(model, g, op, inputs, outputs, op_names, type_names)
                if problem:
                    return f"operator {k} ({problem})"
            for idx in [*_ints(g, "Inputs"), *_ints(g, "Outputs")]:
                if not 0 <= idx < n_tensors:
                    return f"subgraph {s} has input or output tensor {idx} of {n_tensors}"
    except Exception as exc:  # offsets pointing outside the file: struct.error, IndexError, ...
        return f"cannot parse the flatbuffer: {type(exc).__name__}"
    return None


# Operators whose first input and first output have the same element type in every valid model (int8, int16,
# float32, hybrid float32 with int8 weights).  LiteRT's kernels take one of the two types on trust: an int8 ADD
# whose output a damaged file declares float32 aborts the process.
_SAME_TYPE_OPS = frozenset({"ADD", "SUB", "MUL", "CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D",
                            "RELU", "RELU6", "PRELU", "RESHAPE", "CONCATENATION", "PAD", "PADV2", "MAXIMUM",
                            "MINIMUM"})


def _operator_problem(model, g, op, inputs: list[int], outputs: list[int], op_names: dict[int, str],
                      type_names: dict[int, str]) -> str:
    """What an operator's tensors contradict, for the few rules the interpreter crashes on ("" when none)."""
    code = model.OperatorCodes(op.OpcodeIndex())
    name = op_names.get(max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode())), "")
    if not inputs or not outputs or inputs[0] < 0 or outputs[0] < 0:
        return ""
    src, dst = g.Tensors(inputs[0]), g.Tensors(outputs[0])
    if name in ("DEQUANTIZE", "QUANTIZE"):
        # XNNPACK unpacks a DEQUANTIZE of constant weights with the output's declared shape: a larger one
        # reads past the weights (SIGSEGV).
        a = [] if src.ShapeIsNone() else [int(d) for d in src.ShapeAsNumpy()]
        b = [] if dst.ShapeIsNone() else [int(d) for d in dst.ShapeAsNumpy()]
        if all(d >= 0 for d in a + b) and math.prod(a) != math.prod(b):
            return f"{name} of shape {tuple(a)} into shape {tuple(b)}"
    elif name in _SAME_TYPE_OPS and src.Type() != dst.Type():
        return (f"{name} with an input of type {type_names.get(src.Type(), src.Type())} and an output of type "
                f"{type_names.get(dst.Type(), dst.Type())}")
    return ""


def _ints(table, field_name: str) -> list[int]:
    """A vector of integers of a flatbuffer table (empty when absent)."""
    if getattr(table, f"{field_name}IsNone")():
        return []
    return [int(v) for v in getattr(table, f"{field_name}AsNumpy")()]


def read_graph(source: Union[str, os.PathLike, bytes]) -> Graph:
    """Parse a TFLite model (a path or the file's bytes); a :class:`UserError` naming the file for one that is
    not a TFLite model or whose indices do not hold together (see :func:`structure_problem`)."""
    schema = _schema()
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        where = "the model"
    else:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"model file not found: {path}")
        data = path.read_bytes()
        where = str(path)
    problem = structure_problem(data)
    if problem is not None:
        raise UserError(f"{where}: not a TFLite model ({problem})")
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # a flatbuffer error can be anything from struct.error to IndexError
        raise UserError(f"{where}: not a TFLite model (cannot parse the flatbuffer: {type(exc).__name__})") from None
    if not model.subgraphs:
        raise UserError(f"{where}: not a TFLite model (it has no subgraph)")
    type_names = _enum_names(schema.TensorType)
    op_names = _enum_names(schema.BuiltinOperator)
    g = model.subgraphs[0]
    tensors = []
    buffers = {}
    for i, t in enumerate(g.tensors or []):
        buf = model.buffers[t.buffer] if model.buffers and t.buffer < len(model.buffers) else None
        has_data = buf is not None and ((buf.data is not None and len(buf.data) > 0) or getattr(buf, "size", 0) > 0)
        q = t.quantization
        scale = tuple(float(s) for s in q.scale) if q is not None and q.scale is not None else ()
        zp = tuple(int(z) for z in q.zeroPoint) if q is not None and q.zeroPoint is not None else ()
        # names are labels: one that is not UTF-8 (a damaged file) is shown with replacement characters
        name = t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else str(t.name or "")
        dtype = type_names.get(t.type, str(t.type)).lower()
        values = None
        if has_data and buf.data is not None:
            # numpy array in the object API: tobytes, not a per-element copy (a 22 MB model reads in ms)
            buffers[i] = buf.data.tobytes() if hasattr(buf.data, "tobytes") else bytes(bytearray(buf.data))
        if has_data and dtype in _SMALL_INT_DTYPES and buf.data is not None and len(buf.data) <= 128:
            import numpy as np

            values = tuple(int(v) for v in np.frombuffer(bytes(bytearray(buf.data)), _SMALL_INT_DTYPES[dtype]))
        tensors.append(TensorDesc(
            index=i,
            name=name,
            dtype=dtype,
            shape=tuple(int(d) for d in (t.shape if t.shape is not None else ())),
            shape_signature=tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else None,
            constant=bool(has_data),
            scale=scale,
            zero_point=zp,
            values=values,
        ))
    operators = []
    for i, op in enumerate(g.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        custom = name == "CUSTOM"
        if custom:
            cc = code.customCode
            name = cc.decode("utf-8", "replace") if isinstance(cc, bytes) else str(cc)
        operators.append(OperatorDesc(
            index=i,
            name=name,
            custom=custom,
            inputs=tuple(int(x) for x in (op.inputs if op.inputs is not None else ())),
            outputs=tuple(int(x) for x in (op.outputs if op.outputs is not None else ())),
            options=_options(op, schema),
        ))
    return Graph(
        tensors=tensors,
        operators=operators,
        inputs=[int(x) for x in (g.inputs if g.inputs is not None else ())],
        outputs=[int(x) for x in (g.outputs if g.outputs is not None else ())],
        subgraphs=len(model.subgraphs),
        size_bytes=len(data),
        buffers=buffers,
    )
