"""The distillation loss and its metrics, in ``keras.ops`` (TensorFlow or JAX).

The training model has one output, the concatenation (float32) of

* ``pred``  (Dt): the student's embedding mapped to the teacher's space (the
  projection head when the sizes differ), L2-normalised;
* ``emb``   (Ds): the student's own L2-normalised embedding (what is exported);
* ``logits`` (C, only with ``--labels``): cos(theta) of the margin head;

and ``y_true`` is the concatenation of the teacher's L2-normalised embedding (Dt)
and the identity label (1 column, -1 when unknown).  One output keeps the metric
names fixed (``teacher_cosine``, ``val_teacher_cosine``) whatever terms are on.

loss = match(pred, teacher) + structure * similarity-structure(emb, teacher) + labels * margin(logits, label)

* match ``cosine``: 1 - cos(pred, teacher); ``mse``: mean over dimensions of
  (pred - teacher)^2 (on unit vectors this is (2 - 2 cos) / Dt: the same
  optimum, a smaller weight against the other terms).
* similarity structure: mean squared difference between the student's and the
  teacher's cosine-similarity matrices within the batch (diagonal excluded), on
  the student's *own* embedding, so relations between faces transfer to the
  exported model whatever the projection does.
* margin: the combined-margin (ArcFace by default) loss of
  :mod:`edgeface.train.heads` on identity labels.
"""

from __future__ import annotations

import keras
from keras import ops

from edgeface.train.heads import margin_target

LOSSES = ("cosine", "mse")


def _split(y_true, y_pred, teacher_dim: int, student_dim: int):
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    teacher = y_true[:, :teacher_dim]
    label = ops.cast(y_true[:, teacher_dim], "int32")
    pred = y_pred[:, :teacher_dim]
    emb = y_pred[:, teacher_dim:teacher_dim + student_dim]
    logits = y_pred[:, teacher_dim + student_dim:]
    return teacher, label, pred, emb, logits


def match_loss(kind: str, pred, teacher):
    """Per-sample cosine (1 - cos) or MSE between unit vectors."""
    if kind == "mse":
        return ops.mean(ops.square(pred - teacher), axis=-1)
    return 1.0 - ops.sum(pred * teacher, axis=-1)


def structure_loss(emb, teacher):
    """Per-sample mean squared difference of the in-batch cosine-similarity rows (diagonal excluded)."""
    n = ops.shape(emb)[0]
    s_student = ops.matmul(emb, ops.transpose(emb))
    s_teacher = ops.matmul(teacher, ops.transpose(teacher))
    off = 1.0 - ops.eye(n, dtype="float32")
    denom = ops.maximum(ops.cast(n, "float32") - 1.0, 1.0)
    return ops.sum(ops.square(s_student - s_teacher) * off, axis=-1) / denom


def margin_loss(logits, label, scale: float, m1: float, m2: float, m3: float):
    """Per-sample combined-margin cross-entropy (see :class:`edgeface.train.heads.CombinedMarginLoss`)."""
    label = ops.maximum(label, 0)
    onehot = ops.one_hot(label, ops.shape(logits)[-1], dtype="float32")
    target = margin_target(logits, m1, m2, m3)
    z = scale * (onehot * target + (1.0 - onehot) * logits)
    return keras.losses.sparse_categorical_crossentropy(label, z, from_logits=True)


@keras.saving.register_keras_serializable(package="edgeface")
class DistillLoss(keras.losses.Loss):
    """match + structure * similarity structure + labels * margin (see the module docstring)."""

    def __init__(self, teacher_dim: int, student_dim: int, kind: str = "cosine", structure: float = 0.0,
                 labels: float = 0.0, scale: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0,
                 name: str = "distill_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.teacher_dim, self.student_dim = int(teacher_dim), int(student_dim)
        self.kind, self.structure, self.labels = kind, float(structure), float(labels)
        self.scale, self.m1, self.m2, self.m3 = float(scale), float(m1), float(m2), float(m3)

    def call(self, y_true, y_pred):
        teacher, label, pred, emb, logits = _split(y_true, y_pred, self.teacher_dim, self.student_dim)
        loss = match_loss(self.kind, pred, teacher)
        if self.structure:
            loss = loss + self.structure * structure_loss(emb, teacher)
        if self.labels:
            loss = loss + self.labels * margin_loss(logits, label, self.scale, self.m1, self.m2, self.m3)
        return loss

    def get_config(self):
        return {**super().get_config(), "teacher_dim": self.teacher_dim, "student_dim": self.student_dim,
                "kind": self.kind, "structure": self.structure, "labels": self.labels, "scale": self.scale,
                "m1": self.m1, "m2": self.m2, "m3": self.m3}


@keras.saving.register_keras_serializable(package="edgeface")
class TeacherCosine(keras.metrics.Mean):
    """Mean cosine between the student's (projected) embedding and the teacher's: 1 means it answers like the
    teacher."""

    def __init__(self, teacher_dim: int, student_dim: int, name: str = "teacher_cosine", **kwargs):
        super().__init__(name=name, **kwargs)
        self.teacher_dim, self.student_dim = int(teacher_dim), int(student_dim)

    def update_state(self, y_true, y_pred, sample_weight=None):
        teacher, _, pred, _, _ = _split(y_true, y_pred, self.teacher_dim, self.student_dim)
        return super().update_state(ops.sum(pred * teacher, axis=-1), sample_weight)

    def get_config(self):
        return {**super().get_config(), "teacher_dim": self.teacher_dim, "student_dim": self.student_dim}


@keras.saving.register_keras_serializable(package="edgeface")
class IdentityAccuracy(keras.metrics.Mean):
    """Closed-set accuracy of the margin head (argmax of cos(theta)) on labelled faces."""

    def __init__(self, teacher_dim: int, student_dim: int, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.teacher_dim, self.student_dim = int(teacher_dim), int(student_dim)

    def update_state(self, y_true, y_pred, sample_weight=None):
        _, label, _, _, logits = _split(y_true, y_pred, self.teacher_dim, self.student_dim)
        hit = ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), label), "float32")
        return super().update_state(hit, sample_weight)

    def get_config(self):
        return {**super().get_config(), "teacher_dim": self.teacher_dim, "student_dim": self.student_dim}
