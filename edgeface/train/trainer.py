"""Train a face-embedding network as an identity classifier: ``train(TrainConfig(...))``.

The network (by architecture name) ends in the pre-normalisation ``embedding``
layer; the training model puts the augmentation layers in front of it and a
head (softmax, ArcFace, CosFace or combined margin) behind it.  After training
the head and the augmentation are dropped and the embedding network, rebuilt in
float32 whatever the training precision, is saved as ``RUN/model.keras``.

Backend-agnostic (TensorFlow or JAX via ``KERAS_BACKEND``): a folder's crops are numpy
arrays fed through a :class:`keras.utils.PyDataset`, a RecordIO pack is streamed by a
tf.data pipeline (:mod:`edgeface.train.stream`), maths in ``keras.ops``; only
``distribute`` and streaming need TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import keras
import numpy as np

from edgeface.choices import choice
from edgeface.data.dataset import CropSet, count_excluded, load_crops, read_people_file, resolved_people_spec
from edgeface.data.folder_stream import stream_folder
from edgeface.data.sources import open_pack, pack_format, say
from edgeface.data.streamed import StreamedCrops
from edgeface.errors import SettingError, UserError
from edgeface.train import binval, loop
from edgeface.train import data as tdata
from edgeface.train.augment import apply_augmentation, per_replica_random
from edgeface.train.batchnorm import recalibrate_batchnorm
from edgeface.train.config import OPTIMIZERS, FitConfig
from edgeface.train.heads import (
    HeadSpec,
    build_head,
    build_loss,
    build_metrics,
    check_sample_rate,
    get_head_spec,
    head_logits_numpy,
    is_sampled,
    resolve_margins,
)
from edgeface.train.models import embedding_features, get_model
from edgeface.train.partial_fc import kernel_columns, with_label_input
from edgeface.train.stream import check_folder_stream

DISTRIBUTE = ("none", "mirrored", "multi-worker")
MONITORS = ("auto", "val_accuracy", "val_loss", "accuracy", "loss")


@dataclass
class TrainConfig(FitConfig):
    """Everything one training run depends on (the CLI flags map one to one).

    data: identity folder of aligned crops (``edgeface data prepare`` output), or a pack, streamed: RecordIO (a
    ``.rec`` file, or a folder of ``.rec`` shards: ``edgeface data pack``, InsightFace's ``train.rec``) or TFRecord
    (a ``.tfrecord`` file or a folder of them: ``edgeface data pack --format tfrecord``).
    stream: for a folder, True streams it (:mod:`edgeface.data.folder_stream`), False loads it, None loads it
    unless its decoded crops exceed the memory budget.
    shuffle_buffer: for a pack, 0 shuffles each epoch as a full permutation (random reads), N > 0 reads runs of
    consecutive records and mixes them in a buffer of N (see :mod:`edgeface.train.stream`).
    out: run folder.  val: a second identity folder to validate on (instead of
    ``val_split``).  min_images: identities with fewer images are skipped.
    optimizer "auto" is Adam for softmax and SGD with momentum for margin heads.
    monitor "auto" is val_accuracy with validation data, else loss.
    distribute: "mirrored" (tf.distribute.MirroredStrategy over this machine's
    GPUs, else its logical CPU devices; under JAX keras.distribution.DataParallel over jax.devices()) or
    "multi-worker" (MultiWorkerMirroredStrategy, cluster from TF_CONFIG; TensorFlow only).
    sample_rate: below 1, a margin head trains on that fraction of the classes each step (partial FC,
    :mod:`edgeface.train.partial_fc`); 1 is the full head.
    The other fields are :class:`edgeface.train.config.FitConfig`'s.
    """

    optimizer_choices: ClassVar[tuple[str, ...]] = ("auto", *OPTIMIZERS)
    monitor_choices: ClassVar[tuple[str, ...]] = MONITORS

    data: Path
    out: Path
    val: Optional[Path] = None
    min_images: int = 1
    distribute: str = "none"
    shuffle_buffer: int = 0
    sample_rate: float = 1.0
    stream: Optional[bool] = None
    optimizer: str = field(default="auto", kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.data = Path(self.data)
        self.out = Path(self.out)
        self.val = Path(self.val) if self.val is not None else None

    @property
    def optimizer_name(self) -> str:
        """The optimizer actually used ("auto" resolved by the head)."""
        return get_head_spec(self.head).default_optimizer if self.optimizer == "auto" else self.optimizer

    def check(self) -> None:
        """Reject bad values with one clear line each, before any data is read."""
        get_head_spec(self.head)
        self.check_fit()
        choice("distribute mode", self.distribute, DISTRIBUTE)
        if int(self.min_images) < 1:
            raise UserError(f"min images must be at least 1, got {self.min_images}")
        if self.val is not None and self.val_split:
            raise UserError("give either --val DIR or --val-split F, not both")
        if self.shuffle_buffer < 0:
            raise SettingError("shuffle_buffer", f"must be 0 (a full permutation per epoch) or a record count, got "
                            f"{self.shuffle_buffer}")
        if self.streamed:
            self._check_stream()
        elif self.data.suffix == ".rec" or ".tfrecord" in self.data.name:
            raise UserError(f"record file not found: {self.data}")
        elif not self.data.is_dir():
            raise UserError(f"training data folder not found: {self.data} (expected crops from `edgeface data "
                            "prepare`)")
        elif self.stream:
            check_folder_stream(self.data, self.val, self.val_split)
        if self.val is not None and not self.val.is_dir():
            raise UserError(f"validation folder not found: {self.val}")
        backend = keras.backend.backend()
        if self.distribute == "multi-worker" and backend != "tensorflow":
            raise SettingError("distribute", f"multi-worker (a TF_CONFIG cluster) needs the TensorFlow backend, "
                               f"KERAS_BACKEND is {backend!r}: unset TF_CONFIG to train on this machine's devices")
        if self.distribute == "mirrored" and backend not in ("tensorflow", "jax"):
            raise SettingError("distribute", f"mirrored needs the TensorFlow or JAX backend, KERAS_BACKEND is "
                               f"{backend!r}")
        resolve_margins(get_head_spec(self.head), self.scale, self.margin, self.margins)
        check_sample_rate(get_head_spec(self.head), self.sample_rate)

    @property
    def streamed(self) -> bool:
        """True when DATA is a pack, RecordIO or TFRecord (streamed by tf.data rather than loaded into memory)."""
        return pack_format(self.data) is not None

    def _check_stream(self) -> None:
        """What a pack cannot do (yet): each refused with where to do it instead."""
        for flag, given in (("--val-split", bool(self.val_split)), ("--val", self.val is not None)):
            if given:
                raise UserError(f"{flag} needs a folder of crops; {self.data} is a pack: hold people out "
                                "when packing (`edgeface data pack CROPS --exclude-people FILE`) and validate on "
                                "verification sets: --val-bin lfw.bin")
        for flag, given in (("--exclude-people", bool(self.exclude_people)), ("--min-images", self.min_images > 1)):
            if given:
                raise UserError(f"{flag} chooses people from a folder; {self.data} is a pack: give it to "
                                f"`edgeface data pack CROPS {flag} ...` instead")
        import importlib.util

        if importlib.util.find_spec("tensorflow") is None:
            raise UserError(f"streaming {self.data} needs TensorFlow's tf.data (pip install tensorflow-cpu), even "
                            f"with KERAS_BACKEND={keras.backend.backend()}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready config (paths as strings)."""
        d = dataclasses.asdict(self)
        for k in ("data", "out", "val"):
            d[k] = str(d[k]) if d[k] is not None else None
        d["margins"] = list(self.margins) if self.margins is not None else None
        d["optimizer_resolved"] = self.optimizer_name
        d["val_bin"] = [str(b) for b in self.val_bin]
        return d


@dataclass
class TrainResult:
    """What :func:`train` produced: the files, the data, the epochs and the final metrics."""

    run_dir: Path
    model_path: Path
    train_json: Path
    num_classes: int
    train_images: int
    val_images: int
    epochs_run: int
    stopped_early: bool
    best_epoch: Optional[int]
    seconds: float
    images_per_second: float
    metrics: dict[str, float]
    bin_validation: list[dict] = field(default_factory=list)  # --val-bin: one record per set and validation

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("run_dir", "model_path", "train_json"):
            d[k] = str(d[k])
        return d


# --------------------------------------------------------------------------- data


@dataclass
class _Data:
    train: CropSet | StreamedCrops  # StreamedCrops: a pack or a streamed folder, indexed; images read when indexed
    val: Optional[CropSet]  # labels in the training index space; None without validation
    val_unseen: Optional[CropSet]  # validation people absent from training (open-set rank-1 only)
    excluded: int
    val_source: str
    dataset_hash: str
    split: Optional[dict] = None


def load_training_data(cfg: TrainConfig) -> _Data:
    """Crops of DATA (minus excluded people) and the validation set: a folder, a split, or none.

    A pack is indexed, not loaded (:func:`edgeface.data.sources.open_pack`), and so is a folder that is streamed
    (:func:`edgeface.data.folder_stream.stream_folder`): ``train`` is then a
    :class:`~edgeface.data.streamed.StreamedCrops` whose images are read when indexed.
    """
    if cfg.streamed:
        records = open_pack(cfg.data).with_input_size(cfg.input_size)
        if records.num_classes < 2:
            raise UserError(f"{cfg.data} has {records.num_classes} class: a classifier needs at least 2")
        return _Data(records, None, None, 0, "none", records.index_sha256)
    exclude = read_people_file(cfg.exclude_people) if cfg.exclude_people else set()
    excluded = count_excluded(cfg.data, exclude)
    streamed = stream_folder(cfg.data, exclude, cfg.min_images, cfg.input_size, cfg.stream, notify=say)
    if streamed is not None:  # paths and labels only; --val/--val-split refused (edgeface.train.stream)
        check_folder_stream(cfg.data, cfg.val, cfg.val_split)
        if streamed.num_classes < 2:
            raise UserError(f"{cfg.data} has {streamed.num_classes} identity after exclusions and --min-images: "
                            "a classifier needs at least 2 (better hundreds)")
        return _Data(streamed, None, None, excluded, "none", streamed.index_sha256)
    crops = load_crops(cfg.data, exclude=exclude, size=cfg.input_size, min_images=cfg.min_images,
                       aligned_only=True)
    if crops.num_classes < 2:
        raise UserError(f"{cfg.data} has {crops.num_classes} identity after exclusions and --min-images: "
                        "a classifier needs at least 2 (better hundreds)")
    digest = tdata.dataset_hash(crops, cfg.data)
    if cfg.val_split:
        tr, held = tdata.stratified_split(crops.labels, cfg.val_split, cfg.seed)
        if len(held) == 0:
            raise SettingError("val_split", f"{cfg.val_split} holds out nothing: every identity has one image")
        split = {"seed": cfg.seed, "fraction": cfg.val_split,
                 "val": [str(Path(p).relative_to(cfg.data)) for p in np.array(crops.paths, dtype=object)[held]]}
        return _Data(tdata.subset(crops, tr), tdata.subset(crops, held), None, excluded,
                     f"{cfg.val_split:g} of each identity's images", digest, split)
    if cfg.val is not None:
        other = load_crops(cfg.val, exclude=exclude, size=cfg.input_size, aligned_only=True)
        labels, known = tdata.map_labels(other, crops.class_names)
        val = CropSet(other.images[known], labels[known], crops.class_names,
                      [p for p, k in zip(other.paths, known) if k])
        unseen = tdata.subset(other, np.flatnonzero(~known)) if (~known).any() else None
        if not len(val) and unseen is None:
            raise UserError(f"no usable validation images in {cfg.val}")
        return _Data(crops, val if len(val) else None, unseen, excluded, str(cfg.val), digest)
    return _Data(crops, None, None, excluded, "none", digest)


# --------------------------------------------------------------------------- model


def build_training_model(backbone: keras.Model, num_classes: int, cfg: TrainConfig) -> keras.Model:
    """image -> augmentation (training only) -> embedding network (up to ``embedding``) -> head logits."""
    spec = get_head_spec(cfg.head)
    inputs = keras.Input(backbone.input_shape[1:], name="image")
    x = apply_augmentation(inputs, cfg.augment, seed=cfg.seed)
    net = keras.Model(backbone.input, embedding_features(backbone), name="embedding_net")
    if cfg.remat:
        from edgeface.train.remat import Recomputed

        per_replica_random(net)  # its layers sit inside the wrapper, where the call below does not look
        net = Recomputed(net, name="embedding_net_recomputed")
    features = net(x)
    if is_sampled(spec, cfg.sample_rate):
        # Partial FC samples each step's classes from the batch's labels: they enter the model as a second input.
        label = keras.Input((), dtype="int32", name="label")
        head = build_head(spec, num_classes, sample_rate=cfg.sample_rate, batch_size=cfg.batch_size, seed=cfg.seed)
        model = keras.Model([inputs, label], head([features, label]), name=f"{backbone.name}_{spec.name}_partial")
    else:
        model = keras.Model(inputs, build_head(spec, num_classes)(features), name=f"{backbone.name}_{spec.name}")
    # Augmentation and Dropout draw per tf.distribute replica (one device: the same draws as without this).
    per_replica_random(model)
    return model


def build_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer with its (cosine-decayed by default) learning rate."""
    spec = OPTIMIZERS[cfg.optimizer_name]
    lr = cfg.lr if cfg.lr is not None else spec.lr
    wd = cfg.weight_decay if cfg.weight_decay is not None else spec.weight_decay
    rate: Any = lr
    if cfg.lr_schedule == "cosine":
        # Down to 1% of the initial rate over the planned epochs; checkpoints carry the step count.
        rate = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, cfg.epochs * steps_per_epoch),
                                                      alpha=0.01)
    if is_sampled(get_head_spec(cfg.head), getattr(cfg, "sample_rate", 1.0)):
        # Partial FC: only the sampled class rows (and their optimizer state) change in a step.
        from edgeface.train.row_sparse import RowSparseAdam, RowSparseSGD

        if spec.name == "sgd":
            return RowSparseSGD(rate, momentum=cfg.momentum, weight_decay=wd or None, row_sparse=("head/kernel",))
        return RowSparseAdam(rate, weight_decay=wd or None, row_sparse=("head/kernel",))
    if spec.name == "sgd":
        return keras.optimizers.SGD(rate, momentum=cfg.momentum, weight_decay=wd or None)
    return keras.optimizers.Adam(rate, weight_decay=wd or None)


def _fingerprint(cfg: TrainConfig, class_names: list[str]) -> dict:
    return {"arch": cfg.arch, "embedding_dim": cfg.embedding_dim, "head": cfg.head, "input_size": cfg.input_size,
            "optimizer": cfg.optimizer_name, "precision": cfg.precision, "num_classes": len(class_names),
            "classes_sha256": hashlib.sha256("\n".join(class_names).encode()).hexdigest(), "width": cfg.width,
            # the partial head stores its class weights as rows: its checkpoints load into no full head
            "sampled_head": is_sampled(get_head_spec(cfg.head), cfg.sample_rate),
            # the recomputing wrapper nests the network one level deeper in the checkpoint's weight paths
            "remat": cfg.remat}


def _strategy(mode: str):
    """The distribution of a mode: None, a tf.distribute strategy, or under JAX a keras.distribution.DataParallel."""
    if mode == "none":
        return None
    if keras.backend.backend() == "jax":
        import jax

        # One jitted step over the global batch, sharded along it: BatchNorm and the loss see the whole batch.
        return keras.distribution.DataParallel(devices=jax.devices())
    import tensorflow as tf

    if mode == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        # No GPU: every logical CPU device is a replica (one on a normal machine; MirroredStrategy() alone takes
        # /cpu:0 only), so a process that split its CPU runs the GPUs' code path on several replicas.
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    return tf.distribute.MultiWorkerMirroredStrategy()


def replicas(strategy) -> int:
    """How many replicas (devices) one training step runs on: 1 without a strategy."""
    if strategy is None:
        return 1
    if hasattr(strategy, "num_replicas_in_sync"):
        return int(strategy.num_replicas_in_sync)
    return int(strategy.device_mesh.devices.size)


def _scope(strategy):
    """The strategy's (or JAX distribution's) scope; a no-op without one."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


