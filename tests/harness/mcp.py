"""MCP on both sides of Envoy: the SDK upstream process, the SDK client, raw JSON-RPC.

- `McpUpstream`: ``harness.mcp_server`` (the official Python SDK's server on Streamable
  HTTP) as a subprocess on a free 127.0.0.1 port, stopped by PID (also when a test
  fails); `records()` reads what it saw (HTTP requests and executed tools).
- `sdk_list_tools` / `sdk_call_tool` / `sdk_session`: the official SDK client
  (``mcp.Client`` over ``streamable_http_client``) with ``Authorization: Bearer <token>``,
  in either protocol generation: ``"legacy"`` (the initialize handshake, 2025-11-25) or
  ``"2026-07-28"`` (stateless, ``Mcp-Method``/``Mcp-Name`` headers).
- `RawMcp`: hand-written JSON-RPC over HTTP for what an SDK never sends: batches,
  headers that disagree with the body, malformed or deeply nested bodies, oversized
  bodies. Parses both ``application/json`` and ``text/event-stream`` answers.
- `JsonRpcEcho`: an in-process JSON-RPC upstream that answers every request of a single
  message or a batch with ``{"echo": {"method", "params"}}`` and records what it got
  (the A2A upstream, and the MCP batch target, since the SDK server refuses batches).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

from .client import Response, http_request
from .ports import free_port

TESTS = Path(__file__).resolve().parents[1]

# The revisions the SDK client speaks: the initialize handshake (it negotiates the newest
# handshake revision, 2025-11-25) and the stateless revision with routing headers.
LEGACY = "legacy"
MODERN = "2026-07-28"
PROTOCOL_MODES = (LEGACY, MODERN)

ACCEPT = "application/json, text/event-stream"


def wait_listening(port: int, proc: subprocess.Popen | None, timeout: float, what: str, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not listening on 127.0.0.1:{port} after {timeout}s")
            time.sleep(0.05)


class Process:
    """A child process with a log file, stopped by PID (terminate, then kill)."""

    def __init__(self, name: str, argv: list[str], workdir: Path, port: int, *, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None):
        self.name = name
        self.argv = argv
        self.workdir = workdir
        self.port = port
        self.env = env
        self.cwd = cwd
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "Process":
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.cwd, env={**os.environ, **(self.env or {})})
        try:
            wait_listening(self.port, self.proc, timeout, self.name, self.log)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class McpUpstream(Process):
    """The SDK's MCP server (tests/harness/mcp_server.py) on a free port, path ``/mcp``."""

    def __init__(self, workdir: Path, *, json_response: bool, extra_tools: int = 0, name: str | None = None,
                 chunk_bytes: int = 0):
        port = free_port()
        name = name or ("mcp-json" if json_response else "mcp-sse")
        self.record_path = workdir / f"{name}.records.jsonl"
        argv = [sys.executable, "-m", "harness.mcp_server", "--port", str(port), "--record", str(self.record_path),
                "--extra-tools", str(extra_tools), "--chunk-bytes", str(chunk_bytes)]
        if json_response:
            argv.append("--json")
        super().__init__(name, argv, workdir, port, cwd=TESTS)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def records(self) -> list[dict]:
        if not self.record_path.exists():
            return []
        return [json.loads(line) for line in self.record_path.read_text().splitlines() if line.strip()]

    def http_requests(self, request_id: str | None = None) -> list[dict]:
        """HTTP requests the server received (optionally only those with this x-request-id)."""
        return [r for r in self.records() if r["kind"] == "http"
                and (request_id is None or r["headers"].get("x-request-id") == request_id)]

    def tool_calls(self, tool: str | None = None) -> list[dict]:
        return [r for r in self.records() if r["kind"] == "tool" and (tool is None or r["tool"] == tool)]


# --- the SDK client ----------------------------------------------------------------------

