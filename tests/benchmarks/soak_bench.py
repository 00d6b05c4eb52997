"""Soak benchmark of ``edgeface run`` on a live stream that drops and comes back (issue 22).

    python tests/benchmarks/soak_bench.py [--frames 20000] [--people 1000] [--drop-every 3000]
        [--drop-seconds 2] [--drop-mode alternate] [--sample-every 500] [--warmup 2000] [--source-fps 60]
        [--model default] [--detector KIND] [--gallery FILE] [--json]

What runs is the command users run, in its own process: ``python -m edgeface run --source http://127.0.0.1:PORT/
video.mjpg -g GALLERY -q``, stopped by SIGTERM (as a service manager stops it) once it has processed ``--frames``
frames, so the last reading is taken while it still runs, not while it closes its source.  The stream is a local
MJPEG-over-HTTP camera (what IP cameras serve at ``/video.mjpg``) looping the Hamilton clip, so every frame has
real faces; ``run`` reads it through its live source (``LiveSource``: the reader thread keeping the newest frame,
FFmpeg's open/read timeouts, the reopen loop with back-off), the code a dropped network camera goes through.
Every ``--drop-every`` processed frames the camera drops for ``--drop-seconds``:

* ``hangup``: it closes every stream connection and answers new ones ``503`` until it is back (a camera that
  rebooted or lost its link);
* ``silent``: open connections stay open but carry nothing (a frozen camera or a stalled network), so only the
  read timeout (5 s) can tell; the silence lasts ``--drop-seconds`` past that timeout so the run must notice it,
  and new connections get ``503`` meanwhile;
* ``alternate`` (default): hangup, silent, hangup, ...

The gallery holds ``--people`` people: the two people of the clip (``media/lin-manuel-miranda.png``,
``media/alex-lacamoire.png``) and LFW people in name order, one photo each (the first with a detectable face),
embedded with the model under test, so every face is matched against all of them.  It is built in a temporary
folder (nothing is cached in the repository) unless ``--gallery FILE`` names one to keep or reuse.

While ``run`` works, its resident memory (``VmRSS``), open descriptors (``/proc/PID/fd``) and threads are read
from ``/proc`` every ``--sample-every`` frames, always while frames flow (a sample is taken before the drop
scheduled at the same frame), and printed as a table with the frames per second over the window and the drops
seen and recovered (``run``'s own log lines).  The verdict holds the figures against the issue's goals:

* RSS within ``--rss-tolerance-mb`` (5 MB) over all samples after ``--warmup`` frames, with the slope of a
  fitted line for a leak too slow to show in the spread;
* descriptors and threads constant after the warm-up;
* every drop seen once and recovered (``run``'s summary and log: outages = reconnects = drops, a frame captured
  after each return, all ``--frames`` processed and a clean exit on SIGTERM);
* throughput: frames per second and ``run``'s CPU time per frame (user + system, all threads, from
  ``/proc/PID/stat``) over the windows without a drop, start against end (the median of the first third and of the
  last third of such windows after warm-up), both within ``--throughput-tolerance``.  CPU time per frame is the
  run's own cost, which the load of other programs barely moves; the stages' wall-clock time per frame (from the
  events) is shown too but not judged, as it moves with that load.

The camera sends ``--source-fps`` frames a second (60 by default, a fast camera).  When ``run`` keeps up (here with
``--detector short``, ~6 CPU ms a frame) nearly every frame decoded is processed and the CPU figure is the cost of
a frame; when it does not, its reader thread also decodes frames the loop never takes (the summary's ``dropped``),
and they count in it.  ``0`` streams as fast as ``run`` reads, so frames per second measure ``run`` at full tilt.
Linux only (``/proc``).  Exit status: 0 when every goal holds, 1 otherwise.

Recorded with the defaults on a 2-core AMD EPYC shared with other jobs (load 4-6), the tree's default detector
``auto``: 542 s, RSS 147.2 -> 148.2 MB after warm-up (spread 1.0 MB, +0.55 MB per 10k frames), 9 descriptors and
6 threads throughout, 6 drops (3 hangups, 3 silent) = 6 outages = 6 reconnects, each back ~1.5 s after the camera
returned, 43.1 -> 37.2 fps (x0.86, with the load rising) at 17.2 -> 17.8 CPU ms per frame (x1.04).  With
``--detector short`` (load ~2.3): RSS spread 0.39 MB, 6 descriptors, 6 threads, 58.5 -> 59.6 fps at 6.1 CPU ms.
Before ``RunStats`` kept a bounded sample of stage times it grew by ~0.2 MB per 1,000 frames, for ever.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))
CLIP = "short_hamilton_clip.mp4"
CLIP_PEOPLE = {"lin-manuel-miranda": "lin-manuel-miranda.png", "alex-lacamoire": "alex-lacamoire.png"}
DROP_MODES = ("hangup", "silent", "alternate")
# `run`'s live-source read timeout (CaptureConfig.read_timeout_s; not a CLI option): a silent drop must outlast it.
READ_TIMEOUT_S = 5.0
# No event for this long means the run is stuck, not recovering: the longest legitimate gap is a silent drop
# (read timeout + drop) plus a reopen back-off (at most 10 s) and FFmpeg's open timeout (10 s).
STALL_S = 90.0
# `run`'s log lines (edgeface.runtime.capture.live.LiveSource) for an outage and for its end.
OUTAGE_LINE = re.compile(r"stopped delivering frames")
RECOVERY_LINE = re.compile(r"reopened after")
PROCESSING_STAGES = ("detect", "align", "embed", "match")


# --- the camera ----------------------------------------------------------------------------------------------


class LoopingMJPEGServer:
    """A local MJPEG-over-HTTP camera looping ``jpegs`` for ever, which can be made to drop and come back.

    One frame clock is shared by all connections (a reconnecting client sees the loop where it has got to, as with a
    live camera).  ``fps=0`` writes frames as fast as the client reads them.
    """

    def __init__(self, jpegs: Sequence[bytes], fps: float = 0.0) -> None:
        if not jpegs:
            raise ValueError("the camera needs at least one JPEG frame")
        self.jpegs = list(jpegs)
        self.fps = fps
        self.connections = 0  # stream connections accepted
        self.refused = 0  # connections answered 503 while down
        self.drops: list[dict] = []  # one per drop(): mode, start and end (time.time(), the clock of run's events)
        self._lock = threading.Lock()
        self._position = 0
        self._generation = 0  # bumped by a hangup: every older stream connection ends
        self._down_until = 0.0  # time.monotonic() until which the camera is down
        self._silent_until = 0.0  # ... and until which open streams carry nothing
        self._closed = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # the benchmark's output is the table, not an access log
                pass

            def do_GET(self) -> None:
                outer._serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="mjpeg camera", daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/video.mjpg"

    def _next_jpeg(self) -> bytes:
        with self._lock:
            jpeg = self.jpegs[self._position % len(self.jpegs)]
            self._position += 1
        return jpeg

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        if time.monotonic() < self._down_until:
            self.refused += 1
            handler.send_error(503, "camera offline")
            return
        self.connections += 1
        generation = self._generation
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        handler.end_headers()
        next_at = time.monotonic()
        try:
            while not self._closed.is_set() and generation == self._generation:
                if time.monotonic() < self._silent_until:
                    time.sleep(0.02)
                    continue
                jpeg = self._next_jpeg()
                handler.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                    % len(jpeg) + jpeg + b"\r\n")
                handler.wfile.flush()
                if self.fps:
                    next_at = max(next_at + 1.0 / self.fps, time.monotonic() - 1.0)
                    time.sleep(max(0.0, next_at - time.monotonic()))
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a reopen after a silent drop)
            pass

    def drop(self, seconds: float, mode: str = "hangup") -> dict:
        """Go down for ``seconds``: ``hangup`` closes the streams now, ``silent`` leaves them open and mute.

        New connections are answered 503 until the camera is back.  Returns the drop's record."""
        if mode not in ("hangup", "silent"):
            raise ValueError(f"drop mode {mode!r} is not hangup or silent")
        now = time.monotonic()
        self._down_until = now + seconds
        if mode == "silent":
            self._silent_until = now + seconds
        else:
            self._generation += 1
        record = {"mode": mode, "start": time.time(), "end": time.time() + seconds}
        self.drops.append(record)
        return record

    def close(self) -> None:
        """Stop serving and end every connection."""
        self._closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def clip_jpegs(clip: Path, quality: int = 90) -> list[bytes]:
    """Every frame of a video as JPEG bytes (what an MJPEG camera sends)."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    jpegs = []
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            jpegs.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    finally:
        cap.release()
    if not jpegs:
        raise SystemExit(f"error: no frame could be read from {clip}")
    return jpegs


# --- the gallery -----------------------------------------------------------------------------------------------


def build_gallery(out: Path, people: int, model: str = "default", data: Path = DATA,
                  progress: Optional[Callable[[int, int, int], None]] = None) -> dict:
    """Enroll ``people`` people into a new gallery at ``out``: the clip's two people, then LFW people by name.

    Each LFW person gets one embedding, from their first photo with a face (the largest if several); people whose
    photos show none are passed over.  ``progress(enrolled, wanted, photos_tried)`` is called as it goes.
    Returns what was done."""
    from edgeface.runtime.enroll import enroll_photos
    from edgeface.runtime.gallery import Gallery
    from edgeface.runtime.recognizer import load_recognizer
    from edgeface.runtime.settings import RunSettings

    if people < 1:
        raise SystemExit("error: --people must be at least 1")
    rt = load_recognizer(RunSettings(model=model), with_gallery=False)
    gallery = Gallery(model=rt.model_id)
    media = data / "media"
    candidates: list[tuple[str, list[Path]]] = [(name, [media / photo]) for name, photo in CLIP_PEOPLE.items()]
    lfw = data / "lfw" / "lfw-deepfunneled"
    candidates += [(d.name, sorted(d.glob("*.jpg"))) for d in sorted(lfw.iterdir()) if d.is_dir()]
    tried = skipped = 0
    t0 = time.perf_counter()
    for name, photos in candidates:
        if len(gallery.names()) >= people:
            break
        for photo in photos:
            tried += 1
            embeddings, sources, _ = enroll_photos(rt.recognizer, [photo], pick="largest")
            if len(embeddings):
                gallery.add(name, embeddings, sources)
                break
        else:
            skipped += 1
        if progress:
            progress(len(gallery.names()), people, tried)
    if len(gallery.names()) < people:
        raise SystemExit(f"error: only {len(gallery.names())} people could be enrolled from {lfw}")
    gallery.save(out)
    return {"people": len(gallery.names()), "photos_tried": tried, "people_without_a_face": skipped,
            "seconds": round(time.perf_counter() - t0, 1), "path": str(out)}


# --- readings of the process under test -------------------------------------------------------------------------


def proc_readings(pid: int) -> dict:
    """Resident memory (MB), open descriptors, threads and CPU time (s, user + system) of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    # utime and stime are fields 14 and 15 of /proc/PID/stat, counted after the parenthesised command name.
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024.0,  # kB
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(fields["Threads"]),
            "cpu_s": (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")}


@dataclass
class Sample:
    """One row of the table: the process after ``frame`` processed frames."""

    frame: int
    elapsed_s: float
    fps: float  # over the window since the previous sample
    cpu_ms: float  # CPU time run spent per frame over the window (all its threads): the cost, whatever the load
    rss_mb: float
    fds: int
    threads: int
    drops: int  # drops the camera made so far
    outages: int  # outages run has logged so far
    recoveries: int  # reopens run has logged so far
    window_had_drop: bool  # a drop fell in the window, so its fps is not the pipeline's


@dataclass
class SoakConfig:
    """One soak: how long, how often the camera drops, what the gallery holds."""

    frames: int = 20_000
    drop_every: int = 3_000
    drop_seconds: float = 2.0
    drop_mode: str = "alternate"
    sample_every: int = 500
    warmup: int = 2_000
    source_fps: float = 60.0
    model: str = "default"
    rss_tolerance_mb: float = 5.0
    throughput_tolerance: float = 0.15
    # The command that is `edgeface`: a test swaps in a wrapper (e.g. one that leaks a descriptor per reopen).
    launcher: tuple[str, ...] = (sys.executable, "-m", "edgeface")
    extra_args: tuple[str, ...] = ()


@dataclass
class SoakResult:
    """What a soak measured, and its verdict."""

    config: dict
    samples: list[Sample]
    drops: list[dict]  # the camera's drops, each with the frame at which it came and how long recovery took
    summary: dict  # run's own end-of-run summary (its last JSON line)
    logged: dict = field(default_factory=dict)  # outages and recoveries in run's log, counted once it has ended
    verdict: dict = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # run's stderr
    returncode: Optional[int] = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.verdict) and all(v["ok"] for v in self.verdict.values())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def drop_mode_at(mode: str, i: int) -> str:
    """The mode of the ``i``-th drop (from 0)."""
    if mode == "alternate":
        return ("hangup", "silent")[i % 2]
    return mode


