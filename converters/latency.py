"""A small latency probe for exported files (the full benchmark is ``edgeface benchmark``).

Used by ``--auto-mixed`` to report what keeping layers in float costs, and by
hand for the README figures::

    python -m edgeface.converters.latency BUNDLE_DIR --threads 1,2 --runs 200

Warm-up runs first, then ``time.perf_counter`` around each ``invoke`` on a fixed
random input; mean, median (p50) and p90 in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np


def measure_latency(path: str | os.PathLike, threads: Optional[int] = None, warmup: int = 10, runs: int = 50,
                    backend: Optional[str] = None) -> dict:
    """Per-inference latency of a TFLite file on this CPU (XNNPACK, as the runtime runs it)."""
    from edgeface.runtime.interpreter import TFLiteModel, quantize

    model = TFLiteModel(path, threads=threads, backend=backend)
    interp = model.interpreter
    rng = np.random.default_rng(0)
    for info in model.inputs:
        x = rng.uniform(0, 255, info.shape).astype(np.float32)
        if info.quantized:
            x = quantize(x, info.scale, info.zero_point, info.dtype)
        interp.set_tensor(info.index, x.astype(info.dtype, copy=False))
    for _ in range(warmup):
        interp.invoke()
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times[i] = time.perf_counter() - t0
    ms = times * 1000.0
    return {"threads": threads, "runs": runs, "mean_ms": round(float(ms.mean()), 3),
            "p50_ms": round(float(np.median(ms)), 3), "p90_ms": round(float(np.percentile(ms, 90)), 3),
            "min_ms": round(float(ms.min()), 3), "backend": model.backend.name}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Latency of the .tflite files of a bundle (or single files).")
    parser.add_argument("paths", nargs="+", help="bundle folders or .tflite files")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    files: list[tuple[str, Path]] = []
    for p in map(Path, args.paths):
        if p.is_dir():
            from edgeface.runtime.bundle import EDGETPU_FORMAT, Bundle

            b = Bundle.load(p)
            files += [(f["format"], b.root / f["path"]) for f in b.files if f["format"] != EDGETPU_FORMAT]
        else:
            files.append((p.stem, p))
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    print(f"{'format':<12} {'MB':>6} " + " ".join(f"{f'{t}T mean':>9} {f'{t}T p50':>8}" for t in threads))
    for fmt, path in files:
        cells = []
        for t in threads:
            r = measure_latency(path, threads=t, warmup=args.warmup, runs=args.runs)
            cells.append(f"{r['mean_ms']:>9.2f} {r['p50_ms']:>8.2f}")
        print(f"{fmt:<12} {path.stat().st_size / 1e6:>6.2f} " + " ".join(cells))


if __name__ == "__main__":
    main()
