"""An upstream MCP server built with the official Python SDK, run as a subprocess.

The server is the SDK's high-level server (``FastMCP`` in mcp 1.x, ``MCPServer`` in the
pinned mcp 2.x) on Streamable HTTP at ``/mcp``, bound to 127.0.0.1. Its tools cover what
the governance tests need:

- ``send_email(to, subject, body)``: mapped to ``write:email`` by the test configs;
- ``refund(amount, order_id)``: allowed only under an argument condition
  (``context.amount <= 100``);
- ``read_orders()``: plainly allowed;
- ``delete_everything()``: denied by a rule;
- ``--extra-tools N`` more (``catalog_tool_<i>``) with long descriptions, so that a
  ``tools/list`` answer is large (and, as SSE, reaches Envoy in several chunks).

Everything the server sees is appended, one JSON object a line, to the ``--record``
file, so a test can assert what did *and did not* reach the upstream:

- ``{"kind": "http", "method", "path", "headers": {lowercased: value}, "body": text}`` for
  every HTTP request (recorded by an ASGI middleware before the SDK reads it);
- ``{"kind": "tool", "tool": name, "arguments": {...}}`` for every executed tool.

``--json`` answers POSTs with ``application/json``; without it the SDK answers with
``text/event-stream`` (SSE). Run from ``tests/``::

    python -m harness.mcp_server --port 8931 --record /tmp/calls.jsonl [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

TOOL_NAMES = ("send_email", "refund", "read_orders", "delete_everything")
EXTRA_TOOL_PREFIX = "catalog_tool_"


class Recorder:
    """Appends JSON lines to one file; a lock keeps lines whole across threads."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def write(self, entry: dict) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def build_server(recorder: Recorder, extra_tools: int) -> Any:
    from mcp.server.caching import CacheHint
    from mcp.server.mcpserver import MCPServer

    # tools/list is declared shareable (2026-07-28 `cacheScope: "public"`): a filtered
    # list is per agent, so the filter must turn it into "private".
    server = MCPServer("meshguard-test-tools", version="1.0.0",
                       cache_hints={"tools/list": CacheHint(ttl_ms=60_000, scope="public")})

    @server.tool()
    def send_email(to: str, subject: str, body: str) -> str:
        """Sends an email (recorded, never sent)."""
        recorder.write({"kind": "tool", "tool": "send_email",
                        "arguments": {"to": to, "subject": subject, "body": body}})
        return f"email to {to} queued: {subject}"

    @server.tool()
    def refund(amount: float, order_id: str) -> str:
        """Refunds an order."""
        recorder.write({"kind": "tool", "tool": "refund", "arguments": {"amount": amount, "order_id": order_id}})
        return f"refunded {amount} on {order_id}"

    @server.tool()
    def read_orders() -> str:
        """Lists recent orders."""
        recorder.write({"kind": "tool", "tool": "read_orders", "arguments": {}})
        return json.dumps([{"id": "o-1", "total": 42}, {"id": "o-2", "total": 7}])

    @server.tool()
    def delete_everything() -> str:
        """Deletes every record (must never run under the test policies)."""
        recorder.write({"kind": "tool", "tool": "delete_everything", "arguments": {}})
        return "everything deleted"

    for i in range(extra_tools):
        name = f"{EXTRA_TOOL_PREFIX}{i}"

        def make(n: str):
            def tool(query: str = "") -> str:
                recorder.write({"kind": "tool", "tool": n, "arguments": {"query": query}})
                return f"{n}: {query}"
            return tool

        # ~600 bytes of description each: 50 tools make a tools/list answer of ~40 KB.
        server.add_tool(make(name), name=name,
                        description=f"Catalog tool {i}. " + "Searches the product catalog. " * 20)
    return server


class RecordingMiddleware:
    """ASGI middleware: records each HTTP request (with its body) before the app runs.

    With `chunk_bytes`, every response body is sent in pieces of at most that size with a
    short pause between them, so Envoy hands the filter a large answer (a ``tools/list``)
    in several body chunks, as a slow or distant server would, instead of one."""

    def __init__(self, app: Any, recorder: Recorder, chunk_bytes: int = 0):
        self.app = app
        self.recorder = recorder
        self.chunk_bytes = chunk_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        self.recorder.write({
            "kind": "http",
            "method": scope["method"],
            "path": scope["path"],
            "headers": {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            "body": body.decode("utf-8", errors="replace"),
        })
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, self._chunked(send) if self.chunk_bytes else send)

    def _chunked(self, send: Any) -> Any:
        import anyio

        async def chunked_send(message: dict) -> None:
            body = message.get("body", b"")
            if message["type"] != "http.response.body" or len(body) <= self.chunk_bytes:
                await send(message)
                return
            more = message.get("more_body", False)
            for start in range(0, len(body), self.chunk_bytes):
                piece = body[start:start + self.chunk_bytes]
                last = start + self.chunk_bytes >= len(body)
                await send({"type": "http.response.body", "body": piece, "more_body": more or not last})
                await anyio.sleep(0.002)

        return chunked_send


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MCP test upstream (official SDK, Streamable HTTP)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--json", action="store_true", help="answer POSTs as application/json instead of SSE")
    parser.add_argument("--extra-tools", type=int, default=0)
    parser.add_argument("--chunk-bytes", type=int, default=0, help="send response bodies in pieces of this size")
    args = parser.parse_args(argv)

    import uvicorn

    recorder = Recorder(args.record)
    server = build_server(recorder, args.extra_tools)
    app = server.streamable_http_app(streamable_http_path="/mcp", json_response=args.json, host="127.0.0.1")
    uvicorn.run(RecordingMiddleware(app, recorder, args.chunk_bytes), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
