"""Training input streamed by a tf.data pipeline: nothing but the pipeline's buffers in memory.

The source is any :class:`~edgeface.data.streamed.StreamedCrops`: a RecordIO pack, TFRecord shards (each record's
CRC checked and its Example parsed as it is read) or a folder of crops too big to load; only how a record's bytes
are found differs.

::

    per epoch e:  batch orders (numpy, a function of seed and e)  ->  read the records' bytes (Python, os.pread,
                  a chunk at a time)  ->  [shuffle buffer, numpy]  ->  decode JPEG/PNG (parallel, TensorFlow's threads)
                  ->  batch
    epochs start..end chained (flat_map)  ->  prefetch

Two ways to shuffle:

* ``shuffle_buffer=0`` (default): each epoch is a full permutation of the records, cut into batches exactly as the
  in-memory :class:`~edgeface.train.data.ArraySequence` cuts its arrays -- the same permutation of (seed, epoch),
  each batch sorted by position -- so a pack of a folder's crops yields the very batches the folder gives.  Reads
  are random, which an SSD or the page cache serves well (InsightFace's loaders read this way too).
* ``shuffle_buffer=N``: records are read in runs of consecutive records, the runs in a shuffled order of (seed,
  epoch), and mixed in a buffer of N records: mostly sequential reads, for disks and network filesystems that
  seek slowly.

Either way the order depends only on (seed, epoch), so a run resumed at epoch k sees the epochs an uninterrupted
run would have.  JPEGs are decoded with the accurate integer DCT, which gives OpenCV's pixels exactly (TensorFlow's
default fast DCT differs by up to 13 grey levels), so the two input paths feed the same images.  Augmentation is
not here: it is part of the training model, as for folders.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np

from edgeface.data.streamed import StreamedCrops
from edgeface.errors import SettingError, UserError

READ_CHUNK = 64  # records read per step of the Python generator (one tf.string tensor)
MAX_RUN = 256  # longest run of consecutive records read together in shuffle-buffer mode


def batch_orders(n: int, batch_size: int, shuffle: bool, seed: int, epoch: int) -> list[np.ndarray]:
    """The positions of each batch of one epoch, exactly as :class:`~edgeface.train.data.ArraySequence` orders its
    arrays: a permutation of (seed, epoch) cut into full batches (the remainder dropped), each batch sorted; or, not
    shuffled, every position in order with a last partial batch."""
    if not shuffle:
        return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    order = np.random.default_rng((seed % 2**32, epoch)).permutation(n)
    steps = n // batch_size if n >= batch_size else math.ceil(n / batch_size)
    return [np.sort(order[i * batch_size:(i + 1) * batch_size]) for i in range(steps)]


def run_order(n: int, run: int, seed: int, epoch: int) -> np.ndarray:
    """Every position once, in runs of ``run`` consecutive records taken in a shuffled order of (seed, epoch)."""
    starts = np.arange(0, n, run)[np.random.default_rng((seed % 2**32, epoch, 1)).permutation(math.ceil(n / run))]
    return np.concatenate([np.arange(s, min(s + run, n)) for s in starts]) if n else np.zeros(0, np.int64)


def check_folder_stream(data, val, val_split: float) -> None:
    """A streamed folder has no --val/--val-split: the run's validation figures (rank-1 against the training set as
    gallery) would embed every training image, which is what streaming avoids."""
    for flag, given in (("--val-split", bool(val_split)), ("--val", val is not None)):
        if given:
            raise UserError(f"{flag} cannot be used when {data} is streamed (--stream, or too big to load): its "
                            "figures embed the whole training set; hold people out with --exclude-people FILE and "
                            "validate on verification sets: --val-bin lfw.bin")
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        raise UserError(f"streaming {data} needs TensorFlow's tf.data (pip install tensorflow-cpu)")


class StreamInput:
    """What :func:`edgeface.train.loop.fit` takes in place of an in-memory sequence when DATA is streamed.

    ``len()`` is the steps per epoch, ``dataset`` the tf.data pipeline from epoch ``epoch`` to ``epochs``
    (built on first use), ``failure`` the :class:`UserError` a damaged record raised while streaming, if any.
    """

    def __init__(self, crops: StreamedCrops, batch_size: int, *, input_size: int, seed: int = 0, epoch: int = 0,
                 epochs: int = 1, shuffle: bool = True, shuffle_buffer: int = 0, read_chunk: int = READ_CHUNK,
                 targets: Optional[np.ndarray] = None, start_step: int = 0):
        if shuffle_buffer < 0:
            raise SettingError("shuffle_buffer", f"must be 0 (a full permutation per epoch) or a record count, got "
                            f"{shuffle_buffer}")
        self.crops = crops
        self.batch_size = int(batch_size)
        self.input_size = int(input_size)
        self.seed, self.epoch, self.epochs = int(seed), int(epoch), int(epochs)
        self.shuffle = shuffle
        if not 0 <= start_step <= len(self):
            raise ValueError(f"start_step {start_step} is outside an epoch of {len(self)} batches")
        self.start_step = int(start_step)  # batches of epoch `epoch` skipped before they are read (a resume)
        self.shuffle_buffer = int(shuffle_buffer)
        self.read_chunk = int(read_chunk)
        # y of each record: its class label, or a float32 row per record (distillation's teacher targets)
        if targets is not None and len(targets) != len(crops):
            raise ValueError(f"{len(targets)} target rows for {len(crops)} records")
        self.targets = np.asarray(targets, np.float32) if targets is not None else None
        self._failures: list[UserError] = []  # shared with the copies at_epoch makes: the trainer asks this one
        self._dataset = None

    @property
    def failure(self) -> Optional[UserError]:
        """The first damaged record met while streaming (by this input or a copy of it), if any."""
        return self._failures[0] if self._failures else None

    def at_epoch(self, epoch: int, start_step: int = 0) -> StreamInput:
        """The same stream as built for a run resumed at step ``start_step`` of epoch ``epoch`` (not built yet):
        the first ``start_step`` batches of that epoch are neither read nor decoded."""
        clone = StreamInput(self.crops, self.batch_size, input_size=self.input_size, seed=self.seed, epoch=epoch,
                            epochs=self.epochs, shuffle=self.shuffle, shuffle_buffer=self.shuffle_buffer,
                            read_chunk=self.read_chunk, targets=self.targets, start_step=start_step)
        clone._failures = self._failures
        return clone

    def __len__(self) -> int:
        n = len(self.crops)
        if self.shuffle and n >= self.batch_size:
            return n // self.batch_size
        return max(1, math.ceil(n / self.batch_size))

    @property
    def images_per_epoch(self) -> int:
        """Images one epoch feeds (the dropped remainder not counted)."""
        return min(len(self.crops), len(self) * self.batch_size)

    def epoch_positions(self, epoch: int) -> np.ndarray:
        """The record positions epoch ``epoch`` reads, in reading order (before any shuffle buffer)."""
        if self.shuffle and self.shuffle_buffer:
            run = max(1, min(MAX_RUN, self.shuffle_buffer // 16))
            return run_order(len(self.crops), run, self.seed, epoch)
        batches = batch_orders(len(self.crops), self.batch_size, self.shuffle, self.seed, epoch)
        return np.concatenate(batches) if batches else np.zeros(0, np.int64)

    def _generate(self, epoch, skip) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Encoded records of ``epoch`` and their y, a chunk at a time, without the first ``skip`` records."""
        epoch, skip = int(epoch), int(skip)
        positions = self.epoch_positions(epoch)
        try:
            if self.shuffle and self.shuffle_buffer:
                # The buffer's mixing depends on every record before: the skipped ones are read (not decoded).
                for data, y in self._buffered(positions, epoch):
                    drop = min(skip, len(data))
                    skip -= drop
                    if drop < len(data):
                        yield data[drop:], y[drop:]
                return
            positions = positions[skip:]  # batches are consecutive runs of this order: skipped unread
            for i in range(0, len(positions), self.read_chunk):
                pos = positions[i:i + self.read_chunk]
                data = np.empty(len(pos), object)
                data[:] = self.crops.encoded(pos)
                yield data, self._y(pos)
        except UserError as exc:  # a damaged record: the trainer turns the TensorFlow error back into this line
            self._failures.append(exc)
            raise

    def _y(self, pos: np.ndarray) -> np.ndarray:
        return self.targets[pos] if self.targets is not None else self.crops.labels[pos]

    def _buffered(self, positions: np.ndarray, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Records read in ``positions`` order (runs of consecutive records), mixed in a buffer of
        ``shuffle_buffer`` records: each record read takes the place of a random one in the buffer, which goes out
        (tf.data's shuffle algorithm).  Here, in numpy, so the mixing is a function of (seed, epoch): tf.data's
        shuffle takes its seed as a Python int, and the epoch is a tensor inside the chained pipeline."""
        rng = np.random.default_rng((self.seed % 2**32, epoch, 2))
        buf_data: list = []
        buf_pos: list = []
        out_data: list = []
        out_pos: list = []

        def flush():
            data = np.empty(len(out_data), object)
            data[:] = out_data
            pos = np.asarray(out_pos, np.int64)
            out_data.clear()
            out_pos.clear()
            return data, self._y(pos)

        for i in range(0, len(positions), self.read_chunk):
            pos = positions[i:i + self.read_chunk]
            for p, record in zip(pos, self.crops.encoded(pos)):
                if len(buf_data) < self.shuffle_buffer:
                    buf_data.append(record)
                    buf_pos.append(p)
                    continue
                j = int(rng.integers(len(buf_data)))
                out_data.append(buf_data[j])
                out_pos.append(buf_pos[j])
                buf_data[j], buf_pos[j] = record, p
                if len(out_data) == self.read_chunk:
                    yield flush()
        for j in rng.permutation(len(buf_data)):
            out_data.append(buf_data[j])
            out_pos.append(buf_pos[j])
            if len(out_data) == self.read_chunk:
                yield flush()
        if out_data:
            yield flush()

    @property
    def dataset(self):
        """The tf.data pipeline (see the module docstring); elements are (float32 (B, S, S, 3), int32 (B,)), or with
        ``targets`` (float32 (B, S, S, 3), float32 (B, K))."""
        if self._dataset is None:
            self._dataset = self._build()
        return self._dataset

    def _build(self):
        import tensorflow as tf

        size = self.input_size
        y_spec = (tf.TensorSpec((None, self.targets.shape[1]), tf.float32) if self.targets is not None
                  else tf.TensorSpec((None,), tf.int32))
        signature = (tf.TensorSpec((None,), tf.string), y_spec)

        def decode(data, label):
            image = tf.cond(tf.io.is_jpeg(data),
                            lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                            lambda: tf.io.decode_png(data, channels=3))
            # crops of another size are resized (area filter, as a folder's are with OpenCV's INTER_AREA)
            same = tf.reduce_all(tf.shape(image)[:2] == size)
            image = tf.cond(same, lambda: tf.cast(image, tf.float32),
                            lambda: tf.round(tf.image.resize(image, (size, size), method="area")))
            return tf.ensure_shape(image, (size, size, 3)), label

        def one_epoch(epoch):
            first = tf.equal(epoch, self.epoch)  # a resumed run's first epoch starts at batch start_step
            skip = tf.where(first, tf.constant(self.start_step * self.batch_size, tf.int64), tf.constant(0, tf.int64))
            steps = tf.where(first, tf.constant(len(self) - self.start_step, tf.int64),
                             tf.constant(len(self), tf.int64))
            ds = tf.data.Dataset.from_generator(self._generate, args=(epoch, skip), output_signature=signature)
            ds = ds.unbatch().map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            ds = ds.batch(self.batch_size, drop_remainder=self.shuffle and len(self.crops) >= self.batch_size)
            return ds.take(steps)

        epochs = tf.data.Dataset.range(self.epoch, max(self.epoch + 1, self.epochs))
        return epochs.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)
