"""``edgeface import``: bring a pretrained face model into the chain (dlib's ResNet first)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Optional

import typer

from edgeface.commands.errors import user_errors
from edgeface.console import console, print_table

import_app = typer.Typer(help="Import a pretrained face model as model.keras + model.toml (its face-model spec), "
                              "ready for export, evaluate and distill.", no_args_is_help=True)


@import_app.command("dlib")
@user_errors
def import_dlib_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for model.keras and model.toml."),
    dat: Optional[Path] = typer.Option(
        None, "--dat", help="dlib_face_recognition_resnet_model_v1.dat (default: the face_recognition_models "
        "package's copy)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (only JSON on stdout)."),
) -> None:
    """dlib's face ResNet (face_recognition's model), read with numpy and rebuilt exactly in Keras."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgeface.importers.dlib import import_dlib

    status = contextlib.nullcontext() if as_json else console.status("reading the network, building the Keras model")
    with status:
        result = import_dlib(out, dat)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    layers = ", ".join(f"{n} {k}" for k, n in result.layers.items())
    rows = [["source", str(result.source)], ["sha256", result.source_sha256], ["layers", layers],
            ["parameters", f"{result.parameters:,}"],
            ["input", f"{result.input_size}x{result.input_size} RGB chip (dlib geometry, BlazeFace keypoints)"],
            ["embedding", f"{result.embedding_dim}-d, compared by cosine"],
            ["model", str(result.model)], ["spec", str(result.spec_file)], ["seconds", f"{result.seconds:.1f}"]]
    if result.check:
        rows.append(["check", f"cosine {result.check['cosine']:.7f} vs {result.check['against']} (self-test face)"])
    print_table("imported dlib ResNet", ["", ""], rows)
    console.print(f"next: edgeface export {result.model} --calib PHOTOS --pairs PAIRS --images PHOTOS")


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