def soak(config: SoakConfig, gallery: Path, jpegs: Sequence[bytes],
         on_sample: Optional[Callable[[Sample], None]] = None) -> SoakResult:
    """Run ``edgeface run`` on a looping camera that drops every ``drop_every`` frames; sample it from /proc."""
    if config.drop_mode not in DROP_MODES:
        raise ValueError(f"drop mode {config.drop_mode!r} is not one of {', '.join(DROP_MODES)}")
    server = LoopingMJPEGServer(jpegs, config.source_fps)
    # No --max-frames: a run reaching it closes its source at once, racing the last reading.
    cmd = [*config.launcher, "run", "--source", server.url, "-m", config.model, "-g", str(gallery), "-q",
           *config.extra_args]
    lines: queue.Queue = queue.Queue()
    log: list[str] = []
    counts = {"outages": 0, "recoveries": 0}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)

    def pump_stdout() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def pump_stderr() -> None:
        for line in proc.stderr:
            log.append(line.rstrip("\n"))
            if OUTAGE_LINE.search(line):
                counts["outages"] += 1
            elif RECOVERY_LINE.search(line):
                counts["recoveries"] += 1

    readers = [threading.Thread(target=pump_stdout, daemon=True), threading.Thread(target=pump_stderr, daemon=True)]
    for t in readers:
        t.start()
    samples: list[Sample] = []
    summary: dict = {}
    frame_times: list[float] = []  # capture time (time.time()) of each processed frame
    processing_ms: list[float] = []
    last = (0, t0, 0.0)  # (frames, monotonic, CPU s) at the previous sample
    drops_at: list[int] = []
    try:
        while True:
            try:
                line = lines.get(timeout=STALL_S)
            except queue.Empty:
                log.append(f"soak: no event from run for {STALL_S:.0f} s: stopped it")
                break
            if line is None:
                break
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if "summary" in event:
                summary = event["summary"]
                continue
            frame_times.append(float(event["timestamp"]))
            processing_ms.append(sum(float(event["ms"].get(s, 0.0)) for s in PROCESSING_STAGES))
            n = len(frame_times)
            if n > config.frames:  # processed between our SIGTERM and its arrival
                continue
            if n == 1 or n % config.sample_every == 0 or n == config.frames:
                now = time.monotonic()
                try:
                    readings = proc_readings(proc.pid)
                except (OSError, KeyError):  # exited between its last event and this reading
                    readings = None
                if readings is not None:
                    window_drop = any(last[0] <= d < n for d in drops_at)
                    fps = (n - last[0]) / (now - last[1]) if n > last[0] and now > last[1] else 0.0
                    cpu_ms = (readings["cpu_s"] - last[2]) * 1000 / (n - last[0]) if n > last[0] else 0.0
                    sample = Sample(n, round(now - t0, 2), round(fps, 1), round(cpu_ms, 2),
                                    round(readings["rss_mb"], 2), readings["fds"], readings["threads"],
                                    len(server.drops), counts["outages"], counts["recoveries"], window_drop)
                    samples.append(sample)
                    if on_sample:
                        on_sample(sample)
                    last = (n, now, readings["cpu_s"])
            if n == config.frames:
                proc.send_signal(signal.SIGTERM)  # run finishes the frame in hand, prints its summary and exits 0
            elif n % config.drop_every == 0:
                mode = drop_mode_at(config.drop_mode, len(server.drops))
                seconds = config.drop_seconds + (READ_TIMEOUT_S if mode == "silent" else 0.0)
                server.drop(seconds, mode)["frame"] = n
                drops_at.append(n)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # run ends cleanly on SIGTERM, with its summary
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()
        for t in readers:
            t.join(10)
        server.close()
    for record in server.drops:  # recovery: from the camera's return to the first frame captured after it
        after = [t for t in frame_times if t >= record["end"]]
        record["recovered_after_s"] = round(after[0] - record["end"], 2) if after else None
    result = SoakResult(config={k: v for k, v in asdict(config).items() if k != "launcher"}, samples=samples,
                        drops=server.drops, summary=summary, logged=dict(counts), log=log, returncode=proc.returncode,
                        seconds=round(time.monotonic() - t0, 1))
    result.verdict = judge(result, config, processing_ms)
    return result


