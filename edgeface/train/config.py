"""What every training run is configured with, ``edgeface train`` and ``edgeface distill`` alike.

:class:`FitConfig` holds the fields both share (network, head, optimizer,
schedule, epochs, early stopping, augmentation, precision, seed) and checks
them; :class:`edgeface.train.trainer.TrainConfig` and
:class:`edgeface.distill.distill.DistillConfig` add what is theirs (data
layout, validation, the teacher).  The tables here (optimizers, precisions,
schedules) are the single place those choices are listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from edgeface.choices import choice
from edgeface.errors import SettingError, UserError
from edgeface.train.augment import AugmentConfig
from edgeface.train.binval import check_options as check_val_bin
from edgeface.train.binval import is_bin_monitor
from edgeface.train.models import ARCHITECTURES, check_width


@dataclass(frozen=True)
class OptimizerSpec:
    """One row of the optimizer table."""

    name: str
    lr: float
    weight_decay: float
    help: str


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adam": OptimizerSpec("adam", 1e-3, 0.0, "Adam (the classic softmax recipe)"),
    "sgd": OptimizerSpec("sgd", 0.05, 5e-4, "SGD with momentum and weight decay (the margin-head recipe)"),
}
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
LR_SCHEDULES = ("cosine", "constant")


@dataclass(kw_only=True)
class FitConfig:
    """The training fields shared by ``train`` and ``distill`` (the CLI flags map one to one).

    width: channel multiplier of the architecture (1 = the standard network).
    head/scale/margin/margins: see :mod:`edgeface.train.heads`.  lr and
    weight_decay None take the optimizer's defaults (:data:`OPTIMIZERS`).
    val_split: fraction of each identity's images held out for validation.
    exclude_people: a people file (``people.txt``, ``people.txt:10``, a plain
    list) whose people are left out.  patience: epochs without improvement of
    ``monitor`` before stopping (0 = never); checkpoint_every: also checkpoint every N optimizer steps (0: at epoch
    ends only), a resume continuing at that step; ``monitor`` may also be ``bin:NAME``, the accuracy on the
    ``val_bin`` file NAME.bin.  val_bin: InsightFace ``.bin`` verification sets scored during training, every
    ``val_every`` optimizer steps (None: once per epoch); see :mod:`edgeface.train.binval`.
    precision: a Keras dtype policy.  remat: recompute the embedding network's activations in the backward
    pass instead of keeping them (:mod:`edgeface.train.remat`; TensorFlow only).
    input_size other than 112 is for experiments and fast tests (exports expect
    112).  Subclasses name their optimizer and monitor choices and the smallest
    batch they can train on.
    """

    optimizer_choices: ClassVar[tuple[str, ...]] = tuple(OPTIMIZERS)
    monitor_choices: ClassVar[tuple[str, ...]] = ("auto", "loss")
    min_batch_size: ClassVar[int] = 1

    arch: str = "mobilefacenet"
    width: float = 1.0
    embedding_dim: int = 128
    head: str = "arcface"
    scale: Optional[float] = None
    margin: Optional[float] = None
    margins: Optional[tuple[float, float, float]] = None
    optimizer: str = "adam"
    lr: Optional[float] = None
    momentum: float = 0.9
    weight_decay: Optional[float] = None
    lr_schedule: str = "cosine"
    epochs: int = 20
    batch_size: int = 64
    val_split: float = 0.0
    exclude_people: Optional[str] = None
    patience: int = 10
    monitor: str = "auto"
    resume: bool = False
    checkpoint_every: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    precision: str = "float32"
    seed: int = 0
    input_size: int = 112
    val_bin: tuple[Path, ...] = ()
    val_every: Optional[int] = None
    remat: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):  # read back from a train.json
            self.augment = AugmentConfig(**self.augment)
        self.val_bin = tuple(Path(p) for p in (self.val_bin or ()))

    @property
    def optimizer_name(self) -> str:
        """The optimizer actually used (read by :func:`edgeface.train.trainer.build_optimizer`)."""
        return self.optimizer

    def check_fit(self) -> None:
        """Reject a bad shared value with one clear line, before any data is read."""
        choice("architecture", self.arch, ARCHITECTURES)
        choice("optimizer", self.optimizer, self.optimizer_choices)
        choice("precision", self.precision, PRECISIONS)
        choice("learning-rate schedule", self.lr_schedule, LR_SCHEDULES)
        if not is_bin_monitor(self.monitor):  # bin:NAME is checked against the --val-bin files below
            choice("monitor", self.monitor, self.monitor_choices)
        for name, v, lo in (("epochs", self.epochs, 1), ("batch size", self.batch_size, self.min_batch_size),
                            ("embedding dim", self.embedding_dim, 2), ("input size", self.input_size, 32)):
            if int(v) < lo:
                raise UserError(f"{name} must be at least {lo}, got {v}")
        check_width(self.width, "--width")
        if int(self.checkpoint_every) < 0:
            raise UserError(f"--checkpoint-every must be a number of optimizer steps >= 0 (0 = at epoch ends only), "
                            f"got {self.checkpoint_every}")
        if self.patience < 0:
            raise UserError(f"patience must be >= 0 (0 = no early stopping), got {self.patience}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"learning rate must be a finite number > 0, got {self.lr}")
        if self.weight_decay is not None and not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"weight decay must be a finite number >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.momentum) and 0.0 <= self.momentum < 1.0):
            raise UserError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 <= self.val_split < 1.0:
            raise SettingError("val_split", f"must be in [0, 1), got {self.val_split}")
        if self.remat:
            import keras

            if keras.backend.backend() != "tensorflow":
                raise SettingError("remat", f"needs the TensorFlow backend (tf.recompute_grad), KERAS_BACKEND is "
                                   f"{keras.backend.backend()!r}: train without --remat (or with a smaller "
                                   "--batch-size)")
        self.augment.check()
        check_val_bin(self.val_bin, self.val_every, self.monitor, self.input_size)
