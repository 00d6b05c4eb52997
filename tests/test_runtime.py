"""The on-board runtime: gallery file, matching, capture sources, the run loop, enroll/gallery/run commands.

Models come from the session fixture ``exported_bundle`` (a small MobileFaceNet
trained on AT&T crops, exported to fp32 + int8 with its manifest and BlazeFace
files); the recognition tests on the Hamilton clip and the knn_examples photos use
the default bundle shipped in edgeface/models/default.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.errors import UserError
from edgeface.runtime.bundle import Bundle, default_bundle_dir
from edgeface.runtime.capture import (
    CaptureConfig,
    ImageFilesSource,
    LiveSource,
    VideoFileSource,
    open_source,
    parse_source,
    redact_url,
)
from edgeface.runtime.gallery import Gallery, GalleryError, ModelId
from edgeface.runtime.images import read_image
from edgeface.runtime.matcher import Matcher

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
CLIP = "short_hamilton_clip.mp4"
RUNTIME_MODULES = ("align", "bundle", "capture", "detector", "faces", "gallery", "gallery_crypto", "images",
                   "interpreter", "matcher", "pipeline", "preview", "selftest")


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Run every test in its own folder: `edgeface run` picks up ./gallery.npz when present."""
    monkeypatch.chdir(tmp_path)


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def events_of(text: str) -> tuple[list[dict], dict]:
    """Per-frame events and the summary from run's JSON lines."""
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    frames = [e for e in lines if "frame" in e]
    summary = next(e["summary"] for e in lines if "summary" in e)
    return frames, summary


def model_id(sha: str = "a" * 64, source: str | None = "s" * 64, dim: int = 4) -> ModelId:
    return ModelId(sha256=sha, embedding_dim=dim, source_sha256=source, name="test-model")


# --- no TensorFlow on the board ----------------------------------------------------------------


def test_runtime_and_run_help_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "import edgeface.runtime\n"
        + "".join(f"import edgeface.runtime.{m}\n" for m in RUNTIME_MODULES)
        + "from typer.testing import CliRunner\n"
        "from edgeface.cli import app\n"
        "for args in (['--help'], ['run', '--help'], ['enroll', '--help'], ['gallery', '--help']):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(heavy[:5])\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_run_and_enroll_work_with_tensorflow_unimportable(exported_bundle, media_dir, tmp_path):
    """The board install has no TensorFlow: make it unimportable and do the whole job."""
    gallery = tmp_path / "g.npz"
    code = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"  # `import tensorflow` now raises ImportError
        "sys.modules['keras'] = None\n"
        + "from typer.testing import CliRunner\n"
        "from edgeface.cli import app\n"
        f"r = CliRunner().invoke(app, ['enroll', 'obama', {str(media_dir / 'obama2.jpg')!r}, '-g', {str(gallery)!r},"
        f" '-m', {str(exported_bundle)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(app, ['run', '-s', {str(media_dir / 'obama2.jpg')!r}, '-g', {str(gallery)!r},"
        f" '-m', {str(exported_bundle)!r}, '-q'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(r.stdout)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    frames, summary = events_of(proc.stdout)
    assert frames[0]["detections"][0]["identity"] == "obama"


# --- gallery file ------------------------------------------------------------------------------------


def test_gallery_round_trip_without_pickle(tmp_path):
    g = Gallery(model=model_id())
    rng = np.random.default_rng(0)
    g.add("ada", rng.normal(size=(2, 4)), ["a1.jpg", "a2.jpg"])
    g.add("grace", rng.normal(size=(1, 4)), ["g1.jpg"])
    path = tmp_path / "g.npz"
    g.save(path)
    # A plain numpy reader with pickle disabled can read it: JSON header + float32 matrix.
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(npz["header"].tobytes().decode())
        assert header["format"] == "edgeface-gallery" and header["version"] == 1
        assert header["model"]["sha256"] == "a" * 64
        assert npz["embeddings"].dtype == np.float32 and npz["embeddings"].shape == (3, 4)
    back = Gallery.load(path, model_id())
    assert back.labels == ["ada", "ada", "grace"]
    assert back.names() == {"ada": 2, "grace": 1}
    np.testing.assert_array_equal(back.embeddings, g.embeddings)
    assert [e["source"] for e in back.entries] == ["a1.jpg", "a2.jpg", "g1.jpg"]
    assert not list(tmp_path.glob(".*tmp"))


