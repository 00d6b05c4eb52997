"""The run loop through ``edgeface run`` (edgeface.runtime.pipeline): events and summary, videos that end early,
pacing, signals, and mistakes that stop a run with one line.

The model is the session fixture ``runtime_bundle`` (the shipped default bundle, so these tests also run on a
runtime-only install); live runs read tests/mjpeg_server.py's camera.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from mjpeg_server import MJPEGServer
from run_cli import CLIP, events_of, invoke

# Every test in its own folder: `edgeface run` picks up ./gallery.npz when present.
pytestmark = [pytest.mark.board, pytest.mark.usefixtures("in_tmp_dir")]


def test_two_people_photo_yields_two_faces(runtime_bundle, media_dir):
    result = invoke("run", "-s", media_dir / "two_people.jpg", "-m", runtime_bundle, "-q")
    assert result.exit_code == 0, result.output
    frames, summary = events_of(result.stdout)
    dets = frames[0]["detections"]
    assert len(dets) == 2 and summary["faces"] == 2
    left, right = sorted(dets, key=lambda d: d["box"][0])
    assert left["box"][2] < right["box"][0]  # two separate faces, side by side
    assert all(0.5 < d["det_score"] <= 1 and -1 <= d["score"] <= 1 for d in dets)
    assert set(frames[0]) >= {"frame", "timestamp", "detections", "ms"}
    assert set(frames[0]["ms"]) == {"capture", "detect", "align", "embed", "match"}


def test_run_on_a_video_writes_events_and_a_summary(runtime_bundle, media_dir, tmp_path):
    events = tmp_path / "events.jsonl"
    result = invoke("run", "-s", media_dir / CLIP, "-m", runtime_bundle, "--max-frames", 30, "--events", events,
                    "--detector", "full")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # the JSON went to the file
    frames, summary = events_of(events.read_text())
    assert [f["frame"] for f in frames] == list(range(30)) and [f["source_frame"] for f in frames] == list(range(30))
    assert summary["frames"] == 30 and summary["faces"] == sum(len(f["detections"]) for f in frames) > 20
    assert summary["identities"] == {"unknown": summary["faces"]}  # no gallery: nobody can be named
    assert set(summary["median_ms"]) == {"capture", "detect", "align", "embed", "match"}
    assert summary["fps"] > 0 and summary["peak_rss_mb"] > 10 and summary["detector"] == "full"
    assert "run summary" in result.stderr and "no gallery" in result.stderr


def test_run_on_a_video_that_ends_early(runtime_bundle, short_videos):
    full, cut = short_videos
    result = invoke("run", "-s", cut, "-m", runtime_bundle, "--max-frames", 100, "-q")
    assert result.exit_code == 0, result.output
    frames, summary = events_of(result.stdout)
    assert 5 < summary["frames"] == len(frames) < 40
    assert "clip40_cut.avi ended after" in summary["capture"]["ended_early"]
    assert "warning: clip40_cut.avi ended after" in result.stderr


def test_fps_limit_paces_the_run(runtime_bundle, short_videos):
    full, _ = short_videos
    t0 = time.perf_counter()
    result = invoke("run", "-s", full, "-m", runtime_bundle, "--max-frames", 10, "--fps-limit", 20, "-q")
    elapsed = time.perf_counter() - t0
    assert result.exit_code == 0, result.output
    frames, summary = events_of(result.stdout)
    assert summary["frames"] == 10
    # paced: 10 frames at 20 fps take at least 9 intervals of 50 ms
    assert elapsed >= 9 / 20 and summary["seconds"] >= 0.95 * 9 / 20


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_stops_a_live_run_cleanly_with_its_summary(runtime_bundle, face_jpeg, tmp_path, sig):
    server = MJPEGServer(face_jpeg, per_connection=None, fps=30)
    proc = subprocess.Popen([sys.executable, "-m", "edgeface", "run", "-s", server.url, "-m", str(runtime_bundle),
                             "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        first = proc.stdout.readline()
        assert json.loads(first)["frame"] == 0
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and f"{sig.name} received: stopped after" in err
    summary = json.loads(out.strip().splitlines()[-1])["summary"]
    assert summary["stopped_by"] == sig.name and summary["frames"] >= 1
    assert "run summary" in err


def test_signals_in_quick_succession_always_end_the_run(runtime_bundle, media_dir, tmp_path):
    """TERM, TERM, INT within microseconds: the handlers used to deadlock on the stop event's lock
    (4 runs of 12 hung for ever); the run must end every time, by its summary or as interrupted."""
    for photo in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        shutil.copy(media_dir / photo, tmp_path / photo)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "edgeface", "run", "-s", str(tmp_path), "-m",
                                 str(runtime_bundle), "-q", "--fps-limit", "0.01"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        try:
            assert json.loads(proc.stdout.readline())["frame"] == 0  # now waiting 100 s for the next frame
            for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT):
                os.kill(proc.pid, sig)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode in (0, 130), err
        assert "Traceback" not in err


def test_run_and_gallery_mistakes_found_by_review(media_dir, tmp_path):
    bad = tmp_path / "allbad"
    bad.mkdir()
    (bad / "a.jpg").write_text("garbage\n")
    (bad / "b.png").write_bytes(b"")
    result = invoke("run", "-s", bad, "-q")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (f"error: none of the 2 images in {bad} could be read (damaged "
                                                      "files, or not images)")
    result = invoke("gallery", "list", "-g", tmp_path)
    assert result.exit_code == 2 and result.stderr.strip() == (
        f"error: --gallery {tmp_path} is a folder: give the gallery's file, e.g. {tmp_path / 'gallery.npz'}")
    for args, message in ((["--threads", "-5"], "error: --threads must be a positive number, got -5"),
                          (["-m", str(tmp_path)], f"error: {tmp_path} is not a model bundle: manifest.json not found")):
        result = invoke("run", "--self-test", *args)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().startswith(message), result.stderr
