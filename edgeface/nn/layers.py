"""The custom Keras layers edgeface models are built from, registered so a saved ``.keras`` file loads anywhere.

Kept apart from the architectures (:mod:`edgeface.train.models`) because importers (dlib's ResNet, BlazeFace),
distillation and every reader of a ``.keras`` file need the layers without the training package.  The registered
names (``edgeface>L2Normalize``, ``edgeface>ChannelPad``) are what saved files refer to: they do not depend on
this module's path, so files saved before the layers moved here still load.
"""

from __future__ import annotations

import keras
from keras import layers

# The layer before L2 normalisation: margin heads train on its output.
EMBEDDING_LAYER = "embedding"


@keras.saving.register_keras_serializable(package="edgeface")
class L2Normalize(layers.Layer):
    """Unit-length embeddings; lowers to TFLite's single L2_NORMALIZATION op under TensorFlow."""

    def __init__(self, axis: int = -1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, x):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return tf.math.l2_normalize(x, axis=self.axis, epsilon=1e-12)
        return keras.ops.normalize(x, axis=self.axis, order=2)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@keras.saving.register_keras_serializable(package="edgeface")
class ChannelPad(layers.Layer):
    """``extra`` zero channels appended after the last channel (one TFLite PAD op).

    For residual additions of tensors with different channel counts, as dlib's
    ``add_prev`` does (imported dlib models: :mod:`edgeface.importers.dlib_keras`).
    """

    def __init__(self, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.extra = int(extra)

    def call(self, x):
        widths = [[0, 0]] * (len(x.shape) - 1) + [[0, self.extra]]
        return keras.ops.pad(x, widths)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], None if input_shape[-1] is None else input_shape[-1] + self.extra)

    def get_config(self):
        return {**super().get_config(), "extra": self.extra}
