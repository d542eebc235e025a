"""The upstream tool service: echoes every request back as JSON.

Response body: ``{"method", "path", "headers": {lowercased name: value}}`` with status
200. Tests read the headers Envoy forwarded (what MeshGuard added or removed) from the
body, and `received()` tells whether a request reached the upstream at all (a denial must
not).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        seen = {
            "method": self.command,
            "path": self.path,
            # Header values arrive latin-1 decoded; keep them as the bytes were.
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }
        self.server.record(seen)  # type: ignore[attr-defined]
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _echo

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int]):
        super().__init__(addr, _EchoHandler)
        self._lock = threading.Lock()
        self.seen: list[dict] = []

    def record(self, seen: dict) -> None:
        with self._lock:
            self.seen.append(seen)


class EchoUpstream:
    """Threaded echo server on 127.0.0.1 (port chosen by the kernel)."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="echo-upstream", daemon=True)

    def start(self) -> "EchoUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "EchoUpstream":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def received(self, request_id: str) -> bool:
        """Whether a request with this `x-request-id` reached the upstream."""
        with self._server._lock:
            return any(s["headers"].get("x-request-id") == request_id for s in self._server.seen)