@contextlib.contextmanager
def _dtype_policy(name: str):
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(old)


def float32_copy(model: keras.Model, cfg: TrainConfig) -> keras.Model:
    """The embedding network rebuilt in float32 with the trained weights (what is saved and exported)."""
    with _dtype_policy("float32"):
        clean = get_model(cfg.arch, embedding_dim=cfg.embedding_dim, input_size=cfg.input_size, width=cfg.width)
    clean.set_weights(model.get_weights())
    return clean


# --------------------------------------------------------------------------- evaluation


def embed(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """L2-normalised embeddings of uint8 crops through an embedding model."""
    out = [np.asarray(model.predict_on_batch(images[i:i + batch_size].astype(np.float32)), np.float32)
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)


def _leave_one_out_rank1(emb: np.ndarray, labels: np.ndarray) -> Optional[float]:
    """Rank-1 of each image against all the others (identities with >= 2 images)."""
    counts = np.bincount(labels)
    probe = counts[labels] >= 2
    if probe.sum() == 0:
        return None
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    best = np.argmax(sim, axis=1)
    return float(np.mean(labels[best][probe] == labels[probe]))


def embed_with_features(embedder: keras.Model, images: np.ndarray, batch_size: int = 64
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(pre-normalisation ``embedding`` features, L2-normalised embeddings) of uint8 crops."""
    both = keras.Model(embedder.input, [embedding_features(embedder), embedder.output])
    feats, embs = [], []
    for i in range(0, len(images), batch_size):
        f, e = both.predict_on_batch(images[i:i + batch_size].astype(np.float32))
        feats.append(np.asarray(f, np.float32))
        embs.append(np.asarray(e, np.float32))
    return np.concatenate(feats), np.concatenate(embs)


def evaluate_run(embedder: keras.Model, head: HeadSpec, head_weights: list[np.ndarray], d: _Data,
                 batch_size: int) -> dict[str, float]:
    """Final metrics of the saved (float32) network: closed-set accuracy of the head and rank-1 against the
    training images as gallery on validation people seen in training; leave-one-out rank-1 among unseen ones."""
    from edgeface.evaluate.protocols import rank1

    m: dict[str, float] = {}
    if d.val is not None and len(d.val):
        feats, probe = embed_with_features(embedder, d.val.images, batch_size)
        logits = head_logits_numpy(head, head_weights, feats)
        m["val_accuracy"] = float(np.mean(np.argmax(logits, axis=1) == d.val.labels))
        gallery = embed(embedder, d.train.images, batch_size)
        m["val_rank1"] = rank1(gallery, d.train.labels, probe, d.val.labels)
        m["chance_rank1"] = 1.0 / d.train.num_classes
    if d.val_unseen is not None:
        r = _leave_one_out_rank1(embed(embedder, d.val_unseen.images, batch_size), d.val_unseen.labels)
        if r is not None:
            m["val_unseen_rank1"] = r
    return m


# --------------------------------------------------------------------------- the run


def train(config: TrainConfig, progress: Optional[loop.ProgressFn] = None) -> TrainResult:
    """Train, checkpointing every epoch, and write ``RUN/model.keras`` and ``RUN/train.json``.

    ``progress`` receives a :class:`edgeface.train.loop.TrainProgress` after every
    training step and every epoch.  Raises :class:`UserError` on bad input.
    """
    cfg = config
    cfg.check()
    run = loop.RunFiles(cfg.out)
    saved_state = run.check(cfg.resume)
    t_start = time.perf_counter()
    val_sets = binval.load_sets(cfg.val_bin)  # read and decoded now: a damaged .bin fails before anything else
    if cfg.precision == "mixed_float16" and not _has_gpu():
        warnings.warn("mixed_float16 on a CPU is slower than float32: use it on a GPU, or mixed_bfloat16 on a "
                      "CPU with AVX512-BF16/AMX", stacklevel=2)

    strategy = _strategy(cfg.distribute)  # before the data: a refusal below costs no loading
    if cfg.remat and replicas(strategy) > 1:
        # Replicas trace their steps in turns that switch at every all-reduce, SyncBatchNorm's inside the forward
        # pass included: the recomputing pass could not tell its BatchNorm updates from another replica's.
        raise SettingError("remat", f"runs on one device; --distribute {cfg.distribute} has {replicas(strategy)} "
                           "replicas: drop --remat or train on one device")
    d = load_training_data(cfg)
    spec = get_head_spec(cfg.head)
    margins = resolve_margins(spec, cfg.scale, cfg.margin, cfg.margins) if spec.margin else None
    fingerprint = _fingerprint(cfg, d.train.class_names)
    # Identification is the goal: val_accuracy, since val_loss of a small set rises with confidence even while
    # accuracy still improves.
    monitor = cfg.monitor if cfg.monitor != "auto" else ("val_accuracy" if d.val is not None else "loss")
    if monitor.startswith("val_") and d.val is None:
        raise SettingError("monitor", f"{monitor} needs validation data: pass --val DIR or --val-split F")
    if saved_state is not None:
        loop.check_resume_state(saved_state, fingerprint, run)
        state = saved_state
    else:
        state = loop.new_state(fingerprint, monitor)

    keras.utils.set_random_seed(cfg.seed)
    chief = strategy is None or _is_chief(strategy)
    if isinstance(d.train, StreamedCrops):
        from edgeface.train.stream import StreamInput

        train_seq = StreamInput(d.train, cfg.batch_size, input_size=cfg.input_size, seed=cfg.seed,
                                epoch=int(state["epoch"]), epochs=cfg.epochs, shuffle_buffer=cfg.shuffle_buffer)
    else:
        train_seq = tdata.ArraySequence(d.train.images, d.train.labels, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                        epoch=int(state["epoch"]))
    val_seq = (tdata.ArraySequence(d.val.images, d.val.labels, cfg.batch_size)
               if d.val is not None and len(d.val) else None)
    if is_sampled(spec, cfg.sample_rate):  # partial FC's model takes (images, labels)
        train_seq, val_seq = with_label_input(train_seq), with_label_input(val_seq)

    with _dtype_policy(cfg.precision), _scope(strategy):
        # tf.distribute normalises each replica's slice unless told to sync; JAX's sharded step sees the whole batch.
        backbone = get_model(cfg.arch, embedding_dim=cfg.embedding_dim, input_size=cfg.input_size, width=cfg.width,
                             sync_bn=replicas(strategy) > 1 and keras.backend.backend() == "tensorflow")
        model = build_training_model(backbone, d.train.num_classes, cfg)
        sampled = is_sampled(spec, cfg.sample_rate)
        model.compile(optimizer=build_optimizer(cfg, len(train_seq)), loss=build_loss(spec, margins, sampled),
                      metrics=build_metrics(sampled),
                      # XLA on CPU ran 5x slower here; JAX always compiles.
                      jit_compile="auto" if keras.backend.backend() == "jax" else False)
        if saved_state is not None:
            loop.restore_checkpoint(model, run)

    bin_callbacks = binval.callbacks(val_sets, backbone, cfg.val_every, len(train_seq), cfg.epochs, monitor, state,
                                     progress, run.val_bin_csv if chief else None, max(cfg.batch_size, 32))
    if chief:
        run.root.mkdir(parents=True, exist_ok=True)
        if d.split is not None:
            loop.atomic_write_json(run.split_json, d.split)
    try:
        # Keras' JAX trainer reads the distribution while it runs (to shard each batch), not from the model.
        with _scope(strategy):
            outcome = loop.fit(model, train_seq, val_seq, run, epochs=cfg.epochs, monitor=monitor,
                               patience=cfg.patience, state=state, progress=progress, write=chief,
                               callbacks=bin_callbacks, checkpoint_every=cfg.checkpoint_every)
    except Exception as exc:
        # A damaged record met while streaming surfaces as a TensorFlow error: say it as the one line it is.
        failure = getattr(train_seq, "failure", None)
        if failure is not None:
            raise failure from None
        if isinstance(d.train, StreamedCrops) and type(exc).__name__ == "InvalidArgumentError":
            reason = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:160]
            raise UserError(f"{cfg.data}: an image record could not be decoded ({reason}): the pack is damaged; "
                            "pack it again or copy it again") from None
        raise

    embedder = float32_copy(backbone, cfg)
    # The saved network's BatchNorm statistics, computed on un-augmented training crops (see batchnorm.py).
    recalibrate_batchnorm(embedder, d.train.images, batch_size=max(cfg.batch_size, 32), seed=cfg.seed)
    head_weights = kernel_columns(model.get_layer("head"))
    metrics = {k: v for k, v in outcome.history[-1].items() if k in ("loss", "accuracy", "val_loss")} \
        if outcome.history else {}
    if outcome.restored_best:
        best_row = outcome.history[outcome.best_epoch - 1]
        metrics.update({k: best_row[k] for k in ("loss", "accuracy", "val_loss") if k in best_row})
    metrics.update(evaluate_run(embedder, spec, head_weights, d, max(cfg.batch_size, 32)))
    metrics.update(binval.final_metrics(embedder, val_sets, max(cfg.batch_size, 32)))  # the saved network's
    seconds = time.perf_counter() - t_start

    result = TrainResult(
        run_dir=run.root, model_path=run.model, train_json=run.train_json, num_classes=d.train.num_classes,
        train_images=len(d.train), val_images=len(d.val) if d.val is not None else 0,
        epochs_run=outcome.epochs_run, stopped_early=outcome.stopped_early, best_epoch=outcome.best_epoch,
        seconds=round(seconds, 2), images_per_second=round(outcome.images_per_second, 2), metrics=metrics,
        bin_validation=list(state.get(binval.RECORDS_KEY, [])),
    )
    if chief:
        loop.save_keras_atomic(embedder, run.model)
        loop.atomic_write_json(run.train_json, _train_json(cfg, d, outcome, result, margins, monitor, strategy))
    return result


def _has_gpu() -> bool:
    if keras.backend.backend() == "jax":
        import jax

        return any(dev.platform == "gpu" for dev in jax.devices())
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def _train_json(cfg: TrainConfig, d: _Data, outcome: loop.FitOutcome, result: TrainResult, margins, monitor: str,
                strategy) -> dict:
    from edgeface import __version__

    return {
        "edgeface_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "task": "classification",
        "config": cfg.to_dict(),
        "model": {"arch": cfg.arch, "width": cfg.width, "embedding_dim": cfg.embedding_dim,
                  "input_size": cfg.input_size, "file": result.model_path.name},
        "head": {"name": cfg.head, **(dataclasses.asdict(margins) if margins else {}), "sample_rate": cfg.sample_rate},
        "dataset": {"root": str(cfg.data), "path": str(cfg.data.resolve()),
                    "format": d.train.format if isinstance(d.train, StreamedCrops) else "folder",
                    **({"shards": d.train.shard_names(),
                        "sha256_covers": d.train.hash_covers, "shuffle_buffer": cfg.shuffle_buffer}
                       if isinstance(d.train, StreamedCrops) else {}),
                    "exclude_people_path": resolved_people_spec(cfg.exclude_people),
                    "sha256": d.dataset_hash, "num_classes": d.train.num_classes,
                    "images": len(d.train) + (len(d.val) if d.val is not None and cfg.val_split else 0),
                    "train_images": len(d.train), "val_images": result.val_images,
                    "val_unseen_images": len(d.val_unseen) if d.val_unseen is not None else 0,
                    "val_source": d.val_source, "excluded_people": d.excluded},
        "epochs_run": outcome.epochs_run,
        "epochs_this_session": outcome.epochs_this_session,
        "stopped_early": outcome.stopped_early,
        "monitor": monitor,
        "best_epoch": outcome.best_epoch,
        "restored_best": outcome.restored_best,
        "metrics": result.metrics,
        "images_per_second": result.images_per_second,
        "seconds": result.seconds,
        "history": outcome.history,
        "bin_validation": result.bin_validation,
        "environment": {"keras_backend": keras.backend.backend(), "keras_version": keras.__version__,
                        "precision": cfg.precision, "distribute": cfg.distribute,
                        "replicas": replicas(strategy),
                        "python": platform.python_version(), "machine": platform.machine()},
    }
