"""A local MJPEG-over-HTTP camera for the live-source tests (test_capture, test_runtime)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
