"""Figures of the on-board runtime (issue: runtime without TensorFlow).

    python tests/benchmarks/runtime_bench.py --model BUNDLE [--clip short_hamilton_clip.mp4] [--install-size] [--json]

Prints:
- end-to-end FPS of `edgeface run` on the clip (every frame processed), per-stage median ms,
  cold start (process start to the first processed frame, measured from outside and inside),
  peak RSS - for each detector x model format asked for, median of --repeats runs;
- matching time of one query (and of 5) against 100k enrolled embeddings;
- recognition on the clip with lin-manuel-miranda.png and alex-lacamoire.png enrolled (and obama.jpg,
  biden.jpg, who are not in the clip): frames in which each person is named, faces called unknown,
  faces given a distractor's name, frames where one name is given to two faces;
- with --install-size: the size of a runtime-only install (`pip install <repo>` in a fresh venv,
  no extras) and its largest packages.

Each `edgeface run` is a fresh process, as on a board.  Run it on an idle machine: the figures are
wall-clock.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))
PEOPLE = {"lin-manuel-miranda": "lin-manuel-miranda.png", "alex-lacamoire": "alex-lacamoire.png"}
# Enrolled as well but not in the clip: a face given one of these names is certainly misnamed.
DISTRACTORS = {"obama": "obama.jpg", "biden": "biden.jpg"}


def edgeface(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeface", *map(str, args)]


def run_once(clip: Path, model: str, detector: str, fmt: str | None, threads: int | None,
             gallery: Path | None = None) -> dict:
    """One `edgeface run` over the whole clip; cold start timed from outside too.  ``detector`` MODE+int8 runs
    MODE with the int8 detector files (--detector-precision int8)."""
    mode, _, precision = detector.partition("+")
    cmd = edgeface("run", "-s", clip, "-m", model, "--detector", mode, "-q")
    if precision:
        cmd += ["--detector-precision", precision]
    if fmt:
        cmd += ["--format", fmt]
    if threads:
        cmd += ["--threads", str(threads)]
    if gallery:
        cmd += ["-g", gallery]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    cold = time.perf_counter() - t0
    rest, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"edgeface run failed ({proc.returncode}): {err.strip().splitlines()[-1:]}")
    lines = [json.loads(x) for x in (first + rest).splitlines() if x.startswith("{")]
    summary = lines[-1]["summary"]
    summary["cold_start_s"] = round(cold, 3)
    summary["events"] = [x for x in lines if "frame" in x]
    return summary


def bench_e2e(args, model: str) -> list[dict]:
    from edgeface.runtime.bundle import Bundle

    rows = []
    formats = Bundle.load(model).formats
    for detector in args.detectors:
        for fmt in args.formats:
            if fmt not in formats:
                continue
            runs = [run_once(args.clip, model, detector, fmt, args.threads) for _ in range(args.repeats)]

            def med(key: str, runs: list = runs) -> float:
                return statistics.median(r[key] for r in runs)

            stages = {s: round(statistics.median(r["median_ms"][s] for r in runs), 2) for s in runs[0]["median_ms"]}
            rows.append({
                "model": model, "detector": detector, "format": fmt or "default", "frames": runs[0]["frames"],
                "faces": runs[0]["faces"], "fps": round(med("fps"), 1), "stage_median_ms": stages,
                "frame_median_ms": round(med("median_frame_ms"), 2), "frame_p90_ms": round(med("p90_frame_ms"), 2),
                "cold_start_s": round(med("cold_start_s"), 3), "first_frame_s": round(med("first_frame_s"), 3),
                "peak_rss_mb": round(med("peak_rss_mb"), 1), "fps_runs": [r["fps"] for r in runs],
            })
    return rows


def bench_match(n: int, dim: int, repeats: int = 300) -> dict:
    from edgeface.runtime.matcher import Matcher

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    labels = [f"person{i // 5}" for i in range(n)]
    t = time.perf_counter()
    matcher = Matcher(emb, labels, threshold=0.5)
    build_ms = (time.perf_counter() - t) * 1000
    out = {"embeddings": n, "dim": dim, "people": n // 5, "build_ms": round(build_ms, 1)}
    for faces in (1, 5):
        q = rng.normal(size=(faces, dim)).astype(np.float32)
        for _ in range(10):
            matcher.match(q)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            matcher.match(q)
            times.append((time.perf_counter() - t) * 1000)
        out[f"{faces}_face_ms"] = {"median": round(float(np.median(times)), 3),
                                   "p90": round(float(np.percentile(times, 90)), 3),
                                   "max": round(float(np.max(times)), 3)}
    return out


def bench_recognition(args, model: str) -> dict:
    """Enroll the two reference photos (and, with --distractors, two people who are not in the clip), run the
    clip: who is named where.  Barack Obama sits in the audience at frames 244-271 and is enrolled nowhere: a
    name on a face there that is not on stage is a wrong name (counted as ``audience_named``)."""
    enrolled = {**PEOPLE, **(DISTRACTORS if args.distractors else {})}
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Path(tmp) / "g.npz"
        mode, _, precision = args.recognition_detector.partition("+")
        for name, photo in enrolled.items():
            proc = subprocess.run(edgeface("enroll", name, DATA / "media" / photo, "-g", gallery, "-m", model,
                                           "--detector", mode, "--detector-precision", precision or "float",
                                           "--json"),
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"enroll {name} failed: {proc.stderr.strip()}")
        summary = run_once(args.clip, model, args.recognition_detector, None, args.threads, gallery)
    frames_named: dict[str, list[int]] = {n: [] for n in PEOPLE}
    faces_named: dict[str, int] = {n: 0 for n in PEOPLE}
    unknown = doubled = distractor = audience = by_track = 0
    for e in summary["events"]:
        names = [d["identity"] for d in e["detections"]]
        by_track += sum(1 for d in e["detections"] if d.get("named_by") == "track")
        unknown += names.count("unknown")
        distractor += sum(names.count(n) for n in DISTRACTORS)
        audience += sum(1 for d in e["detections"] if d["identity"] != "unknown" and _in_audience(e, d))
        for n in PEOPLE:
            faces_named[n] += names.count(n)
            if n in names:
                frames_named[n].append(e["frame"])
            if names.count(n) > 1:
                doubled += 1
    return {"model": model, "detector": args.recognition_detector, "enrolled": list(enrolled),
            "frames": summary["frames"], "faces": summary["faces"], "audience_named": audience,
            "faces_named": faces_named, "faces_named_by_their_track": by_track,
            "frames_with_a_face": sum(1 for e in summary["events"] if e["detections"]),
            "identities": summary["identities"], "unknown_faces": unknown, "frames_with_a_name_twice": doubled,
            "faces_named_as_a_distractor": distractor, "distractors": list(DISTRACTORS),
            "frames_named": {n: {"count": len(v), "ranges": _ranges(v)} for n, v in frames_named.items()},
            "threshold": summary["threshold"]}


# Frames 244-271 show Barack Obama in the audience (Hamilton clip, 640x360): a named face there below the stage
# line is a wrong name.
AUDIENCE_FRAMES = range(244, 272)


def _in_audience(event: dict, detection: dict) -> bool:
    return event["frame"] in AUDIENCE_FRAMES


def _ranges(frames: list[int]) -> str:
    out, start, prev = [], None, None
    for f in frames:
        if start is None:
            start = prev = f
        elif f == prev + 1:
            prev = f
        else:
            out.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = f
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(out)


def bench_install_size() -> dict:
    """`pip install <repo>` (no extras) into a fresh venv; size of its site-packages."""
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        pip = venv / "bin" / "pip"
        subprocess.run([pip, "install", "-q", "--disable-pip-version-check", str(REPO)], check=True)
        site = next((venv / "lib").glob("python*/site-packages"))
        sizes = {}
        for p in site.iterdir():
            sizes[p.name] = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() \
                else p.stat().st_size
        total = sum(sizes.values())
        tooling = sum(v for k, v in sizes.items() if k.split("-")[0] in ("pip", "setuptools", "_distutils_hack"))
        freeze = subprocess.run([pip, "freeze"], capture_output=True, text=True).stdout.split()
        probe = subprocess.run(
            [venv / "bin" / "python", "-c", "import sys, cv2, edgeface.runtime.pipeline, edgeface.cli; "
             "gui = [l.strip() for l in cv2.getBuildInformation().splitlines() if l.strip().startswith('GUI')]; "
             "print('tensorflow' in sys.modules, gui[0] if gui else '?')"], capture_output=True, text=True)
        mb = 1024 * 1024
        return {"site_packages_mb": round(total / mb, 1), "without_pip_setuptools_mb": round((total - tooling) / mb, 1),
                "largest": {k: round(v / mb, 1) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:8]},
                "packages": freeze, "tensorflow_imported_and_opencv_gui": probe.stdout.strip() or probe.stderr[-300:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, nargs="+", help="model bundle folders or shipped model names "
                    "(several: each measured in the same run)")
    ap.add_argument("--clip", type=Path, default=DATA / "media" / "short_hamilton_clip.mp4")
    ap.add_argument("--detectors", nargs="+", default=["short", "full"],
                    help="detection modes; MODE+int8 runs MODE with the int8 detector files")
    ap.add_argument("--formats", nargs="+", default=["int8", "fp32"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--match-n", type=int, default=100_000)
    ap.add_argument("--recognition-detector", default="short")
    ap.add_argument("--distractors", action=argparse.BooleanOptionalAction, default=True,
                    help="also enroll obama.jpg and biden.jpg (not in the clip)")
    ap.add_argument("--install-size", action="store_true", help="also measure a runtime-only install (needs PyPI)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    from edgeface.runtime.bundle import Bundle

    dim = Bundle.load(args.model[0]).embedding_dim or 128
    figures = {"machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
               "e2e": [row for m in args.model for row in bench_e2e(args, m)],
               "match": bench_match(args.match_n, dim),
               "recognition": [bench_recognition(args, m) for m in args.model]}
    if args.install_size:
        figures["install"] = bench_install_size()
    if args.json:
        print(json.dumps(figures, indent=2))
        return

    from rich.console import Console
    from rich.table import Table

    wide = Console(width=200)

    def print_table(title: str, columns: list, rows: list) -> None:
        table = Table(title=title)
        for c in columns:
            table.add_column(str(c))
        for row in rows:
            table.add_row(*[str(v) for v in row])
        wide.print(table)

    stages = list(figures["e2e"][0]["stage_median_ms"])
    print_table(f"edgeface run on {args.clip.name} (median of {args.repeats} runs)",
                ["model", "detector", "format", "frames", "faces", "FPS", *[f"{s} ms" for s in stages],
                 "frame p90 ms", "cold start s", "first frame s", "peak RSS MiB"],
                [[r["model"], r["detector"], r["format"], r["frames"], r["faces"], r["fps"],
                  *[r["stage_median_ms"][s] for s in stages], r["frame_p90_ms"], r["cold_start_s"],
                  r["first_frame_s"], r["peak_rss_mb"]] for r in figures["e2e"]])
    m = figures["match"]
    print_table(f"matching against {m['embeddings']:,} enrolled {m['dim']}-d embeddings",
                ["faces per query", "median ms", "p90 ms", "max ms"],
                [[k.split("_")[0], v["median"], v["p90"], v["max"]] for k, v in m.items() if k.endswith("_face_ms")])
    for r in figures["recognition"]:
        print_table(f"recognition on the clip: {r['model']} ({r['detector']} detector, threshold {r['threshold']}, "
                    f"enrolled {', '.join(r['enrolled'])})",
                    ["person", "faces named", "frames named", "frame ranges"],
                    [[n, r["faces_named"][n], v["count"], v["ranges"] or "-"] for n, v in r["frames_named"].items()])
        print(f"faces {r['faces']} in {r['frames_with_a_face']} frames with a face; unknown {r['unknown_faces']}; "
              f"named by their track (below the threshold on their own) {r['faces_named_by_their_track']}; "
              f"named in the audience (frames 244-271) {r['audience_named']}; given the name of "
              f"{' or '.join(r['distractors'])} (not in the clip) {r['faces_named_as_a_distractor']}; "
              f"frames with one name on two faces {r['frames_with_a_name_twice']}; identities {r['identities']}")
    if "install" in figures:
        i = figures["install"]
        print_table("runtime-only install (pip install <repo>, no extras)", ["package", "MiB"],
                    [[k, v] for k, v in i["largest"].items()])
        print(f"site-packages {i['site_packages_mb']} MiB ({i['without_pip_setuptools_mb']} MiB without pip/"
              f"setuptools); tensorflow imported by the runtime, OpenCV GUI: {i['tensorflow_imported_and_opencv_gui']}")


if __name__ == "__main__":
    main()
