"""``--preview HOST:PORT``: a small web page with the live MJPEG stream, boxes and names.

Standard library only (``http.server`` in a daemon thread), so a board needs
nothing more.  The recognition loop only hands over a reference to the newest
frame and its faces (:meth:`PreviewServer.publish`); drawing and JPEG encoding
happen in the client's request thread, at most ``max_fps`` times a second and
only while someone is watching, so the preview costs the loop nothing when no
browser is open.  Bound to 127.0.0.1 unless another host is given: a camera
feed should not appear on the network by accident.  Bound to anything else, every
request needs an access token (random, printed once in the URL, or the one given):
``?token=`` in the URL (the page then sets a cookie for its stream and status
requests), the cookie, or ``Authorization: Bearer``; without it, 401 and no frame.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Sequence

import cv2
import numpy as np

from edgeface.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
COOKIE = "edgeface_preview"
BOUNDARY = "edgefaceframe"
KNOWN_BGR = (80, 200, 60)
UNKNOWN_BGR = (40, 60, 230)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ margin: 0; background: #111; color: #ddd; font: 14px system-ui, sans-serif; }}
header {{ padding: 8px 12px; background: #222; }}
#stream {{ display: block; max-width: 100%; margin: 8px auto; background: #000; min-width: 320px; min-height: 180px; }}
#status {{ padding: 4px 12px; font-family: monospace; }}
</style></head>
<body><header><b>edgeface</b> &middot; {source}</header>
<img id="stream" alt="live stream">
<div id="status">waiting for frames&hellip;</div>
<script>
// The stream is attached after the page has loaded: an MJPEG response never ends,
// and a page whose <img> is still loading never fires its load event.
window.addEventListener("load", function () {{
  document.getElementById("stream").src = "/stream.mjpg";
  setInterval(function () {{
    fetch("/status.json").then(function (r) {{ return r.json(); }}).then(function (s) {{
      var names = s.detections.map(function (d) {{ return d.identity + " " + d.score.toFixed(2); }});
      document.getElementById("status").textContent =
        "frame " + s.frame + " | " + s.fps.toFixed(1) + " fps | " + (names.join(", ") || "no face");
    }}).catch(function () {{}});
  }}, 1000);
}});
</script></body></html>
"""


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1); ``[::1]:PORT`` for IPv6."""
    text = str(text).strip()
    bad = UserError(f"--preview {text!r} is not HOST:PORT (e.g. 127.0.0.1:8080, :8080, or 0.0.0.0:8080 to serve "
                    "the whole network)")
    if text.isdigit():
        host, port_text = DEFAULT_HOST, text
    elif text.startswith("["):
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", text)
        if not m:
            raise bad
        host, port_text = m.groups()
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit() or ":" in host:
            raise bad
        host = host or DEFAULT_HOST
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise UserError(f"--preview port {port} is out of range (0-65535)")
    return host, port


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def read_token_file(path) -> str:
    """A preview token from a file (one line; a service keeps it out of the command line and the logs)."""
    from pathlib import Path

    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--preview-token-file {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") \
            from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise UserError(f"--preview-token-file {path}: the token must be one word of at least 16 characters")
    return token


def annotate(image_rgb: np.ndarray, faces: Sequence) -> np.ndarray:
    """A BGR copy of the frame with each face's box and ``name score`` drawn on it."""
    out = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    thickness = max(1, round(max(out.shape[:2]) / 400))
    scale = max(0.4, max(out.shape[:2]) / 1200)
    for f in faces:
        x1, y1, x2, y2 = (int(round(float(v))) for v in f.box)
        colour = KNOWN_BGR if f.identity != "unknown" else UNKNOWN_BGR
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        label = f"{f.identity} {f.score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 - 4 if y1 - th - base - 4 > 0 else y2 + th + 4
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 4, ty + base), colour, -1)
        cv2.putText(out, label, (x1 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class PreviewServer:
    """The preview web server; ``publish`` each processed frame, ``close`` at the end."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = 8080, source: str = "", max_fps: float = 15.0,
                 quality: int = 80, token: Optional[str] = None) -> None:
        self.host, self.port = host, port
        # Off loopback the live camera with names must not be open to whoever finds the port: a random token
        # unless one is given (a token given for loopback is required too).
        self.token = token if token is not None else (None if is_loopback(host) else secrets.token_urlsafe(18))
        self._generated = token is None and self.token is not None  # only a generated token is printed
        self.source = source
        self.max_fps = max_fps
        self.quality = int(quality)
        self.frames_sent = 0  # MJPEG parts written to clients, over all clients
        self.clients = 0
        self._cond = threading.Condition()
        self._latest: Optional[tuple[int, np.ndarray, list, float]] = None  # seq, RGB image, faces, timestamp
        self._seq = 0
        self._jpeg_cache: tuple[int, bytes] = (-1, b"")
        self._closed = threading.Event()
        self._fps = 0.0
        self._times: deque = deque(maxlen=30)  # publish times, for the page's fps figure
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> PreviewServer:
        handler = _make_handler(self)
        server_cls = ThreadingHTTPServer
        if ":" in self.host:  # an IPv6 address
            server_cls = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        try:
            self._httpd = server_cls((self.host, self.port), handler)
        except OSError as exc:
            raise UserError(f"cannot serve the preview on {self.host}:{self.port}: {exc.strerror or exc} "
                            "(choose another port, or a host address of this machine)") from None
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="preview", daemon=True)
        self._thread.start()
        if self.token and not self._generated:  # the user's token stays out of the logs
            log.info("preview at %s (with the token from the token file: ?token=...)", self.url.split("?", 1)[0])
        else:
            log.info("preview at %s", self.url)
        return self

    @property
    def url(self) -> str:
        """The page's address, with the token when one is needed (printed once, when the server starts)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def authorized(self, query_token: Optional[str], cookie_token: Optional[str], bearer: Optional[str]) -> bool:
        """Whether a request carries the token (constant-time comparison), or none is needed."""
        if self.token is None:
            return True
        return any(t is not None and hmac.compare_digest(t.encode(), self.token.encode())
                   for t in (query_token, cookie_token, bearer))

    def close(self) -> None:
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> PreviewServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- from the recognition loop ----------------------------------------------------

    def publish(self, image: np.ndarray, faces: Sequence = (), timestamp: Optional[float] = None,
                fps: float = 0.0) -> None:
        """Make ``image`` (RGB) with ``faces`` the frame clients see next (cheap: no copy, no encoding)."""
        now = time.monotonic()
        self._times.append(now)
        if not fps and len(self._times) > 1:
            fps = (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)
        with self._cond:
            self._seq += 1
            self._latest = (self._seq, image, list(faces), time.time() if timestamp is None else timestamp)
            self._fps = fps
            self._cond.notify_all()

    def __call__(self, result) -> None:
        """Sink for :func:`edgeface.runtime.pipeline.run_loop` (needs ``keep_image=True``)."""
        if result.image is not None:
            self.publish(result.image, result.faces, result.timestamp)

    # --- for the request threads ------------------------------------------------------

    def wait_frame(self, after: int, timeout: float = 1.0) -> Optional[tuple[int, bytes]]:
        """The JPEG of the newest frame with a sequence number above ``after`` (None on timeout/close)."""
        with self._cond:
            if not (self._latest and self._latest[0] > after):
                self._cond.wait(timeout)
            latest = self._latest
        if latest is None or latest[0] <= after or self._closed.is_set():
            return None
        return latest[0], self._jpeg(latest)

    def _jpeg(self, latest) -> bytes:
        seq, image, faces, _ = latest
        cached_seq, data = self._jpeg_cache
        if cached_seq == seq:  # several clients watching: encode each frame once
            return data
        ok, buf = cv2.imencode(".jpg", annotate(image, faces), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        data = buf.tobytes() if ok else b""
        self._jpeg_cache = (seq, data)
        return data

    def status(self) -> dict:
        latest = self._latest
        faces = latest[2] if latest else []
        return {"frame": latest[0] if latest else 0, "fps": self._fps, "clients": self.clients,
                "frames_sent": self.frames_sent,
                "detections": [{"box": [round(float(v), 1) for v in f.box], "identity": f.identity,
                                "score": round(float(f.score), 4)} for f in faces]}


def _make_handler(server: PreviewServer):
    class Handler(BaseHTTPRequestHandler):
        server_version = "edgeface-preview"

        def log_message(self, fmt, *args) -> None:  # requests are not worth a line each on the status stream
            log.debug("preview: " + fmt, *args)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            from http.cookies import CookieError, SimpleCookie
            from urllib.parse import parse_qs

            path, _, query = self.path.partition("?")
            query_token = (parse_qs(query).get("token") or [None])[0]
            cookie_token = None
            try:
                morsel = SimpleCookie(self.headers.get("Cookie") or "").get(COOKIE)
                cookie_token = morsel.value if morsel else None
            except CookieError:
                pass
            auth = self.headers.get("Authorization") or ""
            bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
            if not server.authorized(query_token, cookie_token, bearer):
                self._send(401, "text/plain", b"preview token required: open the URL edgeface printed "
                                              b"(.../?token=...)\n", {"WWW-Authenticate": "Bearer"})
                return
            if path in ("/", "/index.html"):
                body = PAGE.format(title="edgeface live", source=html.escape(server.source)).encode()
                # The page's stream and status requests carry no token in their URLs: the cookie does.
                cookie = ({"Set-Cookie": f"{COOKIE}={server.token}; Path=/; HttpOnly; SameSite=Strict"}
                          if server.token and query_token else {})
                self._send(200, "text/html; charset=utf-8", body, cookie)
            elif path == "/stream.mjpg":
                self._stream()
            elif path == "/frame.jpg":
                got = server.wait_frame(-1, timeout=2.0)
                if got is None:
                    self._send(503, "text/plain", b"no frame yet\n")
                else:
                    self._send(200, "image/jpeg", got[1])
            elif path == "/status.json":
                self._send(200, "application/json", json.dumps(server.status()).encode())
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, code: int, ctype: str, body: bytes, headers: Optional[dict] = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            seq = -1
            min_gap = 1.0 / server.max_fps if server.max_fps else 0.0
            server.clients += 1
            try:
                while not server._closed.is_set():
                    started = time.monotonic()
                    got = server.wait_frame(seq)
                    if got is None:
                        continue
                    seq, jpeg = got
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                                     "\r\n\r\n".encode() + jpeg + b"\r\n")
                    self.wfile.flush()
                    server.frames_sent += 1
                    rest = min_gap - (time.monotonic() - started)
                    if rest > 0:
                        server._closed.wait(rest)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the browser went away
            finally:
                server.clients -= 1

    return Handler