@contextlib.asynccontextmanager
async def sdk_session(url: str, token: str | None, *, mode: str = LEGACY,
                      headers: Mapping[str, str] | None = None) -> AsyncIterator[Any]:
    """An initialised ``mcp.Client`` talking to `url` with the agent's bearer token."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    async with create_mcp_http_client(headers=h) as http:
        # No client-side response cache: every list must reach the filter and the server.
        async with Client(streamable_http_client(url, http_client=http), mode=mode, cache=None,
                          read_timeout_seconds=20) as client:
            yield client


def run(coro_fn, *args: Any, **kwargs: Any) -> Any:
    """Runs an async helper to completion from a synchronous test."""
    import anyio

    return anyio.run(lambda: coro_fn(*args, **kwargs))


async def _list_tools(url: str, token: str | None, mode: str) -> list[str]:
    async with sdk_session(url, token, mode=mode) as client:
        result = await client.list_tools()
        return [t.name for t in result.tools]


async def _call_tool(url: str, token: str | None, mode: str, name: str, arguments: dict) -> Any:
    async with sdk_session(url, token, mode=mode) as client:
        return await client.call_tool(name, arguments)


def sdk_list_tools(url: str, token: str | None, mode: str = LEGACY) -> list[str]:
    """``tools/list`` through the SDK client: the tool names the client sees."""
    return run(_list_tools, url, token, mode)


@dataclass
class ToolOutcome:
    """How a ``tools/call`` ended for the SDK client: a result (maybe ``isError``) or a
    JSON-RPC error the SDK raised (``error_code``/``error_message``/``error_data``)."""

    result: Any = None
    error_code: int | None = None
    error_message: str = ""
    error_data: Any = None

    @property
    def text(self) -> str:
        """The result's text content, joined (empty for an error)."""
        if self.result is None:
            return ""
        return "".join(getattr(c, "text", "") for c in self.result.content)

    @property
    def denied_text(self) -> str:
        """Where a denial's reason can be: the JSON-RPC error message and data, or an
        ``isError`` result's text."""
        if self.error_code is not None:
            return f"{self.error_message} {json.dumps(self.error_data)}"
        if self.result is not None and getattr(self.result, "is_error", False):
            return self.text
        return ""


def sdk_call_tool(url: str, token: str | None, name: str, arguments: dict | None = None,
                  mode: str = LEGACY) -> ToolOutcome:
    """``tools/call`` through the SDK client, with a JSON-RPC error captured, not raised."""
    from mcp.shared.exceptions import MCPError

    try:
        return ToolOutcome(result=run(_call_tool, url, token, mode, name, arguments or {}))
    except MCPError as e:
        err = e.error
        return ToolOutcome(error_code=err.code, error_message=err.message, error_data=err.data)
    except BaseException as e:  # an ExceptionGroup from the SDK's task group wraps the MCPError
        inner = _find_mcp_error(e)
        if inner is None:
            raise
        err = inner.error
        return ToolOutcome(error_code=err.code, error_message=err.message, error_data=err.data)


def _find_mcp_error(e: BaseException) -> Any:
    from mcp.shared.exceptions import MCPError

    if isinstance(e, MCPError):
        return e
    for sub in getattr(e, "exceptions", ()) or ():
        found = _find_mcp_error(sub)
        if found is not None:
            return found
    if e.__cause__ is not None:
        return _find_mcp_error(e.__cause__)
    return None


# --- raw JSON-RPC --------------------------------------------------------------------------

def parse_messages(resp: Response) -> list[Any]:
    """The JSON-RPC messages of an answer: the JSON body (one message or a batch array,
    returned as a list), or every ``data:`` event of an SSE stream."""
    ctype = resp.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        out = []
        for event in resp.body.decode().replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].lstrip() for line in event.split("\n") if line.startswith("data:"))
            if data.strip():
                out.append(json.loads(data))
        return out
    if not resp.body.strip():
        return []
    doc = json.loads(resp.body)
    return doc if isinstance(doc, list) else [doc]


def by_id(messages: list[Any]) -> dict[Any, dict]:
    """Flattens (batched) messages into {id: message}."""
    out: dict[Any, dict] = {}
    for m in messages:
        for x in (m if isinstance(m, list) else [m]):
            out[x.get("id")] = x
    return out


