"""Memory and time of a training step with and without recomputed activations (``train --remat``).

    python tests/benchmarks/remat_bench.py [--arch mobilefacenet] [--batch-size 64] [--steps 12] [--classes 1000]
        [--json]

Each variant runs in a fresh process: the training model `edgeface train` builds (augmentation, the network,
an ArcFace head over ``--classes`` classes, SGD), fitted on random pixels held in memory (no input pipeline),
for ``--steps`` steps.  Printed: RSS after the model is built, peak RSS (VmHWM) over the steps, their
difference (what the steps hold), and the median seconds per step after the first two (tracing).  The host and
its load are printed: RSS is exact, times are wall-clock on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(arch: str, batch: int, steps: int, classes: int, remat: bool) -> dict:
    import keras
    import numpy as np

    from edgeface.train.heads import build_loss, get_head_spec, resolve_margins
    from edgeface.train.models import get_model
    from edgeface.train.trainer import TrainConfig, build_training_model

    cfg = TrainConfig(data=Path("."), out=Path("."), arch=arch, batch_size=batch, remat=remat, head="arcface")
    spec = get_head_spec(cfg.head)
    keras.utils.set_random_seed(0)
    model = build_training_model(get_model(arch), classes, cfg)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=build_loss(spec, resolve_margins(spec, None, None, None), False), jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch * steps, 112, 112, 3)).astype(np.float32)
    y = rng.integers(0, classes, batch * steps).astype(np.int32)
    built = _status("VmRSS")
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=[Timer()])
    peak = _status("VmHWM")
    return {"remat": remat, "rss_built_mb": round(built, 1), "peak_rss_mb": round(peak, 1),
            "steps_hold_mb": round(peak - built, 1), "seconds_per_step": round(statistics.median(times[2:]), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="mobilefacenet")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--_remat", choices=("0", "1"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._remat is not None:
        print("RESULT " + json.dumps(measure(args.arch, args.batch_size, max(3, args.steps), args.classes,
                                             args._remat == "1")), flush=True)
        return
    report = {"host": os.uname().nodename, "cores": os.cpu_count(), "load_average": os.getloadavg(),
              "arch": args.arch, "batch_size": args.batch_size, "variants": []}
    for remat in ("0", "1"):
        cmd = [sys.executable, __file__, "--arch", args.arch, "--batch-size", str(args.batch_size), "--steps",
               str(args.steps), "--classes", str(args.classes), "--_remat", remat]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"the remat={remat} run failed:\n{proc.stderr[-3000:]}")
        report["variants"].append(json.loads(line[7:]))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['arch']}, batch {report['batch_size']}, {report['cores']} cores, load {report['load_average']}")
    print(f"{'activations':<12} {'RSS built MB':>12} {'peak RSS MB':>12} {'steps hold MB':>14} {'s/step':>8}")
    for v in report["variants"]:
        print(f"{'recomputed' if v['remat'] else 'kept':<12} {v['rss_built_mb']:>12} {v['peak_rss_mb']:>12} "
              f"{v['steps_hold_mb']:>14} {v['seconds_per_step']:>8}")


if __name__ == "__main__":
    main()
