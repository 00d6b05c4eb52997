"""Partial FC: a margin head that trains on a sample of the classes each step (InsightFace's PartialFC).

With 85 k - 2 M identities the full margin head is the largest thing in training: its (B, C) logits and the
margin loss's temporaries, its C x D class weights, and the optimizer state of those weights.  Partial FC
(An et al. 2021) samples, at every step, the batch's positive classes plus uniformly drawn negatives up to
``sample_rate * C`` classes; logits and the margin loss cover those columns only, and only their class-weight rows
get gradients and updates.

:class:`PartialMarginHead` does the sampling and outputs ``[cos(own class), cos(sampled classes)]`` per image: column
0 is the image's own class and its column among the sampled ones is masked (:data:`MASKED`), so the loss
(:class:`PartialMarginLoss`, the combined-margin loss of :mod:`edgeface.train.heads` on column 0) needs no label
remapping and the model keeps Keras' ``fit``.  The layer takes the labels as a second input (the training model
gets a ``label`` input, :func:`with_label_input` feeds it).  In inference mode (validation) it covers every class,
so ``val_loss`` / ``val_accuracy`` are the full head's.  The class weights are stored as rows (C, D), so a gather
of the sampled rows gives TensorFlow a row-sparse gradient; :mod:`edgeface.train.row_sparse` applies it to those
rows only.  Sampling draws from a ``keras.random.SeedGenerator`` (saved with the checkpoint), seeded by the run.

Under ``tf.distribute`` every replica samples from the labels of the whole global batch (all-gathered) with the same
random numbers, so N replicas train on the classes one device samples.
"""

from __future__ import annotations

import math
from typing import Optional

import keras
import numpy as np
from keras import ops

from edgeface.train.margin import margin_target

# Stands for the own class's column among the sampled ones: no cosine is below -1, and the loss gives it no weight.
MASKED = -2.0
# A logit that exp() takes to exactly 0 against any real one (|s * cos| <= s), finite so no inf - inf appears.
_NO_LOGIT = -1e9


def sampled_count(num_classes: int, sample_rate: float, batch_size: int) -> int:
    """Classes sampled per step: ``ceil(sample_rate * C)``, at least the global batch (every positive must fit)."""
    k = int(math.ceil(float(sample_rate) * int(num_classes)))
    return int(min(num_classes, max(k, int(batch_size))))


