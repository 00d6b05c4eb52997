"""The --preview web page: address parsing, the MJPEG server, and the real page in headless Chromium."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgeface.errors import UserError
from edgeface.runtime.images import read_image
from edgeface.runtime.preview import KNOWN_BGR, UNKNOWN_BGR, PreviewServer, annotate, parse_host_port

pytestmark = pytest.mark.board

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1000,700"]


def test_parse_host_port():
    assert parse_host_port("8080") == ("127.0.0.1", 8080)
    assert parse_host_port(":9000") == ("127.0.0.1", 9000)
    assert parse_host_port("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_host_port("[::1]:8080") == ("::1", 8080)
    for bad in ("localhost", "host:", "a:b:c", "[::1]"):
        with pytest.raises(UserError, match=r"is not HOST:PORT \(e\.g\. 127\.0\.0\.1:8080"):
            parse_host_port(bad)
    with pytest.raises(UserError, match="port 70000 is out of range"):
        parse_host_port("127.0.0.1:70000")


def face(box, identity="ada", score=0.8):
    return SimpleNamespace(box=np.array(box, np.float32), identity=identity, score=score)


def test_annotate_draws_boxes_in_the_identity_colour():
    image = np.full((200, 300, 3), 128, np.uint8)
    out = annotate(image, [face([20, 60, 100, 150]), face([150, 60, 250, 150], "unknown", 0.1)])
    assert out.shape == image.shape and image[100, 20].tolist() == [128, 128, 128]  # input untouched
    assert out[100, 20].tolist() == list(KNOWN_BGR) and out[100, 150].tolist() == list(UNKNOWN_BGR)


def read_mjpeg_parts(url: str, n: int, timeout: float = 10) -> list[np.ndarray]:
    """Read ``n`` JPEG parts of a multipart/x-mixed-replace stream."""
    parts = []
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace; boundary=")
        while len(parts) < n:
            line = resp.readline()
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                resp.readline()  # blank line before the body
                parts.append(cv2.imdecode(np.frombuffer(resp.read(length), np.uint8), cv2.IMREAD_COLOR))
    return parts


def test_server_streams_frames_page_and_status(media_dir):
    image = read_image(media_dir / "obama_small.jpg")
    server = PreviewServer(port=0, source="test source", max_fps=50).start()
    stop = threading.Event()

    def feed():
        while not stop.is_set():
            server.publish(image, [face([10, 10, 60, 60], "obama", 0.9)])
            time.sleep(0.02)

    threading.Thread(target=feed, daemon=True).start()
    try:
        assert server.host == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
        page = urllib.request.urlopen(server.url, timeout=5).read().decode()
        assert '<img id="stream"' in page and "/stream.mjpg" in page and "test source" in page
        parts = read_mjpeg_parts(server.url + "stream.mjpg", 3)
        assert all(p.shape == image.shape for p in parts)
        # The server counts a part after flushing it, so the client may hold the third one a moment earlier.
        deadline = time.monotonic() + 5
        while server.frames_sent < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.frames_sent >= 3
        status = json.loads(urllib.request.urlopen(server.url + "status.json", timeout=5).read())
        assert status["frame"] > 0 and status["fps"] > 0
        assert status["detections"] == [{"box": [10.0, 10.0, 60.0, 60.0], "identity": "obama", "score": 0.9}]
        jpeg = urllib.request.urlopen(server.url + "frame.jpg", timeout=5).read()
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == image.shape
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(server.url + "nothing", timeout=5)
    finally:
        stop.set()
        server.close()


def test_port_in_use_is_one_clear_line():
    first = PreviewServer(port=0).start()
    try:
        with pytest.raises(UserError, match=rf"^cannot serve the preview on 127\.0\.0\.1:{first.port}: .*choose "
                                            "another port"):
            PreviewServer(port=first.port).start()
    finally:
        first.close()


@pytest.fixture(scope="module")
def two_people_video(media_dir, tmp_path_factory) -> Path:
    """Ten seconds of two_people.jpg as a video: every frame has two faces to box."""
    image = cv2.imread(str(media_dir / "two_people.jpg"))
    h, w = image.shape[:2]
    image = cv2.resize(image, (640, round(h * 640 / w) // 2 * 2))
    path = tmp_path_factory.mktemp("video") / "two_people.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, image.shape[1::-1])
    for _ in range(300):
        writer.write(image)
    writer.release()
    return path


NEEDS_CHROMIUM = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package `chromium`; "
                                    ".ci/run installs it)")


@contextlib.contextmanager
def preview_run(bundle: Path, video: Path, tmp_path: Path, host_port: str):
    """`edgeface run --preview HOST_PORT` on ``video``: yields the URL it announces, then stops it (SIGTERM) and
    checks it exited cleanly."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeface", "run", "-s", str(video), "-m", str(bundle),
         # 300 frames at 5 fps: a minute of stream, so two Chromium runs on a loaded machine finish before it ends
         "--preview", host_port, "--fps-limit", "5", "--events", str(tmp_path / "events.jsonl")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        url = None
        for line in proc.stderr:
            if "preview at " in line:
                url = line.split("preview at ", 1)[1].strip()
                break
        assert url, "the run did not announce its preview URL"
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining the status output
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0


