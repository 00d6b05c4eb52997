"""Distil a teacher face model into an edgeface student: ``distill(DistillConfig(...))``.

The student learns to answer like the teacher: its embedding of each aligned
crop is pulled towards the teacher's embedding of the same face (see
:mod:`edgeface.distill.losses` for the loss terms).  Everything around the loss
is :mod:`edgeface.train`'s: the same architectures, augmentation, optimizers,
per-epoch checkpoints, ``--resume``, early stopping, progress events, BatchNorm
recalibration and the same run folder (``RUN/model.keras``, ``RUN/train.json``,
``RUN/log.csv``, ``RUN/checkpoints/``), so ``edgeface export`` and ``evaluate``
take the result unchanged.  The projection head (student size != teacher size)
and the margin head exist only in training; the saved model is the plain
embedding network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import keras
import numpy as np

from edgeface.choices import choice
from edgeface.data.dataset import count_excluded, read_people_file, resolved_people_spec
from edgeface.distill import data as ddata
from edgeface.distill.cache import EmbeddingCache
from edgeface.distill.losses import LOSSES, DistillLoss, IdentityAccuracy, TeacherCosine
from edgeface.distill.teachers import Teacher, load_teacher, parse_teacher_spec
from edgeface.errors import SettingError, UserError
from edgeface.nn.layers import L2Normalize
from edgeface.runtime.interpreter import l2_normalize
from edgeface.train import binval, loop
from edgeface.train import data as tdata
from edgeface.train.augment import apply_augmentation
from edgeface.train.batchnorm import recalibrate_batchnorm
from edgeface.train.config import FitConfig
from edgeface.train.heads import build_head, get_head_spec, margin_options_given, resolve_margins
from edgeface.train.models import embedding_features, get_model
from edgeface.train.trainer import build_optimizer, embed_with_features, float32_copy

MONITORS = ("auto", "val_teacher_cosine", "val_loss", "val_accuracy", "teacher_cosine", "loss", "accuracy")
DETECTORS = ("short", "auto", "full", "haar")
CACHE_NAME = "teacher_cache.sqlite"
METRIC_IMAGES = 2048  # un-augmented training faces the final figures are measured on (a fixed random subset)


@dataclass
class DistillConfig(FitConfig):
    """Everything one distillation run depends on (the CLI flags map one to one).

    data: photographs, flat or in identity folders.  teacher: ``dlib``,
    ``onnx:PATH``, ``tflite:PATH``, ``keras:PATH``; teacher_config (TOML) and
    teacher_options (overriding it) describe an ONNX/TFLite teacher's input.
    cache: the SQLite teacher-embedding cache (None: ``OUT/teacher_cache.sqlite``).
    detector/min_score: how faces are found in the photographs.  loss: cosine or
    mse; center_teacher: subtract the mean teacher embedding first; structure:
    weight of in-batch similarity-structure matching; labels: weight of the
    margin loss (``head``, needs identity folders; 0 = unlabeled).
    teacher_only: compute and cache the teacher's embeddings, then stop.
    workers: threads reading and detecting faces; threads: CPU threads of an
    ONNX/TFLite teacher.  The other fields are
    :class:`edgeface.train.config.FitConfig`'s.
    """

    monitor_choices: ClassVar[tuple[str, ...]] = MONITORS
    min_batch_size: ClassVar[int] = 2  # the structure term compares faces within a batch

    data: Path
    out: Path
    teacher: str
    teacher_config: Optional[Path] = None
    teacher_options: dict = field(default_factory=dict)
    cache: Optional[Path] = None
    detector: str = "short"
    min_score: Optional[float] = None
    loss: str = "cosine"
    center_teacher: bool = True
    structure: float = 0.0
    labels: float = 0.0
    teacher_only: bool = False
    workers: int = 2
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.data, self.out = Path(self.data), Path(self.out)
        self.teacher_config = Path(self.teacher_config) if self.teacher_config is not None else None
        self.cache = Path(self.cache) if self.cache is not None else None

    @property
    def is_pack(self) -> bool:
        """True when DATA is a RecordIO or TFRecord pack of aligned crops (:mod:`edgeface.distill.packs`)."""
        from edgeface.data.sources import pack_format

        return pack_format(self.data) is not None

    @property
    def cache_path(self) -> Path:
        return self.cache if self.cache is not None else self.out / CACHE_NAME

    def check(self) -> None:
        """Reject bad values with one clear line each, before any model or image is loaded."""
        self.check_fit()
        choice("distillation loss", self.loss, LOSSES)
        choice("detector", self.detector, DETECTORS)
        if int(self.workers) < 1:
            raise UserError(f"workers must be at least 1, got {self.workers}")
        for name, v in (("--structure", self.structure), ("--labels", self.labels)):
            if not v >= 0:
                raise UserError(f"{name} is a loss weight: it must be >= 0 (0 = off), got {v}")
        if self.labels:
            spec = get_head_spec(self.head)
            if not spec.margin:
                raise SettingError("labels", f"trains a margin head: choose --head arcface, cosface or combined, "
                                f"not {self.head}")
            resolve_margins(spec, self.scale, self.margin, self.margins)
        else:
            given = margin_options_given(self.scale, self.margin, self.margins)
            if given:
                raise UserError(f"{'/'.join(given)} set the margin head, which only --labels trains: add --labels "
                                f"WEIGHT or drop {'/'.join(given)}")
        if self.threads is not None and self.threads < 1:
            raise SettingError("threads", f"must be at least 1, got {self.threads}")
        if self.is_pack:
            for flag, given in (("--val-split", bool(self.val_split)), ("--exclude-people", bool(self.exclude_people))):
                if given:
                    raise UserError(f"{flag} needs a folder of photographs; {self.data} is a pack: hold people out "
                                    "when packing (`edgeface data pack CROPS --exclude-people FILE`) and validate on "
                                    "verification sets: --val-bin lfw.bin")
        elif not self.data.is_dir():
            raise UserError(f"dataset folder not found: {self.data} (expected photographs: DATA/*.jpg or "
                            "DATA/<person>/*.jpg, or a RecordIO/TFRecord pack of aligned crops)")
        if self.teacher_config is not None and not self.teacher_config.is_file():
            raise UserError(f"teacher config not found: {self.teacher_config}")
        parse_teacher_spec(self.teacher)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready config (paths as strings)."""
        d = dataclasses.asdict(self)
        for k in ("data", "out", "teacher_config", "cache"):
            d[k] = str(d[k]) if d[k] is not None else None
        d["cache"] = str(self.cache_path)
        d["margins"] = list(self.margins) if self.margins is not None else None
        d["val_bin"] = [str(b) for b in self.val_bin]
        return d