def request(id_: Any, method: str, params: dict | None = None) -> dict:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def tool_call(id_: Any, name: str, arguments: dict | None = None) -> dict:
    return request(id_, "tools/call", {"name": name, "arguments": arguments or {}})


@dataclass
class RawMcp:
    """JSON-RPC POSTs to one Envoy port and path with a bearer token.

    `initialize()` performs the 2025-11-25 handshake and keeps the ``Mcp-Session-Id`` for
    later posts (the SDK server is stateful by default)."""

    port: int
    token: str | None
    path: str = "/mcp"
    protocol_version: str = "2025-11-25"
    session_id: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def headers(self, more: Mapping[str, Any] | None = None) -> dict[str, Any]:
        h: dict[str, Any] = {"content-type": "application/json", "accept": ACCEPT,
                             "mcp-protocol-version": self.protocol_version, **self.extra_headers}
        if self.token is not None:
            h["authorization"] = f"Bearer {self.token}"
        if self.session_id is not None:
            h["mcp-session-id"] = self.session_id
        h.update(more or {})
        return h

    def post_bytes(self, body: bytes, headers: Mapping[str, Any] | None = None,
                   request_id: str | None = None) -> Response:
        rid = request_id or str(uuid.uuid4())
        resp = http_request(self.port, "POST", self.path, {"x-request-id": rid, **self.headers(headers)}, body)
        resp.request_id = rid
        return resp

    def post(self, message: Any, headers: Mapping[str, Any] | None = None, request_id: str | None = None) -> Response:
        return self.post_bytes(json.dumps(message).encode(), headers, request_id)

    def initialize(self) -> "RawMcp":
        init = request(0, "initialize", {"protocolVersion": self.protocol_version, "capabilities": {},
                                          "clientInfo": {"name": "meshguard-raw", "version": "1"}})
        resp = self.post(init)
        assert resp.status == 200, f"initialize failed: {resp}"
        self.session_id = resp.headers.get("mcp-session-id")
        done = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert done.status in (200, 202), f"notifications/initialized failed: {done}"
        return self


# --- JSON-RPC echo upstream ---------------------------------------------------------------

class _RpcHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        self.server.record({"path": self.path, "headers": headers, "body": doc})  # type: ignore[attr-defined]

        def answer(m: Any) -> dict | None:
            if not isinstance(m, dict) or "id" not in m:
                return None
            return {"jsonrpc": "2.0", "id": m["id"],
                    "result": {"echo": {"method": m.get("method"), "params": m.get("params")},
                               "headers": {k: v for k, v in headers.items() if k.startswith("x-meshguard-")}}}

        if isinstance(doc, list):
            out: Any = [a for a in (answer(m) for m in doc) if a is not None]
        else:
            out = answer(doc) or {"jsonrpc": "2.0", "id": None,
                                  "error": {"code": -32700, "message": "echo: not a request"}}
        body = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _RpcServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RpcHandler)
        self.lock = threading.Lock()
        self.seen: list[dict] = []

    def record(self, entry: dict) -> None:
        with self.lock:
            self.seen.append(entry)


class JsonRpcEcho:
    """In-process JSON-RPC echo on 127.0.0.1 (kernel-chosen port)."""

    def __init__(self) -> None:
        self._server = _RpcServer()
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="jsonrpc-echo", daemon=True)

    def start(self) -> "JsonRpcEcho":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self, request_id: str | None = None) -> list[dict]:
        """Requests received (optionally only those with this x-request-id)."""
        with self._server.lock:
            return [s for s in self._server.seen
                    if request_id is None or s["headers"].get("x-request-id") == request_id]

    def methods(self, request_id: str) -> list[Any]:
        """The (method, id) pairs that reached the upstream in this request's body."""
        out = []
        for s in self.received(request_id):
            body = s["body"]
            for m in (body if isinstance(body, list) else [body]):
                if isinstance(m, dict):
                    out.append((m.get("method"), m.get("id")))
        return out
