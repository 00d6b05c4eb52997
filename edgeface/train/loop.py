"""The generic training loop: Keras ``fit`` with per-epoch checkpoints, resume, early stopping, a CSV log,
progress events and throughput, and atomic writing of a run's files.

Nothing here knows about faces or heads: :mod:`edgeface.train.trainer` uses it
with a classification head, and distillation can use it with a regression
target.  A run folder looks like::

    RUN/model.keras              the embedding network (head and augmentation removed)
    RUN/train.json               config, dataset hash, epochs, final metrics, speed
    RUN/log.csv                  one row per epoch (rewritten whole each epoch)
    RUN/val_bin.csv              one row per .bin set and validation (--val-bin, edgeface.train.binval)
    RUN/checkpoints/last.keras   the training model with optimizer state (for --resume)
    RUN/checkpoints/best.weights.h5   weights of the best epoch by the monitored metric
    RUN/checkpoints/state.json   epochs done, early-stopping state, history, run fingerprint
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np

from edgeface.errors import SettingError, UserError
from edgeface.fileio import atomic_output, atomic_write_text


@dataclass
class TrainProgress:
    """One progress event: ``phase`` is "batch" (after each training step), "epoch" (epoch finished) or
    "validation" (``--val-bin`` sets scored after step ``step``; ``logs`` holds their figures and the global step)."""

    phase: str
    epoch: int  # 1-based
    epochs: int
    step: int  # training steps done in this epoch
    steps: int
    logs: dict[str, float] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Fraction of the whole run done (epochs before a resume count as done)."""
        return ((self.epoch - 1) * self.steps + self.step) / max(1, self.epochs * self.steps)


ProgressFn = Callable[[TrainProgress], None]


@dataclass
class RunFiles:
    """The paths of one run folder."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    model = property(lambda self: self.root / "model.keras")
    train_json = property(lambda self: self.root / "train.json")
    log_csv = property(lambda self: self.root / "log.csv")
    val_bin_csv = property(lambda self: self.root / "val_bin.csv")
    split_json = property(lambda self: self.root / "split.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    last = property(lambda self: self.root / "checkpoints" / "last.keras")
    best = property(lambda self: self.root / "checkpoints" / "best.weights.h5")
    state = property(lambda self: self.root / "checkpoints" / "state.json")

    def check(self, resume: bool) -> Optional[dict]:
        """Refuse to overwrite a run by accident; with ``resume`` return its saved state."""
        if resume:
            if not (self.state.is_file() and self.last.is_file()):
                raise UserError(f"nothing to resume in {self.root}: no checkpoints/last.keras "
                                "(drop --resume to start a new run)")
            return json.loads(self.state.read_text())
        if self.state.is_file() or self.model.is_file():
            raise UserError(f"{self.root} already holds a training run: pass --resume to continue it "
                            "or choose another --out")
        if self.root.exists() and not self.root.is_dir():
            raise SettingError("out", f"{self.root} exists and is not a folder")
        return None


def atomic_write_json(path: Path, payload: Any) -> None:
    """JSON version of :func:`atomic_write_text` (numpy scalars become Python numbers)."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_keras_atomic(model: keras.Model, path: Path, weights_only: bool = False) -> None:
    """``model.save`` / ``save_weights`` through a temp file in the same folder, then rename."""
    # Keras picks the format from the suffix, so the temp name keeps it.
    with atomic_output(path, suffix=".weights.h5" if weights_only else ".keras") as tmp:
        if weights_only:
            model.save_weights(tmp)
        else:
            model.save(tmp)


def monitor_mode(monitor: str) -> str:
    """'min' for losses, 'max' for accuracies and the like (``bin:NAME`` is an accuracy, whatever NAME says)."""
    return "min" if "loss" in monitor and not monitor.startswith("bin:") else "max"