@dataclass
class DistillResult:
    """What :func:`distill` produced: files, data, teacher, epochs and final figures."""

    run_dir: Path
    model_path: Optional[Path]
    train_json: Optional[Path]
    teacher: str
    teacher_dim: int
    student_dim: int
    data: dict
    cache: dict
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
            d[k] = str(d[k]) if d[k] is not None else None
        return d


# --------------------------------------------------------------------------- data


def load_distill_data(cfg: DistillConfig, teacher: Teacher,
                      progress: Optional[Callable[[int, int], None]] = None) -> tuple[ddata.DistillData, dict, int]:
    """Scan DATA, detect and align every image, and get the teacher's embeddings (through the cache).

    Returns (data, cache stats, number of people excluded).
    """
    if cfg.is_pack:
        return _load_pack(cfg, teacher, progress)
    from edgeface.runtime.detector import create_detector

    exclude = read_people_file(cfg.exclude_people) if cfg.exclude_people else set()
    items = ddata.scan_images(cfg.data, exclude)
    excluded = count_excluded(cfg.data, exclude)

    def make_detector():
        return create_detector(cfg.detector, score_threshold=cfg.min_score, threads=1)

    identity = ddata.cache_identity(teacher, make_detector())
    with EmbeddingCache(cfg.cache_path, identity, teacher.dim) as cache:
        d = ddata.collect(items, teacher, cache, make_detector, size=cfg.input_size, workers=cfg.workers,
                          progress=progress)
        stats = cache.stats()
    if len(d) == 0:
        raise UserError(f"no faces found in {cfg.data}: {d.images} image(s), {d.no_face} without a detectable face, "
                        f"{d.unreadable} unreadable (distillation needs photographs with faces; try --detector full "
                        "for small or distant faces)")
    return d, stats, excluded


def _load_pack(cfg: DistillConfig, teacher: Teacher,
               progress: Optional[Callable[[int, int], None]]) -> tuple[ddata.DistillData, dict, int]:
    """A pack's records: the teacher's embeddings (through the cache), the crops left on disk for streaming."""
    from edgeface.data.sources import open_pack
    from edgeface.distill.packs import collect_pack, pack_identity

    teacher.check_crops(str(cfg.data))
    crops = open_pack(cfg.data).with_input_size(cfg.input_size)
    with EmbeddingCache(cfg.cache_path, pack_identity(teacher, crops), teacher.dim) as cache:
        d = collect_pack(crops, teacher, cache, progress)
        stats = cache.stats()
    d.pack = crops
    return d, stats, 0


