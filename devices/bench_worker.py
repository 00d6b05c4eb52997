"""One benchmark setting, measured in a process of its own so that peak memory belongs to one model.

    python -m edgeface.devices.bench_worker '{"mode": "model", "path": ..., "threads": 2, ...}'

prints one JSON object on stdout (``{"error": "..."}`` and exit status 2 for a user error).  Imports only
numpy and the runtime: it runs on boards without TensorFlow.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional

import numpy as np

from edgeface.errors import UserError


def _status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> Optional[float]:
    """Peak resident memory of this process (VmHWM; getrusage where /proc is missing), MiB."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
    except (ImportError, OSError):
        return None


def rss_mb() -> Optional[float]:
    """Resident memory now (VmRSS), MiB; None without /proc."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else None


def latency_stats(times_ms: list[float]) -> dict:
    """Mean, std, min, percentiles, max and FPS of per-run latencies (ms); nothing dropped."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timed runs")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    mean = float(t.mean())
    return {
        "runs": int(t.size),
        "mean_ms": mean,
        "std_ms": float(t.std(ddof=1)) if t.size > 1 else 0.0,
        "min_ms": float(t.min()),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "max_ms": float(t.max()),
        "fps": 1000.0 / mean if mean > 0 else 0.0,
    }


def sample_inputs(model, seed: int = 0) -> list[np.ndarray]:
    """One input per tensor in the model's float domain: pixels 0..255 for images, N(0, 1) otherwise.

    Latency does not depend on the values; a fixed seed keeps runs comparable anyway.
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for info in model.inputs:
        shape = tuple(max(1, d) for d in info.shape)
        if len(shape) == 4 and shape[-1] in (1, 3):
            arrays.append(rng.uniform(0, 255, shape).astype(np.float32))
        else:
            arrays.append(rng.standard_normal(shape).astype(np.float32))
    return arrays


def measure_model(path: str, threads: Optional[int], warmup: int, runs: int, backend: Optional[str] = None,
                  delegate: Optional[str] = None) -> dict:
    """Load a TFLite file and time it: init, first inference, then ``runs`` timed runs after ``warmup``.

    A run is what the runtime does per face: quantize the input, invoke, dequantize the output
    (:meth:`TFLiteModel.run`), timed with ``perf_counter``.
    """
    from edgeface.runtime.interpreter import TFLiteModel

    base = rss_mb()
    t0 = time.perf_counter()
    model = TFLiteModel(path, threads=threads, backend=backend, delegate=delegate)
    init_ms = (time.perf_counter() - t0) * 1000
    inputs = sample_inputs(model)
    t0 = time.perf_counter()
    model.run(*inputs)
    first_ms = (time.perf_counter() - t0) * 1000
    for _ in range(max(0, warmup)):
        model.run(*inputs)
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        model.run(*inputs)
        times.append((time.perf_counter() - t0) * 1000)
    out = {"init_ms": init_ms, "first_ms": first_ms, **latency_stats(times), "warmup": warmup,
           "backend": model.backend.name, "delegate": delegate or "cpu",
           "input": {"shape": list(model.input.shape), "dtype": np.dtype(model.input.dtype).name}}
    out["peak_rss_mb"] = peak_rss_mb()
    out["base_rss_mb"] = base
    return out


def measure_video(bundle: str, fmt: Optional[str], video: str, threads: Optional[int], backend: Optional[str],
                  delegate: Optional[str], max_frames: Optional[int], gallery: Optional[str],
                  detector: Optional[str] = None) -> dict:
    """The whole pipeline (capture, detect, align, embed, match) over a video file, per-stage medians."""
    from edgeface.runtime.capture import open_source, parse_source
    from edgeface.runtime.pipeline import run_loop
    from edgeface.runtime.recognizer import load_recognizer
    from edgeface.runtime.settings import RunSettings

    spec = parse_source(video)
    if spec.kind != "video":
        raise UserError(f"--video {video}: not a video file (got a {spec.kind} source)")
    # No detector in the job (an older edgeface sent it): the runtime's default (replace() leaves a None as it is).
    settings = RunSettings(model=bundle, gallery=gallery, format=fmt, threads=threads, backend=backend,
                           delegate=delegate).replace(detector=detector)
    rt = load_recognizer(settings)
    with open_source(spec) as src:
        stats = run_loop(src, rt.recognizer, max_frames=max_frames)
    summary = stats.summary()
    summary.update(model_file=os.path.basename(str(rt.model_path)), people=len(rt.gallery.names()),
                   load_ms=rt.load_ms, backend=rt.recognizer.embedder.model.backend.name)
    summary["peak_rss_mb"] = peak_rss_mb()
    return summary


def main(argv: list[str]) -> int:
    """Run the job given as JSON in argv[1]; print its result as one JSON line."""
    import logging

    logging.getLogger("edgeface").setLevel(logging.ERROR)  # "no gallery" warnings are expected here
    try:
        job = json.loads(argv[1])
        if job["mode"] == "model":
            out = measure_model(job["path"], job.get("threads"), int(job.get("warmup", 10)),
                                int(job.get("runs", 100)), job.get("backend"), job.get("delegate"))
        elif job["mode"] == "video":
            out = measure_video(job["bundle"], job.get("format"), job["video"], job.get("threads"),
                                job.get("backend"), job.get("delegate"), job.get("max_frames"), job.get("gallery"),
                                job.get("detector"))
        else:
            raise UserError(f"unknown benchmark job {job['mode']!r}")
    except UserError as exc:
        sys.stdout.write(json.dumps({"error": str(exc)}) + "\n")
        return 2
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
