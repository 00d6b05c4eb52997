"""Read a ``.tflite`` flatbuffer into plain Python: operators, tensors, dtypes, shapes and options.

The interpreter hides what a converter or the Edge TPU rules need to see (Flex
custom ops, shape signatures, per-op options such as strides and fused
activations, and it reports a whole delegated graph as one DELEGATE op), so the
file itself is read through the flatbuffer schema shipped with ``ai_edge_litert``
(or TensorFlow).  No interpreter, no TensorFlow needed.
"""

from __future__ import annotations

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


def read_graph(source: Union[str, os.PathLike, bytes]) -> Graph:
    """Parse a TFLite model (a path or the file's bytes)."""
    schema = _schema()
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"model file not found: {path}")
        data = path.read_bytes()
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # a flatbuffer error can be anything from struct.error to IndexError
        raise UserError(f"not a TFLite model (cannot parse the flatbuffer: {type(exc).__name__})") from None
    if not model.subgraphs:
        raise UserError("not a TFLite model: it has no subgraph")
    type_names = _enum_names(schema.TensorType)
    op_names = _enum_names(schema.BuiltinOperator)
    g = model.subgraphs[0]
    tensors = []
    for i, t in enumerate(g.tensors or []):
        buf = model.buffers[t.buffer] if model.buffers and t.buffer < len(model.buffers) else None
        has_data = buf is not None and ((buf.data is not None and len(buf.data) > 0) or getattr(buf, "size", 0) > 0)
        q = t.quantization
        scale = tuple(float(s) for s in q.scale) if q is not None and q.scale is not None else ()
        zp = tuple(int(z) for z in q.zeroPoint) if q is not None and q.zeroPoint is not None else ()
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name or "")
        dtype = type_names.get(t.type, str(t.type)).lower()
        values = None
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
            name = cc.decode() if isinstance(cc, bytes) else str(cc)
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
    )
