"""The steps that make and judge one row's file: convert, the Edge TPU check and compiler, the ``--auto-mixed`` search.

The format table (:mod:`edgeface.converters.formats`) says which step makes a
row (``step``) and from what (``derived_from``); :mod:`edgeface.converters.export`
walks the table and runs ``STEPS[row.step]``.  Every step takes the export's
shared inputs (:class:`StepContext`) and returns the summary rows and manifest
entries it made.  A step that fails marks its own row failed (its file leaves
the bundle) and the others go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgeface.converters import edgetpu as tpu
from edgeface.converters import manifest as mf
from edgeface.converters.convert import ConversionError, convert
from edgeface.converters.export_config import ExportConfig
from edgeface.converters.formats import AUTO_MIXED, COMPILE, CONVERT, ExportFormat
from edgeface.converters.results import FAILED, FAILED_VERIFICATION, OK, FormatResult
from edgeface.converters.verify import check_cosine
from edgeface.errors import UserError
from edgeface.runtime.facemodel import FaceModelSpec
from edgeface.runtime.tflite_graph import Graph, read_graph


class Pairs:
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
class StepContext:
    """What every step reads: the batch-1 model, the faces, the Keras reference, the bundle's work folder.

    ``reports`` collects the steps' reports (``"edgetpu"``: static check and compiler; ``"mixed"``: the
    --auto-mixed search); ``note`` shows a step's progress inside the current export step.
    """

    cfg: ExportConfig
    model1: Any
    calib: np.ndarray
    verify: np.ndarray
    spec: FaceModelSpec
    reference: np.ndarray
    work: Path
    stem: str
    pairs: Optional[Pairs]
    float_accuracy: Optional[float]
    note: Callable[[str], None] = lambda desc: None
    reports: dict[str, dict] = field(default_factory=dict)


@dataclass
class Made:
    """What one step added: summary rows, and manifest entries for the files that stay in the bundle."""

    rows: list[FormatResult] = field(default_factory=list)
    entries: list[dict] = field(default_factory=list)


def judge(ctx: StepContext, path: Path, fmt: ExportFormat, result: FormatResult) -> None:
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


def reason(exc: Exception) -> str:
    """One line for an unexpected exception in a format's row (its type and first line)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def fail_row(ctx: StepContext, r: FormatResult, error: str) -> None:
    """Mark a row failed after its file was written: the file leaves the bundle, as a failed format's does."""
    if r.file:
        (ctx.work / r.file).unlink(missing_ok=True)
    r.status, r.error, r.file = FAILED, error, None


def entry(ctx: StepContext, r: FormatResult, graph: Graph, **extra: Any) -> dict:
    """The manifest entry of a row judged against Keras (its cosine and accuracy figures)."""
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


# --- convert: a row of --formats, from the Keras model ---------------------------------


def convert_step(ctx: StepContext, fmt: ExportFormat, source: Optional[FormatResult]) -> Made:
    """Convert, write and judge one asked-for format; an edgetpu row also gets the static Edge TPU check."""
    r, graph = _export_one(ctx, fmt)
    if r.file is None or graph is None:
        return Made([r])
    extra: dict[str, Any] = {}
    if fmt.edgetpu:
        try:
            extra["edgetpu"] = _edgetpu_static_check(ctx, r, graph)
        except Exception as exc:  # like a failing format: this row fails, the others are kept
            fail_row(ctx, r, f"Edge TPU check failed: {reason(exc)}")
            return Made([r])
    return Made([r], [entry(ctx, r, graph, **extra)])


def _export_one(ctx: StepContext, fmt: ExportFormat) -> tuple[FormatResult, Optional[Graph]]:
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
        judge(ctx, path, fmt, result)
    except (ConversionError, UserError) as exc:
        result.status, result.error = FAILED, str(exc)
        result.seconds = time.perf_counter() - t0
    except Exception as exc:  # one failing format never stops the others: report it and go on
        result.status, result.error = FAILED, reason(exc)
        result.seconds = time.perf_counter() - t0
    return result, graph


def _edgetpu_static_check(ctx: StepContext, r: FormatResult, graph: Graph) -> dict:
    """Static Edge TPU check of the edgetpu file; its manifest fields are returned, the report kept."""
    static = tpu.check_compatibility(graph)
    ctx.reports["edgetpu"] = {"static": static.to_dict(), "compiler": None}
    if not static.fully_mapped and r.status == OK:
        r.notes.append(f"{static.cpu_ops} op(s) would run on the CPU: {static.problems[0] if static.problems else ''}")
    return {k: ctx.reports["edgetpu"]["static"][k] for k in ("tpu_ops", "cpu_ops", "fully_mapped")}


# --- auto_mixed: int8_mixed, from the int8 file ----------------------------------------


