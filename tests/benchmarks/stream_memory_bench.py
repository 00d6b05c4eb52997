"""Memory of streaming training on a large pack (issue 23): a synthetic InsightFace pack of 1 M records.

    python tests/benchmarks/stream_memory_bench.py --crops DIR [--records 1000000] [--identities 100000]
        [--work /tmp/edgeface_stream_mem] [--steps 150] [--arch mobilefacenet] [--batch-size 64]
        [--pipeline-records 0] [--sample-rate 1.0] [--remat] [--resume-step 5000] [--phases pipeline,train] [--json]

The pack (written once to WORK, never inside the repository: ~5 KB a record) repeats the crops of DIR (e.g. the
stream benchmark's LFW crops), each encoded once as JPEG at quality 95, under new labels: record i has label
i * identities // records (10 photos a person for 1 M records and 100 k people), in InsightFace's layout
(identity records, the header at key 0, `property`).  Then, each in a fresh process:

* pipeline: index the pack, then stream one whole epoch through the tf.data pipeline (no model), sampling the
  resident set size (RSS) every 10 k images: is it flat over the epoch?  ``--pipeline-records N`` stops after N.
* resume (only when asked: ``--phases resume``): time to the first batch of the stream resumed at step
  ``--resume-step`` of epoch 0, started there vs the batches before it dropped inside the pipeline.
* train: `edgeface train PACK` (the real command's code, ArcFace head over all the identities, SGD) for
  ``--steps`` steps of the first epoch (Keras' max_steps_per_epoch), sampling RSS twice a second: peak, RSS
  over the steps, and the time to the first batch (from the start of `train`, indexing included).

The host and its load are printed: RSS is exact, times are wall-clock on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_pack(crops: Path, out: Path, records: int, identities: int) -> None:
    """The synthetic pack (skipped when OUT already holds one of this size)."""
    import cv2
    import numpy as np

    from edgeface.data.dataset import scan_identity_folder
    from edgeface.data.recordio import IRHeader, RecordWriter, pack_payload

    if (out / "property").is_file() and (out / "property").read_text().startswith(f"{identities},") \
            and sum(1 for _ in open(out / "train.idx")) == records + identities + 1:
        return
    jpegs = []
    for _, path in scan_identity_folder(crops):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        jpegs.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    label_of = (np.arange(records, dtype=np.int64) * identities // records).astype(np.int64)
    with RecordWriter(out / "train.rec") as w:
        for i in range(records):
            w.write(i + 1, pack_payload(IRHeader(0, float(label_of[i]), i + 1), jpegs[i % len(jpegs)]))
        first = records + 1
        starts = np.searchsorted(label_of, np.arange(identities + 1)) + 1
        for c in range(identities):
            w.write(first + c, pack_payload(IRHeader(2, (float(starts[c]), float(starts[c + 1])), first + c)))
        w.write(0, pack_payload(IRHeader(2, (float(first), float(first + identities)), 0, 1)))
    (out / "property").write_text(f"{identities},112,112\n")
    print(f"wrote {records} records ({w.bytes / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def phase_pipeline(pack: Path, batch: int, limit: int) -> dict:
    from edgeface.data.records import open_records
    from edgeface.train.stream import StreamInput

    base = rss_mb()
    t0 = time.perf_counter()
    crops = open_records(pack)
    index_s = time.perf_counter() - t0
    after_index = rss_mb()
    stream = StreamInput(crops, batch, input_size=112, seed=0)
    samples, seen, t1, first = [], 0, time.perf_counter(), None
    for x, _ in stream.dataset.as_numpy_iterator():
        if first is None:
            first = time.perf_counter() - t0
        seen += len(x)
        if seen // 10_000 != (seen - len(x)) // 10_000:
            samples.append((seen, round(rss_mb(), 1)))
        if limit and seen >= limit:
            break
    seconds = time.perf_counter() - t1
    tail = [r for n, r in samples if n >= 0.05 * seen] or [r for _, r in samples]
    return {"records": len(crops), "index_seconds": round(index_s, 2), "rss_before_mb": round(base, 1),
            "rss_after_index_mb": round(after_index, 1), "first_batch_seconds": round(first, 2),
            "images_streamed": seen, "img_per_s": round(seen / seconds, 1),
            "rss_over_epoch_min_max_mb": [min(tail), max(tail)], "rss_samples": samples, "peak_rss_mb": peak_mb()}


def phase_resume(pack: Path, batch: int, step: int) -> dict:
    """Time to the first batch of a stream resumed at ``step`` of epoch 0: started there (what a resume does) vs
    the whole epoch's pipeline with its first ``step`` batches dropped (``dataset.skip``: read and decoded)."""
    import tensorflow  # noqa: F401  (imported before the clocks start: both variants pay it no more)

    from edgeface.data.records import open_records
    from edgeface.train.stream import StreamInput

    crops = open_records(pack)
    out = {"resume_step": step, "images_skipped": step * batch}
    expected = crops.labels[StreamInput(crops, batch, input_size=112, seed=0).epoch_positions(0)
                            [step * batch:(step + 1) * batch]]
    for name, make in (("started_there", lambda s: s.at_epoch(0, start_step=step).dataset),
                       ("skipped_in_pipeline", lambda s: s.dataset.skip(step))):
        stream = StreamInput(crops, batch, input_size=112, seed=0)
        t0 = time.perf_counter()
        x, y = next(iter(make(stream).as_numpy_iterator()))
        out[f"{name}_first_batch_seconds"] = round(time.perf_counter() - t0, 2)
        out[f"{name}_is_batch_{step}"] = bool((y == expected).all())
    return out