# --- the verdict --------------------------------------------------------------------------------------------------


def judge(result: SoakResult, config: SoakConfig, processing_ms: Sequence[float]) -> dict:
    """Each goal of the soak: ``ok`` and the figures behind it."""
    after = [s for s in result.samples if s.frame >= config.warmup]
    verdict: dict = {}
    if len(after) < 2:
        reason = f"fewer than 2 samples after the {config.warmup}-frame warm-up ({len(result.samples)} in all)"
        return {goal: {"ok": False, "why": reason} for goal in ("rss", "fds", "threads", "drops", "throughput")}
    rss = [s.rss_mb for s in after]
    frames = [s.frame for s in after]
    slope = float(np.polyfit(frames, rss, 1)[0]) * 10_000 if len(set(frames)) > 1 else 0.0
    spread = max(rss) - min(rss)
    verdict["rss"] = {"ok": spread <= config.rss_tolerance_mb, "start_mb": rss[0], "end_mb": rss[-1],
                      "min_mb": min(rss), "max_mb": max(rss), "spread_mb": round(spread, 2),
                      "slope_mb_per_10k_frames": round(slope, 3), "tolerance_mb": config.rss_tolerance_mb}
    for key in ("fds", "threads"):
        values = [getattr(s, key) for s in after]
        verdict[key] = {"ok": len(set(values)) == 1, "start": values[0], "end": values[-1], "min": min(values),
                        "max": max(values),
                        "changes": [(s.frame, getattr(s, key)) for prev, s in zip(after, after[1:])
                                    if getattr(s, key) != getattr(prev, key)]}
    capture = result.summary.get("capture", {})
    drops = len(result.drops)
    unrecovered = [d["frame"] for d in result.drops if d.get("recovered_after_s") is None]
    recovery = [d["recovered_after_s"] for d in result.drops if d.get("recovered_after_s") is not None]
    logged_outages, logged_recoveries = result.logged.get("outages", 0), result.logged.get("recoveries", 0)
    verdict["drops"] = {
        "ok": (result.returncode == 0 and result.summary.get("frames", 0) >= config.frames
               and result.summary.get("stopped_by") == "SIGTERM" and not unrecovered
               and capture.get("outages") == drops == capture.get("reconnects") == logged_outages
               == logged_recoveries),
        "drops": drops, "outages": capture.get("outages"), "reconnects": capture.get("reconnects"),
        "logged_outages": logged_outages, "logged_recoveries": logged_recoveries,
        "unrecovered_at_frames": unrecovered, "frames": result.summary.get("frames"), "returncode": result.returncode,
        "recovery_s_median": round(statistics.median(recovery), 2) if recovery else None,
        "recovery_s_max": max(recovery) if recovery else None,
    }
    # Throughput: the windows after warm-up without a drop in them (after[0]'s window straddles the warm-up), the
    # median of the first third against that of the last third: on a machine shared with other jobs one window's
    # fps swings by a third, so fewer windows compare the load, not the run.  Frames per second is what the issue
    # asks; CPU ms
    # per frame is the run's own cost, which other programs' load on the machine barely moves, so a run slowing by
    # itself shows there first.  The stages' wall-clock time per frame (from the events) is reported, not judged:
    # on a shared machine it moves with the load.
    clean = [s for s in after[1:] if not s.window_had_drop]
    k = len(clean) // 3
    tol = config.throughput_tolerance

    def start_end(key: str) -> tuple[Optional[float], Optional[float]]:
        values = [getattr(s, key) for s in clean]
        return (statistics.median(values[:k]), statistics.median(values[-k:])) if k else (None, None)

    fps_start, fps_end = start_end("fps")
    cpu_start, cpu_end = start_end("cpu_ms")
    ms = list(processing_ms[config.warmup:])
    tenth = max(1, len(ms) // 10)
    ms_start = statistics.median(ms[:tenth]) if ms else None
    ms_end = statistics.median(ms[-tenth:]) if ms else None
    fps_ok = fps_start is not None and fps_end >= fps_start * (1 - tol)
    cpu_ok = cpu_start is not None and cpu_end <= cpu_start * (1 + tol)
    verdict["throughput"] = {
        "ok": bool(fps_ok and cpu_ok), "windows": len(clean), "compared": k, "tolerance": tol,
        "fps_start": fps_start, "fps_end": fps_end, "fps_ratio": round(fps_end / fps_start, 3) if fps_start else None,
        "cpu_ms_start": cpu_start, "cpu_ms_end": cpu_end,
        "cpu_ratio": round(cpu_end / cpu_start, 3) if cpu_start else None,
        "processing_ms_start": round(ms_start, 3) if ms_start is not None else None,
        "processing_ms_end": round(ms_end, 3) if ms_end is not None else None,
    }
    return verdict


# --- output --------------------------------------------------------------------------------------------------------

HEADER = (f"{'frame':>7} {'elapsed s':>9} {'fps':>7} {'CPU ms/f':>8} {'RSS MB':>8} {'fds':>5} {'threads':>7} "
          f"{'drops':>5} {'outages':>7} {'recovered':>9}")


def format_sample(s: Sample) -> str:
    """One table row; a window holding a drop is marked, its fps is not the pipeline's."""
    mark = "*" if s.window_had_drop else " "
    return (f"{s.frame:>7} {s.elapsed_s:>9.1f} {s.fps:>6.1f}{mark} {s.cpu_ms:>8.2f} {s.rss_mb:>8.2f} {s.fds:>5} "
            f"{s.threads:>7} {s.drops:>5} {s.outages:>7} {s.recoveries:>9}")


def verdict_lines(result: SoakResult) -> list[str]:
    """The verdict against each goal, one line each."""
    v = result.verdict
    word = {True: "PASS", False: "FAIL"}
    out = []
    if "why" in v.get("rss", {}):
        return [f"FAIL {goal}: {v[goal]['why']}" for goal in v]
    r = v["rss"]
    out.append(f"{word[r['ok']]} RSS flat within {r['tolerance_mb']:g} MB after warm-up: {r['start_mb']:.1f} -> "
               f"{r['end_mb']:.1f} MB, range {r['min_mb']:.1f}-{r['max_mb']:.1f} (spread {r['spread_mb']:.2f} MB), "
               f"fitted slope {r['slope_mb_per_10k_frames']:+.2f} MB per 10k frames")
    for key, what in (("fds", "open descriptors"), ("threads", "threads")):
        f = v[key]
        changes = "" if f["ok"] else f" (changed at frames {', '.join(f'{n}: {x}' for n, x in f['changes'][:8])})"
        out.append(f"{word[f['ok']]} {what} constant after warm-up: {f['start']} -> {f['end']}, "
                   f"min {f['min']}, max {f['max']}{changes}")
    d = v["drops"]
    out.append(f"{word[d['ok']]} every drop recovered: {d['drops']} drops, run counted {d['outages']} outages and "
               f"{d['reconnects']} reconnects (logged {d['logged_outages']}/{d['logged_recoveries']}), "
               f"{d['frames']} frames processed, exit {d['returncode']}; back "
               f"{d['recovery_s_median']} s (median) / {d['recovery_s_max']} s (max) after the camera returned"
               + (f"; NOT recovered after the drops at frames {d['unrecovered_at_frames']}"
                  if d["unrecovered_at_frames"] else ""))
    t = v["throughput"]
    out.append(f"{word[t['ok']]} throughput unchanged (within {t['tolerance']:.0%}, first {t['compared']} against "
               f"last {t['compared']} of {t['windows']} drop-free windows): {t['fps_start']} -> {t['fps_end']} fps "
               f"(x{t['fps_ratio']}), {t['cpu_ms_start']} -> {t['cpu_ms_end']} CPU ms per frame (x{t['cpu_ratio']}); "
               f"stages' wall time {t['processing_ms_start']} -> {t['processing_ms_end']} ms per frame (not judged)")
    return out


def machine() -> str:
    """The CPU, its cores and the load, for the record (the figures are wall-clock)."""
    from edgeface.devices.probe import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"


def main(argv: Optional[list[str]] = None) -> int:
    """Build the gallery, run the soak, print the table and the verdict; 0 when every goal holds."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20_000, help="frames run processes before it is stopped (SIGTERM)")
    ap.add_argument("--people", type=int, default=1_000, help="people in the gallery")
    ap.add_argument("--drop-every", type=int, default=3_000, help="the camera drops every N processed frames")
    ap.add_argument("--drop-seconds", type=float, default=2.0, help="how long the camera stays down")
    ap.add_argument("--drop-mode", choices=DROP_MODES, default="alternate")
    ap.add_argument("--sample-every", type=int, default=500, help="read /proc every N frames")
    ap.add_argument("--warmup", type=int, default=None, help="frames before the goals apply (default: a tenth)")
    ap.add_argument("--source-fps", type=float, default=60.0, help="camera frame rate; 0: as fast as run reads")
    ap.add_argument("--model", default="default", help="model bundle (folder or shipped name)")
    ap.add_argument("--detector", default=None, help="run's --detector (default: run's own default)")
    ap.add_argument("--gallery", type=Path, default=None, help="reuse this gallery, or build it here to keep it")
    ap.add_argument("--rss-tolerance-mb", type=float, default=5.0)
    ap.add_argument("--throughput-tolerance", type=float, default=0.15)
    ap.add_argument("--json", action="store_true", help="print the result as JSON (the table goes to stderr)")
    args = ap.parse_args(argv)
    for name in ("frames", "drop_every", "sample_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    config = SoakConfig(frames=args.frames, drop_every=args.drop_every, drop_seconds=args.drop_seconds,
                        drop_mode=args.drop_mode, sample_every=args.sample_every,
                        warmup=args.warmup if args.warmup is not None else max(args.sample_every, args.frames // 10),
                        source_fps=args.source_fps, model=args.model, rss_tolerance_mb=args.rss_tolerance_mb,
                        throughput_tolerance=args.throughput_tolerance,
                        extra_args=("--detector", args.detector) if args.detector else ())
    table = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=table, flush=True)

    say(f"soak: {machine()}")
    with tempfile.TemporaryDirectory(prefix="edgeface-soak-") as tmp:
        gallery = args.gallery or Path(tmp) / "gallery.npz"
        built = None
        if not gallery.exists():
            say(f"building a {args.people}-person gallery with the {args.model} model ...")

            def progress(done: int, wanted: int, tried: int) -> None:
                if done % 100 == 0 or done == wanted:
                    say(f"  gallery: {done}/{wanted} people ({tried} photos tried)")

            built = build_gallery(gallery, args.people, args.model, progress=progress)
            say(f"  built in {built['seconds']} s ({built['people_without_a_face']} people passed over: no face)")
        jpegs = clip_jpegs(DATA / "media" / CLIP)
        say(f"camera: {CLIP} looped ({len(jpegs)} frames), {'unpaced' if not config.source_fps else config.source_fps}"
            f" fps; drops every {config.drop_every} frames for {config.drop_seconds:g} s ({config.drop_mode}); "
            f"warm-up {config.warmup} frames")
        say(HEADER)
        result = soak(config, gallery, jpegs, on_sample=lambda s: say(format_sample(s)))
    say(f"(* a drop fell in the window)  {result.seconds} s in all; run's summary: {result.summary.get('frames')} "
        f"frames, {result.summary.get('fps')} fps, median {result.summary.get('median_frame_ms')} ms per frame, "
        f"model {Path(str(result.summary.get('model'))).name}, detector {result.summary.get('detector')}, "
        f"people {result.summary.get('people')}, identities {result.summary.get('identities')}, "
        f"capture {result.summary.get('capture')}")
    for line in verdict_lines(result):
        say(line)
    if result.returncode != 0:
        say("run's last lines:\n  " + "\n  ".join(result.log[-10:]))
    if args.json:
        out = result.to_dict()
        out["gallery"] = built
        out["machine"] = machine()
        print(json.dumps(out, indent=2, default=str))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
