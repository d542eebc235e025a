"""A tiny HTTP/1.1 client for talking to Envoy (standard library only).

Every call carries an ``x-request-id`` (a fresh UUID unless given): Envoy keeps a
client-supplied request id, the filter copies it into the audit event, and the upstream
echoes it, so a test can find "its" audit event and tell whether the request was
forwarded, even when several tests share one collector.
"""

from __future__ import annotations

import http.client
import json
import ssl
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Sequence


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    request_id: str = ""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def upstream_headers(self) -> dict[str, str]:
        """Headers as the echo upstream saw them (only for forwarded requests)."""
        return self.json()["headers"]

    def __repr__(self) -> str:
        return f"<Response {self.status} rid={self.request_id} body={self.body[:300]!r}>"


def http_request(port: int, method: str, path: str,
                 headers: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
                 body: bytes | None = None, timeout: float = 10.0,
                 tls: ssl.SSLContext | None = None) -> Response:
    """One request on a fresh connection (HTTPS with `tls`, e.g. a context presenting a
    client certificate from harness.certs). Header values may be ``bytes`` (sent
    verbatim, e.g. UTF-8) or ``str`` (sent as latin-1, as http.client does); a sequence
    of pairs may repeat a header. The path is sent as given (no normalisation, no escaping)."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls) if tls is not None
            else http.client.HTTPConnection("127.0.0.1", port, timeout=timeout))
    try:
        own_host = any(name.lower() == "host" for name, _ in pairs)
        conn.putrequest(method, path, skip_host=own_host, skip_accept_encoding=True)
        for name, value in pairs:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def traceparent(trace_id: str, span_id: str) -> str:
    """A W3C traceparent header value (version 00, sampled)."""
    return f"00-{trace_id}-{span_id}-01"


class MeshClient:
    """Calls through one Envoy listener as an agent would (over TLS with `tls`)."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None):
        self.port = port
        self.tls = tls

    def call(self, token: str | None = None, *, action: str | None = None, resource: str | None = None,
             method: str = "GET", path: str = "/tools/call", headers: Mapping[str, Any] | None = None,
             request_id: str | None = None, authorization: Any = None, body: bytes | None = None) -> Response:
        """`token` goes into ``authorization: Bearer``; `authorization` sets the raw header
        instead. `action`/`resource` use the explicit action headers; leave them out to
        exercise the route table."""
        rid = request_id or str(uuid.uuid4())
        h: dict[str, Any] = {"x-request-id": rid}
        if token is not None:
            h["authorization"] = f"Bearer {token}"
        if authorization is not None:
            h["authorization"] = authorization
        if action is not None:
            h["x-meshguard-action"] = action
        if resource is not None:
            h["x-meshguard-resource"] = resource
        h.update(headers or {})
        resp = http_request(self.port, method, path, h, body, tls=self.tls)
        resp.request_id = rid
        return resp
