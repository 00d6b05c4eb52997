"""Accuracy-budgeted int8 (``--auto-mixed``): keep the fewest layers in float until the budget holds.

1. TensorFlow's ``QuantizationDebugger`` runs the calibrated model with a
   NumericVerify op after every quantized layer and reports, per layer, the
   error between the float and the dequantized int8 output.  Layers are ranked
   by RMSE in units of the layer's quantization step (``rmse/scale``, the
   measure TF's selective-quantization guide uses): large values mean the 8-bit
   grid is too coarse for that activation.
2. The worst ``k`` layers are denylisted (left in float) and the file is
   re-quantized and re-verified with the same checks as every export; ``k``
   grows 1, 2, 4, ... until the budget holds, then a bisection finds the
   smallest ``k`` that passes (assuming more float layers never hurt).
3. If even the largest tried ``k`` fails, the budget cannot be met: the best
   file found is kept and the result says so.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from edgeface.converters.convert import captured_output, representative_dataset
from edgeface.converters.formats import MIXED_FORMAT


@dataclass
class LayerError:
    """Quantization error of one layer's output."""

    tensor: str
    op: str
    rmse_over_scale: float

    @property
    def layer(self) -> str:
        return short_layer_name(self.tensor)


@dataclass
class Trial:
    float_layers: int
    passed: bool
    score: float
    detail: dict = field(default_factory=dict)


@dataclass
class MixedResult:
    """What the search found; ``data`` is the chosen file (the best one when the budget was not met)."""

    data: Optional[bytes]
    float_layers: list[str]
    met_budget: bool
    trials: list[Trial]
    ranking: list[LayerError]
    message: str = ""
    cost: Optional[dict] = None  # size and latency vs the plain int8 file, filled in by the caller

    def to_dict(self) -> dict:
        return {
            "met_budget": self.met_budget,
            "cost": self.cost,
            "float_layers": [short_layer_name(t) for t in self.float_layers],
            "float_tensors": self.float_layers,
            "trials": [{"float_layers": t.float_layers, "passed": t.passed, "score": t.score, **t.detail}
                       for t in self.trials],
            "worst_layers": [{"layer": e.layer, "op": e.op, "rmse_over_scale": round(e.rmse_over_scale, 4)}
                             for e in self.ranking[:10]],
            "message": self.message,
        }


# Sub-scopes TensorFlow ops add under a Keras layer's scope (batchnorm/add_1, conv/BiasAdd, ...).
_OP_SCOPES = {"batchnorm", "BiasAdd", "convolution", "depthwise", "Conv2D", "MatMul", "Reshape", "Relu"}


def short_layer_name(tensor: str) -> str:
    """A readable layer name from a TFLite tensor name such as ``model/model/block1_0_expand_relu_1/Relu;...``.

    The name is the scope path of the op that wrote the tensor: the Keras layer is
    the part before the op's own name.
    """
    first = tensor.split(";")[0]
    parts = [p for p in first.split("/") if p]
    scopes = [p for p in parts[:-1] if p not in _OP_SCOPES]
    if scopes:
        name = scopes[-1]
        # Keras 3 suffixes layer scopes with _1, _2 when a model is called again (the batch-1 wrapper).
        base, _, tail = name.rpartition("_")
        return base if tail.isdigit() and base else name
    return first


def parse_layer_statistics(dump: str) -> list[LayerError]:
    """Rank layers from ``QuantizationDebugger.layer_statistics_dump`` CSV output, worst first."""
    ranking = []
    for row in csv.DictReader(io.StringIO(dump)):
        try:
            scale = float(row.get("scale") or "nan")
            mse = float(row.get("mean_squared_error") or "nan")
        except ValueError:
            continue
        if not (scale > 0 and mse >= 0):
            continue
        ranking.append(LayerError(row.get("tensor_name", ""), row.get("op_name", ""), math.sqrt(mse) / scale))
    ranking.sort(key=lambda e: e.rmse_over_scale, reverse=True)
    return ranking


class LayerDebugger:
    """A calibrated model plus TF's QuantizationDebugger: ranks layers and re-quantizes with a denylist."""

    def __init__(self, model1: Any, calibration: np.ndarray, debug_images: np.ndarray,
                 per_tensor: bool = False) -> None:
        import tensorflow as tf

        from edgeface.converters.convert import make_converter

        self._tf = tf
        conv = make_converter(model1, MIXED_FORMAT, calibration, per_tensor=per_tensor)
        with captured_output():
            self.debugger = tf.lite.experimental.QuantizationDebugger(
                converter=conv, debug_dataset=representative_dataset(debug_images))

    def rank(self) -> list[LayerError]:
        with captured_output():
            self.debugger.run()
        buf = io.StringIO()
        self.debugger.layer_statistics_dump(buf)
        return parse_layer_statistics(buf.getvalue())

    def quantize(self, denylisted: list[str]) -> bytes:
        opts = self._tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(denylisted) or None)
        with captured_output():
            if hasattr(self.debugger, "_debug_options"):
                # get_nondebug_quantized_model() reads only these options.  The public
                # ``options`` setter also rebuilds the NumericVerify-instrumented model:
                # wasted work here, and it fails when every layer is denylisted.
                self.debugger._debug_options = opts
            else:
                self.debugger.options = opts
            return bytes(self.debugger.get_nondebug_quantized_model())


def search_float_layers(ranking: list[LayerError], build: Callable[[list[str]], bytes],
                        judge: Callable[[bytes], tuple[bool, float, dict]], max_layers: Optional[int] = None,
                        progress: Optional[Callable[[str], None]] = None) -> MixedResult:
    """Find the fewest worst-ranked layers to keep in float so that ``judge`` passes.

    ``build(tensor_names)`` returns a quantized file with those layers in float;
    ``judge(data)`` returns (passed, score, detail), higher score is better.
    ``max_layers`` caps how many layers may stay float (None: every ranked layer may).
    """
    if max_layers is not None and max_layers < 1:
        raise ValueError(f"max_layers must be at least 1 (None for no cap), got {max_layers}")
    names = [e.tensor for e in ranking]
    limit = len(names) if max_layers is None else min(len(names), max_layers)
    trials: list[Trial] = []
    files: dict[int, bytes] = {}

    def attempt(k: int) -> bool:
        if progress:
            progress(f"int8 with {k} float layer(s)")
        data = build(names[:k])
        passed, score, detail = judge(data)
        trials.append(Trial(k, passed, score, detail))
        files[k] = data
        return passed

    if limit == 0:
        return MixedResult(None, [], False, trials, ranking, "the debugger reported no quantized layers")
    lo, hi = 0, None  # lo: largest k known to fail; hi: smallest k known to pass
    k = 1
    while k <= limit:
        if attempt(k):
            hi = k
            break
        lo = k
        if k == limit:
            break
        k = min(2 * k, limit)
    if hi is not None:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if attempt(mid):
                hi = mid
            else:
                lo = mid
        return MixedResult(files[hi], names[:hi], True, trials, ranking,
                           f"budget met with {hi} of {len(names)} layers in float")
    best = max(trials, key=lambda t: t.score)
    return MixedResult(files[best.float_layers], names[:best.float_layers], False, trials, ranking,
                       f"budget not met even with {limit} layers in float; kept the best file "
                       f"({best.float_layers} float layers)")