def phase_train(pack: Path, out: Path, arch: str, batch: int, steps: int, sample_rate: float = 1.0,
                remat: bool = False) -> dict:
    import keras

    from edgeface.train.trainer import TrainConfig, train

    keras.config.set_max_steps_per_epoch(steps)
    samples, stop = [], threading.Event()
    t0 = time.perf_counter()

    def sample():
        while not stop.wait(0.5):
            samples.append((round(time.perf_counter() - t0, 1), round(rss_mb(), 1)))

    first = {}

    def progress(p):
        if p.phase == "batch":
            now = time.perf_counter() - t0
            first.setdefault("t", now)
            first["last"], first["steps"] = now, p.step
            first.setdefault("rss_at_step", {})[p.step] = round(rss_mb(), 1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    cfg = TrainConfig(data=pack, out=out, arch=arch, head="arcface", epochs=1, batch_size=batch, patience=0,
                      sample_rate=sample_rate, remat=remat)
    result = train(cfg, progress=progress)
    stop.set()
    by_step = first.get("rss_at_step", {})
    marks = sorted(by_step)
    return {"classes": result.num_classes, "records": result.train_images, "steps": first.get("steps"),
            "first_batch_seconds": round(first.get("t", float("nan")), 1),
            "rss_at_steps_mb": {s: by_step[s] for s in marks[:: max(1, len(marks) // 10)] + marks[-1:]},
            "peak_rss_mb": round(peak_mb(), 1),
            # steps after the first (tracing) over their time: train.json's figure assumes whole epochs
            "img_per_s": round((first["steps"] - 1) * batch / max(1e-9, first["last"] - first["t"]), 2),
            "rss_max_sampled_mb": max(r for _, r in samples) if samples else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=Path, required=False)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--identities", type=int, default=100_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeface_stream_mem"))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--arch", default="mobilefacenet")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--pipeline-records", type=int, default=0, help="stop the pipeline pass after N images")
    ap.add_argument("--sample-rate", type=float, default=1.0, help="partial FC: classes sampled per step (train)")
    ap.add_argument("--remat", action="store_true", help="train: recompute activations (train --remat)")
    ap.add_argument("--resume-step", type=int, default=5000, help="resume: the step of epoch 0 to resume at")
    ap.add_argument("--phases", default="pipeline,train", help="which measurements to run (comma-separated)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--_phase", help=argparse.SUPPRESS)
    args = ap.parse_args()
    pack = args.work / f"pack_{args.records}"
    if args._phase == "pipeline":
        print("RESULT " + json.dumps(phase_pipeline(pack, args.batch_size, args.pipeline_records)), flush=True)
        return
    if args._phase == "resume":
        print("RESULT " + json.dumps(phase_resume(pack, args.batch_size, args.resume_step)), flush=True)
        return
    if args._phase == "train":
        import shutil

        shutil.rmtree(args.work / "run", ignore_errors=True)
        print("RESULT " + json.dumps(phase_train(pack, args.work / "run", args.arch, args.batch_size, args.steps,
                                                 args.sample_rate, args.remat)),
              flush=True)
        return
    if args.crops is None:
        ap.error("--crops DIR is needed to build the pack (e.g. the crops stream_bench.py prepared)")
    build_pack(args.crops, pack, args.records, args.identities)
    report = {"host": os.uname().nodename, "cores": os.cpu_count(), "load_average": os.getloadavg(),
              "records": args.records, "identities": args.identities,
              "pack_gb": round((pack / "train.rec").stat().st_size / 1e9, 2)}
    for phase in args.phases.split(","):
        cmd = [sys.executable, __file__, "--work", str(args.work), "--records", str(args.records), "--steps",
               str(args.steps), "--arch", args.arch, "--batch-size", str(args.batch_size), "--pipeline-records",
               str(args.pipeline_records), "--sample-rate", str(args.sample_rate), "--resume-step",
               str(args.resume_step), "--_phase", phase,
               *(["--remat"] if args.remat else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"the {phase} phase failed:\n{proc.stderr[-3000:]}")
        report[phase] = json.loads(line[7:])
        print(f"{phase}: {report[phase]}", file=sys.stderr)
    print(json.dumps(report, indent=2) if args.json else report)


if __name__ == "__main__":
    main()
