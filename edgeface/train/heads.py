"""Classification heads for training an embedding network, chosen by name.

``softmax`` is a plain dense layer on the pre-normalisation embedding trained
with cross-entropy.  The margin heads (``arcface``, ``cosface``, ``combined``)
share one layer and one loss, in the combined-margin form of InsightFace:

    the layer outputs cos(theta_j) = <e / |e|, W_j / |W_j|>  (logits for accuracy)
    the loss replaces the target logit by cos(m1 * theta_y + m2) - m3,
    multiplies every logit by the scale s and applies cross-entropy.

ArcFace is (m1, m2, m3) = (1, 0.5, 0), CosFace (1, 0, 0.35); SphereFace-style
multiplicative margins use m1 > 1.  Keeping the margin in the loss (not in the
layer) means the layer needs no labels, its argmax is the margin-free
prediction (so ``accuracy`` is meaningful on validation data) and a later task
(distillation) can reuse the training loop with a different loss.

Everything is written with ``keras.ops`` so it trains under TensorFlow and JAX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np
from keras import ops

from edgeface.choices import unknown_choice
from edgeface.errors import UserError
from edgeface.train.margin import margin_target


@dataclass(frozen=True)
class HeadSpec:
    """One row of the head table: how the logits are made and the default margins."""

    name: str
    margin: bool  # False: dense softmax head; True: cosine layer + combined-margin loss
    scale: float = 1.0
    m1: float = 1.0
    m2: float = 0.0
    m3: float = 0.0
    primary: str = ""  # which of m1/m2/m3 `--margin` sets
    default_optimizer: str = "sgd"
    help: str = ""


HEADS: dict[str, HeadSpec] = {
    "softmax": HeadSpec("softmax", margin=False, default_optimizer="adam",
                        help="dense layer + cross-entropy on the pre-normalisation embedding"),
    "arcface": HeadSpec("arcface", margin=True, scale=64.0, m2=0.5, primary="m2",
                        help="additive angular margin cos(theta + m), Deng et al. 2019"),
    "cosface": HeadSpec("cosface", margin=True, scale=64.0, m3=0.35, primary="m3",
                        help="additive cosine margin cos(theta) - m, Wang et al. 2018"),
    "combined": HeadSpec("combined", margin=True, scale=64.0, m1=1.0, m2=0.3, m3=0.2, primary="m2",
                         help="cos(m1 * theta + m2) - m3 with InsightFace's combined defaults"),
}


def get_head_spec(name: str) -> HeadSpec:
    """The table row for a head name; unknown names get a suggestion."""
    if name not in HEADS:
        raise unknown_choice("head", name, HEADS)
    return HEADS[name]


@dataclass(frozen=True)
class Margins:
    """Resolved margin parameters of a margin head."""

    scale: float
    m1: float
    m2: float
    m3: float


def margin_options_given(scale: Optional[float], margin: Optional[float],
                         margins: Optional[tuple[float, float, float]]) -> list[str]:
    """The margin-head flags set on the command line (for messages refusing them where they do nothing)."""
    return [flag for flag, v in (("--scale", scale), ("--margin", margin), ("--margins", margins)) if v is not None]


def resolve_margins(spec: HeadSpec, scale: Optional[float] = None, margin: Optional[float] = None,
                    margins: Optional[tuple[float, float, float]] = None) -> Margins:
    """Apply user overrides to a margin head's defaults and check them (one line on bad values)."""
    if not spec.margin:
        given = margin_options_given(scale, margin, margins)
        if given:
            raise UserError(f"--head {spec.name} has no margin or scale: drop {'/'.join(given)} or choose a margin "
                            "head (arcface, cosface, combined)")
    m1, m2, m3 = spec.m1, spec.m2, spec.m3
    if margins is not None:
        if len(margins) != 3:
            raise UserError(f"margins must be three numbers m1,m2,m3, got {len(margins)}")
        m1, m2, m3 = (float(v) for v in margins)
    if margin is not None:
        if spec.primary == "m2":
            m2 = float(margin)
        elif spec.primary == "m3":
            m3 = float(margin)
    s = spec.scale if scale is None else float(scale)
    # NaN passes every < and <= test, and an infinite scale or margin turns the loss into NaN
    if not (math.isfinite(s) and s > 0):
        raise UserError(f"head scale must be a finite number > 0, got {s}")
    if not all(math.isfinite(m) for m in (m1, m2, m3)):
        raise UserError(f"margins must be finite numbers; got m1={m1}, m2={m2}, m3={m3}")
    if m1 < 1 or m2 < 0 or m3 < 0 or m2 >= math.pi:
        raise UserError(f"margins need m1 >= 1, 0 <= m2 < pi, m3 >= 0; got m1={m1}, m2={m2}, m3={m3}")
    return Margins(s, m1, m2, m3)


