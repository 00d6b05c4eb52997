"""``edgeface data``: dataset preparation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgeface.commands.errors import user_errors
from edgeface.console import console, print_table, progress_bar

data_app = typer.Typer(help="Prepare face datasets: detect, align and crop.", no_args_is_help=True)


@data_app.command("prepare")
@user_errors
def prepare_cmd(
    src: Path = typer.Argument(..., help="Identity-folder dataset: SRC/<person>/<image>."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for aligned crops and manifest.jsonl."),
    detector: str = typer.Option("short", help="Face detector: short (BlazeFace 128), full (BlazeFace 192), haar."),
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


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data", help="Prepare face datasets: detect, align and crop.")