@NEEDS_CHROMIUM
def test_preview_page_in_headless_chromium(runtime_bundle, two_people_video, tmp_path):
    """`edgeface run --preview` on a real video; Chromium loads the page, shows the stream, takes a screenshot."""
    with preview_run(runtime_bundle, two_people_video, tmp_path, "127.0.0.1:0") as url:
        assert url.startswith("http://127.0.0.1:")
        shot = tmp_path / "preview.png"
        common = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
                  "--virtual-time-budget=2500"]
        subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=90)
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=90).stdout
        status = json.loads(urllib.request.urlopen(url + "status.json", timeout=5).read())
    assert shot.is_file() and shot.stat().st_size > 10_000
    # The page loaded and its script ran: the status line shows the frame counter and the two faces.
    assert '<img id="stream" alt="live stream" src="/stream.mjpg">' in dom
    assert '<div id="status">frame ' in dom and dom.count("unknown ") >= 2
    # The browsers received MJPEG frames, and the screenshot shows one with its boxes drawn.
    assert status["frames_sent"] >= 2 and len(status["detections"]) == 2
    png = cv2.imread(str(shot)).astype(int)
    assert len(np.unique(png.reshape(-1, 3), axis=0)) > 2000, "no video frame in the screenshot"
    box_pixels = (np.abs(png - np.array(UNKNOWN_BGR)).sum(axis=2) < 40).sum()
    assert box_pixels > 300, "no face box in the screenshot"


def _status(url: str, headers: dict | None = None) -> int:
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_off_loopback_every_request_needs_the_token(media_dir):
    server = PreviewServer("0.0.0.0", 0).start()
    try:
        server.publish(read_image(media_dir / "obama.jpg"))
        token = server.token
        assert token and len(token) >= 20 and server.url.endswith(f"/?token={token}")
        base = f"http://127.0.0.1:{server.port}/"
        # One character off: the last one changed to a different character (a fixed "x" was the token itself
        # whenever the random token ended in "x", 1 run in 64).
        near_miss = token[:-1] + ("y" if token[-1] == "x" else "x")
        for path in ("", "index.html", "status.json", "frame.jpg", "stream.mjpg"):
            assert _status(base + path) == 401, path  # no token: nothing, not even the page
            assert _status(base + path + "?token=" + near_miss) == 401, path
            assert _status(base + path, {"Cookie": "edgeface_preview=wrong"}) == 401, path
        page = urllib.request.urlopen(base + "?token=" + token, timeout=5)
        cookie = page.headers["Set-Cookie"]
        assert page.status == 200 and cookie.startswith(f"edgeface_preview={token};") and "HttpOnly" in cookie
        assert _status(base + "frame.jpg", {"Cookie": cookie.split(";")[0]}) == 200  # what the page's img sends
        assert _status(base + "status.json", {"Authorization": f"Bearer {token}"}) == 200
    finally:
        server.close()
    loopback = PreviewServer("127.0.0.1", 0).start()  # this machine only: no token, as before
    try:
        assert loopback.token is None and _status(loopback.url + "status.json") == 200
    finally:
        loopback.close()


def test_a_token_file_is_required_then_and_kept_out_of_the_url(tmp_path, media_dir, caplog):
    from edgeface.runtime.preview import read_token_file

    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(UserError, match="at least 16 characters"):
        read_token_file(tmp_path / "short")
    with pytest.raises(UserError, match="cannot read it"):
        read_token_file(tmp_path / "missing")
    (tmp_path / "token").write_text("a-long-enough-secret-token\n")
    token = read_token_file(tmp_path / "token")
    with caplog.at_level("INFO", logger="edgeface"):
        server = PreviewServer("127.0.0.1", 0, token=token).start()
    try:
        assert token not in caplog.text and "preview at" in caplog.text
        base = f"http://127.0.0.1:{server.port}/"
        assert _status(base + "status.json") == 401 and _status(base + "status.json?token=" + token) == 200
    finally:
        server.close()
    result = subprocess.run([sys.executable, "-m", "edgeface", "run", "-s", str(media_dir / "obama.jpg"),
                             "--preview-token-file", str(tmp_path / "token")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().endswith("add --preview HOST:PORT")


@NEEDS_CHROMIUM
def test_preview_off_loopback_in_headless_chromium(runtime_bundle, two_people_video, tmp_path):
    """`edgeface run --preview 0.0.0.0:0`: Chromium with the printed URL sees the stream; without the token it gets
    401 and no frame."""
    with preview_run(runtime_bundle, two_people_video, tmp_path, "0.0.0.0:0") as url:
        assert "?token=" in url, "the URL carries no token"
        url = url.replace("0.0.0.0", "127.0.0.1")
        bare = url.split("?", 1)[0]
        common = [CHROMIUM, *CHROMIUM_FLAGS, "--virtual-time-budget=2500"]
        denied = subprocess.run([*common, f"--user-data-dir={tmp_path / 'c1'}", "--dump-dom", bare],
                                capture_output=True, text=True, timeout=90).stdout
        allowed = subprocess.run([*common, f"--user-data-dir={tmp_path / 'c2'}", "--dump-dom", url],
                                 capture_output=True, text=True, timeout=90).stdout
        token = url.split("token=", 1)[1]
        status = json.loads(urllib.request.urlopen(urllib.request.Request(
            bare + "status.json", headers={"Authorization": f"Bearer {token}"}), timeout=5).read())
    assert "preview token required" in denied and 'id="stream"' not in denied
    # with the token the page ran its script: the stream is attached and the status shows the two faces
    assert '<img id="stream" alt="live stream" src="/stream.mjpg">' in allowed and allowed.count("unknown ") >= 2
    assert status["frames_sent"] >= 1 and len(status["detections"]) == 2