def test_gallery_from_another_model_is_refused(tmp_path):
    path = tmp_path / "g.npz"
    g = Gallery(model=model_id(sha="1" * 64, source="2" * 64))
    g.add("ada", np.ones((1, 4)), ["a.jpg"])
    g.save(path)
    with pytest.raises(GalleryError) as err:
        Gallery.load(path, model_id(sha="3" * 64, source="4" * 64))
    assert str(err.value) == (
        f"{path} was enrolled with model test-model (222222222222), dim 4, but the current model is "
        "test-model (444444444444), dim 4: embeddings of different models cannot be compared; pass the gallery's "
        "--model or re-enroll into a new gallery")
    # Another file of the same trained network (int8 vs fp32) is the same model.
    assert Gallery.load(path, model_id(sha="5" * 64, source="2" * 64)).names() == {"ada": 1}
    # Without provenance, the file checksum decides; the dimension always has to agree.
    with pytest.raises(GalleryError):
        Gallery.load(path, model_id(sha="2" * 64, source="2" * 64, dim=8))


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "garbage", "empty", "plain_npy", "pickled_object"])
def test_corrupt_gallery_gives_one_line_and_is_left_untouched(tmp_path, damage):
    path = tmp_path / "g.npz"
    g = Gallery(model=model_id())
    g.add("ada", np.random.default_rng(1).normal(size=(50, 4)), [f"{i}.jpg" for i in range(50)])
    g.save(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":  # inside the embeddings member: the zip CRC catches it
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("embeddings.npy")
        pos = info.header_offset + 30 + len(info.filename) + 200
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
    elif damage == "garbage":
        path.write_bytes(b"this is not a gallery at all" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "plain_npy":
        np.save(tmp_path / "x.npy", np.zeros(3))
        path.write_bytes((tmp_path / "x.npy").read_bytes())
    elif damage == "pickled_object":  # an npz whose member needs pickle must not be unpickled
        np.savez(tmp_path / "p.npz", header=np.array([{"a": 1}], dtype=object), embeddings=np.zeros((1, 4)))
        path.write_bytes((tmp_path / "p.npz").read_bytes())
    before = path.read_bytes()
    with pytest.raises(GalleryError) as err:
        Gallery.load(path, model_id())
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "corrupt" in message or "not an edgeface gallery" in message
    assert path.read_bytes() == before


def test_gallery_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "g.npz"
    g = Gallery(model=model_id())
    g.add("ada", np.ones((1, 4)), ["a.jpg"])
    g.save(path)
    before = path.read_bytes()
    g.add("grace", np.ones((1, 4)), ["g.jpg"])

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(GalleryError, match=r"^cannot write gallery .*g\.npz: disk full; the file on disk \(if any\) "
                       "was not changed$"):  # a UserError: one line, no traceback
        g.save(path)
    assert path.read_bytes() == before  # the old gallery survives a failed write
    assert [p.name for p in tmp_path.iterdir()] == ["g.npz"]  # and no temp file is left behind


def test_gallery_names_remove_rename(tmp_path):
    g = Gallery(model=model_id())
    g.add("ada", np.ones((2, 4)), ["a1", "a2"])
    g.add("grace", np.ones((1, 4)), ["g1"])
    with pytest.raises(UserError, match="reserved"):
        g.add("Unknown", np.ones((1, 4)), ["x"])
    with pytest.raises(UserError, match=r"'grce' is not in the gallery \(did you mean 'grace'\?\)"):
        g.remove("grce")
    with pytest.raises(UserError, match="'grace' is already enrolled"):
        g.rename("ada", "grace")
    assert g.rename("ada", "ada lovelace") == 2
    assert g.remove("grace") == 1
    assert g.names() == {"ada lovelace": 2} and g.embeddings.shape == (2, 4)


# --- matching -------------------------------------------------------------------------------------


def test_matcher_best_identity_above_threshold_else_unknown():
    emb = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0]], np.float32)
    m = Matcher(emb, ["ada", "ada", "grace"], threshold=0.8)
    q = np.array([[2, 0.1, 0], [0, 1, 0.2], [0, 0, 1], [0.6, 0.6, 0.5]], np.float32)  # not unit length
    out = m.match(q)
    assert [r.identity for r in out] == ["ada", "grace", "unknown", "unknown"]
    assert out[0].score == pytest.approx(2 / np.linalg.norm([2, 0.1, 0]), abs=1e-5)
    assert out[2].nearest in ("ada", "grace") and out[2].score == pytest.approx(0.0, abs=1e-6)
    assert out[3].nearest == "ada" and 0 < out[3].score < 0.8
    empty = Matcher(np.zeros((0, 3), np.float32), [], 0.5)
    assert [r.identity for r in empty.match(q[:2])] == ["unknown", "unknown"]
    assert m.match(np.zeros((0, 3))) == []


def test_matcher_finds_the_one_enrolled_face_among_100k():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(100_000, 128)).astype(np.float32)
    labels = [f"p{i // 4}" for i in range(len(emb))]
    m = Matcher(emb, labels, threshold=0.6)
    queries = emb[[73_421, 5]] + rng.normal(scale=0.3, size=(2, 128)).astype(np.float32)
    out = m.match(np.vstack([queries, rng.normal(size=(1, 128))]))
    assert [r.identity for r in out[:2]] == ["p18355", "p1"]
    assert out[2].identity == "unknown"  # random directions in 128-d are nearly orthogonal to everyone


# --- capture sources ----------------------------------------------------------------------------------


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


@pytest.fixture(scope="module")
def short_videos(media_dir, tmp_path_factory):
    """A 40-frame MJPEG AVI of the clip, and a copy cut in half (its header still announces 40 frames)."""
    out = tmp_path_factory.mktemp("videos")
    cap = cv2.VideoCapture(str(media_dir / CLIP))
    full = out / "clip40.avi"
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 360))
    for _ in range(40):
        writer.write(cap.read()[1])
    writer.release()
    cut = out / "clip40_cut.avi"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return full, cut


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


