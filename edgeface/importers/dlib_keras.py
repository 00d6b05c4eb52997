"""Rebuild dlib's face recognition ResNet as a Keras model with dlib's exact semantics.

The model follows edgeface's conventions: input "image", float32 RGB pixels
0..255 of dlib's 150x150 chip (``dlib.get_face_chip(img, shape, 150, 0.25)``),
normalisation inside the graph, the raw 128-d descriptor as layer "embedding",
then L2 normalisation.  dlib compares raw descriptors by Euclidean distance
(same person below 0.6); the unit output is that descriptor divided by its norm.

Where dlib differs from Keras' defaults (each one decides whether the output is
dlib's descriptor or noise):

* Padding: dlib pads its stride-2 convolutions and its pools by 0 and its 3x3
  stride-1 convolutions by 1 on every side.  The first is Keras' 'valid', the
  second Keras' 'same'; Keras' 'same' at stride 2 would pad at the end and give
  18 rows from 35 where dlib gives 17.
* ``add_prev`` of tensors of different shapes: the sum takes the larger size in
  every dimension and the smaller input is zero-padded at the end (extra
  channels, bottom rows, right columns).  anet_type does this wherever a level
  doubles the channels, and in its last two levels also spatially: the stride-2
  branch gives 3x3 (1x1) where the pooled shortcut gives 4x4 (2x2).

Folding (exact up to float32 rounding, computed in float64): the input's
``(pixel - avg) / 256`` goes into conv1's kernel and bias (conv1 has no padding,
so no border pixel sees a zero that dlib would have normalised), and every
``affine`` (``gamma * x + beta`` per channel, the only consumer of the
convolution before it) goes into that convolution.  29 convolutions, 14
additions and no separate scale layers: fewer ops, and int8 quantization sees
the weights it will run.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import layers

from edgeface.importers.dlib_dat import DlibLayer, DlibResNet
from edgeface.nn.layers import EMBEDDING_LAYER, ChannelPad, L2Normalize

MODEL_NAME = "dlib_resnet"


def fold_input_normalisation(kernel: np.ndarray, bias: np.ndarray, avg: Sequence[float],
                             divisor: float) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias (H,W,I,O) that give ``conv((x - avg) / divisor)`` from raw ``x``, for a convolution
    without padding."""
    k = np.asarray(kernel, np.float64) / divisor
    b = np.asarray(bias, np.float64) - np.einsum("hwio,i->o", k, np.asarray(avg, np.float64))
    return k, b


