"""The real node's demo workload: an HTTP server whose readiness tests can switch.

GET /            200 and the pod's hostname: the app serves
GET /ready       200 while ready, 503 while not: the readinessProbe's target
POST /ready/on   ready again; POST /ready/off: not ready (the app itself keeps serving)

SIGTERM stops it at once (as PID 1 Python would otherwise ignore it until SIGKILL).
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

PORT = 8080
ready = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/":
            self.reply(200, socket.gethostname())
        elif self.path == "/ready":
            self.reply(200, "ready") if ready.is_set() else self.reply(503, "not ready")
        else:
            self.reply(404, "not found")

    def do_POST(self) -> None:
        if self.path == "/ready/on":
            ready.set()
        elif self.path == "/ready/off":
            ready.clear()
        else:
            self.reply(404, "not found")
            return
        self.reply(200, "ready" if ready.is_set() else "not ready")

    def reply(self, status: int, text: str) -> None:
        body = f"{text}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> None:
    server = ThreadingHTTPServer(("", PORT), Handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        sys.stderr.write(f"signal {signum}: stopping\n")
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    ready.set()
    server.serve_forever()


if __name__ == "__main__":
    main()