class _RunCallback(keras.callbacks.Callback):
    """Progress events, epoch timing, checkpoints, early stopping and the CSV log, in one place."""

    def __init__(self, run: RunFiles, epochs: int, steps: int, images_per_epoch: int, monitor: str,
                 patience: int, save_best: bool, state: dict, progress: Optional[ProgressFn], write: bool,
                 others: Sequence[keras.callbacks.Callback] = (), checkpoint_every: int = 0, skipped: int = 0):
        super().__init__()
        self.checkpoint_every = int(checkpoint_every)  # 0: checkpoints at epoch ends only
        self.skipped = int(skipped)  # batches of the current epoch trained before a resume (not timed now)
        self.others = others  # callbacks whose `epoch_seconds` (e.g. a .bin validation) is not training time
        self.run, self.epochs, self.steps, self.images_per_epoch = run, epochs, steps, images_per_epoch
        self.monitor, self.mode, self.patience, self.save_best = monitor, monitor_mode(monitor), patience, save_best
        self.state, self.progress, self.write = state, progress, write
        self.stopped_early = False
        # (epoch, batch, loss): where the loss stopped being a finite number (epoch and batch 1-based)
        self.diverged: Optional[tuple[int, int, float]] = None
        self._t0 = self._t_train = 0.0
        self._epoch = 0

    def _better(self, value: float) -> bool:
        best = self.state.get("best")
        if best is None:
            return True
        return value < best if self.mode == "min" else value > best

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._t0 = self._t_train = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._t_train = time.perf_counter()
        floats = _floats(logs)
        loss = floats.get("loss")
        if loss is not None and not math.isfinite(loss):
            # Weights that produced a NaN loss are NaN themselves from the next step on: stop before any is saved.
            self.diverged = (self._epoch + 1, batch + 1, loss)
            self.model.stop_training = True
            return
        every = self.checkpoint_every
        if every and (self._epoch * self.steps + batch + 1) % every == 0 and batch + 1 < self.steps:
            # Mid-epoch checkpoint: the epoch's end writes its own (with the epoch's figures).
            self.state["step"] = batch + 1
            self._save()
        if self.progress:
            self.progress(TrainProgress("batch", self._epoch + 1, self.epochs, batch + 1, self.steps, floats))

    def _save(self) -> None:
        """``last.keras`` and ``state.json`` (with the random layers' states): what --resume continues from."""
        self.state["rng"] = rng_states(self.model)
        if self.write:
            save_keras_atomic(self.model, self.run.last)
            atomic_write_json(self.run.state, self.state)

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged:
            return  # the last checkpoint stays the last good epoch's
        logs = _floats(logs)
        # A validation between steps is no training: img/s counts the steps and the input pipeline only.
        busy = sum(float(getattr(c, "epoch_seconds", 0.0)) for c in self.others)
        train_s = max(1e-9, self._t_train - self._t0 - busy)
        row = {"epoch": epoch + 1, **logs, "lr": _current_lr(self.model),
               "seconds": round(time.perf_counter() - self._t0, 3),
               "images_per_second": round(self.images_per_epoch * (1 - self.skipped / self.steps) / train_s, 2)}
        st = self.state
        st["epoch"] = epoch + 1
        st["step"] = 0
        if self.skipped:
            row["resumed_at_step"] = self.skipped  # loss/accuracy average the steps after the resume only
            self.skipped = 0
        st["history"].append(row)
        value = logs.get(self.monitor)
        if value is not None and math.isfinite(value):
            if self._better(value):
                st.update(best=value, best_epoch=epoch + 1, wait=0)
                if self.save_best and self.write:
                    save_keras_atomic(self.model, self.run.best, weights_only=True)
            else:
                st["wait"] = st.get("wait", 0) + 1
        if self.patience and st.get("wait", 0) >= self.patience:
            self.model.stop_training = True
            self.stopped_early = True
        self._save()
        if self.write:
            atomic_write_text(self.run.log_csv, history_csv(st["history"]))
        if self.progress:
            self.progress(TrainProgress("epoch", epoch + 1, self.epochs, self.steps, self.steps, row))


def _floats(logs) -> dict[str, float]:
    return {k: float(v) for k, v in (logs or {}).items()}


def _current_lr(model: keras.Model) -> float:
    try:
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except Exception:  # an optimizer without a readable rate is no reason to fail an epoch
        return float("nan")


def history_csv(history: list[dict]) -> str:
    """The epoch log as CSV text (columns: the union of keys, epoch first)."""
    cols: list[str] = []
    for row in history:
        cols.extend(k for k in row if k not in cols)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    return buf.getvalue()


