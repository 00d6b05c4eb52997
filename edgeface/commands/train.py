"""``edgeface train``: train a face-embedding network on aligned crops."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional

import typer

from edgeface.commands import fit_options as fo
from edgeface.commands.errors import user_errors
from edgeface.errors import UserError

_DISTRIBUTE_HELP = (
    "none, or mirrored: tf.distribute.MirroredStrategy over this machine's GPUs, or without one its logical CPU "
    "devices (the batch is split across them; BatchNorm statistics span the whole batch). With the TF_CONFIG "
    "environment variable set (a JSON cluster spec, the same command started on every machine) mirrored becomes "
    "MultiWorkerMirroredStrategy across machines; the chief (or worker 0) writes RUN. KERAS_BACKEND=jax: mirrored "
    "is keras.distribution.DataParallel over jax.devices() (one machine; TF_CONFIG is refused)."
)


def resolve_distribute(flag: str, environ: Mapping[str, str]) -> str:
    """The trainer's distribute mode from ``--distribute`` and TF_CONFIG (read here, in the CLI layer only)."""
    flag = flag.strip().lower()
    if flag == "mirrored" and environ.get("TF_CONFIG", "").strip():
        try:
            cluster = json.loads(environ["TF_CONFIG"]).get("cluster", {})
        except (json.JSONDecodeError, AttributeError):
            raise UserError("TF_CONFIG is not valid JSON: expected {\"cluster\": {...}, \"task\": {...}}") from None
        workers = sum(len(v) for v in cluster.values()) if isinstance(cluster, dict) else 0
        return "multi-worker" if workers > 1 else "mirrored"
    return flag


