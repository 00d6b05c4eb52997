"""``edgeface benchmark``: latency, FPS and memory of TFLite files and bundles, here or on a board over SSH.

For every model file and thread count, a fresh process (:mod:`edgeface.devices.bench_worker`) loads the
model and times it, so peak RSS is that model's alone and one model's caches do not warm the next.  The
report carries the machine's identity (model, CPU, cores, governor, temperature, throttling) and warns
about conditions that make latencies unreliable.  ``--target`` runs the same command with the board's
flashed runtime and brings its JSON back.  Results are compared with the board profile's reference
table (or a ``--reference`` CSV of an earlier run) and flagged outside the tolerance.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from edgeface.cpus import usable_cpus
from edgeface.errors import UserError
from edgeface.fileio import atomic_write_bytes
from edgeface.runtime.bundle import EDGETPU_FORMAT

SCHEMA = "edgeface-benchmark/1"
# Columns of --csv, in order (also what --reference reads back: model, format, threads, p50_ms).
CSV_COLUMNS = ("board", "model", "format", "file", "size_mb", "threads", "backend", "delegate", "init_ms",
               "first_ms", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "fps",
               "peak_rss_mb", "accuracy", "reference_p50_ms", "vs_reference", "flag")
WORKER_TIMEOUT_S = 1800


@dataclass
class BenchmarkConfig:
    """What to measure and how (the CLI flags of ``edgeface benchmark``)."""

    models: list[Path]
    threads: Optional[list[int]] = None  # None: 1 and every core of the machine measured
    warmup: int = 10
    runs: int = 100
    delegate: Optional[str] = None
    backend: Optional[str] = None
    formats: Optional[list[str]] = None
    pairs: Optional[Path] = None
    images: Optional[Path] = None
    video: Optional[Path] = None
    video_frames: Optional[int] = None
    gallery: Optional[Path] = None
    detector: str = "auto"  # the --video pipeline's and raw --images' (= edgeface.runtime.detector.DEFAULT_DETECTOR)
    profile: Optional[str] = None
    reference: Optional[Path] = None
    tolerance: float = 0.15
    # --reference parsed by load_reference() before anything is measured (a bad file costs no run).
    reference_table: Optional[dict] = field(default=None, repr=False)


@dataclass(frozen=True)
class ModelSpec:
    """One TFLite file to measure."""

    path: Path
    model: str  # the manifest's model name, else the file stem
    format: str  # bundle format, else "tflite"
    bundle: Optional[Path] = None  # the bundle folder it came from

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6


def parse_threads(text: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4]; one clear line for anything else."""
    try:
        values = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise UserError(f"--threads {text!r}: expected numbers separated by commas, like 1,2,4") from None
    if not values or any(v < 1 for v in values):
        raise UserError(f"--threads {text!r}: thread counts must be 1 or more")
    return list(dict.fromkeys(values))


def default_threads() -> list[int]:
    """One thread and all of them: the two settings that bound what a board can do."""
    return sorted({1, usable_cpus()})


def expand_models(paths: list[Path], formats: Optional[list[str]] = None, delegate: Optional[str] = None
                  ) -> list[ModelSpec]:
    """TFLite files and bundle folders -> the files to measure (a bundle gives one per format).

    Edge TPU-compiled files run only with ``--delegate edgetpu`` (they hold a custom op the CPU cannot run),
    and with it only they are measured.
    """
    from edgeface.runtime.bundle import MANIFEST_NAME, Bundle, resolve_model

    specs: list[ModelSpec] = []
    for raw in paths:
        path = resolve_model(raw)  # a shipped model's name ("default", "mobilefacenet") is its folder
        if path.is_dir() or path.name == MANIFEST_NAME:
            bundle = Bundle.load(path)
            name = str(bundle.manifest.get("model", {}).get("name") or bundle.root.name)
            for entry in bundle.files:
                fmt = entry["format"]
                if formats and fmt not in formats:
                    continue
                if (fmt == EDGETPU_FORMAT) != (delegate == "edgetpu"):
                    continue
                specs.append(ModelSpec(bundle.model_path(fmt), name, fmt, bundle.root))
        elif path.is_file():
            if path.suffix.lower() != ".tflite":
                raise UserError(f"{path} is not a .tflite file or a bundle folder (from `edgeface export`)")
            fmt, name = "tflite", path.stem
            manifest = path.parent / MANIFEST_NAME
            if manifest.is_file():  # a file inside a bundle: name it as the bundle does
                bundle = Bundle.load(path.parent)
                for entry in bundle.files:
                    if entry["path"] == path.name:
                        fmt = entry["format"]
                        name = str(bundle.manifest.get("model", {}).get("name") or name)
            if formats and fmt not in formats:
                continue
            specs.append(ModelSpec(path, name, fmt, None))
        else:
            raise UserError(f"model not found: {path} (give .tflite files, bundle folders or shipped model names)")
    if not specs:
        wanted = f" in format {', '.join(formats)}" if formats else ""
        raise UserError(f"nothing to benchmark{wanted}: the bundles hold no matching model files"
                        + (" (--delegate edgetpu needs an edgetpu_compiled file)" if delegate == "edgetpu" else ""))
    return specs