def dataset_hash(d: ddata.DistillData, root: Path) -> str:
    """SHA-256 over the faces' relative paths, identities and image hashes (same photos, same hash); a pack's
    index hash for a pack."""
    if d.pack is not None:
        return d.pack.index_sha256
    h = hashlib.sha256()
    for p, label, sha in sorted(zip((os.path.relpath(p, root) for p in d.paths), d.labels.tolist(),
                                    d.image_hashes)):
        name = d.class_names[label] if label >= 0 else ""
        h.update(f"{p}\0{name}\0{sha}\n".encode())
    return h.hexdigest()


def split_faces(d: ddata.DistillData, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: ``fraction`` of each identity's faces (of all faces for a flat folder) held out."""
    if not fraction:
        return np.arange(len(d)), np.array([], np.int64)
    train_idx, val_idx = tdata.stratified_split(d.labels, fraction, seed)
    if len(val_idx) == 0:
        raise SettingError("val_split", f"{fraction} holds out nothing: every identity has one face")
    return train_idx, val_idx


# --------------------------------------------------------------------------- model


def build_distill_model(backbone: keras.Model, teacher_dim: int, num_classes: int, cfg: DistillConfig) -> keras.Model:
    """image -> augmentation -> embedding network -> [teacher-space embedding, own embedding, (margin logits)].

    The teacher-space embedding is the student's own when the sizes match, else a
    bias-free linear projection of the pre-normalisation features, normalised.
    """
    inputs = keras.Input(backbone.input_shape[1:], name="image")
    x = apply_augmentation(inputs, cfg.augment, seed=cfg.seed)
    if cfg.remat:
        from edgeface.train.remat import Recomputed

        # One output recomputed (the features); the embedding is the network's own normalisation of them.
        normalize = backbone.layers[-1]
        if not isinstance(normalize, L2Normalize):
            raise SettingError("remat", f"{cfg.arch} does not end in an L2 normalisation of its features: distil it "
                               "without --remat")
        net = keras.Model(backbone.input, embedding_features(backbone), name="embedding_net")
        features = Recomputed(net, name="embedding_net_recomputed")(x)
        emb = normalize(features)
    else:
        net = keras.Model(backbone.input, [embedding_features(backbone), backbone.output], name="embedding_net")
        features, emb = net(x)
    if cfg.embedding_dim != teacher_dim:
        projected = keras.layers.Dense(teacher_dim, use_bias=False, name="projection")(features)
        pred = L2Normalize(name="teacher_space")(projected)
    else:
        pred = emb
    parts = [pred, emb]
    if num_classes:
        parts.append(build_head(get_head_spec(cfg.head), num_classes)(features))
    # float32 whatever the precision policy: the loss compares unit vectors to 1e-3.
    out = keras.layers.Concatenate(dtype="float32", name="distill_outputs")(parts)
    return keras.Model(inputs, out, name=f"{backbone.name}_distill")


def teacher_targets(teacher: np.ndarray, train_idx: np.ndarray, center: bool) -> tuple[np.ndarray, float]:
    """The unit teacher embeddings the student learns, and the cosine a constant student would score on them.

    Face embeddings share a large common component: dlib's unit vectors of LFW faces are at cosine 0.91 from
    their mean direction on average, so a student that outputs that one direction for every face already
    "agrees" with the teacher at 0.91 and the cosine loss has little reason to do better (a run measured
    exactly this collapse).  Centring (subtracting the training faces' mean, re-normalising) leaves only the
    part that tells faces apart: a constant student then scores about 0.  Cosine matching is unchanged in
    kind; the student's space is the teacher's, shifted.
    """
    unit = l2_normalize(np.asarray(teacher, np.float32))
    mean = unit[train_idx].mean(axis=0) if len(train_idx) else unit.mean(axis=0)
    if center:
        unit = l2_normalize(unit - mean)
        mean = unit[train_idx].mean(axis=0) if len(train_idx) else unit.mean(axis=0)
    direction = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return unit.astype(np.float32), float(np.mean(unit @ direction))


def targets(teacher_unit: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """y for the training model: the teacher's unit embedding and the label (-1 unknown) as one float32 row."""
    return np.concatenate([teacher_unit, labels.reshape(-1, 1).astype(np.float32)], axis=1).astype(np.float32)


def teacher_space(features: np.ndarray, embeddings: np.ndarray, projection: Optional[np.ndarray]) -> np.ndarray:
    """The student's embedding in the teacher's space, in numpy (projection kernel or the embedding itself)."""
    if projection is None:
        return embeddings
    return l2_normalize(np.asarray(features, np.float64) @ np.asarray(projection, np.float64))


def _figures(embedder: keras.Model, projection: Optional[np.ndarray], d: ddata.DistillData, teacher_unit: np.ndarray,
             train_idx: np.ndarray, val_idx: np.ndarray, sub: np.ndarray, batch_size: int) -> dict[str, float]:
    """Student-teacher cosine on (a subset of) the training faces and on the validation faces, and rank-1 of
    the validation faces against the training faces as gallery where identities are known.

    The faces involved are embedded in one pass (one traced predict function, not one per figure).
    """
    labeled_val = len(val_idx) > 0 and bool(np.any(d.labels[val_idx] >= 0))
    gallery_idx = train_idx if labeled_val else np.array([], np.int64)
    needed = np.unique(np.concatenate([train_idx[sub], val_idx, gallery_idx]).astype(np.int64))
    feats, embs = embed_with_features(embedder, d.crops[needed], batch_size)
    pred = teacher_space(feats, embs, projection)
    row = np.full(len(d), -1, np.int64)
    row[needed] = np.arange(len(needed))

    def cosine(idx: np.ndarray) -> float:
        return float(np.mean(np.sum(pred[row[idx]] * teacher_unit[idx], axis=1)))

    out = {"teacher_cosine": cosine(train_idx[sub])}
    if len(val_idx):
        out["val_teacher_cosine"] = cosine(val_idx)
    if labeled_val:
        r1 = _rank1(embs[row[gallery_idx]], d.labels[gallery_idx], embs[row[val_idx]], d.labels[val_idx])
        if r1 is not None:
            out["val_rank1"] = r1
    return out


def _rank1(gallery, gallery_labels, probe, probe_labels) -> Optional[float]:
    from edgeface.evaluate.protocols import rank1

    g, p = gallery_labels >= 0, probe_labels >= 0
    if not g.any() or not p.any():
        return None
    return rank1(gallery[g], gallery_labels[g], probe[p], probe_labels[p])


def _metric_subset(n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:METRIC_IMAGES])


def _has_gpu() -> bool:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


class _DtypePolicy:
    """Set the global Keras dtype policy for a block (the model is built under it), then restore it."""

    def __init__(self, name: str) -> None:
        self.name, self.old = name, None

    def __enter__(self):
        self.old = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.name)

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self.old)