def fold_affine(kernel: np.ndarray, bias: np.ndarray, gamma: np.ndarray,
                beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``gamma * (conv(x) + bias) + beta`` as one convolution (per output channel, the last axis)."""
    g = np.asarray(gamma, np.float64)
    return np.asarray(kernel, np.float64) * g, np.asarray(bias, np.float64) * g + np.asarray(beta, np.float64)


def folded_convolutions(net: DlibResNet) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """Every convolution's float32 (kernel, bias) with the input normalisation and its affine folded in, and
    which convolution each affine was folded into."""
    readers: dict[str, int] = {}
    for layer in net.layers:
        for name in layer.inputs:
            readers[name] = readers.get(name, 0) + 1
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    folded_into: dict[str, str] = {}
    for layer in net.layers:
        if layer.kind == "con":
            kernel, bias = layer.weights
            if layer.inputs == ("image",):
                if layer.padding != (0, 0):
                    raise ValueError(f"{layer.name} pads its input: the normalisation cannot be folded into it")
                kernel, bias = fold_input_normalisation(kernel, bias, net.input_avg, net.input_divisor)
            weights[layer.name] = (kernel, bias)
        elif layer.kind == "affine":
            source = layer.inputs[0]
            if source not in weights or readers[source] != 1:
                raise ValueError(f"{layer.name} does not follow a convolution of its own: it cannot be folded")
            weights[source] = fold_affine(*weights[source], *layer.weights)
            folded_into[layer.name] = source
    as_f32 = {name: (k.astype(np.float32), b.astype(np.float32)) for name, (k, b) in weights.items()}
    return as_f32, folded_into


def _conv(layer: DlibLayer, x, kernel: np.ndarray, bias: np.ndarray):
    (ph, pw), (kh, kw) = layer.padding, layer.kernel
    if (ph, pw) == (0, 0):
        padding = "valid"
    elif layer.stride == (1, 1) and (2 * ph + 1, 2 * pw + 1) == (kh, kw):
        padding = "same"  # stride 1, odd kernel: Keras pads (k - 1) / 2 on each side, as dlib does
    else:
        x = layers.ZeroPadding2D((ph, pw), name=f"{layer.name}_pad")(x)
        padding = "valid"
    conv = layers.Conv2D(layer.filters, layer.kernel, strides=layer.stride, padding=padding, name=layer.name)
    y = conv(x)
    conv.set_weights([kernel, bias])
    return y


def _pool(layer: DlibLayer, x):
    if layer.padding != (0, 0):
        raise ValueError(f"{layer.name}: padded pools are not part of anet_type")
    if layer.kernel == (0, 0):  # dlib's avg_pool_everything
        return layers.GlobalAveragePooling2D(name=layer.name)(x)
    cls = layers.MaxPooling2D if layer.kind == "max_pool" else layers.AveragePooling2D
    return cls(layer.kernel, strides=layer.stride, padding="valid", name=layer.name)(x)


def _add(layer: DlibLayer, xs: list, sources: list[str]):
    """dlib's add_prev: each input zero-padded at the end of every dimension to the larger size, then summed."""
    shapes = [tuple(x.shape[1:]) for x in xs]
    h, w, c = (max(s[i] for s in shapes) for i in range(3))
    padded = []
    for x, (xh, xw, xc), source in zip(xs, shapes, sources):
        if (xh, xw) != (h, w):
            x = layers.ZeroPadding2D(((0, h - xh), (0, w - xw)), name=f"{source}_pad")(x)
        if xc != c:
            x = ChannelPad(c - xc, name=f"{source}_pad_channels")(x)
        padded.append(x)
    return layers.Add(name=layer.name)(padded)


def _fc(layer: DlibLayer, x):
    if len(x.shape) != 2:
        # dlib flattens C,H,W and Keras H,W,C: only a global pool's (N, C) output means the same to both.
        raise ValueError(f"{layer.name} reads a {tuple(x.shape[1:])} tensor; anet_type's fc reads a global pool")
    dense = layers.Dense(layer.filters, use_bias=False, name=EMBEDDING_LAYER)
    y = dense(x)
    dense.set_weights(list(layer.weights))
    return y


def build_dlib_keras(net: DlibResNet) -> keras.Model:
    """The Keras model of a parsed dlib ResNet: (N, 150, 150, 3) RGB pixels 0..255 -> (N, 128) unit vectors.

    Layer "embedding" outputs dlib's raw descriptor (``compute_face_descriptor``
    on the same chip), the model's output is that descriptor at unit length.
    """
    weights, folded_into = folded_convolutions(net)
    inputs = keras.Input((net.input_size, net.input_size, 3), name="image")
    tensors = {"image": inputs}
    keras_name = {"image": "image"}  # dlib layer -> the Keras layer that computes its output (for pad names)
    for layer in net.layers:
        xs = [tensors[name] for name in layer.inputs]
        if layer.kind == "affine":  # already inside its convolution
            y, keras_name[layer.name] = xs[0], keras_name[folded_into[layer.name]]
        elif layer.kind == "con":
            y = _conv(layer, xs[0], *weights[layer.name])
        elif layer.kind == "relu":
            y = layers.ReLU(name=layer.name)(xs[0])
        elif layer.kind in ("max_pool", "avg_pool"):
            y = _pool(layer, xs[0])
        elif layer.kind == "add_prev":
            y = _add(layer, xs, [keras_name[name] for name in layer.inputs])
        elif layer.kind == "fc":
            y = _fc(layer, xs[0])
        else:
            raise ValueError(f"unknown dlib layer kind {layer.kind!r}")
        tensors[layer.name] = y
        keras_name.setdefault(layer.name, layer.name)
    outputs = L2Normalize(name="l2_normalize")(tensors[net.layers[-1].name])
    return keras.Model(inputs, outputs, name=MODEL_NAME)