def run_worker(job: dict, timeout: float = WORKER_TIMEOUT_S) -> dict:
    """Run one job in a fresh Python process; its JSON result (a worker's user error becomes ours)."""
    cmd = [sys.executable, "-m", "edgeface.devices.bench_worker", json.dumps(job)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise UserError(f"benchmarking {job.get('path') or job.get('video')} took longer than {timeout} s") from None
    out = _last_json_object(proc.stdout)
    if out is None:
        tail = " | ".join(ln for ln in proc.stderr.strip().splitlines()[-2:])
        raise UserError(f"the benchmark process failed (exit {proc.returncode}): {tail or 'no output'}")
    if "error" in out:
        raise UserError(out["error"])
    return out


def _last_json_object(stdout: str) -> Optional[dict]:
    """The worker's result: its last stdout line that is a JSON object.  A library may print lines that
    start with ``{`` too, and a killed worker a truncated one; neither is the result."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                out = json.loads(line)
            except ValueError:
                continue
            if isinstance(out, dict):
                return out
    return None


# --- board identity and warnings ---------------------------------------------------------------


def board_warnings(ident: dict) -> list[str]:
    """Conditions that make latencies untrustworthy, each as one line."""
    warnings = []
    gov = ident.get("governor")
    if gov and gov != "performance":
        warnings.append(f"CPU governor is {gov!r}, not 'performance': frequency scaling adds variance; for stable "
                        "figures run `echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/"
                        "scaling_governor`")
    throttled = ident.get("throttled")
    if throttled and throttled not in ("0x0", "0"):
        warnings.append(f"the board reports throttling (vcgencmd get_throttled = {throttled}): under-voltage or "
                        "heat slowed it; use a proper power supply and cooling")
    temp = ident.get("temperature_c")
    if temp is not None and temp >= 80:
        warnings.append(f"the SoC is at {temp:.0f} °C: near the throttling point (85 °C on a Pi), add cooling")
    return warnings


def board_profile(ident: dict, name: Optional[str]):
    """The profile to compare with: ``name``, else detected from the identity (None if undetectable)."""
    from edgeface.devices.profiles import detect_profile, get_profile

    if name:
        return get_profile(name), "given"
    try:
        det = detect_profile(ident.get("model") if ident.get("model_from_device_tree") else None,
                             ident.get("machine", ""), ident.get("usb_ids", []))
    except UserError:
        return None, "no profile for this architecture"
    return det.profile, f"detected: {det.reason}"


# --- reference comparison ----------------------------------------------------------------------


def read_reference_csv(path: Path) -> dict[tuple[str, str, int], float]:
    """(model, format, threads) -> p50 ms from a CSV written by ``edgeface benchmark --csv``."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"cannot read the reference file {path}: {exc.strerror}") from None
    reader = csv.DictReader(io.StringIO(text))
    needed = {"model", "format", "threads", "p50_ms"}
    if not reader.fieldnames or not needed <= set(reader.fieldnames):
        raise UserError(f"{path} is not a benchmark CSV: it needs the columns {', '.join(sorted(needed))} "
                        "(write one with `edgeface benchmark ... --csv FILE`)")
    table = {}
    for i, row in enumerate(reader, start=2):
        try:
            table[(row["model"], row["format"], int(row["threads"]))] = float(row["p50_ms"])
        except (TypeError, ValueError):
            raise UserError(f"{path}:{i}: threads and p50_ms must be numbers") from None
    return table


def apply_reference(report: dict, profile_name: Optional[str], csv_table: Optional[dict], tolerance: float) -> None:
    """Add reference_p50_ms / vs_reference / flag to each result (CSV first, else the profile's table)."""
    from edgeface.devices.profiles import compare_latency, get_profile

    profile = get_profile(profile_name) if profile_name else None
    for row in report["results"]:
        key = (row["model"], row["format"], int(row["threads"]))
        ref = (csv_table or {}).get(key)
        if ref is None and profile is not None:
            ref = profile.reference_ms(*key)
        flag, change = compare_latency(row["p50_ms"], ref, tolerance)
        row["reference_p50_ms"] = ref
        row["vs_reference"] = change
        row["flag"] = flag


# --- the local benchmark ---------------------------------------------------------------------


Progress = Optional[Callable[[int, int], None]]


def run_benchmark(cfg: BenchmarkConfig, progress: Progress = None,
                  accuracy: Optional[Callable[[Path, int], float]] = None) -> dict:
    """Measure every model file x thread count here; the report as a dict (see :data:`SCHEMA`).

    ``accuracy(file, threads)``, when given, adds each file's verification accuracy to its rows (the CLI passes
    :class:`edgeface.evaluate.verification.FileAccuracy` for ``--pairs``: measuring accuracy is evaluate's job,
    so the devices layer takes it as a function instead of importing the workstation package).
    """
    from edgeface import __version__
    from edgeface.devices import probe

    if cfg.runs < 1 or cfg.warmup < 0:
        raise UserError("--runs must be at least 1 and --warmup 0 or more")
    from edgeface.runtime.detector import check_detector_kind

    check_detector_kind(cfg.detector)
    load_reference(cfg)
    thread_counts = cfg.threads or default_threads()
    specs = expand_models(cfg.models, cfg.formats, cfg.delegate)
    video_specs = [s for s in specs if s.bundle is not None] if cfg.video else []
    if cfg.video:
        if not Path(cfg.video).is_file():
            raise UserError(f"video file not found: {cfg.video}")
        if not video_specs:
            raise UserError("--video runs the whole pipeline, which needs a bundle folder (detector + model), "
                            "not a lone .tflite file")
        from edgeface.runtime.capture import parse_source

        kind = parse_source(str(cfg.video)).kind
        if kind != "video":  # found now, not after every latency run
            raise UserError(f"--video {cfg.video}: not a video file (got a {kind} source)")
    ident = probe.identity()
    total = (len(specs) + len(video_specs)) * len(thread_counts) + (len(specs) if accuracy else 0)
    done = 0
    results = []
    for spec in specs:
        for threads in thread_counts:
            out = run_worker({"mode": "model", "path": str(spec.path), "threads": threads, "warmup": cfg.warmup,
                              "runs": cfg.runs, "backend": cfg.backend, "delegate": cfg.delegate})
            results.append({"board": ident.get("hostname"), "model": spec.model, "format": spec.format,
                            "file": str(spec.path), "size_mb": spec.size_mb, "threads": threads, **out})
            done += 1
            if progress:
                progress(done, total)
    if accuracy:
        measured = {}
        for spec in specs:
            measured[str(spec.path)] = accuracy(spec.path, max(thread_counts))
            done += 1
            if progress:
                progress(done, total)
        for row in results:
            row["accuracy"] = measured.get(row["file"])
    videos = []
    for spec in video_specs:
        for threads in thread_counts:
            out = run_worker({"mode": "video", "bundle": str(spec.bundle), "format": spec.format,
                              "video": str(cfg.video), "threads": threads, "backend": cfg.backend,
                              "delegate": cfg.delegate, "max_frames": cfg.video_frames,
                              "gallery": str(cfg.gallery) if cfg.gallery else None, "detector": cfg.detector})
            videos.append({"board": ident.get("hostname"), "model": spec.model, "format": spec.format,
                           "threads": threads, "video": Path(cfg.video).name, "detector": cfg.detector, **out})
            done += 1
            if progress:
                progress(done, total)
    profile, how = board_profile(ident, cfg.profile)
    report = {
        "schema": SCHEMA,
        "edgeface_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "board": ident,
        "profile": {"name": profile.name if profile else None, "how": how},
        "settings": {"threads": thread_counts, "warmup": cfg.warmup, "runs": cfg.runs, "delegate": cfg.delegate,
                     "backend": cfg.backend, "pairs": str(cfg.pairs) if cfg.pairs else None,
                     "video": str(cfg.video) if cfg.video else None, "detector": cfg.detector},
        "warnings": board_warnings(ident),
        "results": results,
        "video": videos,
    }
    finish_report(report, cfg)
    return report


def load_reference(cfg: BenchmarkConfig) -> None:
    """Parse ``--reference`` into ``cfg.reference_table`` once; called before measuring, so that a missing or
    malformed CSV fails in a second instead of after every model was timed."""
    if cfg.reference is not None and cfg.reference_table is None:
        cfg.reference_table = read_reference_csv(cfg.reference)


def finish_report(report: dict, cfg: BenchmarkConfig) -> None:
    """Reference comparison (done where the command was typed, so --reference works for remote runs too)."""
    load_reference(cfg)
    profile_name = cfg.profile or (report.get("profile") or {}).get("name")
    apply_reference(report, profile_name, cfg.reference_table, cfg.tolerance)


# --- output ----------------------------------------------------------------------------------


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def result_rows(reports: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Table columns and rows for one or several boards' reports."""
    multi = len(reports) > 1
    has_acc = any(r.get("accuracy") is not None for rep in reports for r in rep["results"])
    has_ref = any(r.get("reference_p50_ms") is not None for rep in reports for r in rep["results"])
    cols = (["board"] if multi else []) + ["model", "format", "size MB", "threads", "init ms", "first ms", "mean ms",
                                           "std", "p50", "p90", "p99", "FPS", "peak RSS MB"]
    cols += ["accuracy"] if has_acc else []
    cols += ["vs ref"] if has_ref else []
    rows = []
    for rep in reports:
        for r in rep["results"]:
            row = ([rep.get("label") or rep["board"].get("hostname")] if multi else []) + [
                r["model"], r["format"], _fmt(r["size_mb"]), str(r["threads"]), _fmt(r["init_ms"], 1),
                _fmt(r["first_ms"], 1), _fmt(r["mean_ms"]), _fmt(r["std_ms"]), _fmt(r["p50_ms"]),
                _fmt(r["p90_ms"]), _fmt(r["p99_ms"]), _fmt(r["fps"], 1), _fmt(r.get("peak_rss_mb"), 0)]
            if has_acc:
                row.append(_fmt(r.get("accuracy"), 4))
            if has_ref:
                change = r.get("vs_reference")
                row.append("-" if change is None else f"{change:+.0%} {r['flag']}")
            rows.append(row)
    return cols, rows


def video_rows(reports: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Table columns and rows of the --video pipeline runs (median ms per stage)."""
    from edgeface.runtime.results import STAGES

    multi = len(reports) > 1
    cols = (["board"] if multi else []) + ["model", "format", "detector", "threads", "frames", "faces"] + \
        [f"{s} ms" for s in STAGES] + ["frame ms", "FPS", "peak RSS MB"]
    rows = []
    for rep in reports:
        for v in rep.get("video", []):
            med = v.get("median_ms", {})
            rows.append(([rep.get("label") or rep["board"].get("hostname")] if multi else []) + [
                v["model"], v["format"], v.get("detector", "-"), str(v["threads"]), str(v["frames"]), str(v["faces"])]
                + [_fmt(med.get(s)) for s in STAGES] + [_fmt(v.get("median_frame_ms")), _fmt(v.get("fps"), 1),
                                                        _fmt(v.get("peak_rss_mb"), 0)])
    return cols, rows


def board_line(report: dict) -> str:
    """One line naming the machine measured."""
    b = report["board"]
    parts = [b.get("model") or b.get("machine"), f"{b.get('cpu')} x{b.get('cores')}", b.get("machine"),
             f"governor {b.get('governor') or 'n/a'}"]
    if b.get("temperature_c") is not None:
        parts.append(f"{b['temperature_c']:.0f} °C")
    if b.get("throttled") is not None:
        parts.append(f"throttled={b['throttled']}")
    parts.append(f"Python {b.get('python')}")
    prof = report.get("profile") or {}
    parts.append(f"profile {prof.get('name') or 'none'}")
    return ", ".join(str(p) for p in parts if p)


def write_csv(reports: list[dict], path: Path) -> None:
    """All results of all boards as CSV (written to a temp file, then renamed)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for rep in reports:
        for r in rep["results"]:
            writer.writerow({**r, "board": rep.get("label") or rep["board"].get("hostname")})
    atomic_write_bytes(path, buf.getvalue().encode())


def check_plot_support() -> None:
    """Fail before measuring anything if --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("--plot needs matplotlib, which is not installed here: `pip install matplotlib` "
                        "(or the workstation extra: pip install 'edgeface[train]')") from None


def write_plot(reports: list[dict], path: Path) -> None:
    """Bar chart of median latency per model/format, one bar per thread count (and board), p90 as whisker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups: list[str] = []
    series: dict[str, dict[str, tuple[float, float]]] = {}
    multi = len(reports) > 1
    for rep in reports:
        label = rep.get("label") or rep["board"].get("hostname")
        for r in rep["results"]:
            g = f"{r['model']}\n{r['format']}"
            if g not in groups:
                groups.append(g)
            s = (f"{label} " if multi else "") + f"{r['threads']} thr"
            series.setdefault(s, {})[g] = (r["p50_ms"], r["p90_ms"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups) + 2), 4.5))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        p50 = [values.get(g, (np.nan, np.nan))[0] for g in groups]
        p90 = [values.get(g, (np.nan, np.nan))[1] for g in groups]
        err = [max(0.0, b - a) if a == a and b == b else 0.0 for a, b in zip(p50, p90)]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, p50, width, yerr=[[0] * len(err), err], capsize=3,
                      label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_ylabel("latency per inference, ms (median; whisker: p90)")
    title = "edgeface benchmark: " + (", ".join(sorted({board_line(r).split(',')[0] for r in reports})))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
