"""Capture sources (edgeface.runtime.capture): parsing --source through the table of kinds, file sources, device
openers, the threaded live source that reopens a dropped device, stream URL redaction.

The live-source tests use test doubles and a local MJPEG-over-HTTP camera (tests/mjpeg_server.py); the few that go
through `edgeface run` use the session fixture ``runtime_bundle``.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from mjpeg_server import MJPEGServer
from run_cli import CLIP, events_of, invoke, runner

from edgeface.cli import app
from edgeface.errors import UserError
from edgeface.runtime.capture import (
    KINDS,
    SIZE_HELP,
    SOURCE_HELP,
    SOURCE_KINDS,
    CaptureConfig,
    ImageFilesSource,
    LiveSource,
    VideoFileSource,
    open_source,
    parse_source,
    redact_url,
)

pytestmark = pytest.mark.board

CAPTURE_MODULES = ("base", "devices", "files", "kinds", "live", "pacer", "urls")


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Run every test in its own folder: `edgeface run` picks up ./gallery.npz when present."""
    monkeypatch.chdir(tmp_path)


# --- the table of source kinds and --source ----------------------------------------------------------------------


def test_parse_source_kinds(media_dir, tmp_path):
    assert parse_source("0").kind == "camera" and parse_source("0").target == 0
    assert parse_source("/dev/video2").target == "/dev/video2"
    assert parse_source("picamera2").kind == "picamera2" and parse_source("picamera2:1").target == 1
    assert parse_source("rtsp://user:pw@cam/stream").kind == "stream"
    assert parse_source("http://127.0.0.1:8080/video").live
    assert parse_source(str(media_dir / CLIP)).kind == "video"
    assert parse_source(str(media_dir / "obama.jpg")).kind == "image"
    assert parse_source(str(media_dir / "knn_examples" / "test")).kind == "folder"
    assert not parse_source(str(media_dir / CLIP)).live
    with pytest.raises(UserError, match=r"^source not found: .*nope\.mp4 \(expected a camera index"):
        parse_source(str(tmp_path / "nope.mp4"))


def test_the_kinds_table_drives_parsing_help_and_liveness():
    assert {k.name: k.live for k in KINDS} == {"camera": True, "picamera2": True, "video": False, "stream": True,
                                               "folder": False, "image": False}
    assert SOURCE_KINDS == {k.name: k for k in KINDS}
    assert SOURCE_HELP == ("a camera index (0) or /dev/videoN, picamera2[:N], a video file, an rtsp:// or http:// "
                           "stream URL, a folder of images or one image")
    assert SIZE_HELP == "cameras and picamera2"
    # a kind recognised by its text wins over a file of that name
    Path("0").write_bytes(b"not a camera")
    assert parse_source("0").kind == "camera"


def test_source_help_and_errors_on_the_command_line_come_from_the_table():
    text = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "300"}).output
    assert f"{SOURCE_HELP[:1].upper()}{SOURCE_HELP[1:]}." in text
    assert f"Camera resolution WIDTHxHEIGHT ({SIZE_HELP})." in text
    result = invoke("run")
    assert result.exit_code == 2 and result.stderr.strip() == f"error: --source is required: {SOURCE_HELP}"
    result = invoke("run", "--source", " ")
    assert result.exit_code == 2 and result.stderr.strip() == f"error: --source is empty: give {SOURCE_HELP}"


