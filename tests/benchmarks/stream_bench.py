"""Training throughput streaming from a RecordIO or TFRecord pack (or the folder itself, streamed) against the
in-memory folder path (issue 23).

    python tests/benchmarks/stream_bench.py [--crops DIR] [--images 1024] [--arch mobilefacenet] [--batch-size 64]
        [--format recordio|tfrecord|folder] [--encoding jpeg] [--rounds 20] [--block 5]
        [--end-to-end [--epochs 3] [--repeats 1]] [--work /tmp/edgeface_stream_bench] [--json]

Without ``--crops`` the first ``--images`` LFW deep-funneled photos (people in name order) are aligned by
``edgeface data prepare`` into WORK/crops_N (once; reused), and packed by ``edgeface data pack`` into WORK/pack_...
(InsightFace's JPEG at quality 95 by default; ``--format tfrecord``: TFRecord shards of the same records;
``--format folder``: no pack, the crops folder streamed as ``edgeface train CROPS --stream`` does).  Nothing is
written inside the repository.

Default (interleaved): one process, one training model built and compiled exactly as ``edgeface train`` builds it
(same architecture, ArcFace head, SGD, augmentation on), fed alternately ``--block`` steps from the folder's
in-memory sequence and ``--block`` steps from the pack's tf.data pipeline (which decodes in the background while
the model trains, as in a run), for ``--rounds`` rounds after a warm-up.  On a shared machine, whose load drifts by
a factor of two within minutes, alternating short blocks is what makes the two figures comparable; each path's
img/s is its images over its blocks' total time.

``--end-to-end``: the whole ``edgeface train`` command from the folder and from the pack, alternately, each in a fresh
process, for ``--epochs`` epochs: steady img/s (median over epochs 2..N), time to the first batch (folder: loading and
decoding every crop; pack: indexing it and decoding the first batch) and the peak RSS of the process.

The ratio of the two throughputs is printed last (the issue's goal: streaming within 10 % of the in-memory path).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))


def make_crops(work: Path, count: int) -> Path:
    """The first ``count`` LFW photos aligned by `edgeface data prepare` (kept in WORK for the next run)."""
    from edgeface.data.prepare import PrepareConfig, prepare

    crops = work / f"crops_{count}"
    if (crops / "manifest.jsonl").is_file():
        return crops
    raw = work / f"raw_{count}"
    shutil.rmtree(raw, ignore_errors=True)
    taken = 0
    for person in sorted((DATA / "lfw" / "lfw-deepfunneled").iterdir()):
        for photo in sorted(person.glob("*.jpg")):
            if taken == count:
                break
            (raw / person.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, raw / person.name / photo.name)
            taken += 1
    prepare(PrepareConfig(src=raw, out=crops))
    return crops


def one_run(kind: str, data: str, out: str, arch: str, batch: int, epochs: int, fmt: str = "recordio") -> dict:
    """One training run in this process: its throughput, time to the first batch and peak RSS."""
    from edgeface.train.trainer import TrainConfig, load_training_data, train

    cfg = TrainConfig(data=Path(data), out=Path(out), arch=arch, head="arcface", epochs=epochs, batch_size=batch,
                      lr_schedule="constant", patience=0, seed=0,
                      stream=True if kind == "stream" and fmt == "folder" else None)
    t0 = time.perf_counter()
    d = load_training_data(cfg)
    if kind == "stream":
        from edgeface.train.stream import StreamInput

        first = StreamInput(d.train, batch, input_size=112).dataset.take(1)
        next(iter(first))
    else:
        d.train.images[:batch].astype("float32")
    first_batch = time.perf_counter() - t0
    del d
    result = train(cfg)
    rates = [row["images_per_second"] for row in json.loads(result.train_json.read_text())["history"]]
    return {"path": kind, "images": result.train_images, "classes": result.num_classes,
            "img_per_s_steady": statistics.median(rates[1:] or rates), "img_per_s_by_epoch": rates,
            "seconds": result.seconds, "first_batch_s": round(first_batch, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def interleaved(crops: Path, packed: Path, arch: str, batch: int, rounds: int, block: int,
                fmt: str = "recordio") -> dict:
    """Alternating blocks of training steps from the two inputs on one compiled model (see the docstring)."""
    import keras

    from edgeface.train.data import ArraySequence
    from edgeface.train.heads import build_loss, get_head_spec, resolve_margins
    from edgeface.train.models import get_model
    from edgeface.train.stream import StreamInput
    from edgeface.train.trainer import TrainConfig, build_optimizer, build_training_model, load_training_data

    cfg = TrainConfig(data=crops, out=Path("/nonexistent"), arch=arch, head="arcface", batch_size=batch, seed=0,
                      lr_schedule="constant")
    folder = load_training_data(cfg).train
    records = load_training_data(TrainConfig(data=packed, out=Path("/nonexistent"), seed=0,
                                             stream=True if fmt == "folder" else None)).train
    seq = ArraySequence(folder.images, folder.labels, batch, shuffle=True, seed=0)
    stream = iter(StreamInput(records, batch, input_size=112, seed=0, epochs=10**6).dataset)
    keras.utils.set_random_seed(0)
    spec = get_head_spec(cfg.head)
    model = build_training_model(get_model(arch, input_size=112), folder.num_classes, cfg)
    model.compile(optimizer=build_optimizer(cfg, len(seq)), jit_compile=False,
                  loss=build_loss(spec, resolve_margins(spec, None, None, None)))
    step = {"folder": 0}

    def folder_batch():
        x, y = seq[step["folder"] % len(seq)]
        step["folder"] += 1
        return x, y

    sources = {"folder": folder_batch, "stream": lambda: next(stream)}
    for source in sources.values():  # warm-up: tracing, the pipeline's first fill
        for _ in range(3):
            model.train_on_batch(*source())
    seconds = {k: [] for k in sources}
    for _ in range(rounds):
        for name, source in sources.items():
            t0 = time.perf_counter()
            for _ in range(block):
                model.train_on_batch(*source())
            seconds[name].append(time.perf_counter() - t0)
    rate = {k: rounds * block * batch / sum(v) for k, v in seconds.items()}
    per_block = {k: statistics.median(block * batch / t for t in v) for k, v in seconds.items()}
    return {"folder_img_per_s": round(rate["folder"], 2), "stream_img_per_s": round(rate["stream"], 2),
            "median_block_img_per_s": {k: round(v, 2) for k, v in per_block.items()},
            "stream_vs_folder": round(rate["stream"] / rate["folder"], 3), "images": len(folder),
            "classes": folder.num_classes, "steps_each": rounds * block}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=Path, help="prepared crops (default: the first --images LFW photos, prepared)")
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--arch", default="mobilefacenet")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--encoding", default="jpeg", choices=["jpeg", "png"])
    ap.add_argument("--format", default="recordio", choices=["recordio", "tfrecord", "folder"],
                    help="what is streamed: a RecordIO pack, TFRecord shards, or the crops folder itself")
    ap.add_argument("--repeats", type=int, default=1, help="--end-to-end: folder/stream pairs of runs (alternating)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=5, help="training steps per block in the interleaved measurement")
    ap.add_argument("--end-to-end", action="store_true", help="whole `edgeface train` runs in fresh processes")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeface_stream_bench"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--_run", nargs=3, metavar=("KIND", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._run:
        kind, data, out = args._run
        print("RESULT " + json.dumps(one_run(kind, data, out, args.arch, args.batch_size, args.epochs, args.format)),
              flush=True)
        return

    from edgeface.data.pack import PackConfig, pack

    args.work.mkdir(parents=True, exist_ok=True)
    crops = args.crops or make_crops(args.work, args.images)
    if args.format == "folder":
        packed = crops
    else:
        kind = "" if args.format == "recordio" else "tfrecord_"
        packed = args.work / f"pack_{kind}{args.encoding}_{crops.name}"
    if args.format != "folder" and not (packed / "identities.txt").is_file():
        shutil.rmtree(packed, ignore_errors=True)
        s = pack(PackConfig(src=crops, out=packed, encoding=args.encoding, format=args.format))
        print(f"packed {s.images} crops of {s.identities} people: {s.bytes / 1e6:.1f} MB in {s.seconds:.1f} s",
              file=sys.stderr)
    from edgeface.devices.probe import cpu_model

    head = {"cpu": cpu_model(), "cores": os.cpu_count(), "arch": args.arch, "batch_size": args.batch_size,
            "encoding": args.encoding, "format": args.format, "crops": str(crops)}
    if not args.end_to_end:
        r = interleaved(crops, packed, args.arch, args.batch_size, args.rounds, args.block, args.format)
        report = {**head, "mode": "interleaved", **r, "load_average": os.getloadavg()}
        if args.json:
            print(json.dumps(report, indent=2))
            return
        print(f"{report['cpu']}, {report['cores']} cores, load average {report['load_average'][0]:.2f} (1 min); "
              f"{args.arch} + ArcFace over {r['classes']} people, batch {args.batch_size}, {r['images']} crops, "
              f"{r['steps_each']} steps each in blocks of {args.block}")
        print(f"in-memory folder: {r['folder_img_per_s']:.2f} img/s (median block "
              f"{r['median_block_img_per_s']['folder']:.2f})")
        print(f"streamed {args.format + ':':<9}{r['stream_img_per_s']:.2f} img/s (median block "
              f"{r['median_block_img_per_s']['stream']:.2f})")
        print(f"streaming / in-memory: {r['stream_vs_folder']:.3f} (goal: >= 0.90)")
        return
    runs = []
    for r in range(args.repeats):
        for kind, data in (("folder", crops), ("stream", packed)):
            out = args.work / f"run_{kind}_{r}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, __file__, "--arch", args.arch, "--batch-size", str(args.batch_size),
                   "--epochs", str(args.epochs), "--format", args.format, "--_run", kind, str(data), str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"the {kind} run failed:\n{proc.stderr[-3000:]}")
            runs.append(json.loads(line[7:]))
            print(f"{kind}: {runs[-1]}", file=sys.stderr)
    folder = statistics.median(r["img_per_s_steady"] for r in runs if r["path"] == "folder")
    stream = statistics.median(r["img_per_s_steady"] for r in runs if r["path"] == "stream")
    report = {**head, "mode": "end-to-end", "epochs": args.epochs, "load_average": os.getloadavg(), "runs": runs,
              "folder_img_per_s": folder, "stream_img_per_s": stream, "stream_vs_folder": round(stream / folder, 3)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['cpu']}, {report['cores']} cores, load average {report['load_average'][0]:.2f}; {args.arch}, "
          f"batch {args.batch_size}, {runs[0]['images']} crops of {runs[0]['classes']} people, {args.epochs} epochs")
    print(f"{'path':<8} {'img/s (steady)':>15} {'by epoch':>28} {'first batch s':>14} {'peak RSS MB':>12}")
    for r in runs:
        print(f"{r['path']:<8} {r['img_per_s_steady']:>15.2f} {str(r['img_per_s_by_epoch']):>28} "
              f"{r['first_batch_s']:>14.2f} {r['peak_rss_mb']:>12.1f}")
    print(f"streaming / in-memory: {report['stream_vs_folder']:.3f} (goal: >= 0.90)")


if __name__ == "__main__":
    main()