@keras.saving.register_keras_serializable(package="edgeface")
class PartialMarginHead(keras.layers.Layer):
    """``[cos(theta_own), cos(theta_j) for j in sampled classes]`` of L2-normalised features and class rows.

    Inputs ``[features (B, D), labels (B,)]``.  Training with ``sample_rate < 1``: the classes of the batch (on
    every replica) plus uniform negatives, ``num_sampled`` in all, in ascending class order; otherwise (inference,
    or rate 1) every class.  Float32 whatever the policy, as :class:`edgeface.train.heads.CosineHead`.
    """

    def __init__(self, num_classes: int, sample_rate: float = 1.0, batch_size: int = 64, seed: Optional[int] = None,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.sample_rate = float(sample_rate)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.num_sampled = sampled_count(self.num_classes, self.sample_rate, self.batch_size)
        # Not `seed_generator`: augment.per_replica_random leaves it alone, every replica must sample the same classes.
        self.sampler = keras.random.SeedGenerator(seed, name="class_sampler")

    def build(self, input_shape):
        dim = int(input_shape[0][-1])
        # Rows, not columns: a gather of rows has a row-sparse gradient (tf.IndexedSlices) in TensorFlow.
        self.kernel = self.add_weight(name="kernel", shape=(self.num_classes, dim),
                                      initializer=keras.initializers.GlorotNormal(), trainable=True)

    def sample(self, labels):
        """The sampled class indices (ascending) for one step's labels: every label's class is among them."""
        every = _global_labels(labels)
        scores = keras.random.uniform((self.num_classes,), seed=self.sampler)  # in [0, 1)
        # Positives score 2, above every negative: the top num_sampled are they plus the highest-scoring others.
        scores = ops.scatter_update(scores, ops.expand_dims(every, -1), ops.full(ops.shape(every), 2.0))
        _, index = ops.top_k(scores, self.num_sampled, sorted=False)
        return ops.sort(ops.cast(index, "int32"))

    def call(self, inputs, training=None):
        features, labels = inputs
        x = ops.normalize(ops.cast(features, "float32"), axis=-1, order=2)
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        own = ops.normalize(ops.take(self.kernel, labels, axis=0), axis=-1, order=2)
        cos_own = ops.sum(x * own, axis=-1, keepdims=True)
        if training and self.num_sampled < self.num_classes:
            index = self.sample(labels)
            w = ops.take(self.kernel, index, axis=0)
        else:
            index = ops.arange(self.num_classes, dtype="int32")
            w = self.kernel
        cos = ops.matmul(x, ops.transpose(ops.normalize(w, axis=-1, order=2)))
        mine = ops.equal(ops.expand_dims(index, 0), ops.expand_dims(labels, -1))
        return ops.concatenate([cos_own, ops.where(mine, MASKED, cos)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1 + self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "sample_rate": self.sample_rate,
                "batch_size": self.batch_size, "seed": self.seed}


def _global_labels(labels):
    """The labels of the whole global batch: under tf.distribute with several replicas, all-gathered."""
    if keras.backend.backend() != "tensorflow":
        return labels  # JAX's sharded step (keras.distribution) already sees the whole batch
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return labels
    return ctx.all_gather(labels, axis=0)


@keras.saving.register_keras_serializable(package="edgeface")
class PartialMarginLoss(keras.losses.Loss):
    """The combined-margin cross-entropy of :class:`edgeface.train.heads.CombinedMarginLoss` on a
    :class:`PartialMarginHead` output: column 0 (the own class) is the target and takes the margin, masked
    columns drop out.  ``y_true`` is not read: the target is always column 0."""

    def __init__(self, scale: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0,
                 name: str = "partial_margin_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale, self.m1, self.m2, self.m3 = float(scale), float(m1), float(m2), float(m3)

    def call(self, y_true, y_pred):
        out = ops.cast(y_pred, "float32")
        own, others = out[:, :1], out[:, 1:]
        target = margin_target(own, self.m1, self.m2, self.m3)
        others = ops.where(others <= MASKED / 2, _NO_LOGIT, self.scale * others)
        logits = ops.concatenate([self.scale * target, others], axis=-1)
        zeros = ops.zeros((ops.shape(out)[0],), "int32")
        return keras.losses.sparse_categorical_crossentropy(zeros, logits, from_logits=True)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "m1": self.m1, "m2": self.m2, "m3": self.m3}


@keras.saving.register_keras_serializable(package="edgeface")
def own_class_first(y_true, y_pred):
    """Accuracy on a :class:`PartialMarginHead` output: 1 where the own class (column 0) beats every other column.

    In training that is among the sampled classes; in inference mode among all of them (closed-set accuracy)."""
    return ops.cast(ops.equal(ops.argmax(y_pred, axis=-1), 0), "float32")


def accuracy_metric() -> keras.metrics.Metric:
    """The metric logged as ``accuracy`` for a sampled head (see :func:`own_class_first`)."""
    return keras.metrics.MeanMetricWrapper(own_class_first, name="accuracy")


def kernel_columns(layer: keras.layers.Layer) -> list[np.ndarray]:
    """A head's weights in :func:`edgeface.train.heads.head_logits_numpy`'s layout: a partial head's rows as the
    (D, C) columns of :class:`edgeface.train.heads.CosineHead`; any other head's weights as they are."""
    if isinstance(layer, PartialMarginHead):
        return [np.asarray(layer.kernel).T]
    return [np.asarray(w) for w in layer.get_weights()]


class _LabelInputSequence(keras.utils.PyDataset):
    """An in-memory sequence whose batches ``(x, y)`` become ``((x, y), y)``: the labels also enter the model."""

    def __init__(self, inner: keras.utils.PyDataset):
        super().__init__(workers=1, use_multiprocessing=False)
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def images_per_epoch(self) -> int:
        return getattr(self.inner, "images_per_epoch", 0)

    def __getitem__(self, i: int):
        x, y = self.inner[i]
        return (x, y), y

    def on_epoch_end(self) -> None:
        self.inner.on_epoch_end()

    def at_epoch(self, epoch: int) -> _LabelInputSequence:
        """The same sequence as built for epoch ``epoch`` (a resume inside an epoch, :mod:`edgeface.train.resume`)."""
        from edgeface.train.resume import at_epoch

        return _LabelInputSequence(at_epoch(self.inner, epoch))


class _LabelInputStream:
    """A :class:`edgeface.train.stream.StreamInput` whose pipeline also feeds the labels to the model."""

    def __init__(self, inner):
        self.inner = inner
        self._dataset = None

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name):  # images_per_epoch, failure, ...: the stream's own
        if name == "inner":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def dataset(self):
        if self._dataset is None:
            self._dataset = self.inner.dataset.map(lambda x, y: ((x, y), y))
        return self._dataset

    def at_epoch(self, epoch: int, start_step: int = 0) -> _LabelInputStream:
        """The same stream from step ``start_step`` of ``epoch`` on (a resume, :mod:`edgeface.train.resume`)."""
        return _LabelInputStream(self.inner.at_epoch(epoch, start_step=start_step))


def with_label_input(seq):
    """``seq`` feeding ``((images, labels), labels)``, for a training model with a ``label`` input (None stays)."""
    if seq is None:
        return None
    if hasattr(seq, "dataset") and not isinstance(seq, keras.utils.PyDataset):
        return _LabelInputStream(seq)
    return _LabelInputSequence(seq)