@dataclass
class FitOutcome:
    """What the loop did: epochs, timing, early stopping and the per-epoch history."""

    epochs_run: int
    epochs_this_session: int
    stopped_early: bool
    best_epoch: Optional[int]
    best_value: Optional[float]
    restored_best: bool
    seconds: float
    images_per_second: float
    history: list[dict]


def new_state(fingerprint: dict, monitor: str) -> dict:
    """A fresh checkpoint state (epoch 0)."""
    return {"epoch": 0, "best": None, "best_epoch": None, "wait": 0, "monitor": monitor,
            "fingerprint": fingerprint, "history": []}


# Fingerprint entries added after runs were first written, with the value such a run had: its checkpoints resume.
FINGERPRINT_DEFAULTS = {"width": 1.0, "sampled_head": False, "remat": False}


def check_resume_state(state: dict, fingerprint: dict, run: RunFiles) -> None:
    """A checkpoint only resumes the same kind of run (same model, head, classes, optimizer)."""
    saved = {**FINGERPRINT_DEFAULTS, **state.get("fingerprint", {})}
    fingerprint = {**FINGERPRINT_DEFAULTS, **fingerprint}  # a caller that knows nothing of an entry has its default
    diff = [k for k in sorted(set(saved) | set(fingerprint)) if saved.get(k) != fingerprint.get(k)]
    if diff:
        k = diff[0]
        raise UserError(f"cannot resume {run.root}: its {k} was {saved.get(k)!r}, now {fingerprint.get(k)!r} "
                        "(use the same options and data, or start a new run)")


def _rng_variables(model: keras.Model) -> list:
    # keras.random.SeedGenerator keeps its state in a variable of this name; Keras' saving skips it.
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def rng_states(model: keras.Model) -> list[list[int]]:
    """The state of every ``keras.random.SeedGenerator`` of the model (augmentation layers, Dropout, partial FC's
    class sampler), in model order: what a checkpoint needs besides the weights for the next step to draw what an
    uninterrupted run would.  ``model.save`` does not store them."""
    return [np.asarray(keras.ops.convert_to_numpy(v)).tolist() for v in _rng_variables(model)]


def set_rng_states(model: keras.Model, states: Optional[list]) -> None:
    """Put back :func:`rng_states` (a checkpoint from before they were recorded has none: nothing changes)."""
    variables = _rng_variables(model)
    if not states:
        return
    if len(states) != len(variables):
        raise UserError(f"cannot resume: the checkpoint has {len(states)} random-number states, the model "
                        f"{len(variables)} (use the same options, or start a new run)")
    for v, s in zip(variables, states):
        v.assign(np.asarray(s, dtype=v.dtype))


def restore_checkpoint(model: keras.Model, run: RunFiles) -> None:
    """Load weights and optimizer state of ``checkpoints/last.keras`` into a freshly compiled model, and the random
    layers' states recorded in ``state.json``."""
    # The optimizer's slots exist only once it is built; otherwise Keras skips them with a warning.
    model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(run.last)
    except Exception as exc:
        raise UserError(f"cannot resume from {run.last}: {str(exc).splitlines()[0][:200]}") from None
    set_rng_states(model, json.loads(run.state.read_text()).get("rng"))


class _Steps:
    """A tf.data pipeline standing in for a streamed input: ``dataset`` and ``len()`` (steps of one epoch)."""

    def __init__(self, dataset, steps: int):
        self.dataset, self.steps = dataset, int(steps)

    def __len__(self) -> int:
        return self.steps


