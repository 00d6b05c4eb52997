"""Embedding architectures by name (a small factory, each architecture built lazily).

Every embedding model takes RGB pixels in 0..255 as float32 (N, 112, 112, 3),
normalises them inside the graph, and ends in an ``embedding`` layer followed by
L2 normalisation, so an exported file needs no pre-processing beyond alignment
and int8 input quantization maps pixel values one to one.

Choices made for int8 on XNNPACK (measured on this stack): ReLU rather than
PReLU (PReLU splits the int8 graph into many delegate partitions and runs 4x
slower than fp32), and ``tf.math.l2_normalize`` rather than
``keras.layers.UnitNormalization`` (the former becomes one int8
L2_NORMALIZATION op, the latter leaves float ops behind).
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers

from edgeface.choices import unknown_choice
from edgeface.errors import UserError
from edgeface.nn.layers import EMBEDDING_LAYER, L2Normalize
from edgeface.train.batchnorm import SyncBatchNormalization

INPUT_SIZE = 112
# Keras' default 0.99 needs hundreds of steps before the moving statistics mean anything: a short
# run (tens of steps on a small dataset) then infers with near-initial statistics and outputs noise.
# 0.9 is PyTorch's 0.1 as used by InsightFace.
BN_MOMENTUM = 0.9


def _scaled(channels: int, width: float) -> int:
    """A layer's channel count at a width multiplier (never below 8)."""
    return max(8, int(round(channels * width)))


def _pixels_in(size: int) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    inputs = keras.Input((size, size, 3), name="image")
    # 0..255 -> about -1..1, inside the graph so every consumer feeds raw pixels.
    x = layers.Rescaling(1.0 / 128.0, offset=-127.5 / 128.0, name="normalize_pixels")(inputs)
    return inputs, x


def _bn(name: str, sync: bool) -> layers.BatchNormalization:
    # sync: statistics over the global batch of a tf.distribute step (all replicas), so N replicas normalise, and so
    # train, as one device does; without it each replica normalises its own slice.
    cls = SyncBatchNormalization if sync else layers.BatchNormalization
    return cls(epsilon=1e-5, momentum=BN_MOMENTUM, name=name)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, act: bool = True, depthwise: bool = False,
             sync: bool = False):
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    else:
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = _bn(f"{name}_bn", sync)(x)
    if act:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def _bottleneck(x, expansion: int, out_ch: int, stride: int, name: str, sync: bool = False):
    in_ch = x.shape[-1]
    y = _conv_bn(x, in_ch * expansion, 1, 1, f"{name}_expand", sync=sync)
    y = _conv_bn(y, 0, 3, stride, f"{name}_depthwise", depthwise=True, sync=sync)
    y = _conv_bn(y, out_ch, 1, 1, f"{name}_project", act=False, sync=sync)
    if stride == 1 and in_ch == out_ch:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


# (expansion t, output channels c, repeats n, first stride s), as in MobileFaceNet (Chen et al. 2018).
MOBILEFACENET_BLOCKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


def mobilefacenet(embedding_dim: int = 128, input_size: int = INPUT_SIZE, width: float = 1.0,
                  sync_bn: bool = False) -> keras.Model:
    """MobileFaceNet-class network: depthwise-separable bottlenecks and a global depthwise conv (~1 M params).

    ``width`` multiplies every layer's channel count (the embedding size is
    ``embedding_dim`` whatever the width): 1.5 has ~2.1 M parameters.  ``sync_bn``: every BatchNormalization
    takes its batch statistics over all replicas of a tf.distribute strategy
    (:class:`~edgeface.train.batchnorm.SyncBatchNormalization`).
    """
    c = lambda n: _scaled(n, width)  # noqa: E731
    inputs, x = _pixels_in(input_size)
    x = _conv_bn(x, c(64), 3, 2, "stem", sync=sync_bn)
    x = _conv_bn(x, 0, 3, 1, "stem_dw", depthwise=True, sync=sync_bn)
    for b, (t, ch, n, s) in enumerate(MOBILEFACENET_BLOCKS):
        for i in range(n):
            x = _bottleneck(x, t, c(ch), s if i == 0 else 1, f"block{b}_{i}", sync=sync_bn)
    x = _conv_bn(x, c(512), 1, 1, "head_expand", sync=sync_bn)
    # Global depthwise conv: a learned, position-aware pooling over the final 7x7 map.
    k = x.shape[1]
    x = layers.DepthwiseConv2D(k, padding="valid", use_bias=False, name="gdc_dw")(x)
    x = _bn("gdc_bn", sync_bn)(x)
    x = layers.Conv2D(embedding_dim, 1, use_bias=False, name="gdc_linear")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _bn(EMBEDDING_LAYER, sync_bn)(x)
    outputs = L2Normalize(name="l2_normalize")(x)
    return keras.Model(inputs, outputs, name="mobilefacenet")


def seed_cnn(embedding_dim: int = 128, input_size: int = INPUT_SIZE, width: float = 1.0,
             sync_bn: bool = False) -> keras.Model:
    """The classic baseline: Conv 32/64/128 with max-pooling, Dense 512, Dropout 0.5, then the embedding.

    ``sync_bn`` is taken for a uniform factory and does nothing: there is no BatchNorm.  Under a tf.distribute
    strategy every replica draws the same Dropout mask for its slice of the batch (measured), so N TensorFlow
    replicas do not train exactly as one device does.
    """
    del sync_bn
    c = lambda n: _scaled(n, width)  # noqa: E731
    inputs, x = _pixels_in(input_size)
    for i, filters in enumerate((32, 64, 128)):
        x = layers.Conv2D(c(filters), 3, padding="same", activation="relu", name=f"conv{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(c(512), activation="relu", name="fc512")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    x = layers.Dense(embedding_dim, name=EMBEDDING_LAYER)(x)
    outputs = L2Normalize(name="l2_normalize")(x)
    return keras.Model(inputs, outputs, name="seed_cnn")


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "mobilefacenet": mobilefacenet,
    "seed-cnn": seed_cnn,
}


WIDTH_RANGE = (0.25, 4.0)


def check_width(width: float, name: str = "width") -> None:
    """A :class:`UserError` for a width multiplier outside :data:`WIDTH_RANGE` (``name``: how the caller spells it)."""
    if not WIDTH_RANGE[0] <= width <= WIDTH_RANGE[1]:
        raise UserError(f"{name} must be between {WIDTH_RANGE[0]} and {WIDTH_RANGE[1]} (a channel multiplier: 1 = the "
                        f"standard network, 1.5 = ~2x its parameters), got {width}")


def get_model(name: str, embedding_dim: int = 128, input_size: int = INPUT_SIZE, width: float = 1.0,
              sync_bn: bool = False) -> keras.Model:
    """Build an embedding model by architecture name; ``width`` multiplies its channel counts.

    ``sync_bn`` (training under a multi-replica tf.distribute strategy): BatchNorm statistics over the global
    batch (:class:`~edgeface.train.batchnorm.SyncBatchNormalization`).  The saved model is rebuilt without it.
    """
    if name not in ARCHITECTURES:
        raise unknown_choice("architecture", name, ARCHITECTURES)
    check_width(width)
    return ARCHITECTURES[name](embedding_dim=embedding_dim, input_size=input_size, width=width, sync_bn=sync_bn)


def embedding_features(model: keras.Model) -> keras.KerasTensor:
    """The pre-normalisation embedding tensor of a model built here (what margin heads train on)."""
    return model.get_layer(EMBEDDING_LAYER).output