# --------------------------------------------------------------------------- the run


def distill(config: DistillConfig, progress: Optional[loop.ProgressFn] = None,
            data_progress: Optional[Callable[[int, int], None]] = None) -> DistillResult:
    """Distil, checkpointing every epoch, and write ``RUN/model.keras`` and ``RUN/train.json``.

    ``data_progress(done, total)`` follows face detection and teacher embedding;
    ``progress`` receives :class:`edgeface.train.loop.TrainProgress` events.
    Raises :class:`UserError` on bad input.
    """
    cfg = config
    cfg.check()
    t_start = time.perf_counter()
    run = loop.RunFiles(cfg.out)
    saved_state = None if cfg.teacher_only else run.check(cfg.resume)
    val_sets = binval.load_sets(cfg.val_bin)  # read and decoded now: a damaged .bin fails before the teacher runs
    teacher = load_teacher(cfg.teacher, cfg.teacher_config, cfg.teacher_options, cfg.threads)
    d, cache_stats, excluded = load_distill_data(cfg, teacher, data_progress)
    data_summary = {**d.summary(), "excluded_people": excluded}
    if cfg.teacher_only:
        return DistillResult(run.root, None, None, teacher.name, teacher.dim, cfg.embedding_dim, data_summary,
                             cache_stats, 0, 0, 0, False, None, round(time.perf_counter() - t_start, 2), 0.0, {})
    if len(d) < 2:
        raise UserError(f"{cfg.data} has {len(d)} face: distillation needs at least 2 (better thousands)")
    if cfg.labels and not d.labeled:
        raise SettingError("labels", f"needs identity folders ({cfg.data}/<person>/<image>) for every image and at "
                        f"least 2 people; {cfg.data} has {int(np.sum(d.labels >= 0))} labelled face(s) of "
                        f"{len(d.class_names)} people: drop --labels to distil without identities")
    if cfg.precision == "mixed_float16" and not _has_gpu():
        import warnings

        warnings.warn("mixed_float16 on a CPU is slower than float32: use it on a GPU", stacklevel=2)

    train_idx, val_idx = split_faces(d, cfg.val_split, cfg.seed)
    teacher_unit, constant_cosine = teacher_targets(d.teacher, train_idx, cfg.center_teacher)
    num_classes = len(d.class_names) if cfg.labels else 0
    margins = resolve_margins(get_head_spec(cfg.head), cfg.scale, cfg.margin, cfg.margins) if cfg.labels else None
    fingerprint = {"task": "distillation", "arch": cfg.arch, "embedding_dim": cfg.embedding_dim,
                   "input_size": cfg.input_size, "teacher_id": cache_stats["teacher_id"][:16],
                   "teacher_dim": teacher.dim, "loss": cfg.loss, "center_teacher": cfg.center_teacher,
                   "structure": cfg.structure, "labels": cfg.labels,
                   "head": cfg.head if cfg.labels else None, "num_classes": num_classes,
                   "optimizer": cfg.optimizer, "precision": cfg.precision, "width": cfg.width, "remat": cfg.remat}
    has_val = len(val_idx) > 0
    monitor = cfg.monitor if cfg.monitor != "auto" else ("val_teacher_cosine" if has_val else "loss")
    if monitor.startswith("val_") and not has_val:
        raise SettingError("monitor", f"{monitor} needs validation data: pass --val-split F")
    if monitor.endswith("accuracy") and not cfg.labels:
        raise SettingError("monitor", f"{monitor} needs --labels (accuracy is the margin head's)")
    if saved_state is not None:
        loop.check_resume_state(saved_state, fingerprint, run)
        state = saved_state
    else:
        state = loop.new_state(fingerprint, monitor)

    keras.utils.set_random_seed(cfg.seed)
    y = targets(teacher_unit, d.labels)
    if d.pack is not None:  # streamed from the pack (no --val-split there): the records' bytes, read per batch
        from edgeface.train.stream import StreamInput

        train_seq = StreamInput(d.pack, cfg.batch_size, input_size=cfg.input_size, seed=cfg.seed,
                                epoch=int(state["epoch"]), epochs=cfg.epochs, targets=y)
        val_seq, train_crops = None, d.crops  # crops decoded on demand (BatchNorm statistics, figures)
    else:
        train_seq = tdata.ArraySequence(d.crops[train_idx], y[train_idx], cfg.batch_size, shuffle=True,
                                        seed=cfg.seed, epoch=int(state["epoch"]))
        val_seq = tdata.ArraySequence(d.crops[val_idx], y[val_idx], cfg.batch_size) if has_val else None
        train_crops = train_seq.x  # the sequence's copy; 12k LFW crops are 0.45 GB, no need for a second one

    with _DtypePolicy(cfg.precision):
        backbone = get_model(cfg.arch, embedding_dim=cfg.embedding_dim, input_size=cfg.input_size, width=cfg.width)
        model = build_distill_model(backbone, teacher.dim, num_classes, cfg)
        loss = DistillLoss(teacher.dim, cfg.embedding_dim, cfg.loss, cfg.structure, cfg.labels,
                           **(dataclasses.asdict(margins) if margins else {}))
        metrics: list = [TeacherCosine(teacher.dim, cfg.embedding_dim)]
        if cfg.labels:
            metrics.append(IdentityAccuracy(teacher.dim, cfg.embedding_dim))
        # XLA on CPU ran 5x slower here (see edgeface.train); JAX always compiles.
        model.compile(optimizer=build_optimizer(cfg, len(train_seq)), loss=loss, metrics=metrics,
                      jit_compile="auto" if keras.backend.backend() == "jax" else False)
        if saved_state is not None:
            loop.restore_checkpoint(model, run)
        else:
            recalibrate_batchnorm(backbone, train_crops, batch_size=max(cfg.batch_size, 32), max_images=256,
                                  seed=cfg.seed)

    sub = _metric_subset(len(train_idx), cfg.seed)
    eval_bs = max(cfg.batch_size, 32)
    if "start" not in state:
        # The untrained student's agreement with the teacher, the baseline the final figure is compared to.
        state["start"] = _figures(float32_copy(backbone, cfg), _projection(model), d, teacher_unit, train_idx,
                                  val_idx, sub, eval_bs)
    bin_callbacks = binval.callbacks(val_sets, backbone, cfg.val_every, len(train_seq), cfg.epochs, monitor, state,
                                     progress, run.val_bin_csv, eval_bs)
    run.root.mkdir(parents=True, exist_ok=True)
    if has_val:
        loop.atomic_write_json(run.split_json, {"seed": cfg.seed, "fraction": cfg.val_split,
                                                "val": [os.path.relpath(d.paths[i], cfg.data) for i in val_idx]})
    outcome = loop.fit(model, train_seq, val_seq, run, epochs=cfg.epochs, monitor=monitor, patience=cfg.patience,
                       state=state, progress=progress, callbacks=bin_callbacks, checkpoint_every=cfg.checkpoint_every)

    embedder = float32_copy(backbone, cfg)
    recalibrate_batchnorm(embedder, train_crops, batch_size=eval_bs, seed=cfg.seed)
    proj = _projection(model)
    m: dict[str, float] = {k: v for k, v in (outcome.history[-1] if outcome.history else {}).items()
                           if k in ("loss", "teacher_cosine", "accuracy", "val_loss")}
    m.update(_figures(embedder, proj, d, teacher_unit, train_idx, val_idx, sub, eval_bs))
    m.update(binval.final_metrics(embedder, val_sets, eval_bs))  # the saved network's
    m["constant_student_cosine"] = constant_cosine  # the floor: what one fixed output for every face scores
    m.update({f"{k}_start": v for k, v in state["start"].items()})
    if "val_rank1" in m:
        labels_tr, labels_va = d.labels[train_idx], d.labels[val_idx]
        m["teacher_val_rank1"] = _rank1(teacher_unit[train_idx], labels_tr, teacher_unit[val_idx], labels_va)
        m["chance_rank1"] = 1.0 / len(np.unique(labels_tr[labels_tr >= 0]))
    seconds = time.perf_counter() - t_start

    result = DistillResult(
        run_dir=run.root, model_path=run.model, train_json=run.train_json, teacher=teacher.name,
        teacher_dim=teacher.dim, student_dim=cfg.embedding_dim, data=data_summary, cache=cache_stats,
        train_images=len(train_idx), val_images=len(val_idx), epochs_run=outcome.epochs_run,
        stopped_early=outcome.stopped_early, best_epoch=outcome.best_epoch, seconds=round(seconds, 2),
        images_per_second=round(outcome.images_per_second, 2), metrics=m,
        bin_validation=list(state.get(binval.RECORDS_KEY, [])),
    )
    loop.save_keras_atomic(embedder, run.model)
    loop.atomic_write_json(run.train_json, _train_json(cfg, d, teacher, outcome, result, monitor, margins))
    return result


