"""``edgeface data``: dataset preparation (``prepare``) and RecordIO packs (``pack``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgeface.commands.detector_options import detector_option
from edgeface.commands.errors import user_errors
from edgeface.console import console, print_table, progress_bar

data_app = typer.Typer(help="Prepare face datasets: detect, align and crop; pack crops as RecordIO or TFRecord.",
                       no_args_is_help=True)


@data_app.command("prepare")
@user_errors
def prepare_cmd(
    src: Path = typer.Argument(..., help="Identity-folder dataset: SRC/<person>/<image>."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for aligned crops and manifest.jsonl."),
    detector: str = detector_option(),
    size: int = typer.Option(112, help="Crop size in pixels."),
    min_score: Optional[float] = typer.Option(None, help="Detection score threshold (default: the detector's)."),
    workers: int = typer.Option(0, help="Worker processes (0: one per CPU core)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Detect and align the faces of an identity-folder dataset into 112x112 crops."""
    from edgeface.data.prepare import PrepareConfig, prepare

    cfg = PrepareConfig(src=src, out=out, detector=detector, size=size, min_score=min_score, workers=workers)
    with progress_bar("aligning faces", disable=as_json) as advance:
        summary = prepare(cfg, progress=advance)
    d = summary.to_dict()
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    print_table(
        "data prepare",
        ["images", "aligned", "no face", "unreadable", "multi-face", "already done", "aligned %", "img/s"],
        [[d["images"], d["aligned"], d["no_face"], d["unreadable"], d["multiple_faces"], d["already_done"],
          f"{100 * d['aligned_fraction']:.2f}", d["images_per_second"]]],
    )
    if summary.no_face or summary.unreadable:
        console.print(f"skipped files are listed in {summary.skip_log}")


@data_app.command("pack")
@user_errors
def pack_cmd(
    src: Path = typer.Argument(..., help="Aligned crops, SRC/<person>/<image> (from `edgeface data prepare`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: train.rec, train.idx, property, identities.txt "
                             "(or the TFRecord shards and identities.txt)."),
    fmt: str = typer.Option("recordio", "--format", help="recordio (InsightFace's .rec/.idx) or tfrecord "
                            "(train-00000-of-0000N.tfrecord: tf.train.Example with image/encoded and "
                            "image/class/label, each file with a .index sidecar for random reads)."),
    encoding: str = typer.Option("jpeg", help="Image encoding in the records: jpeg (InsightFace's; JPEG crops keep "
                                 "their bytes) or png (lossless; PNG crops keep their bytes)."),
    quality: int = typer.Option(95, help="JPEG quality for crops that are encoded (InsightFace packs use 95)."),
    shards: int = typer.Option(1, help="Number of files (train_000.rec ... or train-0000K-of-0000N.tfrecord), whole "
                               "people in each, one label space; 1 writes InsightFace's train.rec."),
    exclude_people: Optional[str] = typer.Option(
        None, help="People file whose people are left out (people.txt, people.txt:10 for one LFW fold, a list)."),
    min_images: int = typer.Option(1, help="Leave out people with fewer images."),
    workers: int = typer.Option(0, help="Threads reading and encoding crops (0: one per CPU core)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write a folder of aligned crops as an InsightFace RecordIO pack (.rec/.idx) or TFRecord shards, for streaming
    training."""
    from edgeface.data.pack import PackConfig, pack

    cfg = PackConfig(src=src, out=out, encoding=encoding, format=fmt.strip().lower(), quality=quality, shards=shards,
                     exclude_people=exclude_people, min_images=min_images, workers=workers)
    with progress_bar("packing crops", disable=as_json) as advance:
        summary = pack(cfg, progress=advance)
    d = summary.to_dict()
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    print_table(
        "data pack",
        ["images", "identities", "unreadable", "bytes kept / encoded", "crop size", "MB", "img/s"],
        [[d["images"], d["identities"], d["unreadable"], f"{d['kept_bytes']} / {d['encoded']}",
          f"{d['size'][1]}x{d['size'][0]}", d["megabytes"], d["images_per_second"]]],
    )
    console.print(f"wrote {', '.join(d['files'])} in {out}")
    if summary.unreadable:
        shown = ", ".join(summary.skipped_files[:5]) + (" ..." if summary.unreadable > 5 else "")
        console.print(f"{summary.unreadable} unreadable image(s) left out: {shown}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data", help="Prepare face datasets: detect, align and crop; pack crops as RecordIO "
                  "or TFRecord.")