def test_the_kinds_table_loads_no_opencv_and_no_room_loads_tensorflow():
    code = (
        "import sys\n"
        "import edgeface.runtime.capture.kinds\n"
        "light = sorted(m for m in ('cv2', 'numpy') if m in sys.modules)\n"
        + "".join(f"import edgeface.runtime.capture.{m}\n" for m in CAPTURE_MODULES)
        + "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(light, heavy[:5])\n"
        "sys.exit(1 if light or heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- file sources --------------------------------------------------------------------------------------------------


def test_video_file_is_read_frame_by_frame_in_rgb(media_dir):
    src = VideoFileSource(media_dir / CLIP)
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert len(frames) == 275 and [f.index for f in frames[:3]] == [0, 1, 2]
    assert frames[0].image.shape == (360, 640, 3)
    ok, bgr = cv2.VideoCapture(str(media_dir / CLIP)).read()
    np.testing.assert_array_equal(frames[0].image, bgr[..., ::-1])
    assert src.stats.ended_early is None


def test_video_that_ends_early_stops_cleanly_with_a_warning(short_videos, caplog):
    full, cut = short_videos
    with caplog.at_level(logging.WARNING, logger="edgeface"):
        src = VideoFileSource(cut)
        n = 0
        while src.read() is not None:
            n += 1
    assert 5 < n < 40
    assert src.stats.ended_early == f"clip40_cut.avi ended after {n} of the 40 frames its header announces " \
                                    "(truncated or damaged)"
    assert src.stats.ended_early in caplog.text


def test_unreadable_video_file_is_one_clear_line(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(UserError) as err:
        open_source(str(bad))
    assert str(err.value) == f"cannot read {bad}: not a video file OpenCV can decode, or a damaged one"
    result = invoke("run", "--source", bad, "-q")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: cannot read {bad}: not a video file OpenCV can decode, "
                                                  "or a damaged one"]


def test_image_folder_skips_unreadable_images(media_dir, tmp_path):
    for name in ("a_1.jpg", "a_10.jpg", "a_2.jpg"):
        shutil.copy(media_dir / "obama_small.jpg", tmp_path / name)
    (tmp_path / "a_3.png").write_bytes(b"broken png")
    (tmp_path / "notes.txt").write_text("not an image")
    src = ImageFilesSource(tmp_path)
    names = []
    while (f := src.read()) is not None:
        names.append(f.name)
    assert names == ["a_1.jpg", "a_2.jpg", "a_10.jpg"]  # natural order, the broken PNG skipped
    assert src.stats.skipped == 1


# --- device openers ------------------------------------------------------------------------------------------------


def test_missing_camera_index_is_one_clear_line():
    index = next(i for i in range(50, 100) if not Path(f"/dev/video{i}").exists())
    with pytest.raises(UserError, match=rf"^camera {index} not found: /dev/video{index} does not exist \("):
        open_source(str(index))
    result = invoke("run", "--source", str(index))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: camera {index} not found") and "Traceback" not in result.output


def test_picamera2_missing_is_one_clear_line():
    try:
        import picamera2  # noqa: F401
        pytest.skip("picamera2 is installed here")
    except ImportError:
        pass
    with pytest.raises(UserError, match=r"^picamera2 is not installed: on Raspberry Pi OS run `sudo apt install "
                                        r"python3-picamera2`"):
        open_source("picamera2")


# --- stream URL redaction ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, shown", [
    ("rtsp://admin:secret@192.168.1.20:554/stream1", "rtsp://admin:***@192.168.1.20:554/stream1"),
    ("rtsp://admin:pa/ss@cam.local/live", "rtsp://admin:***@cam.local/live"),  # '/' in the password
    ("rtsp://admin:p@ss/w@cam.local", "rtsp://admin:***@cam.local"),  # '@' and '/' in the password
    ("http://u:p@cam.local/a?user=x@y", "http://u:***@cam.local/a?user=x@y"),  # the query is kept
    ("rtsp://:token@cam.local/x", "rtsp://:***@cam.local/x"),  # no user name
    ("rtsp://cam.local:554/stream1", "rtsp://cam.local:554/stream1"),  # nothing to hide
    ("rtsp://admin@cam.local/x", "rtsp://admin@cam.local/x"),
])
def test_redact_url_hides_passwords_with_unencoded_slashes_and_ats(url, shown):
    assert redact_url(url) == shown


# --- the live source -----------------------------------------------------------------------------------------------


