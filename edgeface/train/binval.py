"""Validation on InsightFace ``.bin`` verification sets while training: ``--val-bin lfw.bin --val-every N``.

Each set is read with the restricted unpickler (:func:`edgeface.evaluate.binsets.read_bin`) and its crops are
decoded once, before training starts, so a damaged file is one line then rather than a crash an hour in.  Every
``N`` optimizer steps (default: each epoch's last step) :class:`BinValidation` embeds every crop with the embedding
network as it is at that step, in inference mode (BatchNorm's running averages), and scores the pairs with
:func:`edgeface.evaluate.verification.evaluate_pairs`, the code behind ``edgeface evaluate --bin``, with the same
10 folds.  So the figure logged at a step is the one ``evaluate --bin`` gives for those weights.

Each validation adds one record per set (step, epoch, accuracy, its std over the folds, the threshold) to the
run's checkpoint state, so a resumed run keeps the earlier ones.  The records go to ``RUN/val_bin.csv`` and
``train.json`` and are sent as a ``"validation"`` progress event.  A validation on an epoch's last step also
goes into that epoch's logs as ``bin:NAME`` (the accuracy), ``bin:NAME_std`` and ``bin:NAME_threshold``.  The
history row and ``log.csv`` then carry it, and ``--monitor bin:NAME`` can choose epochs by it.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np

from edgeface.errors import SettingError, UserError
from edgeface.evaluate.binsets import BinImages, BinSet, read_bin
from edgeface.evaluate.verification import VerificationResult, evaluate_pairs
from edgeface.fileio import atomic_write_text
from edgeface.train import loop

PREFIX = "bin:"  # logs keys and monitor names: bin:lfw is lfw.bin's accuracy
BIN_SIZE = 112  # every .bin holds 112x112 crops
DECODE_CHUNK = 1024  # crops decoded at a time into the set's one array (no second full-size list)
RECORDS_KEY = "bin_validation"  # where the records live in the checkpoint state (and train.json)


def set_name(path: str | os.PathLike) -> str:
    """A set's name in logs, records and ``--monitor``: the file name without ``.bin`` (``lfw``)."""
    return Path(path).stem


def is_bin_monitor(monitor: str) -> bool:
    """True for ``bin:NAME`` (a set's accuracy as the monitored metric)."""
    return monitor.startswith(PREFIX)


def check_options(paths: Sequence[Path], every: Optional[int], monitor: str, input_size: int) -> None:
    """Cheap checks of ``--val-bin``, ``--val-every`` and ``--monitor bin:NAME`` (no file is read).

    Raises :class:`SettingError` naming the setting; the files themselves are read by :func:`load_sets`.
    """
    names = [set_name(p) for p in paths]
    if every is not None:
        if not paths:
            raise SettingError("val_every", "sets how often --val-bin files are scored: add --val-bin FILE")
        if int(every) < 1:
            raise SettingError("val_every", f"must be at least 1 optimizer step, got {every}")
    for i, name in enumerate(names):
        if name in names[:i]:
            first = paths[names.index(name)]
            raise SettingError("val_bin", f"{first} and {paths[i]} are both called {name}, the name their figures "
                               "are logged under: rename one")
    if paths and int(input_size) != BIN_SIZE:
        raise SettingError("val_bin", f"sets hold {BIN_SIZE}x{BIN_SIZE} aligned crops; this network takes "
                           f"{input_size}x{input_size}: train at input size {BIN_SIZE} to validate on them")
    if is_bin_monitor(monitor) and monitor[len(PREFIX):] not in names:
        given = ", ".join(f"{PREFIX}{n}" for n in names) if names else "no --val-bin file"
        raise SettingError("monitor", f"{monitor} names no --val-bin set (bin:NAME is a file's name without .bin; "
                           f"given: {given})")


class ValBinSet:
    """One verification set, its crops decoded once, behind the image interface ``evaluate_pairs`` reads
    (``crops``, ``no_face``, ``source``), like :class:`~edgeface.evaluate.binsets.BinImages`."""

    def __init__(self, binset: BinSet, images: np.ndarray) -> None:
        self.binset = binset
        self.images = images  # (2N, 112, 112, 3) RGB uint8: pair i is images 2i and 2i+1
        self.name = set_name(binset.path)
        self.pairs = binset.pairs()
        self.no_face: set[str] = set()  # every image of a .bin is a face crop

    @property
    def source(self) -> str:
        return f"aligned crops of {self.binset.path.name}"

    def crops(self, keys: Sequence[str], progress=None, spec=None) -> list[np.ndarray]:
        """The decoded crops of image keys (indices into the set)."""
        return [self.images[int(k)] for k in keys]