@keras.saving.register_keras_serializable(package="edgeface")
class CosineHead(keras.layers.Layer):
    """cos(theta) between the L2-normalised features and L2-normalised class weights.

    Computed in float32 even under a mixed-precision policy: the margin maths
    (arccos near +-1, a scale of 64) needs the precision.
    """

    def __init__(self, num_classes: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(int(input_shape[-1]), self.num_classes),
            initializer=keras.initializers.GlorotNormal(), trainable=True,
        )

    def call(self, x):
        x = ops.normalize(ops.cast(x, "float32"), axis=-1, order=2)
        w = ops.normalize(self.kernel, axis=0, order=2)
        return ops.matmul(x, w)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="edgeface")
class CombinedMarginLoss(keras.losses.Loss):
    """Cross-entropy on s * [cos(theta_j), target logit cos(m1 theta_y + m2) - m3] (sparse integer labels)."""

    def __init__(self, scale: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0,
                 name: str = "combined_margin_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale, self.m1, self.m2, self.m3 = float(scale), float(m1), float(m2), float(m3)

    def call(self, y_true, y_pred):
        cos = ops.cast(y_pred, "float32")
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        onehot = ops.one_hot(labels, ops.shape(cos)[-1], dtype="float32")
        target = margin_target(cos, self.m1, self.m2, self.m3)
        logits = self.scale * (onehot * target + (1.0 - onehot) * cos)
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "m1": self.m1, "m2": self.m2, "m3": self.m3}


def check_sample_rate(spec: HeadSpec, sample_rate: float) -> None:
    """Partial FC's class-sample rate: in (0, 1], below 1 only for a margin head (one line otherwise)."""
    rate = float(sample_rate)
    if not (math.isfinite(rate) and 0.0 < rate <= 1.0):
        raise UserError(f"--sample-rate must be in (0, 1] (1 = every class, the full head), got {sample_rate}")
    if rate < 1.0 and not spec.margin:
        raise UserError(f"--sample-rate {rate:g} samples the classes of a margin head (partial FC); --head "
                        f"{spec.name} has none: choose arcface, cosface or combined, or drop --sample-rate")


def is_sampled(spec: HeadSpec, sample_rate: float) -> bool:
    """True when the head is partial FC (:mod:`edgeface.train.partial_fc`): the training model then takes labels."""
    return spec.margin and float(sample_rate) < 1.0


def build_head(spec: HeadSpec, num_classes: int, name: str = "head", sample_rate: float = 1.0,
               batch_size: int = 64, seed: Optional[int] = None) -> keras.layers.Layer:
    """The layer that maps the pre-normalisation embedding to per-class logits (float32).

    ``sample_rate`` < 1 (margin heads): :class:`edgeface.train.partial_fc.PartialMarginHead`, which also takes the
    labels and samples the classes of each step (``batch_size``: the global batch, ``seed``: the sampler's)."""
    if is_sampled(spec, sample_rate):
        from edgeface.train.partial_fc import PartialMarginHead  # it imports this module

        return PartialMarginHead(num_classes, sample_rate, batch_size=batch_size, seed=seed, name=name)
    if spec.margin:
        return CosineHead(num_classes, name=name)
    return keras.layers.Dense(num_classes, dtype="float32", name=name)


def build_loss(spec: HeadSpec, margins: Optional[Margins], sampled: bool = False) -> keras.losses.Loss:
    """The loss that goes with a head: plain cross-entropy or the combined-margin loss (``sampled``: on a
    partial FC head's output)."""
    if not spec.margin:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    margins = margins or resolve_margins(spec)
    if sampled:
        from edgeface.train.partial_fc import PartialMarginLoss

        return PartialMarginLoss(margins.scale, margins.m1, margins.m2, margins.m3)
    return CombinedMarginLoss(margins.scale, margins.m1, margins.m2, margins.m3)


def build_metrics(sampled: bool = False) -> list:
    """The metrics compiled with a head: ``accuracy`` (for partial FC, own class first among its columns)."""
    if sampled:
        from edgeface.train.partial_fc import accuracy_metric

        return [accuracy_metric()]
    return ["accuracy"]


def head_logits_numpy(spec: HeadSpec, weights: list[np.ndarray], features: np.ndarray) -> np.ndarray:
    """The head's inference logits in numpy from its weights and pre-normalisation features.

    Softmax: ``features @ W + b``; margin heads: cos(theta) (no margin at inference).
    Used for the final metrics on the float32 embedding model, whatever the training precision/strategy.
    """
    f = np.asarray(features, np.float64)
    if not spec.margin:
        kernel, bias = weights
        return f @ kernel + bias
    (kernel,) = weights
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    w = kernel / np.maximum(np.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
    return f @ w
