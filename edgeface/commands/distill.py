"""``edgeface distill``: teach a small edgeface model from a stronger face model (dlib, ONNX, TFLite, Keras)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

import typer

from edgeface.commands import fit_options as fo
from edgeface.commands.errors import user_errors
from edgeface.errors import UserError

_TEACHER_HELP = ("Teacher: dlib (face_recognition's ResNet), onnx:PATH, tflite:PATH or keras:PATH (an edgeface "
                 "model); a path ending in .onnx/.tflite/.keras also works.")
_OPTION_HELP = ("ONNX/TFLite teacher input as KEY=VALUE (repeatable, overrides --teacher-config): input_size=W,H "
                "layout=NHWC|NCHW color=RGB|BGR mean=M std=S (or scale/offset) alignment=template|box "
                "template=arcface|\\[\\[x,y],...] template_size=W,H box_margin=F output=INDEX|NAME; dlib: jitters=N "
                "padding=F.")


def default_cache_path(environ) -> Path:
    """The per-user teacher-embedding cache: $XDG_CACHE_HOME/edgeface/ (read here, in the CLI layer only)."""
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeface" / "teacher_embeddings.sqlite"


def _data_bar(disable: bool) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A progress bar for detection + teacher embedding that closes itself when done (training's bar follows)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from edgeface.console import console

    bar = Progress(TextColumn("[bold]faces + teacher embeddings"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=disable, transient=True)
    task = None

    def advance(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("faces", total=total)
        bar.update(task, completed=done, total=total)
        if done >= total:
            bar.stop()

    return advance, bar.stop


@user_errors
def distill_cmd(
    data: Path = typer.Argument(..., help="Photographs (not aligned crops): DATA/*.jpg or DATA/<person>/*.jpg; or a "
                                "pack of aligned crops (RecordIO .rec or TFRecord, `edgeface data pack`), streamed, "
                                "for a teacher aligned like them (edgeface's/ArcFace's template)."),
    teacher: str = typer.Option(..., "--teacher", "-t", help=_TEACHER_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: model.keras, train.json, log.csv, checkpoints/."),
    teacher_config: Optional[Path] = typer.Option(None, help="TOML file of teacher input options (see "
                                                  "--teacher-option), at the top level or under \\[teacher]."),
    teacher_option: Optional[list[str]] = typer.Option(None, "--teacher-option", help=_OPTION_HELP),
    cache: Optional[Path] = typer.Option(None, help="Teacher-embedding cache file (SQLite; default "
                                         "~/.cache/edgeface/teacher_embeddings.sqlite)."),
    teacher_only: bool = typer.Option(False, help="Compute and cache the teacher's embeddings, then stop."),
    detector: str = typer.Option("short", help="Face detector: short (BlazeFace 128; the default: cached teacher "
                                 "embeddings are keyed by it), auto, full (BlazeFace 192), haar."),
    min_score: Optional[float] = typer.Option(None, help="Detection score threshold (default: the detector's)."),
    arch: str = fo.ARCH,
    width: float = fo.WIDTH,
    embedding_dim: int = typer.Option(128, help="Student embedding size (a projection head bridges a different "
                                      "teacher size in training)."),
    loss: str = typer.Option("cosine", help="Match the teacher by cosine or mse on normalised embeddings."),
    center_teacher: bool = typer.Option(True, help="Subtract the mean teacher embedding before matching, so a "
                                                   "student that outputs one vector for every face gains nothing."),
    structure: float = typer.Option(0.0, help="Weight of in-batch similarity-structure matching (0 = off)."),
    labels: float = typer.Option(0.0, help="Weight of a margin loss on identity folders (0 = unlabeled)."),
    head: str = typer.Option("arcface", help="Margin head for --labels: arcface, cosface or combined."),
    scale: Optional[float] = fo.SCALE,
    margin: Optional[float] = fo.MARGIN,
    margins: Optional[str] = fo.MARGINS,
    optimizer: str = typer.Option("adam", help="adam or sgd."),
    lr: Optional[float] = fo.LR,
    momentum: float = fo.MOMENTUM,
    weight_decay: Optional[float] = fo.WEIGHT_DECAY,
    lr_schedule: str = fo.LR_SCHEDULE,
    epochs: int = fo.EPOCHS,
    batch_size: int = typer.Option(64, help="Batch size."),
    val_split: float = typer.Option(0.0, help="Hold out this fraction of the faces (per identity) for validation."),
    val_bin: Optional[list[Path]] = fo.VAL_BIN,
    val_every: Optional[int] = fo.VAL_EVERY,
    exclude_people: Optional[str] = fo.EXCLUDE_PEOPLE,
    patience: int = fo.PATIENCE,
    monitor: str = typer.Option("auto", help="Metric for early stopping: auto (val_teacher_cosine with --val-split, "
                                "else loss), val_loss, teacher_cosine, loss, val_accuracy, accuracy, or bin:NAME (the "
                                "accuracy on --val-bin NAME.bin)."),
    resume: bool = fo.RESUME,
    checkpoint_every: int = fo.CHECKPOINT_EVERY,
    remat: bool = fo.REMAT,
    augment: bool = fo.AUGMENT,
    rotation: float = fo.ROTATION,
    shift: float = fo.SHIFT,
    shear: float = fo.SHEAR,
    zoom: float = fo.ZOOM,
    flip: bool = fo.FLIP,
    brightness: float = fo.BRIGHTNESS,
    contrast: float = fo.CONTRAST,
    precision: str = fo.PRECISION,
    input_size: int = typer.Option(112, help="Student input size (exports expect 112; smaller for experiments)."),
    seed: int = fo.SEED,
    workers: int = typer.Option(2, help="Threads for reading and detecting faces."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for an ONNX/TFLite teacher."),
    as_json: bool = fo.AS_JSON,
) -> None:
    """Distil a stronger face model (dlib, ONNX, TFLite, Keras) into a small edgeface student."""
    from edgeface.distill.teachers import parse_option_pairs, parse_teacher_spec

    # Cheap checks before TensorFlow loads: a typo should cost no import time.
    parse_teacher_spec(teacher)
    options = parse_option_pairs(teacher_option or [])
    if not data.is_dir() and not data.is_file():
        raise UserError(f"dataset folder not found: {data} (expected photographs: DATA/*.jpg or DATA/<person>/*.jpg, "
                        "or a RecordIO/TFRecord pack)")
    from edgeface.distill.distill import DistillConfig, distill
    from edgeface.train.progress import training_progress

    aug = fo.augment_config(augment, rotation, shift, shear, zoom, flip, brightness, contrast)
    cfg = DistillConfig(
        data=data, out=out, teacher=teacher, teacher_config=teacher_config, teacher_options=options,
        cache=cache if cache is not None else default_cache_path(os.environ), detector=detector, min_score=min_score,
        arch=arch, width=width, embedding_dim=embedding_dim, loss=loss, center_teacher=center_teacher,
        structure=structure, labels=labels, head=head,
        scale=scale, margin=margin, margins=fo.parse_margins(margins), optimizer=optimizer, lr=lr, momentum=momentum,
        weight_decay=weight_decay, lr_schedule=lr_schedule, epochs=epochs, batch_size=batch_size,
        val_split=val_split, exclude_people=exclude_people, patience=patience, monitor=monitor, resume=resume,
        checkpoint_every=checkpoint_every,
        augment=aug, precision=precision, seed=seed, input_size=input_size, teacher_only=teacher_only,
        workers=workers, threads=threads, val_bin=tuple(val_bin or ()), val_every=val_every, remat=remat,
    )
    advance, stop = _data_bar(disable=as_json)
    try:
        with training_progress(disable=as_json) as progress:
            result = distill(cfg, progress=progress, data_progress=advance)
    finally:
        stop()
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    print_result(result, cfg)


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.4f}"


def _before_after(m: dict, key: str) -> str:
    """``start -> end`` of a figure (untrained student, then the saved one)."""
    return f"{_pct(m.get(key + '_start'))} -> {_pct(m.get(key))}"


def print_result(result, cfg) -> None:
    """The final table of a run (stdout)."""
    from edgeface.console import console, print_table

    d, c, m = result.data, result.cache, result.metrics
    ms = d.get("teacher_ms_per_face")
    rows = [
        ["teacher", f"{result.teacher} ({result.teacher_dim}-d)"],
        ["images / faces", f"{d['images']} / {d['faces']} (no face {d['no_face']}, unreadable {d['unreadable']})"],
        ["teacher embeddings", f"{d['cache_hits']} from cache, {d['teacher_computed']} computed"
                               + (f" ({ms:.1f} ms/face)" if ms else "")],
        ["cache", f"{c['path']} ({c['entries']} entries for this teacher)"],
    ]
    if result.model_path is not None:
        rows.insert(0, ["model", str(result.model_path)])
        rows += [["student", f"{cfg.arch}{fo.width_label(cfg.width)}, {result.student_dim}-d"
                  + (" (projection head in training)" if result.student_dim != result.teacher_dim else "")],
                 ["train / val faces", f"{result.train_images} / {result.val_images}"],
                 ["epochs", f"{result.epochs_run}" + (" (stopped early)" if result.stopped_early else "")],
                 ["teacher cosine (train)", _before_after(m, "teacher_cosine")]]
        if "val_teacher_cosine" in m:
            rows.append(["teacher cosine (val)", _before_after(m, "val_teacher_cosine")])
        if "val_rank1" in m:
            rows.append(["val rank-1 (student)", _before_after(m, "val_rank1")])
            rows.append(["val rank-1 (teacher)", f"{_pct(m.get('teacher_val_rank1'))} (chance "
                                                 f"{m['chance_rank1']:.4f})"])
        rows += fo.val_bin_rows(m, result.bin_validation)
        rows += [["train img/s", f"{result.images_per_second:.1f}"]]
    rows.append(["seconds", f"{result.seconds:.1f}"])
    print_table("edgeface distill", ["", "value"], rows)
    if d.get("no_face_examples"):
        console.print(f"no face found in {d['no_face']} image(s), e.g. {d['no_face_examples'][0]}")


def register(app: typer.Typer) -> None:
    app.command("distill")(distill_cmd)
