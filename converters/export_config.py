"""What ``edgeface export`` is asked (:class:`ExportConfig`) and the checks it passes before TensorFlow loads.

``check_config`` validates everything that can be validated cheaply (files,
numbers, the bundle name, the output folder, the options each chosen format
takes) and returns the rows of the format table to export.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgeface.converters import manifest as mf
from edgeface.converters.formats import ExportFormat, check_options, format_options, resolve_formats
from edgeface.data.dataset import split_people_spec
from edgeface.errors import UserError
from edgeface.fileio import nearest_existing_parent
from edgeface.runtime.bundle import MANIFEST_NAME
from edgeface.runtime.detector import check_detector_kind
from edgeface.runtime.facemodel import spec_for_model_file


@dataclass
class ExportConfig:
    """Everything ``edgeface export`` needs; built from CLI flags.

    ``auto_mixed`` and ``per_tensor`` are options of the format table: set while no chosen format lists them,
    :func:`check_config` refuses them.
    """

    model: Path
    out: Optional[Path] = None  # default: <model dir>/<model stem>_bundle
    formats: str = "all"
    calib: Optional[Path] = None  # default: the training data named in train.json, if it exists
    calib_count: int = 200
    calib_exclude_people: Optional[str] = None  # people file (FILE or FILE:FOLD) never used for calibration
    verify_count: int = 100
    pairs: Optional[Path] = None
    images: Optional[Path] = None
    far: float = 1e-3
    max_drop: float = 0.5  # percentage points of verification accuracy
    auto_mixed: bool = False
    per_tensor: bool = False  # full-integer weights: one scale per tensor (smaller file) instead of per channel
    detector: str = "short"  # aligns raw --calib photos
    bundle_detectors: tuple[str, ...] = ("short", "full")
    threads: Optional[int] = None  # interpreter threads for verification
    name: Optional[str] = None  # file-name stem; default the model's stem
    spec: Optional[Path] = None  # face-model spec (TOML); default: MODEL.toml beside the model, else edgeface's
    compile_edgetpu: bool = True  # run edgetpu_compiler when it is on PATH

    def __post_init__(self) -> None:
        self.model = Path(self.model)
        if self.out is None:
            self.out = self.model.parent / f"{self.model.stem}_bundle"
        self.out = Path(self.out)
        self.calib = Path(self.calib) if self.calib else None
        self.pairs = Path(self.pairs) if self.pairs else None
        self.images = Path(self.images) if self.images else None
        self.spec = Path(self.spec) if self.spec else None



def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the bundle")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise UserError(f"--out {out} exists and is not an edgeface bundle; choose a new or empty folder")
    # The bundle is built in a temp folder beside --out: the nearest existing ancestor must take new entries.
    probe = nearest_existing_parent(out)
    if not probe.is_dir():
        raise UserError(f"output folder is not writable: cannot create {out} because {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK) or (out.is_dir() and not os.access(out, os.W_OK)):
        raise UserError(f"output folder is not writable: {out} (check permissions or choose another --out)")


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_bundle_name(name: str, what: str = "--name") -> None:
    """Bundle file names are ``NAME_<format>.tflite`` inside the bundle: NAME must be a plain file-name stem."""
    if not _NAME.fullmatch(name) or ".." in name or len(name) > 100:
        raise UserError(f"{what} {name!r} cannot name the bundle's files: use letters, digits and . _ + - "
                        "(no path separators, no leading dot)")


def _default_calib(model: Path) -> tuple[Optional[Path], Optional[str]]:
    """The training data of ``model`` (from its train.json) and the people file training left out, if any.

    The people left out of training are left out of calibration too: they are usually an evaluation fold,
    and calibrating on them would tune int8 to the faces it is then judged on.
    """
    summary = mf.train_summary(model) or {}
    dataset = summary.get("dataset") or {}
    # "path" and "exclude_people_path" are absolute (runs since 2026-12); older runs recorded what was typed
    root = dataset.get("path") or dataset.get("root")
    exclude = dataset.get("exclude_people_path") or summary.get("exclude_people")
    if not root or not Path(root).is_dir():
        return None, None
    if exclude and not split_people_spec(exclude)[0].is_file():
        raise UserError(f"{model} was trained without the people in {exclude}, which is not found from here: pass "
                        "--calib DIR (and --calib-exclude-people FILE to keep those people out of calibration)")
    return Path(root), exclude


def check_config(cfg: ExportConfig) -> list[ExportFormat]:
    """Validate what can be validated without loading anything heavy; returns the formats to export."""
    if not cfg.model.exists():
        raise UserError(f"model file not found: {cfg.model}")
    if cfg.model.is_dir() or cfg.model.suffix.lower() != ".keras":
        raise UserError(f"{cfg.model} is not a Keras model: expected a .keras file written by `edgeface train`")
    formats = resolve_formats(cfg.formats)
    if cfg.calib_count < 1:
        raise UserError(f"--calib-count must be at least 1 (got {cfg.calib_count})")
    if cfg.verify_count < 1:
        raise UserError(f"--verify-count must be at least 1 (got {cfg.verify_count})")
    if not 0.0 < cfg.far < 1.0:
        raise UserError(f"--far must be between 0 and 1 (got {cfg.far})")
    # NaN passes every comparison: --max-drop nan would switch the accuracy budget off (and write NaN, not JSON)
    if not (math.isfinite(cfg.max_drop) and cfg.max_drop >= 0):
        raise UserError(f"--max-drop must be a finite number >= 0 percentage points (got {cfg.max_drop})")
    check_bundle_name(cfg.name if cfg.name is not None else cfg.model.stem, "--name" if cfg.name is not None else
                      "the model's file name (pass --name)")
    check_detector_kind(cfg.detector)
    spec_for_model_file(cfg.model, cfg.spec)  # a broken spec file is one line before TensorFlow loads
    check_options(formats, given_options(cfg))  # e.g. per_tensor without int8 or edgetpu
    if (cfg.pairs is None) != (cfg.images is None):
        raise UserError("--pairs and --images go together: the pairs file and the folder of its images")
    if cfg.pairs is not None and not cfg.pairs.is_file():
        raise UserError(f"pairs file not found: {cfg.pairs}")
    if cfg.images is not None and not cfg.images.is_dir():
        raise UserError(f"images folder not found: {cfg.images}")
    if cfg.calib is None:
        cfg.calib, trained_without = _default_calib(cfg.model)
        if cfg.calib_exclude_people is None and trained_without:
            cfg.calib_exclude_people = trained_without
        if cfg.calib is None:
            raise UserError("--calib DIR is required: face images (DIR/<person>/<image>, raw photos or aligned "
                            "crops) to calibrate int8 and to verify every exported file")
    elif not cfg.calib.is_dir():
        raise UserError(f"--calib folder not found: {cfg.calib}")
    _check_out_dir(cfg.out)
    return formats


def given_options(cfg: ExportConfig) -> list[str]:
    """The options of the format table (``per_tensor``, ``auto_mixed``) that ``cfg`` sets away from their default."""
    defaults = {f.name: f.default for f in dataclasses.fields(ExportConfig)}
    return [name for name in format_options() if getattr(cfg, name) != defaults[name]]
