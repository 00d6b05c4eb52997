"""SGD and Adam that update only the rows of a class-weight matrix a step sampled (partial FC's optimizer).

Keras' optimizers densify a row-sparse gradient and update every row: momentum carries rows sampled earlier on,
and weight decay shrinks all of them, so a 1 M-class head would be read and written in full every step.  Here a
variable named in ``row_sparse`` is updated row by row, as InsightFace's first PartialFC did and TensorFlow 1's
sparse momentum: the sampled rows get weight decay, their momentum (Adam: both moments, with the global step's
bias correction, "lazy Adam") and their update; every other row, and its optimizer state, stays as it was.

* TensorFlow: the gradient of the gathered rows is a ``tf.IndexedSlices``; the rows are read, updated and
  scattered back (O(rows x D) per step, no (C, D) temporary).
* JAX (and a TensorFlow gradient that came densified, e.g. by loss scaling): the gradient is dense, and a row is
  updated where it has a non-zero gradient (O(C x D), masked): the same rows, except a sampled row whose gradient
  underflowed to exactly 0, which then keeps its state for that step.

Other variables get the parent optimizer's update unchanged.
"""

from __future__ import annotations

import keras
from keras import ops


class _RowSparseMixin:
    """What the two optimizers share: which variables are row-sparse, their rows, weight decay on those rows.

    Listed before the Keras optimizer in each class, so its ``__init__``, ``build`` and ``get_config`` wrap the
    optimizer's own."""

    def __init__(self, *args, row_sparse=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.row_sparse = tuple(row_sparse or ())
        self._row_sparse_keys: set = set()

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._find_row_sparse(variables)

    def get_config(self):
        return {**super().get_config(), "row_sparse": list(self.row_sparse)}

    def _find_row_sparse(self, variables) -> None:
        self._row_sparse_keys = {self._var_key(v) for v in variables if v.path in self.row_sparse}
        missing = set(self.row_sparse) - {v.path for v in variables}
        if missing:
            raise ValueError(f"row-sparse variables not among the trained ones: {sorted(missing)}")

    def _is_row_sparse(self, variable) -> bool:
        return self._var_key(variable) in self._row_sparse_keys

    def _use_weight_decay(self, variable):
        # Decoupled weight decay of a row-sparse variable is applied in update_step, to the updated rows only.
        return False if self._is_row_sparse(variable) else super()._use_weight_decay(variable)

    def _rows(self, gradient):
        """(row indices, their summed gradient) of a tf.IndexedSlices gradient, or None for a dense one."""
        if keras.backend.backend() != "tensorflow":
            return None
        import tensorflow as tf

        if not isinstance(gradient, tf.IndexedSlices):
            return None
        # Two gathers (own class, sampled classes) and an all-reduce across replicas repeat rows: sum them.
        rows, where = tf.unique(gradient.indices)
        return rows, tf.math.unsorted_segment_sum(gradient.values, where, tf.shape(rows)[0])

    def _decayed(self, w, learning_rate):
        if not self.weight_decay:
            return w
        return w - w * ops.cast(self.weight_decay, w.dtype) * learning_rate

    def _row_update(self, variable, learning_rate, gradient, rule) -> None:
        """Apply ``rule(w_rows, g_rows, state_rows) -> (new w_rows, new state_rows)`` to the updated rows only.

        ``state`` is the optimizer's slot variables of ``variable`` (a list)."""
        state = self._slots(variable)
        sparse = self._rows(gradient)
        if sparse is not None:
            import tensorflow as tf

            rows, g = sparse
            w = self._decayed(ops.take(variable, rows, axis=0), learning_rate)
            new_w, new_state = rule(w, ops.cast(g, variable.dtype), [ops.take(s, rows, axis=0) for s in state])
            for s, value in zip(state, new_state):
                self.assign(s, tf.IndexedSlices(value, rows))
            self.assign(variable, tf.IndexedSlices(new_w, rows))
            return
        g = ops.cast(ops.convert_to_tensor(gradient), variable.dtype)
        touched = ops.any(ops.not_equal(g, 0), axis=-1, keepdims=True)
        w = ops.convert_to_tensor(variable)
        old = [ops.convert_to_tensor(s) for s in state]
        new_w, new_state = rule(self._decayed(w, learning_rate), g, old)
        for s, before, value in zip(state, old, new_state):
            self.assign(s, ops.where(touched, value, before))
        self.assign(variable, ops.where(touched, new_w, w))


@keras.saving.register_keras_serializable(package="edgeface")
class RowSparseSGD(_RowSparseMixin, keras.optimizers.SGD):
    """:class:`keras.optimizers.SGD` (momentum, decoupled weight decay) with row-sparse updates of the variables
    whose paths are in ``row_sparse`` (e.g. ``("head/kernel",)``)."""

    def _slots(self, variable) -> list:
        return [self.momentums[self._get_variable_index(variable)]] if self.momentum != 0 else []

    def update_step(self, gradient, variable, learning_rate):
        if not self._is_row_sparse(variable):
            return super().update_step(gradient, variable, learning_rate)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        momentum = ops.cast(self.momentum, variable.dtype)

        def rule(w, g, state):
            if not state:
                return w - g * learning_rate, []
            m = state[0] * momentum - g * learning_rate
            step = m * momentum - g * learning_rate if self.nesterov else m
            return w + step, [m]

        self._row_update(variable, learning_rate, gradient, rule)


@keras.saving.register_keras_serializable(package="edgeface")
class RowSparseAdam(_RowSparseMixin, keras.optimizers.Adam):
    """:class:`keras.optimizers.Adam` with lazy row-sparse updates of the variables in ``row_sparse``: a row's
    moments decay only on steps that update it; the bias correction is the global step's (as TF's LazyAdam)."""

    def _slots(self, variable) -> list:
        i = self._get_variable_index(variable)
        return [self._momentums[i], self._velocities[i]]

    def update_step(self, gradient, variable, learning_rate):
        if not self._is_row_sparse(variable):
            return super().update_step(gradient, variable, learning_rate)
        lr = ops.cast(learning_rate, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        b1, b2 = ops.cast(self.beta_1, variable.dtype), ops.cast(self.beta_2, variable.dtype)
        alpha = lr * ops.sqrt(1 - ops.power(b2, step)) / (1 - ops.power(b1, step))

        def rule(w, g, state):
            m, v = state
            m = m + (g - m) * (1 - b1)
            v = v + (ops.square(g) - v) * (1 - b2)
            return w - m * alpha / (ops.sqrt(v) + self.epsilon), [m, v]

        self._row_update(variable, lr, gradient, rule)