@user_errors
def train_cmd(
    data: Path = typer.Argument(..., help="Aligned crops, DATA/<person>/<image> (from `edgeface data prepare`), or a "
                                "pack, streamed: RecordIO (a .rec file or a folder of .rec shards: `edgeface data "
                                "pack`, InsightFace's train.rec/.idx) or TFRecord (a .tfrecord file or a folder of "
                                "them: `edgeface data pack --format tfrecord`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: model.keras, train.json, log.csv, checkpoints/."),
    arch: str = fo.ARCH,
    width: float = fo.WIDTH,
    embedding_dim: int = typer.Option(128, help="Embedding size."),
    head: str = typer.Option("arcface", help="Head: arcface, cosface, combined (m1,m2,m3) or softmax."),
    scale: Optional[float] = fo.SCALE,
    margin: Optional[float] = fo.MARGIN,
    margins: Optional[str] = fo.MARGINS,
    sample_rate: float = typer.Option(1.0, help="Margin heads: partial FC. Each step trains the batch's classes plus "
                                      "random others up to this fraction of all classes (logits, loss and updates "
                                      "only over them); 1 = the full head. InsightFace uses 0.1-0.3 for 1 M+ "
                                      "identities."),
    optimizer: str = typer.Option("auto", help="auto (adam for softmax, sgd for margin heads), adam or sgd."),
    lr: Optional[float] = fo.LR,
    momentum: float = fo.MOMENTUM,
    weight_decay: Optional[float] = fo.WEIGHT_DECAY,
    lr_schedule: str = fo.LR_SCHEDULE,
    epochs: int = fo.EPOCHS,
    batch_size: int = typer.Option(64, help="Batch size (global: split across devices with --distribute)."),
    val: Optional[Path] = typer.Option(None, help="Validation identity folder (e.g. test/ of the same people). "
                                       "Per-epoch val figures use BatchNorm's running averages, which lag on short "
                                       "runs; the final table recomputes them with precise statistics."),
    val_split: float = typer.Option(0.0, help="Hold out this fraction of each identity's images for validation."),
    val_bin: Optional[list[Path]] = fo.VAL_BIN,
    val_every: Optional[int] = fo.VAL_EVERY,
    exclude_people: Optional[str] = fo.EXCLUDE_PEOPLE,
    min_images: int = typer.Option(1, help="Skip identities with fewer images."),
    patience: int = fo.PATIENCE,
    monitor: str = typer.Option("auto", help="Metric for early stopping: auto (val_accuracy with validation, else "
                                "loss), val_loss, loss, accuracy, or bin:NAME (the accuracy on --val-bin NAME.bin)."),
    resume: bool = fo.RESUME,
    checkpoint_every: int = fo.CHECKPOINT_EVERY,
    augment: bool = fo.AUGMENT,
    rotation: float = fo.ROTATION,
    shift: float = fo.SHIFT,
    shear: float = fo.SHEAR,
    zoom: float = fo.ZOOM,
    flip: bool = fo.FLIP,
    brightness: float = fo.BRIGHTNESS,
    contrast: float = fo.CONTRAST,
    precision: str = fo.PRECISION,
    distribute: str = typer.Option("none", help=_DISTRIBUTE_HELP),
    shuffle_buffer: int = typer.Option(0, help="Packs and streamed folders: 0 shuffles each epoch as a full "
                                       "permutation (random reads: SSD, page cache); N reads runs of records and "
                                       "mixes them in a buffer of N (slow-seeking disks)."),
    stream: Optional[bool] = typer.Option(None, "--stream/--no-stream", help="A folder of crops: stream it from disk "
                                          "instead of loading it (default: only when its decoded crops exceed 40% "
                                          "of the available memory; a line says so). Packs always stream."),
    remat: bool = fo.REMAT,
    seed: int = fo.SEED,
    as_json: bool = fo.AS_JSON,
) -> None:
    """Train a face-embedding CNN (MobileFaceNet or the seed CNN) with a softmax or margin head."""
    # Heavy imports only now: `edgeface --help` must not load Keras or TensorFlow.
    from edgeface.train.progress import training_progress
    from edgeface.train.trainer import TrainConfig, train

    aug = fo.augment_config(augment, rotation, shift, shear, zoom, flip, brightness, contrast)
    cfg = TrainConfig(
        data=data, out=out, arch=arch, width=width, embedding_dim=embedding_dim, head=head, scale=scale, margin=margin,
        margins=fo.parse_margins(margins), optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
        lr_schedule=lr_schedule, epochs=epochs, batch_size=batch_size, val=val, val_split=val_split,
        exclude_people=exclude_people, min_images=min_images, patience=patience, monitor=monitor, resume=resume,
        checkpoint_every=checkpoint_every,
        augment=aug, precision=precision, distribute=resolve_distribute(distribute, os.environ), seed=seed,
        shuffle_buffer=shuffle_buffer, stream=stream, sample_rate=sample_rate, val_bin=tuple(val_bin or ()),
        val_every=val_every, remat=remat,
    )
    with training_progress(disable=as_json) as progress:
        result = train(cfg, progress=progress)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    print_result(result, cfg)


def print_result(result, cfg) -> None:
    """The final table of a run (stdout)."""
    from edgeface.console import print_table

    m = result.metrics
    rows = [
        ["model", str(result.model_path)],
        ["architecture / head", f"{cfg.arch}{fo.width_label(cfg.width)} / {cfg.head}"],
        ["identities", result.num_classes],
        ["train images", result.train_images],
    ]
    if result.val_images:
        rows.append(["val images", result.val_images])
    stop = " (stopped early)" if result.stopped_early else ""
    rows.append(["epochs", f"{result.epochs_run}{stop}"])
    for key, label in (("loss", "train loss"), ("accuracy", "train accuracy (augmented)"), ("val_loss", "val loss")):
        if key in m:
            rows.append([label, f"{m[key]:.4f}"])
    if "val_accuracy" in m:
        rows.append(["val accuracy (closed-set)", f"{m['val_accuracy']:.4f}"])
    if "val_rank1" in m:
        rows.append(["val rank-1 vs train gallery", f"{m['val_rank1']:.4f} (chance {m['chance_rank1']:.4f})"])
    if "val_unseen_rank1" in m:
        rows.append(["rank-1 among unseen val people", f"{m['val_unseen_rank1']:.4f}"])
    rows += fo.val_bin_rows(m, result.bin_validation)
    rows += [["train img/s", f"{result.images_per_second:.1f}"], ["seconds", f"{result.seconds:.1f}"]]
    print_table("edgeface train", ["", "value"], rows)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
