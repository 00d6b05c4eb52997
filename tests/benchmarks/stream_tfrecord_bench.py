"""Indexing and streaming a large TFRecord pack (issue 23): a synthetic pack of 1 M face Examples.

    python tests/benchmarks/stream_tfrecord_bench.py --crops DIR [--records 1000000] [--identities 100000]
        [--shards 8] [--pipeline-records 100000] [--work /tmp/edgeface_stream_tfr] [--json]

The pack (written once to WORK, never inside the repository) repeats the crops of DIR (e.g. the stream benchmark's
LFW crops), each encoded once as JPEG at quality 95, under new labels (record i has label
i * identities // records), as ``--shards`` TFRecord files with their index sidecars, through the same writer as
``edgeface data pack --format tfrecord``.  Then, each in a fresh process (so the page cache is what differs, not
Python's state):

* index with the sidecars: :func:`open_tfrecords` reads the sidecars and every record's 12-byte header (length
  CRC checked);
* index without them (moved aside): every file scanned, every CRC checked and every Example parsed, as for a file
  TensorFlow wrote; the sidecars are written again;
* pipeline: ``--pipeline-records`` records streamed through the tf.data pipeline (no model), reading by offset,
  checking CRCs, parsing Examples and decoding: img/s and the resident set size (RSS) along the way.

The host and its load are printed: RSS and sizes are exact, times are wall-clock on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_pack(crops: Path, out: Path, records: int, identities: int, shards: int) -> dict:
    """The synthetic pack (kept when OUT already holds one of this size)."""
    import cv2

    from edgeface.data.dataset import scan_identity_folder
    from edgeface.data.example import face_example
    from edgeface.data.pack import tfrecord_names
    from edgeface.data.tfrecord import TFRecordWriter

    stamp = out / "built.json"
    if stamp.is_file() and json.loads(stamp.read_text())["records"] == records:
        return json.loads(stamp.read_text())
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    jpegs = [cv2.imencode(".jpg", cv2.imread(str(p), cv2.IMREAD_COLOR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
             for _, p in scan_identity_folder(crops)]
    t0 = time.perf_counter()
    per = -(-records // shards)
    total = 0
    for s, name in enumerate(tfrecord_names(shards)):
        with TFRecordWriter(out / name) as w:
            for a in range(s * per, min(records, (s + 1) * per), 256):
                ids = range(a, min(records, (s + 1) * per, a + 256))
                labels = [i * identities // records for i in ids]
                w.write([face_example(jpegs[i % len(jpegs)], lab, "jpeg", 112, 112) for i, lab in zip(ids, labels)],
                        labels)
        total += w.bytes
    info = {"records": records, "identities": identities, "shards": shards, "bytes": total,
            "write_s": round(time.perf_counter() - t0, 1)}
    stamp.write_text(json.dumps(info))
    return info


def index_once(pack: Path) -> dict:
    from edgeface.data.tfrecords import open_tfrecords

    t0 = time.perf_counter()
    crops = open_tfrecords(pack)
    seconds = time.perf_counter() - t0
    held = sum(a.nbytes for a in (crops.shard_of, crops.offsets, crops.lengths, crops.labels))
    return {"seconds": round(seconds, 2), "records": len(crops), "scanned_files": len(crops.scanned),
            "index_bytes_per_record": round(held / len(crops), 1), "rss_mb": round(rss_mb(), 1)}


def pipeline(pack: Path, count: int) -> dict:
    from edgeface.data.tfrecords import open_tfrecords
    from edgeface.train.stream import StreamInput

    crops = open_tfrecords(pack)
    s = StreamInput(crops, 64, input_size=112, seed=0)
    rss = []
    t0 = time.perf_counter()
    seen = 0
    for x, _ in s.dataset.take(count // 64):
        seen += len(x)
        if seen % 6400 == 0:
            rss.append(round(rss_mb(), 1))
    seconds = time.perf_counter() - t0
    return {"images": seen, "img_per_s": round(seen / seconds, 1), "rss_mb_every_6400": rss,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def child(what: str, pack: str, count: int) -> None:
    result = index_once(Path(pack)) if what == "index" else pipeline(Path(pack), count)
    print("RESULT " + json.dumps(result), flush=True)


def run_child(what: str, pack: Path, count: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--_child", what, str(pack), str(count)], capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=Path)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--identities", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--pipeline-records", type=int, default=100_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeface_stream_tfr"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        child(args._child[0], args._child[1], int(args._child[2]))
        return
    if args.crops is None:
        ap.error("--crops DIR is needed (e.g. /tmp/edgeface_stream_bench/crops_1024 from stream_bench.py)")
    from edgeface.data.tfrecord import INDEX_SUFFIX
    from edgeface.devices.probe import cpu_model

    pack = args.work / f"pack_{args.records}"
    built = build_pack(args.crops, pack, args.records, args.identities, args.shards)
    with_index = run_child("index", pack, 0)
    aside = args.work / "sidecars"
    aside.mkdir(exist_ok=True)
    for f in pack.glob(f"*{INDEX_SUFFIX}"):
        f.rename(aside / f.name)
    scanned = run_child("index", pack, 0)
    for f in aside.glob(f"*{INDEX_SUFFIX}"):  # the scan wrote them again; keep the originals
        f.replace(pack / f.name)
    stream = run_child("pipeline", pack, args.pipeline_records)
    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": os.getloadavg(), "pack": built,
              "index_with_sidecar": with_index, "index_by_scanning": scanned, "pipeline": stream}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['cpu']}, {report['cores']} cores, load average {report['load_average'][0]:.2f}")
    print(f"pack: {built['records']} records, {built['identities']} identities, {built['shards']} shards, "
          f"{built['bytes'] / 1e9:.2f} GB, written in {built['write_s']} s")
    print(f"index with sidecars: {with_index['seconds']} s, {with_index['index_bytes_per_record']} B/record in memory")
    print(f"index by scanning (no sidecars): {scanned['seconds']} s")
    print(f"pipeline: {stream['images']} images at {stream['img_per_s']} img/s; RSS every 6,400 images "
          f"{stream['rss_mb_every_6400']}; peak {stream['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
