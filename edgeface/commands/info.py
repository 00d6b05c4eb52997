"""``edgeface info``: what a model bundle holds (files, sizes, checksums, threshold, provenance)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from edgeface.commands.errors import user_errors
from edgeface.commands.fit_options import width_label
from edgeface.console import print_table, stdout


def file_status(root: Path, entry: dict) -> tuple[int, str]:
    """(size on disk, checksum verdict: ok, MISMATCH or missing) of one listed file."""
    from edgeface.runtime.bundle import sha256_file

    path = root / entry.get("path", "")
    if not path.is_file():
        return 0, "missing"
    return path.stat().st_size, "ok" if sha256_file(path) == entry.get("sha256") else "MISMATCH"


def bundle_report(bundle) -> dict:
    """The bundle's manifest plus what is actually on disk."""
    files, detectors = [], []
    for entry in bundle.files:
        size, status = file_status(bundle.root, entry)
        files.append({**entry, "size_on_disk": size, "checksum": status})
    for entry in bundle.manifest.get("detectors", []):
        size, status = file_status(bundle.root, entry)
        detectors.append({**entry, "size_on_disk": size, "checksum": status})
    return {"path": str(bundle.root.resolve()), "files": files, "detectors": detectors,
            "total_bytes": sum(f["size_on_disk"] for f in files + detectors), "manifest": bundle.manifest}


def _num(value: Any, spec: str, scale: float = 1.0) -> str:
    """A manifest number formatted, "-" when absent; anything else shown as it is (a hand-edited field
    must not stop the report that would show it)."""
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value * scale, spec)
    return repr(value)


def _io(spec: Any) -> str:
    """dtype, with scale/zero point when quantized (shapes are in --json)."""
    if not spec:
        return "-"
    if not isinstance(spec, dict):
        return repr(spec)
    q = f" ({_num(spec.get('scale'), '.3g')},{spec.get('zero_point', 0)})" if spec.get("scale") else ""
    return f"{spec.get('dtype')}{q}"


@user_errors
def info_cmd(
    bundle: Optional[Path] = typer.Argument(None, help="Bundle folder from `edgeface export` (default: the "
                                                       "bundle shipped with edgeface)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (only JSON on stdout)."),
) -> None:
    """Show a model bundle: path, files, sizes, checksums and manifest; exit 1 when a listed file is missing or
    differs from its checksum."""
    from edgeface.errors import UserError
    from edgeface.runtime.bundle import MANIFEST_NAME, Bundle, default_bundle_dir

    if bundle is None and not (default_bundle_dir() / MANIFEST_NAME).is_file():
        raise UserError("no default model bundle is installed: `edgeface info BUNDLE_DIR` (a folder written by "
                        "`edgeface export`)")
    b = Bundle.load(bundle)
    report = bundle_report(b)
    bad = [f["path"] for f in report["files"] + report["detectors"] if f["checksum"] != "ok"]
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_report(b.manifest, report)
    if bad:
        # Like `sha256sum -c`: the whole report is printed, and the exit status says the check failed, so a
        # script (or a flash pipeline) can stop on a damaged bundle without parsing the output.
        typer.echo(f"error: {len(bad)} file(s) missing or modified: {', '.join(bad)}; the runtime will refuse "
                   "them: export the bundle again or restore the files", err=True)
        raise typer.Exit(1)


def _print_report(m: dict, report: dict) -> None:
    """The human-readable report: header, file and detector tables, threshold, provenance."""
    model = m.get("model", {})
    stdout.print(f"bundle {report['path']}  (schema {m.get('schema_version')}, edgeface "
                  f"{m.get('edgeface_version')}, created {m.get('created')})")
    raw_width = model.get("width", 1.0)
    width = width_label(float(raw_width)) if isinstance(raw_width, (int, float)) else f" width {raw_width!r}"
    stdout.print(f"model {model.get('name')} ({model.get('arch')}{width}): {model.get('embedding_dim')}-d embedding, "
                  f"{model.get('input_size')}x{model.get('input_size')} {model.get('color_order')} "
                  f"{model.get('input_range')}, {model.get('normalization')}")
    rows = []
    for f in report["files"]:
        acc = f.get("accuracy")
        rows.append([f["format"], f["path"], f"{f['size_on_disk'] / 1e6:.2f}", f["checksum"],
                     "yes" if f.get("verified", True) else "no", _io(f.get("input")), _io(f.get("output")),
                     _num(f.get("cosine_min"), ".4f"), _num(acc, ".2f", 100)])
    print_table("files", ["Format", "File", "MB", "SHA-256", "Verified", "In", "Out", "Cosine min", "Acc %"], rows)
    if report["detectors"]:
        print_table("detectors", ["Kind", "Format", "File", "MB", "SHA-256", "Checked against float"],
                    [[d["kind"], d.get("format", "float"), d["path"], f"{d['size_on_disk'] / 1e6:.2f}", d["checksum"],
                      _detector_check(d.get("verification"))] for d in report["detectors"]])
        licenses = sorted({d.get("license", "") for d in report["detectors"]} - {""})
        for text in licenses:
            stdout.print(f"detector license: {text}")
    th = m.get("threshold", {})
    far = f", FAR {_num(th['far'], 'g')}" if th.get("far") else ""
    stdout.print(f"match threshold: cosine {th.get('cosine')} ({th.get('source')}{far})")
    prov = m.get("provenance", {})
    stdout.print(f"source: {prov.get('source_model')} sha256 {str(prov.get('source_sha256', ''))[:16]}..., "
                  f"exported {prov.get('date')}")


def register(app: typer.Typer) -> None:
    app.command("info", help="Show a model bundle: path, files, sizes, checksums and manifest.")(info_cmd)


def _detector_check(check: Optional[dict]) -> str:
    """A quantized detector's verification in a few words (a float file has none: it is the reference)."""
    if not check:
        return ""
    kp = check.get("kp_err_mean")
    return (f"{'ok' if check.get('passed') else 'NOT PASSED'}: {100 * check.get('recall_clear', 0):.1f} % of clear "
            f"faces, keypoints {kp if kp is not None else '?'} px @112, {check.get('images', '?')} images")

