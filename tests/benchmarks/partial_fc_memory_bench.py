"""Memory of the margin head at 100 k and 1 M identities, full and partial FC (``--sample-rate``), issue 23.

    python tests/benchmarks/partial_fc_memory_bench.py [--classes 100000,1000000] [--rates 1.0,0.1]
        [--steps 6] [--batch-size 64] [--embedding-dim 128] [--arch mobilefacenet] [--json]

Each (classes, rate) runs in a fresh process: the trainer's own training model (augmentation, MobileFaceNet at
112x112, the ArcFace head: :func:`edgeface.train.trainer.build_training_model`), optimizer
(:func:`~edgeface.train.trainer.build_optimizer`: SGD, momentum 0.9, weight decay 5e-4; row-sparse for a sampled
head), loss and metrics, compiled as ``train`` compiles them, trains ``--steps`` steps of ``--batch-size`` random
112x112 images with labels drawn uniformly over the classes (the pixels do not change the memory).  Printed per row:

* what the head holds, computed: class weights C x D float32, their SGD momentum (the same again), and the logits
  of one step (B x K float32, K the classes of a step: all of them, or the sample);
* measured: resident set size (RSS) after TensorFlow and the model are set up (before the first step), the peak
  RSS over the steps (VmHWM), and the median seconds of the steps after the first (tracing).

The host and its load are printed; RSS is exact, times are wall-clock on a possibly shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(classes: int, rate: float, steps: int, batch: int, dim: int, arch: str) -> dict:
    import keras
    import numpy as np

    from edgeface.train.heads import build_loss, build_metrics, get_head_spec, is_sampled, resolve_margins
    from edgeface.train.models import get_model
    from edgeface.train.partial_fc import sampled_count, with_label_input
    from edgeface.train.trainer import TrainConfig, build_optimizer, build_training_model

    keras.utils.set_random_seed(0)
    cfg = TrainConfig(data=Path("/nonexistent"), out=Path("/nonexistent"), arch=arch, embedding_dim=dim,
                      head="arcface", sample_rate=rate, batch_size=batch, epochs=1, seed=0)
    spec = get_head_spec(cfg.head)
    sampled = is_sampled(spec, rate)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch * 2, 112, 112, 3), dtype=np.uint8)

    class Random(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)

        def __len__(self):
            return steps

        def __getitem__(self, i):
            x = images[(i % 2) * batch:(i % 2 + 1) * batch].astype(np.float32)
            return x, np.random.default_rng(i).integers(0, classes, batch).astype(np.int32)

    seq = with_label_input(Random()) if sampled else Random()
    backbone = get_model(arch, embedding_dim=dim, input_size=112)
    model = build_training_model(backbone, classes, cfg)
    model.compile(optimizer=build_optimizer(cfg, steps), loss=build_loss(spec, resolve_margins(spec), sampled),
                  metrics=build_metrics(sampled), jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    rss_setup = _status_mb("VmRSS")
    times = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(seq, epochs=1, verbose=0, shuffle=False, callbacks=[Clock()])
    k = sampled_count(classes, rate, batch) if sampled else classes
    mb = 1024 * 1024
    return {"classes": classes, "rate": rate, "sampled_per_step": k, "embedding_dim": dim,
            "head_mb": round(classes * dim * 4 / mb, 1), "momentum_mb": round(classes * dim * 4 / mb, 1),
            "logits_mb": round(batch * k * 4 / mb, 1),
            "rss_setup_mb": round(rss_setup, 1), "peak_rss_mb": round(_status_mb("VmHWM"), 1),
            "step_s": round(sorted(times[1:])[len(times[1:]) // 2], 2) if len(times) > 1 else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", default="100000,1000000")
    ap.add_argument("--rates", default="1.0,0.1")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--embedding-dim", type=int, default=128)
    ap.add_argument("--arch", default="mobilefacenet")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        classes, rate = args._child.split(":")
        print("RESULT " + json.dumps(child(int(classes), float(rate), args.steps, args.batch_size,
                                           args.embedding_dim, args.arch)), flush=True)
        return
    rows = []
    print(f"host {os.uname().nodename}, {os.cpu_count()} cores, load average {os.getloadavg()}", file=sys.stderr)
    for classes in (int(c) for c in args.classes.split(",")):
        for rate in (float(r) for r in args.rates.split(",")):
            cmd = [sys.executable, __file__, "--_child", f"{classes}:{rate}", "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--embedding-dim", str(args.embedding_dim),
                   "--arch", args.arch]
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{classes} classes, rate {rate} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(line[7:]))
            print(rows[-1], file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| classes | sample rate | classes a step | weights MB | SGD momentum MB | logits a step MB | RSS set up MB "
          "| peak RSS MB | s/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['classes']:,} | {r['rate']:g} | {r['sampled_per_step']:,} | {r['head_mb']:,} | "
              f"{r['momentum_mb']:,} | {r['logits_mb']:,} | {r['rss_setup_mb']:,.0f} | {r['peak_rss_mb']:,.0f} | "
              f"{r['step_s']} |")
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
