"""The margin curve every margin head shares (ArcFace, CosFace, combined): one pure function of cos(theta).

Its own module so that both the full heads (:mod:`edgeface.train.heads`) and the sampled one
(:mod:`edgeface.train.partial_fc`, which :mod:`~edgeface.train.heads` builds) import it without importing each
other.
"""

from __future__ import annotations

import math

from keras import ops

# Angles are clipped this far away from 0 and pi: arccos has an infinite slope at +-1.
_COS_EPS = 1e-6


def margin_target(cos_t, m1: float, m2: float, m3: float):
    """cos(m1 * theta + m2) - m3 for cos_t = cos(theta), kept monotonic in theta.

    Past theta_max = (pi - m2) / m1 the curve would rise again (a wrong sample
    would earn a smaller loss the more wrong it is), so there it continues as
    cos(theta) - cos(theta_max) - 1 - m3: continuous at theta_max and
    decreasing, the role ArcFace's ``th``/``mm`` constants play.
    """
    cos_t = ops.clip(cos_t, -1.0 + _COS_EPS, 1.0 - _COS_EPS)
    if m1 == 1.0:
        # cos(theta + m2) by the angle-sum identity: no arccos, smooth gradients.
        sin_t = ops.sqrt(ops.maximum(1.0 - cos_t * cos_t, 0.0))
        target = cos_t * math.cos(m2) - sin_t * math.sin(m2)
    else:
        target = ops.cos(m1 * ops.arccos(cos_t) + m2)
    if m1 == 1.0 and m2 == 0.0:
        return target - m3
    cos_max = math.cos((math.pi - m2) / m1)
    return ops.where(cos_t > cos_max, target, cos_t - cos_max - 1.0) - m3