class FlakyDevice:
    """A capture device that delivers ``n`` frames and then fails, like an unplugged camera."""

    def __init__(self, n: int, image: np.ndarray, delay: float = 0.005) -> None:
        self.n, self.image, self.delay, self.released = n, image, delay, False

    def read(self):
        time.sleep(self.delay)
        if self.n <= 0:
            return False, None
        self.n -= 1
        return True, self.image

    def release(self):
        self.released = True


def test_live_source_that_drops_is_reopened_with_backoff(caplog):
    image = np.zeros((48, 64, 3), np.uint8)
    opened = []
    failures = iter([False, True, True, False])  # 1st open ok, 2 failed reopens, then back

    def opener():
        if next(failures, False):
            raise UserError("camera 0 not found: /dev/video0 does not exist")
        opened.append(FlakyDevice(5, image))
        return opened[-1]

    cfg = CaptureConfig(backoff_initial_s=0.05, backoff_max_s=0.2)
    with caplog.at_level(logging.WARNING, logger="edgeface"):
        src = LiveSource(opener, "camera test", cfg)
        got = []
        t0 = time.monotonic()
        while len(got) < 7 and time.monotonic() - t0 < 10:
            f = src.read()
            got.append(f)
        src.close()
    assert len(got) == 7 and all(f is not None for f in got)
    assert len(opened) == 2 and opened[0].released
    assert src.stats.outages == 1 and src.stats.reconnects == 1
    text = caplog.text
    assert "camera test stopped delivering frames; reopening in 0.1 s" in text
    assert "reopening camera test failed (attempt 1" in text and "next try in 0.1 s" in text
    assert "reopening camera test failed (attempt 2" in text and "next try in 0.2 s" in text
    assert "camera test reopened after" in text


def test_live_source_backoff_grows_while_reopens_keep_failing_and_resets_once_healthy(caplog):
    """A camera that opens but whose reads fail at once must not be reopened every backoff_initial_s for ever:
    the wait doubles from one outage to the next until the device delivers frames for a read timeout."""
    image = np.zeros((8, 8, 3), np.uint8)
    # Two opens that fail their first read, then one healthy for ~0.3 s (> read_timeout_s), then dead ones.
    devices = iter([FlakyDevice(0, image), FlakyDevice(0, image), FlakyDevice(60, image)])

    def opener():
        return next(devices, None) or FlakyDevice(0, image)

    cfg = CaptureConfig(read_timeout_s=0.1, backoff_initial_s=0.1, backoff_max_s=0.4)
    with caplog.at_level(logging.WARNING, logger="edgeface"):
        src = LiveSource(opener, "camera test", cfg)
        t0 = time.monotonic()
        while src.stats.outages < 6 and time.monotonic() - t0 < 10:
            time.sleep(0.02)
        src.close()
    waits = [float(m.group(1)) for r in caplog.records
             if (m := re.match(r"camera test stopped delivering frames; reopening in ([\d.]+) s", r.getMessage()))]
    # outages 1-2 back off, the healthy device resets the wait, then it grows again up to the cap
    assert waits[:6] == [0.1, 0.2, 0.1, 0.2, 0.4, 0.4]
    assert src.stats.frames == 0 and src.stats.reconnects >= 5


def test_live_source_survives_an_opener_that_crashes_and_close_never_releases_during_a_read(caplog):
    """A reopen failing with something other than UserError (a driver error) is retried, not the reader's end;
    and close() does not release a device whose read() is still running in the reader thread."""
    image = np.zeros((8, 8, 3), np.uint8)
    events: list[str] = []
    in_read = threading.Event()

    class Device:
        def __init__(self, frames: int, block_s: float = 0.0):
            self.frames, self.block_s = frames, block_s

        def read(self):
            if self.frames <= 0:
                return False, None
            self.frames -= 1
            if self.block_s and self.frames == 0:  # the last read hangs, like a camera that froze
                in_read.set()
                time.sleep(self.block_s)
                events.append("read returned")
            return True, image

        def release(self):
            events.append("released")

    opens = iter([Device(2), RuntimeError("driver exploded"), Device(10_000, block_s=1.5)])

    def opener():
        item = next(opens)
        if isinstance(item, Exception):
            raise item
        return item

    with caplog.at_level(logging.WARNING, logger="edgeface"):
        src = LiveSource(opener, "camera test", CaptureConfig(read_timeout_s=0.1, backoff_initial_s=0.05))
        got = [src.read() for _ in range(4)]
        assert all(f is not None for f in got)
        assert "reopening camera test failed (attempt 1: driver exploded)" in caplog.text
        src.device.frames = 1  # its next read is the last and hangs for 1.5 s
        assert in_read.wait(5)
        src.close()  # waits read_timeout_s + 1 = 1.1 s < 1.5 s: returns while read() is still running
        assert events == ["released"]  # only the first device (dropped, released by the reader before reopening)
        src._thread.join(5)
    assert events == ["released", "read returned", "released"]  # the hung device released after its read ended


