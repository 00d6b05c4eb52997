"""``edgeface export``: TFLite fp32/fp16/dynamic/int8/Edge TPU files, each verified, in one bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgeface.commands.errors import user_errors
from edgeface.console import console, escape, print_table, progress_bar
from edgeface.errors import UserError


def _fmt(value, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def print_summary(result, pairs: bool) -> None:
    """The Ultralytics-style table of one export, plus the Edge TPU and --auto-mixed reports."""
    columns = ["Format", "Status", "Size (MB)", "Ops", "Cosine min", "Cosine mean"]
    if pairs:
        columns += ["Accuracy %", "Δ vs float (pt)"]
    columns += ["Export (s)"]
    rows = []
    for r in result.formats:
        row = [r.format, r.symbol, _fmt(r.size_bytes / 1e6 if r.file else None, ".2f"), r.ops_total or "-",
               _fmt(r.cosine.cosine_min if r.cosine else None, ".4f"),
               _fmt(r.cosine.cosine_mean if r.cosine else None, ".4f")]
        if pairs:
            row += [_fmt(100 * r.accuracy if r.accuracy is not None else None, ".2f"),
                    _fmt(0.0 - r.accuracy_drop_pt if r.accuracy_drop_pt is not None else None, "+.2f")]
        row += [f"{r.seconds:.1f}"]
        rows.append(row)
    title = f"edgeface export -> {result.bundle}"
    if result.float_accuracy is not None:
        title += f"  (Keras float32: {100 * result.float_accuracy:.2f} %)"
    print_table(title, columns, rows)
    for r in result.formats:
        for line in ([r.error] if r.error else []) + r.notes:
            console.print(f"{r.symbol} {r.format}: {line}")
    tpu = result.edgetpu
    if tpu:
        static = tpu["static"]
        print_table(f"Edge TPU compatibility ({static['source']}): {static['tpu_ops']} ops on the Edge TPU, "
                    f"{static['cpu_ops']} on the CPU", ["Operator", "Count", "Status"],
                    [[o["operator"], o["count"], o["status"]] for o in static["operators"]])
        comp = tpu.get("compiler")
        if comp and "operators" in comp:
            print_table(f"edgetpu_compiler {comp.get('compiler_version') or ''}: {comp['tpu_ops']} ops on the "
                        f"Edge TPU, {comp['cpu_ops']} on the CPU", ["Operator", "Count", "Status"],
                        [[o["operator"], o["count"], o["status"]] for o in comp["operators"]])
        elif comp and comp.get("error"):
            console.print(f"edgetpu_compiler: {comp['error']}")
        elif tpu.get("compiler_hint"):
            console.print(tpu["compiler_hint"])
    mixed = result.mixed
    if mixed:
        console.print(f"--auto-mixed: {mixed.get('message', '')}")
        if mixed.get("float_layers"):
            console.print("  layers kept in float: " + ", ".join(mixed["float_layers"]))
        cost = mixed.get("cost")
        if cost:
            console.print(f"  cost vs int8: {cost['size_bytes'] / 1e3:+.1f} kB, {cost['latency_ms']:+.2f} ms p50 "
                          f"({cost['int8_p50_ms']:.2f} -> {cost['mixed_p50_ms']:.2f} ms, "
                          f"{cost['latency_threads']} thread(s))")
    for note in result.notes:
        console.print(f"note: {note}")
    th = result.threshold
    console.print(f"match threshold: cosine {th['cosine']:.4f} ({th['source']}"
                  + (f", FAR {th['far']:g}" if th.get("far") else "") + ")")


def exit_code(result) -> int:
    """0 when every file verified; 1 when one failed (an int8 rescued by --auto-mixed counts as verified)."""
    from edgeface.converters.formats import DERIVED_FORMATS
    from edgeface.converters.results import OK

    by_format = {r.format: r.status for r in result.formats}
    bad = [f for f, s in by_format.items() if s != OK]
    for derived in DERIVED_FORMATS:  # a verified int8_mixed file stands in for the int8 file it rescues
        if derived.replaces_source and by_format.get(derived.name) == OK and derived.derived_from in bad:
            bad.remove(derived.derived_from)
    return 1 if bad else 0


@user_errors
def export_cmd(
    model: Optional[Path] = typer.Argument(
        None, help="Embedding model: .keras from `edgeface train`, `distill` or `import`."),
    formats: str = typer.Option("all", "--formats", "-f",
                                help="Comma-separated: fp32,fp16,dynamic,int8,edgetpu or all."),
    calib: Optional[Path] = typer.Option(
        None, "--calib", help="Faces for int8 calibration and verification: DIR/<person>/<image>, raw photos or "
                              "aligned crops (default: the training data named in train.json)."),
    calib_count: int = typer.Option(200, "--calib-count", help="Calibration faces, spread over identities."),
    calib_exclude_people: Optional[str] = typer.Option(
        None, "--calib-exclude-people", help="People file whose identities never calibrate or verify (FILE or "
                                             "FILE:FOLD, e.g. LFW people.txt:10 to keep the test fold out)."),
    verify_count: int = typer.Option(100, "--verify-count", help="Held-out faces to compare each file with Keras."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Bundle folder (default: MODEL_DIR/<stem>_bundle)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Pairs file (LFW pairs.txt) to measure accuracy."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of the pairs' images (raw or prepared)."),
    far: float = typer.Option(1e-3, "--far", help="Target false accept rate for the recommended threshold."),
    max_drop: float = typer.Option(0.5, "--max-drop", help="Largest accuracy drop vs float (points) still verified."),
    auto_mixed: bool = typer.Option(False, "--auto-mixed", help="If int8 breaks the budget, keep the worst layers "
                                                                "in float until it holds."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="int8/edgetpu: one weight scale per tensor instead "
                                    "of per channel: a smaller file (MobileFaceNet: -18 %), usually less accurate."),
    detector: str = typer.Option("short", "--detector", help="Detector aligning raw --calib photos: short (the "
                                 "default: the shipped bundles were calibrated with it), auto, full or haar."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Interpreter threads for verification."),
    name: Optional[str] = typer.Option(None, "--name", help="File-name stem (default: the model's file stem)."),
    spec: Optional[Path] = typer.Option(
        None, "--spec", help="Face-model spec (TOML: input size, alignment template, threshold); default: "
        "MODEL.toml beside the model (written by `edgeface import`), else edgeface's own."),
    compile_edgetpu: bool = typer.Option(True, "--compile/--no-compile",
                                         help="Run edgetpu_compiler on the edgetpu file when it is installed."),
    list_formats: bool = typer.Option(False, "--list-formats", help="Print the format table and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON (only JSON on stdout)."),
) -> None:
    """Export a trained model to verified TFLite files (fp32, fp16, dynamic, int8, Edge TPU) with a manifest."""
    from edgeface.converters.formats import export_formats

    if list_formats:
        rows = export_formats()
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        else:
            print_table("export formats", ["Format", "Description", "Suffix", "Input", "Output", "Calibration",
                                           "Cosine min/mean bound"],
                        [[r["format"], r["description"], r["suffix"], r["input"], r["output"],
                          "yes" if r["calibration"] else "no", f"{r['min_cosine']} / {r['mean_cosine']}"]
                         for r in rows])
        return
    if model is None:
        raise UserError("missing MODEL: `edgeface export MODEL.keras --calib DIR [--formats ...]`")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    import os

    # TensorFlow's C++ start-up chatter (CPU features, CUDA probing) is noise for an export run.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgeface.converters.export import export_bundle
    from edgeface.converters.export_config import ExportConfig, check_config

    cfg = ExportConfig(model=model, out=out, formats=formats, calib=calib, calib_count=calib_count,
                       calib_exclude_people=calib_exclude_people,
                       verify_count=verify_count, pairs=pairs, images=images, far=far, max_drop=max_drop,
                       auto_mixed=auto_mixed, per_tensor=per_tensor, detector=detector, threads=threads, name=name,
                       compile_edgetpu=compile_edgetpu, spec=spec)
    check_config(cfg)  # every cheap check before TensorFlow loads
    with progress_bar("export", disable=as_json) as advance:
        def progress(desc: str, done: int, total: int) -> None:
            if not as_json:
                console.print(f"[dim]{escape(desc)}...[/dim]", markup=True)
            advance(done, total)

        result = export_bundle(cfg, progress=progress)
        advance(1, 1)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        print_summary(result, pairs is not None)
        console.print(f"bundle written to {result.bundle}")
    code = exit_code(result)
    if code:
        raise typer.Exit(code=code)


def register(app: typer.Typer) -> None:
    app.command("export", help="Export a trained model to verified TFLite files with a manifest.")(export_cmd)
