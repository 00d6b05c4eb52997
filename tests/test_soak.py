"""A short soak of ``edgeface run`` on a live stream that drops and comes back (issue 22).

The soak is tests/benchmarks/soak_bench.py's: ``python -m edgeface run`` in its own process, reading a local
MJPEG-over-HTTP camera that loops the Hamilton clip through the live source (reader thread, FFmpeg timeouts, reopen
with back-off) and drops every few hundred frames, by hanging up or by going silent; the test reads the process's
descriptors, threads and memory from /proc.  The full run (20,000 frames, 1,000 people) is the benchmark's.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import tracemalloc
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from edgeface.runtime.results import FrameResult
from edgeface.runtime.stats import RunStats, StageTimes

BENCH = Path(__file__).parent / "benchmarks" / "soak_bench.py"

pytestmark = [pytest.mark.board, pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc (Linux)")]


@cache
def bench():
    """tests/benchmarks/soak_bench.py as a module."""
    spec = importlib.util.spec_from_file_location("soak_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gallery(data_dir, tmp_path_factory) -> Path:
    """40 people (the clip's two and 38 from LFW), one embedding each, made by the shipped default model."""
    path = tmp_path_factory.mktemp("soak") / "gallery.npz"
    built = bench().build_gallery(path, 40, "default", data=data_dir)
    assert built["people"] == 40
    return path


@pytest.fixture(scope="module")
def jpegs(media_dir) -> list[bytes]:
    return bench().clip_jpegs(media_dir / "short_hamilton_clip.mp4")


def explain(result) -> str:
    """The table, the verdict and run's log, for a failing assertion."""
    b = bench()
    return "\n".join([b.HEADER, *map(b.format_sample, result.samples), *b.verdict_lines(result), *result.log[-20:]])


def test_short_soak_keeps_descriptors_threads_and_memory_flat_and_recovers_every_drop(gallery, jpegs):
    # 2,000 frames at 100 fps with a drop every 500: hangup, silent (past the 5 s read timeout), hangup; 40-60 s
    # here.  Warm-up: the first 500 frames, before the first drop (the interpreters, FFmpeg and the allocator settle).
    config = bench().SoakConfig(frames=2_000, drop_every=500, drop_seconds=1.0, drop_mode="alternate",
                                sample_every=125, warmup=500, source_fps=100.0,
                                # The goal for 20,000 frames, a fortiori for 2,000.  Measured after
                                # warm-up: under 1.5 MB of spread (allocator arenas, the run summary's stage-time
                                # sample growing to its 400 KB cap).  A leaked frame (690 KB) every hundred frames,
                                # or a few MB of decoder state per reopen, goes past it; a leak of bytes per frame
                                # does not: test_run_stats_memory_stays_bounded_however_long_the_run.
                                rss_tolerance_mb=5.0,
                                # Not judged here: a 2,000-frame run on a shared 2-core machine is too short for a
                                # throughput figure (the benchmark's 20,000 frames judge it).
                                throughput_tolerance=1e9)
    result = bench().soak(config, gallery, jpegs)
    why = explain(result)
    assert result.returncode == 0 and result.summary["frames"] >= 2_000, why
    assert [d["mode"] for d in result.drops] == ["hangup", "silent", "hangup"], why
    v = result.verdict
    assert v["fds"]["ok"] and v["threads"]["ok"], why
    assert v["drops"]["ok"], why  # outages = reconnects = drops in run's summary and its log, frames after each
    assert result.summary["capture"]["outages"] == result.summary["capture"]["reconnects"] == 3, why
    assert all(d["recovered_after_s"] is not None and d["recovered_after_s"] < 10 for d in result.drops), why
    assert v["rss"]["ok"], why
    assert result.summary["people"] == 40 and result.summary["identities"].get("lin-manuel-miranda", 0) > 100, why


# `edgeface run` with a stream opener that leaks a descriptor and a thread on every open, as a careless reconnect
# would: the soak must see both.
LEAKY_RUN = textwrap.dedent("""
    import os, threading
    import edgeface.runtime.capture.devices as devices
    from edgeface.cli import main

    real_open_stream = devices.open_stream
    leaked = []

    def leaky_open_stream(url, config):
        leaked.append(os.open(os.devnull, os.O_RDONLY))
        threading.Thread(target=threading.Event().wait, daemon=True).start()
        return real_open_stream(url, config)

    devices.open_stream = leaky_open_stream
    main()
""")


def test_the_soak_catches_a_descriptor_and_a_thread_leaked_per_reconnect(gallery, jpegs):
    # 4 hangups (at frames 120, 240, 360, 480), each shorter than run's first back-off (0.5 s), so every reopen
    # succeeds at its first attempt and leaks exactly one descriptor and one thread; ~20 s here.
    config = bench().SoakConfig(frames=600, drop_every=120, drop_seconds=0.3, drop_mode="hangup",
                                sample_every=60, warmup=60, source_fps=100.0, throughput_tolerance=1e9,
                                launcher=(sys.executable, "-c", LEAKY_RUN))
    result = bench().soak(config, gallery, jpegs)
    why = explain(result)
    v = result.verdict
    assert v["drops"]["ok"], why  # the leak does not stop the recovery ...
    reopens = result.summary["capture"]["reconnects"]
    assert reopens == 4, why
    assert not v["fds"]["ok"] and v["fds"]["end"] - v["fds"]["start"] == reopens, why  # ... but the soak sees it
    assert not v["threads"]["ok"] and v["threads"]["end"] - v["threads"]["start"] == reopens, why
    assert not result.ok and any(line.startswith("FAIL open descriptors constant")
                                 for line in bench().verdict_lines(result))


# --- the leak the soak found: every frame's stage times kept for the summary -----------------------------------------


def test_stage_times_are_exact_up_to_their_capacity_and_a_uniform_sample_beyond():
    rng = np.random.default_rng(0)
    times = rng.exponential(5.0, size=(5_000, 2))
    few = StageTimes(("detect", "embed"), capacity=10_000)
    for d, e in times:
        few.add({"detect": d, "embed": e})
    assert len(few.rows) == 5_000 and few.median("detect") == float(np.median(times[:, 0]))
    np.testing.assert_allclose(few.frame_totals(), times.sum(axis=1))

    many = StageTimes(("detect", "embed"), capacity=1_000)
    for i, (d, e) in enumerate(times):
        many.add({"detect": d + (100.0 if i >= 2_500 else 0.0), "embed": e})  # the second half is much slower
    assert len(many.rows) == 1_000 and many.seen == 5_000
    late = (many.rows[:, 0] >= 100).mean()  # a uniform sample: half of it from each half of the run
    assert 0.45 < late < 0.55
    assert abs(many.median("embed") - float(np.median(times[:, 1]))) < 0.3  # median ~3.5; sampling error ~0.2
    assert StageTimes(capacity=1).rows.shape == (0, 5)
    with pytest.raises(ValueError, match="capacity of at least 1 frame"):
        StageTimes(capacity=0)


def test_run_stats_memory_stays_bounded_however_long_the_run():
    """RunStats kept every frame's stage times (~160 bytes a frame, 140 MB a day at 10 fps on a board); now
    its memory stops growing once its sample is full."""
    stats = RunStats(stage_times=StageTimes(capacity=2_000))
    stats.started = 0.0
    ms = {"capture": 1.0, "detect": 2.0, "align": 0.5, "embed": 3.0, "match": 0.1}
    result = FrameResult(0, 0, 0.0, [], ms)
    for _ in range(2_000):
        stats.add(result)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20_000):
            stats.add(result)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 20_000, grown  # the old lists: ~3 MB for these 20,000 frames
    summary = stats.summary()
    assert summary["frames"] == 22_000 and summary["median_ms"]["embed"] == 3.0
    assert summary["median_frame_ms"] == pytest.approx(6.6)
