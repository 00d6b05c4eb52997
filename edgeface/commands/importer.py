"""``edgeface import``: bring a pretrained face model into the chain (dlib's ResNet first)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import List, Optional

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


@import_app.command("blazeface")
@user_errors
def import_blazeface_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the files; a bundle folder (with manifest.json) "
                             "gets them listed in its manifest."),
    calib: List[Path] = typer.Option(..., "--calib", help="Photos (a folder, searched recursively, or files) or a "
                                     "video to calibrate and verify on; repeat for several sources."),
    kinds: str = typer.Option("short,full", "--kinds", help="Comma-separated BlazeFace networks: short, full."),
    count: int = typer.Option(300, "--count", help="Calibration images, shared over the sources."),
    verify_count: int = typer.Option(200, "--verify-count", help="Other images each file is compared with "
                                     "float on."),
    seed: int = typer.Option(0, "--seed", help="Which images calibrate and which verify."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (only JSON on stdout)."),
) -> None:
    """BlazeFace as int8 (CPU) and Edge TPU-ready files: rebuilt from the wheel's float file, quantized on real
    images, compared with float."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgeface.importers.blazeface_int8 import CLEAR_SCORE, DetectorQuantConfig, quantize_detectors

    names = tuple(k.strip() for k in kinds.split(",") if k.strip())
    cfg = DetectorQuantConfig(out=out, calib=tuple(calib), kinds=names, count=count, verify_count=verify_count,
                              seed=seed)
    cfg.check()
    if as_json:
        result = quantize_detectors(cfg)
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    with console.status("quantizing BlazeFace") as status:
        result = quantize_detectors(cfg, progress=lambda m: status.update(m))
    rows = [[f.kind, f.format, f"{f.size_bytes / 1024:.0f} KB", f.edgetpu_ops,
             f"{100 * f.recall:.1f} % of {f.reference_faces}",
             f"{100 * f.recall_clear:.1f} % of {f.clear_faces}", str(f.extra),
             "-" if f.kp_err_mean is None else f"{f.kp_err_mean:.2f} ({f.kp_err_p95:.2f})",
             "✅" if f.passed else "❎"] for f in result.files]
    print_table(f"BlazeFace int8, verified on {result.verification['images']} images "
                f"(calibrated on {result.calibration['images']})",
                ["network", "format", "size", "Edge TPU ops", "float faces found",
                 f"scoring >= {CLEAR_SCORE}", "extra",
                 "keypoint error px @112 (p95)", "ok"], rows)
    where = "listed in its manifest" if result.bundle else "next: copy them into a bundle, or give --out BUNDLE"
    console.print(f"wrote {len(result.files)} files to {result.out} ({where}); report: {result.out / 'detectors.json'}")


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