def load_sets(paths: Sequence[str | os.PathLike]) -> list[ValBinSet]:
    """Read and decode every set (a :class:`UserError` for a damaged or foreign file, before any training)."""
    sets = []
    for path in paths:
        binset = read_bin(path)
        if binset.issame.all() or not binset.issame.any():
            kind = "same-person" if binset.issame.all() else "different-person"
            raise UserError(f"{binset.path}: every pair is a {kind} pair; verification needs both kinds")
        decoder = BinImages(binset)  # evaluate --bin's decoding and checks (112x112, decodable)
        n = len(binset.images)
        images = np.empty((n, BIN_SIZE, BIN_SIZE, 3), np.uint8)
        for start in range(0, n, DECODE_CHUNK):
            keys = [str(i) for i in range(start, min(n, start + DECODE_CHUNK))]
            images[start:start + len(keys)] = np.stack(decoder.crops(keys))
        sets.append(ValBinSet(binset, images))
    return sets


class _NetworkEmbedder:
    """An embedding network as the face model ``evaluate_pairs`` calls: unit float32 embeddings of uint8 crops."""

    def __init__(self, network: keras.Model, batch_size: int, name: str) -> None:
        self.network, self.batch_size, self.name = network, int(batch_size), name

    def embed(self, crops) -> np.ndarray:
        from edgeface.runtime.interpreter import l2_normalize

        crops = np.asarray(crops)
        # predict_on_batch runs a compiled function (1.5x the eager call's speed on MobileFaceNet), but under a
        # distribution it hands the whole batch to every replica: there the network is called directly.
        direct = _distributed(self.network)
        out = []
        for i in range(0, len(crops), self.batch_size):
            x = crops[i:i + self.batch_size].astype(np.float32)
            # both are inference mode: BatchNorm's running averages, no dropout
            y = self.network(x, training=False) if direct else self.network.predict_on_batch(x)
            out.append(np.asarray(keras.ops.convert_to_numpy(y), np.float32))
        # float32 again: a mixed-precision network's output is 16-bit
        return l2_normalize(np.concatenate(out).reshape(len(crops), -1))


def _distributed(network: keras.Model) -> bool:
    """True when the network runs under a distribution (a tf.distribute strategy of several replicas, or a
    keras.distribution under JAX)."""
    if keras.backend.backend() == "jax":
        return keras.distribution.distribution() is not None
    strategy = getattr(network, "distribute_strategy", None)
    return int(getattr(strategy, "num_replicas_in_sync", 1)) > 1


def score(network: keras.Model, s: ValBinSet, batch_size: int = 64) -> VerificationResult:
    """``evaluate --bin``'s figures for ``network`` on one set (10 folds, each threshold set on the other nine)."""
    return evaluate_pairs(_NetworkEmbedder(network, batch_size, network.name), s.pairs, s)


def threshold_of(result: VerificationResult) -> float:
    """The threshold of the 10-fold protocol: the mean of the folds' thresholds (each chosen on the other nine)."""
    return float(np.mean(result.fold_thresholds))


def log_entries(name: str, result: VerificationResult) -> dict[str, float]:
    """``bin:NAME`` (mean accuracy over the folds), ``bin:NAME_std`` and ``bin:NAME_threshold``."""
    key = PREFIX + name
    out = {key: float(result.accuracy_mean), f"{key}_threshold": threshold_of(result)}
    if result.accuracy_std is not None:
        out[f"{key}_std"] = float(result.accuracy_std)
    return out


def final_metrics(network: keras.Model, sets: Sequence[ValBinSet], batch_size: int) -> dict[str, float]:
    """Every set's ``bin:NAME`` figures for a network (the saved one, after training)."""
    out: dict[str, float] = {}
    for s in sets:
        out.update(log_entries(s.name, score(network, s, batch_size)))
    return out