class MJPEGServer:
    """A local MJPEG-over-HTTP camera: each connection sends ``per_connection`` frames, then hangs up.

    ``per_connection=None`` streams until closed; while ``paused`` is set, connections stay open but
    silent.  Counts connections, so a test can see a reconnect.
    """

    def __init__(self, jpeg: bytes, per_connection: int | None, fps: float = 50.0) -> None:
        self.connections = 0
        self.paused = threading.Event()
        self.closed = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                sent = 0
                try:
                    while not outer.closed.is_set() and (per_connection is None or sent < per_connection):
                        if outer.paused.is_set():
                            time.sleep(0.02)
                            continue
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpeg) + jpeg + b"\r\n")
                        self.wfile.flush()
                        sent += 1
                        time.sleep(1.0 / fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/video.mjpg"

    def close(self):
        self.closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def face_jpeg(media_dir) -> bytes:
    image = cv2.imread(str(media_dir / "obama2.jpg"))
    image = cv2.resize(image, (313, 600))
    return cv2.imencode(".jpg", image)[1].tobytes()


def test_stream_that_drops_mid_run_is_reopened_and_the_run_goes_on(exported_bundle, face_jpeg, tmp_path):
    server = MJPEGServer(face_jpeg, per_connection=8)
    try:
        result = invoke("run", "--source", server.url, "-m", exported_bundle, "--max-frames", 20, "-q")
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


# --- the pipeline and the commands ------------------------------------------------------------------


@pytest.fixture(scope="module")
def knn_gallery(exported_bundle, media_dir, tmp_path_factory) -> Path:
    """knn_examples/train enrolled (one person per folder), with the CLI."""
    path = tmp_path_factory.mktemp("gallery") / "knn.npz"
    for person in sorted((media_dir / "knn_examples" / "train").iterdir()):
        result = invoke("enroll", person.name, person, "-g", path, "-m", exported_bundle, "--pick", "largest")
        assert result.exit_code == 0, result.output
    return path


def test_two_people_photo_yields_two_faces(exported_bundle, media_dir):
    result = invoke("run", "-s", media_dir / "two_people.jpg", "-m", exported_bundle, "-q")
    assert result.exit_code == 0, result.output
    frames, summary = events_of(result.stdout)
    dets = frames[0]["detections"]
    assert len(dets) == 2 and summary["faces"] == 2
    left, right = sorted(dets, key=lambda d: d["box"][0])
    assert left["box"][2] < right["box"][0]  # two separate faces, side by side
    assert all(0.5 < d["det_score"] <= 1 and -1 <= d["score"] <= 1 for d in dets)
    assert set(frames[0]) >= {"frame", "timestamp", "detections", "ms"}
    assert set(frames[0]["ms"]) == {"capture", "detect", "align", "embed", "match"}


def test_an_enrolled_photo_is_recognised_as_its_person(knn_gallery, exported_bundle, media_dir):
    """Enrollment and recognition share detection, alignment and embedding: a photo matches its own entry."""
    photo = media_dir / "knn_examples" / "train" / "biden" / "biden.jpg"
    result = invoke("run", "-s", photo, "-m", exported_bundle, "-g", knn_gallery, "-q")
    assert result.exit_code == 0, result.output
    frames, summary = events_of(result.stdout)
    face = frames[0]["detections"][0]
    assert face["identity"] == "biden" and face["score"] > 0.99
    assert summary["identities"] == {"biden": 1} and summary["people"] == 5


def test_enroll_reports_photos_without_one_face(exported_bundle, media_dir, tmp_path):
    no_face = tmp_path / "curtain.jpg"  # the top-left corner of a real photo: no face in it
    cv2.imwrite(str(no_face), cv2.imread(str(media_dir / "two_people.jpg"))[:200, :200])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    gallery = tmp_path / "g.npz"
    two = media_dir / "two_people.jpg"
    result = invoke("enroll", "obama", media_dir / "obama2.jpg", no_face, two, broken, "-g", gallery,
                    "-m", exported_bundle, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    status = {Path(r["photo"]).name: (r["status"], r["faces"]) for r in report["photos"]}
    assert status == {"obama2.jpg": ("enrolled", 1), "curtain.jpg": ("no face", 0),
                      "two_people.jpg": ("several faces", 2), "broken.jpg": ("unreadable", 0)}
    assert report["enrolled"] == 1 and report["skipped"] == 3
    assert Gallery.load(gallery).names() == {"obama": 1}
    # --pick largest takes the largest face of a group photo
    result = invoke("enroll", "group", two, "-g", gallery, "-m", exported_bundle, "--pick", "largest")
    assert result.exit_code == 0, result.output
    assert Gallery.load(gallery).names() == {"obama": 1, "group": 1}
    # nothing enrollable: one line, exit 2, gallery untouched
    before = gallery.read_bytes()
    result = invoke("enroll", "nobody", no_face, two, "-g", gallery, "-m", exported_bundle)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: no photo of 'nobody' could be enrolled (curtain.jpg: no face detected; two_people.jpg: 2 faces: use "
        "a photo of this person alone, or --pick largest)")
    assert gallery.read_bytes() == before


def test_gallery_commands_list_remove_rename(knn_gallery, tmp_path):
    gallery = tmp_path / "g.npz"
    shutil.copy(knn_gallery, gallery)
    result = invoke("gallery", "list", "-g", gallery, "--json")
    assert result.exit_code == 0
    listed = json.loads(result.stdout)
    assert [p["name"] for p in listed["people"]] == ["alex_lacamoire", "biden", "kit_harington", "obama",
                                                      "rose_leslie"]
    assert listed["embeddings"] == 9 and len(listed["model"]["sha256"]) == 64
    assert invoke("gallery", "rename", "kit_harington", "Kit Harington", "-g", gallery).exit_code == 0
    assert invoke("gallery", "remove", "rose_leslie", "-g", gallery).exit_code == 0
    result = invoke("gallery", "remove", "obamma", "-g", gallery)
    assert result.exit_code == 2 and "did you mean 'obama'?" in result.stderr
    names = Gallery.load(gallery).names()
    assert names == {"alex_lacamoire": 1, "biden": 2, "Kit Harington": 2, "obama": 2}
    result = invoke("gallery", "list", "-g", gallery)
    assert result.exit_code == 0 and "Kit Harington" in result.stdout


def test_run_refuses_a_gallery_from_another_model(knn_gallery, exported_bundle, media_dir, tmp_path):
    other = tmp_path / "other_bundle"
    shutil.copytree(exported_bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest.setdefault("provenance", {})["source_sha256"] = "f" * 64  # another trained network
    manifest["model"]["name"] = "other"
    (other / "manifest.json").write_text(json.dumps(manifest))
    before = knn_gallery.read_bytes()
    for args in (["run", "-s", media_dir / "obama2.jpg"], ["enroll", "x", media_dir / "obama2.jpg"]):
        result = invoke(*args, "-m", other, "-g", knn_gallery, "-q" if args[0] == "run" else "--json")
        assert result.exit_code == 2
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {knn_gallery} was enrolled with model ")
        assert line.endswith("but the current model is other (ffffffffffff), dim "
                             f"{manifest['model']['embedding_dim']}: embeddings of different models cannot be "
                             "compared; pass the gallery's --model or re-enroll into a new gallery")
    assert knn_gallery.read_bytes() == before


def test_corrupt_gallery_stops_run_and_enroll_and_is_not_overwritten(exported_bundle, knn_gallery, media_dir,
                                                                       tmp_path):
    gallery = tmp_path / "g.npz"
    data = knn_gallery.read_bytes()
    gallery.write_bytes(data[: len(data) - 100])  # a copy cut short, as by a full disk or a pulled plug
    before = gallery.read_bytes()
    for args in (["run", "-s", media_dir / "obama2.jpg", "-q"], ["enroll", "obama", media_dir / "obama2.jpg"],
                 ["gallery", "remove", "obama"]):
        model = ["-m", exported_bundle] if args[0] != "gallery" else []
        result = invoke(*args, *model, "-g", gallery)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: {gallery} is corrupt or truncated (")
        assert "it was left untouched: restore a backup or delete it and re-enroll" in result.stderr
        assert gallery.read_bytes() == before


def test_run_on_a_video_writes_events_and_a_summary(exported_bundle, media_dir, tmp_path):
    events = tmp_path / "events.jsonl"
    result = invoke("run", "-s", media_dir / CLIP, "-m", exported_bundle, "--max-frames", 30, "--events", events,
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


def test_run_on_a_video_that_ends_early(exported_bundle, short_videos):
    full, cut = short_videos
    result = invoke("run", "-s", cut, "-m", exported_bundle, "--max-frames", 100, "-q")
    assert result.exit_code == 0, result.output
    frames, summary = events_of(result.stdout)
    assert 5 < summary["frames"] == len(frames) < 40
    assert "clip40_cut.avi ended after" in summary["capture"]["ended_early"]
    assert "warning: clip40_cut.avi ended after" in result.stderr


def test_fps_limit_paces_the_run(exported_bundle, short_videos):
    full, _ = short_videos
    t0 = time.perf_counter()
    result = invoke("run", "-s", full, "-m", exported_bundle, "--max-frames", 10, "--fps-limit", 20, "-q")
    elapsed = time.perf_counter() - t0
    assert result.exit_code == 0, result.output
    frames, summary = events_of(result.stdout)
    assert summary["frames"] == 10
    # paced: 10 frames at 20 fps take at least 9 intervals of 50 ms
    assert elapsed >= 9 / 20 and summary["seconds"] >= 0.95 * 9 / 20


def test_save_unknown_keeps_crops_that_enroll_again(exported_bundle, media_dir, tmp_path):
    crops = tmp_path / "unknown"
    result = invoke("run", "-s", media_dir / "two_people.jpg", "-m", exported_bundle, "--save-unknown", crops, "-q")
    assert result.exit_code == 0, result.output
    saved = sorted(crops.glob("unknown_*.png"))
    assert len(saved) == 2 and events_of(result.stdout)[1]["unknown_saved"] == 2
    # strangers' faces are biometric data: a folder and files no other account can read, whatever the umask
    assert stat.S_IMODE(crops.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in saved} == {0o600}
    result = invoke("enroll", "someone", saved[0], "-g", tmp_path / "g.npz", "-m", exported_bundle)
    assert result.exit_code == 0, result.output  # the saved crop holds a detectable face
    assert stat.S_IMODE((tmp_path / "g.npz").stat().st_mode) == 0o600  # a new gallery is private


def test_self_test_passes_on_the_bundle_and_catches_a_damaged_model(exported_bundle, tmp_path):
    result = invoke("run", "--self-test", "-m", exported_bundle)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and all(report["checks"].values())
    assert report["embedding_dim"] == Bundle.load(exported_bundle).embedding_dim
    assert abs(report["norm"] - 1) < 1e-3 and report["embed_ms"] > 0
    damaged = tmp_path / "damaged"
    shutil.copytree(exported_bundle, damaged)
    model = damaged / Bundle.load(damaged).entry()["path"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    result = invoke("run", "--self-test", "-m", damaged)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["error"].startswith(f"checksum mismatch for {model}")
    assert result.stderr.startswith("error: self-test failed: checksum mismatch")


def test_edgetpu_delegate_without_the_runtime_is_one_clear_line(exported_bundle, media_dir):
    import ctypes

    try:
        ctypes.CDLL("libedgetpu.so.1")
        pytest.skip("libedgetpu.so.1 is installed here")
    except OSError:
        pass
    result = invoke("run", "-s", media_dir / "obama2.jpg", "-m", exported_bundle, "--delegate", "edgetpu")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: the Edge TPU runtime library libedgetpu.so.1 is not installed: install the Edge TPU runtime: on "
        "Debian/Raspberry Pi OS add Coral's apt repository and `sudo apt-get install libedgetpu1-std` (see "
        "coral.ai/docs/accelerator/get-started)")


def test_bad_options_are_one_line_with_a_suggestion(exported_bundle, media_dir):
    cases = [
        (["--detector", "shrt"], "error: --detector 'shrt' is not valid (did you mean 'short'?): choose one of auto, "
                                 "short, full, haar"),
        (["--backend", "ai_edge_lite"], "error: --backend 'ai_edge_lite' is not valid (did you mean "
                                        "'ai_edge_litert'?): choose one of ai_edge_litert, tflite_runtime, tensorflow"),
        (["--preview", "localhost"], "error: --preview 'localhost' is not HOST:PORT (e.g. 127.0.0.1:8080, :8080, or "
                                     "0.0.0.0:8080 to serve the whole network)"),
        (["--fps-limit", "0"], "error: --fps-limit must be a positive number, got 0.0"),
        (["--fps-limit", "nan"], "error: --fps-limit must be a positive number, got nan"),
        (["--fps-limit", "1e-300"], "error: --fps-limit 1e-300 is below 0.001 (one frame every 1000 s)"),
    ]
    for extra, message in cases:
        result = invoke("run", "-s", media_dir / "obama2.jpg", "-m", exported_bundle, *extra)
        assert result.exit_code == 2 and result.stderr.strip() == message, result.output
    result = invoke("run", "-m", exported_bundle)
    assert result.exit_code == 2 and result.stderr.startswith("error: --source is required")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_stops_a_live_run_cleanly_with_its_summary(exported_bundle, face_jpeg, tmp_path, sig):
    server = MJPEGServer(face_jpeg, per_connection=None, fps=30)
    proc = subprocess.Popen([sys.executable, "-m", "edgeface", "run", "-s", server.url, "-m", str(exported_bundle),
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


def test_signals_in_quick_succession_always_end_the_run(exported_bundle, media_dir, tmp_path):
    """TERM, TERM, INT within microseconds: the handlers used to deadlock on the stop event's lock
    (4 runs of 12 hung for ever); the run must end every time, by its summary or as interrupted."""
    for photo in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        shutil.copy(media_dir / photo, tmp_path / photo)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "edgeface", "run", "-s", str(tmp_path), "-m",
                                 str(exported_bundle), "-q", "--fps-limit", "0.01"], stdout=subprocess.PIPE,
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


# --- recognition quality with the shipped default model ------------------------------------------------


NEEDS_DEFAULT = pytest.mark.skipif(not (default_bundle_dir() / "manifest.json").is_file(),
                                   reason="needs the default bundle at edgeface/models/default/")
# In the clip's 275 frames (full-range detector): who is named in each frame, with Obama and Biden enrolled as well,
# who are not in the clip, so their names must never appear on a face there.
CLIP_PEOPLE = {"lin-manuel-miranda": "lin-manuel-miranda.png", "alex-lacamoire": "alex-lacamoire.png"}
CLIP_DISTRACTORS = {"obama": "obama.jpg", "biden": "biden.jpg"}


@pytest.fixture(scope="module")
def hamilton_run(media_dir, tmp_path_factory) -> tuple[list[dict], dict]:
    gallery = tmp_path_factory.mktemp("hamilton") / "g.npz"
    for name, photo in {**CLIP_PEOPLE, **CLIP_DISTRACTORS}.items():
        result = invoke("enroll", name, media_dir / photo, "-g", gallery)
        assert result.exit_code == 0, result.output
    result = invoke("run", "-s", media_dir / CLIP, "-g", gallery, "--detector", "full", "-q")
    assert result.exit_code == 0, result.output
    frames, summary = events_of(result.stdout)
    assert summary["frames"] == 275 and summary["faces"] > 275  # stage and audience shots: several faces in many frames
    return frames, summary


def _named_faces(frames: list[dict]) -> dict[str, int]:
    names = [d["identity"] for f in frames for d in f["detections"]]
    return {n: names.count(n) for n in CLIP_PEOPLE}


@NEEDS_DEFAULT
def test_hamilton_clip_never_misnames_a_face(hamilton_run):
    frames, _ = hamilton_run
    for f in frames:
        names = [d["identity"] for d in f["detections"]]
        assert set(names) <= {*CLIP_PEOPLE, "unknown"}, (f["frame"], names)  # nobody else's name appears
        assert all(names.count(n) <= 1 for n in CLIP_PEOPLE), (f["frame"], names)  # one face per person and frame
    assert _named_faces(frames)["lin-manuel-miranda"] >= 110  # his photo matches his stage face: measured 127


# Barack Obama sits in the audience in frames 244-271 and is enrolled nowhere: the old default model named him
# "alex-lacamoire" there (cosine 0.47-0.51 against its 0.469).
AUDIENCE_FRAMES = range(244, 272)


@pytest.fixture(scope="module")
def hamilton_two_photos(media_dir, tmp_path_factory) -> list[dict]:
    """The clip with only the two reference photos enrolled, every setting the default (the auto detector)."""
    gallery = tmp_path_factory.mktemp("hamilton2") / "g.npz"
    for name, photo in CLIP_PEOPLE.items():
        result = invoke("enroll", name, media_dir / photo, "-g", gallery)
        assert result.exit_code == 0, result.output
    result = invoke("run", "-s", media_dir / CLIP, "-g", gallery, "-q")
    assert result.exit_code == 0, result.output
    return events_of(result.stdout)[0]


@NEEDS_DEFAULT
def test_hamilton_clip_names_nobody_in_the_audience(hamilton_two_photos):
    frames = hamilton_two_photos
    audience = [(f["frame"], d["identity"], d["score"]) for f in frames if f["frame"] in AUDIENCE_FRAMES
                for d in f["detections"] if d["identity"] != "unknown"]
    assert audience == []
    # measured 112 faces with the default model (the dlib import), 66 with the MobileFaceNet it replaced
    assert _named_faces(frames)["lin-manuel-miranda"] >= 100


@NEEDS_DEFAULT
@pytest.mark.xfail(strict=True, reason="Alex Lacamoire is on screen in near profile in the dark (frames ~27-76), his "
                   "photo is frontal: the default model (dlib's ResNet) names him on none of them at its FAR 1e-3 "
                   "threshold, the MobileFaceNet neither, and dlib itself names him on 1 face at face_recognition's "
                   "tolerance (tests/benchmarks/clip_teacher_bench.py); strict, so a model that does recognise him "
                   "makes this a required pass")
def test_hamilton_clip_recognises_both_enrolled_people(hamilton_run):
    frames, summary = hamilton_run
    named = _named_faces(frames)
    # each must be named in a good share of the faces: a quarter of an even split of the clip's detected faces
    assert all(n >= 0.25 * summary["faces"] / 2 for n in named.values()), (named, summary["faces"])


@NEEDS_DEFAULT
def test_obama_photo_is_named_against_the_knn_gallery(media_dir, tmp_path):
    gallery = tmp_path / "g.npz"
    for person in sorted((media_dir / "knn_examples" / "train").iterdir()):
        photos = [p for p in person.iterdir() if p.name != "obama.jpg"]  # not the very photo we query
        result = invoke("enroll", person.name, *photos, "-g", gallery, "--pick", "largest")
        assert result.exit_code == 0, result.output
    result = invoke("run", "-s", media_dir / "obama.jpg", "-g", gallery, "-q")
    assert result.exit_code == 0, result.output
    frames, _ = events_of(result.stdout)
    assert [d["identity"] for d in frames[0]["detections"]] == ["obama"]


def test_alignment_follows_the_manifest_template(media_dir):
    from edgeface.runtime.align import TEMPLATE_112, align_face
    from edgeface.runtime.detector import create_detector
    from edgeface.runtime.facemodel import FaceModelSpec

    ours = FaceModelSpec.edgeface()
    for manifest in ({"alignment": {"size": 112, "template": TEMPLATE_112.tolist()}}, {}):
        np.testing.assert_allclose(FaceModelSpec.from_manifest(manifest).chip_template(), TEMPLATE_112, atol=1e-4)
    shifted = TEMPLATE_112 + [0, 8]  # a model trained on crops with the face 8 px lower
    lowered = FaceModelSpec.from_manifest({"alignment": {"size": 112, "template": shifted.tolist()}})
    np.testing.assert_allclose(lowered.chip_template(), shifted, atol=1e-4)
    with pytest.raises(UserError, match="must be 4 or 5 \\[x, y\\] points.*re-export the bundle"):
        FaceModelSpec.from_manifest({"alignment": {"size": 112, "template": [[1, 2]]}})
    big = FaceModelSpec.from_manifest({"alignment": {"size": 128}})
    with pytest.raises(UserError, match="takes 112x112 images but its spec says 128x128"):
        big.for_model_input((1, 112, 112, 3), "m.tflite")

    image = read_image(media_dir / "obama_small.jpg")
    det = create_detector("short").detect(image)[0]
    crop = ours.align(image, det.keypoints)
    np.testing.assert_array_equal(crop, align_face(image, det.keypoints))
    lower = lowered.align(image, det.keypoints)
    # the face moved down by 8 px: row r of the shifted crop is row r - 8 of ours (up to interpolation)
    diff = np.abs(lower[20:100].astype(int) - crop[12:92].astype(int)).mean()
    assert diff < 6 and np.abs(lower.astype(int) - crop.astype(int)).mean() > diff + 5


# --- option checks, file errors and the unknown-face saver ----------------------------------------------


def test_choice_tables_equal_the_runtime_tables_and_int8_mixed_is_a_format():
    from edgeface.commands import detector_options
    from edgeface.commands import run as run_cmd
    from edgeface.runtime.bundle import FORMAT_PREFERENCE
    from edgeface.runtime.detector import DEFAULT_DETECTOR, DETECTOR_KINDS, DETECTORS
    from edgeface.runtime.interpreter import BACKENDS

    # the copies kept in the command module (the runtime modules are too heavy for --help) must not drift
    assert run_cmd.DETECTOR_CHOICES == DETECTOR_KINDS == ("auto", *DETECTORS, "haar")
    assert detector_options.DEFAULT_DETECTOR == DEFAULT_DETECTOR
    assert run_cmd.BACKEND_CHOICES == BACKENDS
    assert run_cmd.FORMAT_CHOICES == (*FORMAT_PREFERENCE, "edgetpu", "edgetpu_compiled")
    assert run_cmd._choice("int8_mixed", run_cmd.FORMAT_CHOICES, "--format") == "int8_mixed"


@NEEDS_DEFAULT
def test_format_int8_mixed_is_accepted_and_preferred(media_dir, tmp_path):
    """A bundle with an `export --auto-mixed` file: `--format int8_mixed` runs it, and so does the default."""
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    int8 = next(f for f in manifest["files"] if f["format"] == "int8")
    shutil.copy(bundle / int8["path"], bundle / "mixed.tflite")  # same bytes, so the same checksum
    manifest["files"].append({**int8, "format": "int8_mixed", "path": "mixed.tflite"})
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    for fmt in (["--format", "int8_mixed"], []):
        result = invoke("run", "-s", media_dir / "obama.jpg", "-m", bundle, *fmt, "-q")
        assert result.exit_code == 0, result.output
        assert events_of(result.stdout)[1]["model"] == str(bundle / "mixed.tflite")


def test_enroll_rejects_threads_that_are_not_positive(media_dir):
    for threads in ("0", "-5"):
        result = invoke("enroll", "obama", media_dir / "obama.jpg", "-g", "g.npz", "--threads", threads)
        assert result.exit_code == 2
        assert result.stderr.strip() == f"error: --threads must be a positive number, got {int(threads)}"
    assert not Path("g.npz").exists()


@NEEDS_DEFAULT
def test_enroll_into_another_gallery_ignores_gallery_npz_in_the_current_folder(media_dir, tmp_path):
    cwd_gallery = Path("gallery.npz")  # the test runs in tmp_path (autouse fixture)
    cwd_gallery.write_bytes(b"PK\x03\x04 not really a zip")
    other = tmp_path / "other.npz"
    result = invoke("enroll", "obama", media_dir / "obama.jpg", "-g", other)
    assert result.exit_code == 0, result.output
    assert Gallery.load(other).names() == {"obama": 1}
    assert cwd_gallery.read_bytes() == b"PK\x03\x04 not really a zip"  # neither read nor touched
    assert "no gallery" not in result.stderr and "gallery.npz" not in result.stderr


def test_events_file_that_cannot_be_written_is_one_line_before_the_model_loads(media_dir, tmp_path):
    events = tmp_path / "no" / "such" / "dir" / "e.jsonl"
    # a folder that is no bundle: had the models been loaded first, that would have been the error
    result = invoke("run", "-s", media_dir / "obama.jpg", "-m", tmp_path, "--events", events)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --events {events}: cannot write to it (No such file or directory)"
    result = invoke("run", "-s", media_dir / "obama.jpg", "-m", tmp_path, "--events", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --events {tmp_path}: cannot write to it (Is a directory)"


def test_save_unknown_given_a_file_is_one_line_before_the_model_loads(media_dir, tmp_path):
    a_file = tmp_path / "crops"
    a_file.write_text("not a folder")
    result = invoke("run", "-s", media_dir / "obama.jpg", "-m", tmp_path, "--save-unknown", a_file)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: --save-unknown {a_file} is a file: give a folder for the crops "
                                     "(created if missing)")
    assert a_file.read_text() == "not a folder"
    from edgeface.runtime.pipeline import UnknownSaver

    with pytest.raises(UserError, match=r"^--save-unknown .*crops/sub: cannot create the folder \("):
        UnknownSaver(a_file / "sub", 0.5)


def _unknown_frame(image: np.ndarray, boxes: list, index: int, timestamp: float):
    from edgeface.runtime.pipeline import FaceResult, FrameResult

    faces = []
    for i, box in enumerate(boxes):
        embedding = np.zeros(16, np.float32)
        embedding[index * 4 + i] = 1  # every face its own person: the cooldown never skips one
        faces.append(FaceResult(np.array(box, np.float32), np.zeros((6, 2), np.float32), 0.9, "unknown", 0.1,
                                None, embedding=embedding))
    return FrameResult(index, index, timestamp, faces, {}, image=image)


def test_unknown_folder_is_capped_and_aged_oldest_first(tmp_path):
    from edgeface.runtime.pipeline import UnknownSaver

    folder = tmp_path / "unknown"
    folder.mkdir()
    now = time.time()
    for i in range(6):  # unknown_0 is the oldest, 10 days apart
        crop = folder / f"unknown_{i}.png"
        crop.write_bytes(b"x" * 1000)
        os.utime(crop, (now - (60 - 10 * i) * 86400, now - (60 - 10 * i) * 86400))
    (folder / "notes.txt").write_text("mine")  # not a crop: never touched
    saver = UnknownSaver(folder, 0.5, max_age_s=45 * 86400)  # at start: 60 and 50 days old go
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", *[f"unknown_{i}.png" for i in range(2, 6)]]
    saver.max_files = 3
    assert saver.prune(now) == 1 and not (folder / "unknown_2.png").exists()
    saver.max_bytes = 1500  # room for one crop of 1000 bytes
    assert saver.prune(now) == 2 and [p.name for p in folder.glob("unknown_*")] == ["unknown_5.png"]
    assert saver.pruned == 5


def test_unknown_limits_must_be_positive(media_dir, tmp_path):
    for flag, value in (("--unknown-max-files", "0"), ("--unknown-max-mb", "-1"), ("--unknown-max-days", "nan")):
        result = invoke("run", "-s", media_dir / "obama.jpg", "--save-unknown", tmp_path / "u", flag, value)
        assert result.exit_code == 2, (flag, result.output)
        assert result.stderr.strip().splitlines() == [f"error: {flag} must be a positive number, got "
                                                      f"{float(value) if flag != '--unknown-max-files' else value}"]


def test_unknown_saver_skips_empty_crops_and_outlives_a_folder_it_cannot_write(media_dir, tmp_path, caplog):
    from edgeface.runtime.pipeline import UnknownSaver

    image = read_image(media_dir / "obama.jpg")
    h, w = image.shape[:2]
    inside, outside = [w * 0.3, h * 0.3, w * 0.6, h * 0.6], [w + 50, h + 50, w + 150, h + 150]
    folder = tmp_path / "crops"
    saver = UnknownSaver(folder, threshold=0.5)
    saver(_unknown_frame(image, [outside, inside], 0, 1000.0))  # the box beyond the frame has no pixels
    assert saver.saved == 1 and saver.failed == 0 and len(list(folder.glob("unknown_*.png"))) == 1

    shutil.rmtree(folder)
    folder.write_text("the folder is gone")  # every write now fails with an OSError, as on a full disk
    with caplog.at_level(logging.WARNING, logger="edgeface"):
        saver(_unknown_frame(image, [inside], 1, 1001.0))
        saver(_unknown_frame(image, [inside], 2, 1002.0))
    assert saver.saved == 1 and saver.failed == 2
    warnings = [r.getMessage() for r in caplog.records if "cannot save an unknown face" in r.getMessage()]
    assert len(warnings) == 1 and "going on without it" in warnings[0]  # once, not on every frame

    folder.unlink()
    folder.mkdir()
    saver(_unknown_frame(image, [inside], 3, 1003.0))  # the folder is back: saving resumes
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(1003.0))
    assert saver.saved == 2 and [p.name for p in folder.iterdir()] == [f"unknown_{stamp}_f000003_0.png"]


def test_gallery_that_cannot_be_read_or_written_is_a_gallery_error(tmp_path, monkeypatch):
    g = Gallery(model=model_id())
    g.add("ann", np.eye(4, dtype=np.float32)[:1], ["a.jpg"])
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the gallery's folder should be")
    target = blocker / "g.npz"
    with pytest.raises(GalleryError, match=rf"^cannot write gallery {re.escape(str(target))}: File exists; the file"):
        g.save(target)
    assert blocker.read_text().startswith("a file where")

    path = tmp_path / "g.npz"
    g.save(path)
    import edgeface.runtime.gallery as gallery_module

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    import edgeface.fileio

    # root ignores chmod: deny here (the gallery reads through its own module, writes through fileio)
    for module in (gallery_module, edgeface.fileio):
        monkeypatch.setattr(module, "open", denied, raising=False)
    with pytest.raises(GalleryError, match=rf"^cannot read gallery {re.escape(str(path))}: Permission denied$"):
        Gallery.load(path)
    with pytest.raises(GalleryError, match=rf"^cannot write gallery {re.escape(str(path))}: Permission denied; "):
        g.save(path)
    monkeypatch.undo()
    assert Gallery.load(path).names() == {"ann": 1}  # the failed save left the file as it was
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_threshold_out_of_range_is_one_line_before_the_model_loads(media_dir, tmp_path):
    # a folder that is no bundle: had the models been loaded first, that would have been the error
    result = invoke("run", "-s", media_dir / "obama.jpg", "-m", tmp_path, "--threshold", "1.5")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --threshold 1.5 is not a cosine similarity: use a value between -1 and 1"


@NEEDS_DEFAULT
def test_a_manifest_without_embedding_dim_takes_it_from_the_model_file(media_dir, tmp_path):
    """A hand-written manifest may leave the size out: enrolling and recognising must still work (the gallery's
    model id used to say 0-d and the first face failed to reshape)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    dim = manifest["model"].pop("embedding_dim")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    gallery = tmp_path / "g.npz"
    result = invoke("enroll", "obama", media_dir / "obama.jpg", "-m", bundle, "-g", gallery)
    assert result.exit_code == 0, result.output
    assert Gallery.load(gallery).model.embedding_dim == dim
    result = invoke("run", "-s", media_dir / "obama2.jpg", "-m", bundle, "-g", gallery, "-q")
    assert result.exit_code == 0, result.output
    frames, _ = events_of(result.stdout)
    assert [d["identity"] for d in frames[0]["detections"]] == ["obama"]


def test_names_are_text_not_markup_and_control_characters_are_refused(media_dir, tmp_path):
    gallery = tmp_path / "g.npz"
    for name in ("Dr. [/b] Who", "Ann [red]"):
        result = invoke("enroll", name, media_dir / "biden.jpg" if "Who" in name else media_dir / "obama.jpg",
                        "-g", gallery)
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output and f"{name}: 1 embedding(s) added" in result.stderr
    listed = invoke("gallery", "list", "-g", gallery)
    assert listed.exit_code == 0 and "Dr. [/b] Who" in listed.stdout and "Ann [red]" in listed.stdout
    result = invoke("run", "-s", media_dir / "biden.jpg", "-g", gallery, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["detections"][0]["identity"] == "Dr. [/b] Who"
    for name in ("a\nb", "tab\there"):
        result = invoke("enroll", name, media_dir / "obama.jpg", "-g", gallery)
        assert result.exit_code == 2 and "holds a control character" in result.stderr


def test_enrolling_the_same_photo_again_adds_nothing(media_dir, tmp_path):
    gallery = tmp_path / "g.npz"
    assert invoke("enroll", "obama", media_dir / "obama.jpg", "-g", gallery).exit_code == 0
    result = invoke("enroll", "obama", media_dir / "obama.jpg", media_dir / "obama2.jpg", "-g", gallery, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["enrolled"] == 1 and report["embeddings"] == 2  # obama2.jpg only
    assert any(w.startswith("obama.jpg is already enrolled for 'obama'") for w in report["warnings"])
    # --replace starts the person over, so nothing counts as a repeat
    report = json.loads(invoke("enroll", "obama", media_dir / "obama.jpg", "-g", gallery, "--replace",
                               "--json").stdout)
    assert report["enrolled"] == 1 and report["replaced"] == 2 and report["embeddings"] == 1


def test_a_gallery_with_a_non_finite_row_is_refused_for_matching_but_can_be_repaired(media_dir, tmp_path):
    gallery = tmp_path / "g.npz"
    for name in ("obama", "biden"):
        assert invoke("enroll", name, media_dir / f"{name}.jpg", "-g", gallery).exit_code == 0
    g = Gallery.load(gallery)
    g.embeddings[g.labels.index("biden")] = np.nan  # written by a broken tool, checksum and all
    g.save(gallery)
    result = invoke("run", "-s", media_dir / "obama2.jpg", "-g", gallery, "-q")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (f"error: {gallery} is corrupt: 1 embedding(s) of 'biden' are not finite numbers; "
                                     "remove those people (`edgeface gallery remove`) and re-enroll them, or restore "
                                     "a backup")
    assert invoke("gallery", "list", "-g", gallery).exit_code == 0
    assert invoke("gallery", "remove", "biden", "-g", gallery).exit_code == 0
    result = invoke("run", "-s", media_dir / "obama2.jpg", "-g", gallery, "-q")
    assert result.exit_code == 0 and json.loads(result.stdout.splitlines()[0])["detections"][0]["identity"] == "obama"


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


def test_enroll_a_folder_of_people_at_once(media_dir, data_dir, tmp_path):
    """--people: one subfolder per person, or a photo named after its person (face_recognition's layout)."""
    people = tmp_path / "people"
    (people / "obama").mkdir(parents=True)
    shutil.copy(media_dir / "obama.jpg", people / "obama")
    shutil.copy(media_dir / "obama2.jpg", people / "obama")
    (people / "obama" / ".thumbs").mkdir()  # hidden: a viewer's cache, not Obama's photos
    shutil.copy(media_dir / "biden.jpg", people / "obama" / ".thumbs")
    (people / "obama" / "._obama.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    shutil.copy(media_dir / "biden.jpg", people / "Joe Biden.jpg")
    (people / "s1" / "more").mkdir(parents=True)  # an AT&T subject, photos at any depth, one group photo
    shutil.copy(data_dir / "att_faces" / "s1" / "1.pgm", people / "s1")
    shutil.copy(data_dir / "att_faces" / "s1" / "2.pgm", people / "s1" / "more")
    shutil.copy(media_dir / "two_people.jpg", people / "s1")
    (people / "nobody").mkdir()
    (people / "notes.txt").write_text("not a photo")
    gallery = tmp_path / "g.npz"

    result = invoke("enroll", "--people", people, "-g", gallery, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    got = {p["name"]: (len(p["photos"]), p["enrolled"], p["skipped"]) for p in report["persons"]}
    assert got == {"Joe Biden": (1, 1, 0), "nobody": (0, 0, 0), "obama": (2, 2, 0), "s1": (3, 2, 1)}
    assert (report["enrolled_people"], report["enrolled"], report["people"], report["embeddings"]) == (3, 5, 3, 5)
    s1 = next(p for p in report["persons"] if p["name"] == "s1")
    assert {Path(p["photo"]).name: p["status"] for p in s1["photos"]} == {
        "1.pgm": "enrolled", "2.pgm": "enrolled", "two_people.jpg": "several faces"}
    assert {p["name"]: p["embeddings"] for p in Gallery.load(gallery).people()} == {"Joe Biden": 1, "obama": 2, "s1": 2}
    # the enrolled people are recognised: obama2.jpg is nearest to obama, biden.jpg to Joe Biden
    result = invoke("run", "-s", media_dir / "obama2.jpg", "-g", gallery, "-q")
    assert json.loads(result.stdout.splitlines()[0])["detections"][0]["identity"] == "obama"

    # again: nothing is added twice, and each photo says why
    result = invoke("enroll", "--people", people, "-g", gallery)
    assert result.exit_code == 0, result.output
    assert "0 of 4 people: 0 embedding(s) added; " in result.stderr and "already enrolled" in result.stdout
    assert len(Gallery.load(gallery)) == 5

    # a folder that cannot name a person stops before any work; NAME with --people is refused
    (people / "unknown").mkdir()
    before = gallery.read_bytes()
    result = invoke("enroll", "--people", people, "-g", gallery)
    assert result.exit_code == 2 and result.stderr.strip() == (
        f"error: --people {people}: 'unknown' cannot name a person: 'unknown' is reserved for faces that match "
        "nobody: choose another name")
    (people / "unknown").rmdir()
    (people / "Bob\nSmith").mkdir()
    result = invoke("enroll", "--people", people, "-g", gallery)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and "'Bob\\nSmith'" in result.stderr
    assert gallery.read_bytes() == before
    result = invoke("enroll", "obama", media_dir / "obama.jpg", "--people", people, "-g", gallery)
    assert result.exit_code == 2 and result.stderr.strip() == "error: give NAME PHOTOS... or --people FOLDER, not both"
    result = invoke("enroll", "obama", "-g", gallery)
    assert result.exit_code == 2 and "or a folder of people (`edgeface enroll --people FOLDER`)" in result.stderr
