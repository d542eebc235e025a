"""A controllable HTTP server for documents the filter fetches (bundles, JWKS).

Tests set what a path answers (a body with an ETag, an error status, garbage), read how
many times it was fetched and which If-None-Match came with it, and can stop and restart
the server on the same port to simulate an outage.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .ports import free_port


@dataclass
class Answer:
    status: int = 404
    body: bytes = b""
    content_type: str = "application/json"


@dataclass
class DocServer:
    port: int = field(default_factory=free_port)
    answers: dict[str, Answer] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    not_modified: dict[str, int] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, path: str, body: bytes, status: int = 200, content_type: str = "application/json") -> None:
        with self._lock:
            self.answers[path] = Answer(status, body, content_type)

    def count(self, path: str) -> int:
        with self._lock:
            return self.hits.get(path, 0)

    def start(self) -> "DocServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server naming)
                with owner._lock:
                    owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                    ans = owner.answers.get(self.path, Answer())
                etag = '"' + hashlib.sha256(ans.body).hexdigest()[:16] + '"'
                if ans.status == 200 and self.headers.get("if-none-match") == etag:
                    with owner._lock:
                        owner.not_modified[self.path] = owner.not_modified.get(self.path, 0) + 1
                    self.send_response(304)
                    self.send_header("etag", etag)
                    self.end_headers()
                    return
                self.send_response(ans.status)
                self.send_header("content-type", ans.content_type)
                self.send_header("content-length", str(len(ans.body)))
                if ans.status == 200:
                    self.send_header("etag", etag)
                self.end_headers()
                self.wfile.write(ans.body)

            def log_message(self, *args):  # keep test output clean
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