class BinValidation(keras.callbacks.Callback):
    """Scores the sets with ``network`` every ``every`` optimizer steps, appending one record per set to
    ``records`` (see the module docstring for where the figures go)."""

    def __init__(self, sets: Sequence[ValBinSet], network: keras.Model, every: int, steps_per_epoch: int,
                 records: list, progress: Optional[loop.ProgressFn] = None, csv_path: Optional[Path] = None,
                 batch_size: int = 64) -> None:
        super().__init__()
        self.sets, self.network, self.every, self.steps = list(sets), network, int(every), int(steps_per_epoch)
        self.records, self.progress, self.csv_path, self.batch_size = records, progress, csv_path, batch_size
        self._epoch = 0
        self._at_epoch_end: dict[str, float] = {}
        self.epoch_seconds = 0.0  # spent validating in this epoch: the run's callback leaves it out of img/s

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._at_epoch_end = {}
        self.epoch_seconds = 0.0

    def on_train_batch_end(self, batch, logs=None):
        # Keras counts batches per epoch; an epoch has `steps` of them, so this is the optimizer's step count
        # (resumed runs included: `epoch` is absolute).
        step = self._epoch * self.steps + batch + 1
        if step % self.every:
            return
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            return  # diverged: the run's own callback stops and says so; NaN weights have nothing to score
        _ = self.model  # under JAX this writes the trained values back into the layers `network` shares
        entries = self.validate(step, batch + 1)
        if batch + 1 == self.steps:
            self._at_epoch_end = entries

    def on_epoch_end(self, epoch, logs=None):
        # Only a validation of this epoch's final weights belongs in its row (and may pick its checkpoint).
        if logs is not None:
            logs.update(self._at_epoch_end)

    def validate(self, step: int, batch: int) -> dict[str, float]:
        """Score every set now; returns the log entries (``bin:NAME``...) of this step."""
        entries: dict[str, float] = {}
        t_all = time.perf_counter()
        for s in self.sets:
            t0 = time.perf_counter()
            result = score(self.network, s, self.batch_size)
            self.records.append({
                "step": step, "epoch": self._epoch + 1, "set": s.name, "file": str(s.binset.path),
                "accuracy": float(result.accuracy_mean), "accuracy_std": result.accuracy_std,
                "threshold": threshold_of(result), "best_threshold": float(result.best_threshold),
                "auc": float(result.auc), "pairs": result.n_pairs, "seconds": round(time.perf_counter() - t0, 2),
            })
            entries.update(log_entries(s.name, result))
        if self.csv_path is not None:
            atomic_write_text(self.csv_path, loop.history_csv(self.records))
        seconds = time.perf_counter() - t_all
        self.epoch_seconds += seconds
        if self.progress:
            event_logs = {**entries, "step": float(step), "seconds": round(seconds, 2)}
            self.progress(loop.TrainProgress("validation", self._epoch + 1, int((self.params or {}).get("epochs", 0)),
                                             batch, self.steps, event_logs))
        return entries


def validation_every(every: Optional[int], steps_per_epoch: int, epochs: int, monitor: str) -> int:
    """The validation interval in optimizer steps (default: one epoch); :class:`SettingError` when no validation
    would run, or when ``--monitor bin:NAME`` would meet epochs whose end is not validated."""
    if every is None:
        return steps_per_epoch
    total = steps_per_epoch * epochs
    if every > total:
        raise SettingError("val_every", f"{every} is more than the run's {total} optimizer steps ({epochs} epochs "
                           f"of {steps_per_epoch}): no validation would run")
    if is_bin_monitor(monitor) and steps_per_epoch % every:
        raise SettingError("val_every", f"{every} does not divide the {steps_per_epoch} steps of an epoch, and "
                           f"--monitor {monitor} compares epochs by their last step's figures: give a divisor of "
                           f"{steps_per_epoch}, or drop --val-every (once per epoch)")
    return int(every)


def callbacks(sets: Sequence[ValBinSet], network: keras.Model, every: Optional[int], steps_per_epoch: int,
              epochs: int, monitor: str, state: dict, progress: Optional[loop.ProgressFn] = None,
              csv_path: Optional[Path] = None, batch_size: int = 64) -> list[keras.callbacks.Callback]:
    """The callbacks for :func:`edgeface.train.loop.fit`: none without sets, else one :class:`BinValidation`
    keeping its records in ``state`` (the checkpoint state, so they persist with the checkpoints)."""
    if not sets:
        return []
    interval = validation_every(every, steps_per_epoch, epochs, monitor)
    records = state.setdefault(RECORDS_KEY, [])
    return [BinValidation(sets, network, interval, steps_per_epoch, records, progress, csv_path, batch_size)]
