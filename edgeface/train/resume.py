"""Resuming inside an epoch: the rest of that epoch's batches, then the following epochs, as an uninterrupted run.

A checkpoint written after step ``s`` of epoch ``e`` (``--checkpoint-every``) records both; a resume trains the
batches ``s..`` of epoch ``e`` (Keras ``fit`` for that one epoch, on the input with its first ``s`` batches
skipped, every callback told the true batch index) and then epochs ``e + 1..`` (a second ``fit``, on a fresh copy
of the input built for epoch ``e + 1``: :func:`at_epoch`).  The inputs
order their batches from (seed, epoch) alone (:class:`edgeface.train.data.ArraySequence`,
:class:`edgeface.train.stream.StreamInput`), so skipped batches are the ones the uninterrupted run trained on.
"""

from __future__ import annotations

import keras


class _SkipSequence(keras.utils.PyDataset):
    """An in-memory sequence without its first ``skip`` batches (this epoch only: its epoch end is the inner's)."""

    def __init__(self, inner: keras.utils.PyDataset, skip: int):
        super().__init__(workers=1, use_multiprocessing=False)
        self.inner, self.skip = inner, int(skip)

    def __len__(self) -> int:
        return len(self.inner) - self.skip

    def __getitem__(self, i: int):
        return self.inner[i + self.skip]

    def on_epoch_end(self) -> None:
        self.inner.on_epoch_end()  # the inner sequence moves on to the next epoch's order


def is_stream(seq) -> bool:
    """True for a tf.data-backed input (it has a ``dataset``), False for a ``keras.utils.PyDataset``."""
    return hasattr(seq, "dataset") and not isinstance(seq, keras.utils.PyDataset)


def at_epoch(seq, epoch: int):
    """A fresh copy of the training input, positioned as one built for a run resumed at ``epoch``.

    Handed to a second ``fit`` after a partial epoch it then gives what an uninterrupted ``fit`` gives from that
    epoch on, whatever Keras calls on it first (``fit`` ends an epoch of a sequence before its first one, and under
    tf.distribute also begins one to read ahead, so counting those calls is no way to tell).  An input with an
    ``at_epoch`` method (every streamed one) makes the copy itself."""
    from edgeface.train.data import ArraySequence

    if hasattr(seq, "at_epoch"):
        return seq.at_epoch(epoch)
    if isinstance(seq, ArraySequence):
        return ArraySequence(seq.x, seq.y, seq.batch_size, shuffle=seq.shuffle, seed=seq.seed, epoch=epoch)
    raise TypeError(f"cannot resume {type(seq).__name__} inside an epoch: it has no at_epoch(epoch)")


def skip_batches(seq, skip: int, epoch: int):
    """(data for ``fit``, steps of that epoch) of ``seq``'s epoch ``epoch`` (the one it was built for) from batch
    ``skip`` on.

    A streamed input is rebuilt to start there (``at_epoch(epoch, start_step=skip)``): its skipped batches are
    not read (nor decoded), so a resume late in a long epoch of a big pack starts at once."""
    steps = len(seq) - int(skip)
    if is_stream(seq):
        return seq.at_epoch(int(epoch), start_step=int(skip)).dataset.take(steps), steps
    return _SkipSequence(seq, skip), steps


class BatchOffset(keras.callbacks.Callback):
    """A callback seen through a partial epoch: training batch indices shifted by ``offset`` (the skipped batches),
    so step counters, progress and checkpoints name the batch of the whole epoch."""

    def __init__(self, inner: keras.callbacks.Callback, offset: int):
        super().__init__()
        self.inner, self.offset = inner, int(offset)

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)

    def on_train_begin(self, logs=None):
        self.inner.on_train_begin(logs)

    def on_train_end(self, logs=None):
        self.inner.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.inner.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self.inner.on_train_batch_begin(batch + self.offset, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.inner.on_train_batch_end(batch + self.offset, logs)

    def on_test_begin(self, logs=None):
        self.inner.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.inner.on_test_end(logs)

    def on_test_batch_begin(self, batch, logs=None):
        self.inner.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self.inner.on_test_batch_end(batch, logs)