def fit(model: keras.Model, train_seq, val_seq, run: RunFiles, *, epochs: int, monitor: str, patience: int,
        state: dict, progress: Optional[ProgressFn] = None, write: bool = True,
        callbacks: Sequence[keras.callbacks.Callback] = (), checkpoint_every: int = 0) -> FitOutcome:
    """Run ``model.fit`` from ``state['epoch']`` to ``epochs`` with the run's callbacks.

    ``state`` is :func:`new_state` or the one read back for a resume (the model
    must already hold the checkpoint, see :func:`restore_checkpoint`).  With
    ``patience`` > 0 training stops after that many epochs without improvement of
    ``monitor``; when it stops so and ``monitor`` is a validation metric, the
    best epoch's weights are restored (Keras' ``restore_best_weights``).  ``write`` False (non-chief workers of a
    multi-worker run) skips every file write.  ``callbacks`` run before the run's own at each event, so what they
    add to an epoch's logs (``bin:NAME``, :mod:`edgeface.train.binval`) enters its history row and may be the
    ``monitor``.  ``checkpoint_every`` N > 0 also checkpoints after every N-th optimizer step; a state saved so
    (``state['step']`` > 0: steps done in epoch ``state['epoch'] + 1``) resumes at that step, with the batches an
    uninterrupted run trains on (:mod:`edgeface.train.resume`).
    """
    from edgeface.train import resume

    start, skip = int(state["epoch"]), int(state.get("step", 0))
    save_best = monitor.startswith(("val_", "bin:"))
    cb = _RunCallback(run, epochs, len(train_seq), getattr(train_seq, "images_per_epoch", 0), monitor,
                      patience, save_best, state, progress, write, callbacks, checkpoint_every, skipped=skip)
    t0 = time.perf_counter()

    def run_fit(data, first: int, last: int, steps: int, offset: int = 0) -> None:
        streamed = resume.is_stream(data)
        hooks = [*callbacks, cb]
        model.fit(data.dataset if streamed else data, validation_data=val_seq, epochs=last, initial_epoch=first,
                  verbose=0, callbacks=[resume.BatchOffset(c, offset) for c in hooks] if offset else hooks,
                  # No shuffle by Keras: the sequences order their own batches from (seed, epoch).  Keras' shuffle
                  # draws from Python's global random, which a resume restarts and a tf.distribute strategy draws
                  # from once more (it reads the first epoch's batches once before training): a mirrored run,
                  # even on one replica, then saw other batches than a plain one.  A streamed input's tf.data
                  # pipeline runs on across epochs: Keras is told the steps of one.
                  shuffle=False, **({"steps_per_epoch": steps} if streamed else {}))

    if start < epochs and skip:
        # The rest of the interrupted epoch (its first `skip` batches were trained before the checkpoint) ...
        data, steps = resume.skip_batches(train_seq, skip, start)
        if resume.is_stream(train_seq):
            data = _Steps(data, steps)
        run_fit(data, start, start + 1, steps, offset=skip)
        if not model.stop_training and start + 1 < epochs:  # ... then the following epochs
            rest = resume.at_epoch(train_seq, start + 1)
            run_fit(rest, start + 1, epochs, len(rest))
    elif start < epochs:
        run_fit(train_seq, start, epochs, len(train_seq))
    seconds = time.perf_counter() - t0
    if cb.diverged:
        epoch, batch, loss = cb.diverged
        done = (f"epoch {state['epoch'] + 1}, step {state['step']}" if state.get("step")
                else f"epoch {state['epoch']}")
        kept = (f"the checkpoint of {done} is kept (--resume continues from it)"
                if (state["epoch"] or state.get("step")) and write else "nothing was saved")
        raise UserError(f"training diverged: the loss became {loss} at epoch {epoch}, batch {batch}; "
                        f"{kept}. Lower --lr, or --scale/--margin of a margin head, and train again")
    restored = False
    best_epoch = state.get("best_epoch")
    stopped_early = cb.stopped_early or bool(patience and state.get("wait", 0) >= patience)
    if stopped_early and save_best and best_epoch and best_epoch != state["epoch"] and run.best.is_file():
        model.load_weights(run.best)
        restored = True
    rates = [r["images_per_second"] for r in state["history"][start:]]
    # The first epoch of a session includes graph tracing; the steady rate is what the hardware does.
    steady = rates[1:] or rates
    return FitOutcome(
        epochs_run=int(state["epoch"]), epochs_this_session=int(state["epoch"]) - start,
        stopped_early=stopped_early,
        best_epoch=best_epoch, best_value=state.get("best"), restored_best=restored, seconds=seconds,
        images_per_second=float(np.median(steady)) if steady else 0.0, history=state["history"],
    )