def auto_mixed_step(ctx: StepContext, fmt: ExportFormat, int8: FormatResult) -> Made:
    """With --auto-mixed, search the float layers that bring a failed int8 within budget (an int8_mixed row)."""
    if not getattr(ctx.cfg, fmt.enabled_by):
        if int8.status == FAILED_VERIFICATION:
            # Usually a few layers with outlier channels (one int8 scale per activation tensor): the
            # search keeps exactly those in float, so say so rather than leave a bare failure.
            int8.notes.append("re-run with --auto-mixed to keep the layers that break the budget in float "
                              "(an int8_mixed file)")
        return Made()
    if int8.status != FAILED_VERIFICATION:
        ctx.reports["mixed"] = {"met_budget": int8.status == OK, "float_layers": [],
                                "message": "int8 already meets the budget: no layer needs float"}
        return Made()
    try:
        mr, mixed, mgraph = _run_auto_mixed(ctx, fmt, int8, ctx.note)
    except Exception as exc:  # like a failing format: an int8_mixed row says why
        mr = FormatResult(fmt.name, file=fmt.filename(ctx.stem))
        fail_row(ctx, mr, f"--auto-mixed failed: {reason(exc)}")
        ctx.reports["mixed"] = {"met_budget": False, "float_layers": [],
                                "message": f"the search failed ({reason(exc)}); int8 is kept as it is"}
        return Made([mr])
    ctx.reports["mixed"] = mixed_info = mixed.to_dict()
    if mgraph is None:
        return Made([mr])
    return Made([mr], [entry(ctx, mr, mgraph, mixed={k: mixed_info[k] for k in (
        "met_budget", "float_layers", "float_tensors", "cost", "message")})])


def _run_auto_mixed(ctx: StepContext, fmt: ExportFormat, int8: FormatResult, progress: Callable[[str], None]
                    ) -> tuple[FormatResult, Any, Optional[Graph]]:
    """Search the fewest float layers that bring int8 within the budget; the chosen file is written."""
    from edgeface.converters.latency import measure_latency
    from edgeface.converters.mixed import LayerDebugger, search_float_layers

    result = FormatResult(fmt.name)
    t0 = time.perf_counter()
    dbg = LayerDebugger(ctx.model1, ctx.calib, ctx.verify[: min(len(ctx.verify), 32)], per_tensor=ctx.cfg.per_tensor)
    ranking = dbg.rank()
    path = ctx.work / fmt.filename(ctx.stem)

    def judge_trial(data: bytes) -> tuple[bool, float, dict]:
        path.write_bytes(data)
        trial = FormatResult(fmt.name)
        judge(ctx, path, fmt, trial)
        score = trial.accuracy if trial.accuracy is not None else trial.cosine.cosine_min
        return trial.status == OK, float(score), {"cosine_min": trial.cosine.cosine_min,
                                                  "accuracy": trial.accuracy}

    mixed = search_float_layers(ranking, dbg.quantize, judge_trial, progress=progress)
    if mixed.data is None:
        path.unlink(missing_ok=True)
        result.error = mixed.message
        return result, mixed, None
    path.write_bytes(mixed.data)
    graph = read_graph(mixed.data)
    result.file, result.size_bytes, result.ops = path.name, len(mixed.data), graph.op_counts()
    judge(ctx, path, fmt, result)
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


# --- compile: edgetpu_compiled, from the edgetpu file ----------------------------------


def compile_step(ctx: StepContext, fmt: ExportFormat, edgetpu: FormatResult) -> Made:
    """Run edgetpu_compiler on the edgetpu file when it is installed (and --compile is on)."""
    info = ctx.reports["edgetpu"]  # the static check of the edgetpu row ran first
    if not getattr(ctx.cfg, fmt.enabled_by):
        info["compiler_hint"] = "compilation skipped"
        return Made()
    t0 = time.perf_counter()
    try:
        compiler = tpu.find_compiler()
        if compiler is None:
            info["compiler_hint"] = tpu.COMPILER_INSTALL_HINT
            return Made()
        return _compile_edgetpu(ctx, fmt, edgetpu, compiler, info, t0)
    except Exception as exc:  # a crash here fails the compiled row only: the verified edgetpu file stays
        cr = FormatResult(fmt.name, seconds=time.perf_counter() - t0, file=fmt.filename(ctx.stem))
        fail_row(ctx, cr, f"{tpu.COMPILER} step failed: {reason(exc)}")
        info["compiler"] = {"error": cr.error}
        return Made([cr])


def _compile_edgetpu(ctx: StepContext, fmt: ExportFormat, r: FormatResult, compiler: str, info: dict,
                     t0: float) -> Made:
    comp = tpu.run_compiler(ctx.work / r.file, ctx.work, compiler)
    cr = FormatResult(fmt.name, seconds=time.perf_counter() - t0)
    if comp.path is None:
        cr.error = comp.error
        info["compiler"] = {"error": comp.error}
        return Made([cr])
    info["compiler"] = comp.report.to_dict()
    cg = read_graph(comp.path)
    cr.file, cr.size_bytes, cr.ops = comp.path.name, comp.path.stat().st_size, cg.op_counts()
    cr.status = OK if comp.report.cpu_ops == 0 else FAILED_VERIFICATION
    cr.notes.append("needs an Edge TPU to run; verified through the compiler's report, not executed here")
    if comp.report.cpu_ops:
        cr.notes.append(f"{comp.report.cpu_ops} op(s) left on the CPU")
    compiled = mf.file_entry(fmt.name, comp.path, ctx.work, cg, verified=cr.status == OK,
                             edgetpu={"tpu_ops": comp.report.tpu_ops, "cpu_ops": comp.report.cpu_ops,
                                      "compiler_version": comp.report.compiler_version})
    return Made([cr], [compiled])


@dataclass(frozen=True)
class Step:
    """One kind of step: the function that runs it and the progress line it starts with ("" for none)."""

    run: Callable[..., Made]  # (ctx, row, source row or None) -> Made
    progress: str = ""


# The format table's ``step`` column names one of these.
STEPS: dict[str, Step] = {
    CONVERT: Step(convert_step),
    AUTO_MIXED: Step(auto_mixed_step, "searching layers to keep in float (--auto-mixed)"),
    COMPILE: Step(compile_step),
}