def test_live_source_keeps_only_the_newest_frame():
    frames = iter(range(10_000))

    class Fast:
        def read(self):
            time.sleep(0.001)
            i = next(frames, None)
            return (i is not None), np.full((8, 8, 3), (i or 0) % 255, np.uint8)

        def release(self):
            pass

    src = LiveSource(lambda: Fast(), "fast camera", CaptureConfig(backoff_initial_s=10))
    got = []
    for _ in range(5):
        got.append(src.read().index)
        time.sleep(0.05)  # a slow consumer
    src.close()
    assert got == sorted(got) and min(np.diff(got)) > 5  # it always gets the present, not a backlog
    assert src.stats.dropped > 20


# --- network streams -----------------------------------------------------------------------------------------------


def test_stream_that_drops_mid_run_is_reopened_and_the_run_goes_on(runtime_bundle, face_jpeg, tmp_path):
    server = MJPEGServer(face_jpeg, per_connection=8)
    try:
        result = invoke("run", "--source", server.url, "-m", runtime_bundle, "--max-frames", 20, "-q")
    finally:
        server.close()
    assert result.exit_code == 0, result.output
    frames, summary = events_of(result.stdout)
    assert len(frames) == 20 and summary["frames"] == 20
    assert server.connections >= 3 and summary["capture"]["reconnects"] >= 2
    assert all(len(f["detections"]) == 1 for f in frames)  # the face is found in frames from every connection
    assert "stopped delivering frames; reopening in 0.5 s" in result.stderr
    assert "reopened after" in result.stderr


def test_stream_that_goes_silent_is_reopened_after_the_read_timeout(face_jpeg, caplog):
    # The connection stays open but no frame comes: only the read timeout can tell.
    server = MJPEGServer(face_jpeg, per_connection=None, fps=50)
    cfg = CaptureConfig(read_timeout_s=0.5, open_timeout_s=1.0, backoff_initial_s=0.05)
    with caplog.at_level(logging.WARNING, logger="edgeface"):
        src = open_source(server.url, cfg)
        try:
            assert src.read() is not None
            server.paused.set()
            t0 = time.monotonic()
            while src.stats.outages == 0 and time.monotonic() - t0 < 10:
                time.sleep(0.05)
            assert src.stats.outages == 1  # noticed within the read timeout
            server.paused.clear()
            while src.stats.reconnects == 0 and time.monotonic() - t0 < 20:
                time.sleep(0.05)
            assert src.stats.reconnects >= 1
            assert src.read() is not None
        finally:
            src.close()
            server.close()
    assert "stopped delivering frames" in caplog.text and "reopened after" in caplog.text


def test_a_stream_url_that_answers_with_an_error_is_not_called_silent():
    # A camera's web server answering 503 at once: the line says refused, not "no answer within 10 s".
    import http.server

    from edgeface.runtime.capture import CaptureConfig
    from edgeface.runtime.capture.devices import open_stream

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(503)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(UserError) as err:
            open_stream(f"http://127.0.0.1:{server.server_port}/video", CaptureConfig())
    finally:
        server.shutdown()
        server.server_close()
    assert "refused, or not a video stream (answered after" in str(err.value)
    assert "no answer within" not in str(err.value)