def _projection(model: keras.Model) -> Optional[np.ndarray]:
    try:
        return np.asarray(model.get_layer("projection").get_weights()[0], np.float32)
    except ValueError:  # no projection layer: student and teacher have the same size
        return None


def _train_json(cfg: DistillConfig, d: ddata.DistillData, teacher: Teacher, outcome: loop.FitOutcome,
                result: DistillResult, monitor: str, margins) -> dict:
    from edgeface import __version__

    return {
        "edgeface_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "task": "distillation",
        "config": cfg.to_dict(),
        "model": {"arch": cfg.arch, "width": cfg.width, "embedding_dim": cfg.embedding_dim,
                  "input_size": cfg.input_size, "file": result.model_path.name},
        "teacher": {"spec": cfg.teacher, "name": teacher.name, "dim": teacher.dim, "identity": teacher.identity(),
                    "cache": result.cache},
        "loss": {"match": cfg.loss, "center_teacher": cfg.center_teacher, "structure": cfg.structure,
                 "labels": cfg.labels,
                 "head": {"name": cfg.head, **dataclasses.asdict(margins)} if margins else None,
                 "projection": cfg.embedding_dim != teacher.dim},
        "dataset": {"root": str(cfg.data), "path": str(cfg.data.resolve()),
                    "format": d.pack.format if d.pack is not None else "photos",
                    "exclude_people_path": resolved_people_spec(cfg.exclude_people),
                    "sha256": dataset_hash(d, cfg.data), "num_classes": len(d.class_names),
                    "images": result.data["images"], "faces": len(d), "train_images": result.train_images,
                    "val_images": result.val_images, "excluded_people": result.data["excluded_people"],
                    **{k: result.data[k] for k in ("no_face", "unreadable", "multiple_faces")}},
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
                        "precision": cfg.precision, "python": platform.python_version(),
                        "machine": platform.machine()},
    }
