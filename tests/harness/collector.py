"""A real OTLP/gRPC logs collector (``LogsService/Export``) that keeps what it receives.

The filter exports audit events over gRPC through Envoy; this server is the other end,
built on grpcio and the generated stubs of the ``opentelemetry-proto`` package, so the
wire format is checked by an implementation the filter did not write. Received log
records are decoded into plain dicts:

    {"trace_id": hex, "span_id": hex, "time_unix_nano": int, "severity_text": str,
     "body": str, "event_name": str, "attributes": {key: str|bool|int|float|list|dict},
     "resource": {key: value}, "scope": name}

Tests wait for events with ``wait_for`` (polling with a deadline, never a fixed sleep).

Standalone, for the demo or for debugging::

    python -m harness.collector --port 4317

prints one compact line per received event.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import signal
import sys
import threading
import time
from concurrent import futures
from typing import Any, Callable

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

# Other wheels (e.g. xds-protos) ship their own, pre-1.0 copies of these modules and
# overwrite opentelemetry-proto's files when installed after it; the filter speaks
# current OTLP (ScopeLogs), so say so instead of failing every Export obscurely.
if "scope_logs" not in logs_pb2.ResourceLogs.DESCRIPTOR.fields_by_name:
    raise ImportError(
        f"{logs_pb2.__file__} is a pre-1.0 OTLP schema (no ResourceLogs.scope_logs), probably "
        "written over opentelemetry-proto by another package; repair with: "
        "pip install --force-reinstall --no-deps opentelemetry-proto (version in tests/requirements.txt)"
    )

Event = dict[str, Any]


def any_value(v: common_pb2.AnyValue) -> Any:
    """An OTLP AnyValue as the natural Python value (None when unset)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def decode_request(req: logs_service_pb2.ExportLogsServiceRequest) -> list[Event]:
    """Flattens an Export request into one dict per LogRecord."""
    out = []
    for rl in req.resource_logs:
        resource = {kv.key: any_value(kv.value) for kv in rl.resource.attributes}
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                out.append({
                    "time_unix_nano": rec.time_unix_nano,
                    "trace_id": rec.trace_id.hex(),
                    "span_id": rec.span_id.hex(),
                    "severity_number": rec.severity_number,
                    "severity_text": rec.severity_text,
                    "body": any_value(rec.body),
                    "event_name": rec.event_name,
                    "attributes": {kv.key: any_value(kv.value) for kv in rec.attributes},
                    "resource": resource,
                    "scope": sl.scope.name,
                })
    return out


class _Servicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, collector: "Collector"):
        self._collector = collector

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        try:
            events = decode_request(request)
        except Exception as e:  # kept for the timeout message, then the export fails
            self._collector._errors.append(f"{type(e).__name__}: {e}")
            raise
        self._collector._receive(events)
        return logs_service_pb2.ExportLogsServiceResponse()


class Collector:
    """In-process gRPC LogsService on 127.0.0.1; thread-safe store of decoded events."""

    def __init__(self, port: int = 0, on_event: Callable[[Event], None] | None = None):
        self._requested_port = port
        self._on_event = on_event
        self._events: list[Event] = []
        self._exports = 0
        self._errors: list[str] = []
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None
        self.port = 0

    def start(self) -> "Collector":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Servicer(self), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self._requested_port}")
        if not self.port:
            raise RuntimeError(f"collector could not bind 127.0.0.1:{self._requested_port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    def __enter__(self) -> "Collector":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _receive(self, events: list[Event]) -> None:
        with self._cond:
            self._events.extend(events)
            self._exports += 1
            self._cond.notify_all()
        if self._on_event:
            for e in events:
                self._on_event(e)

    @property
    def exports(self) -> int:
        """How many Export calls arrived (batching means far fewer than events)."""
        with self._cond:
            return self._exports

    def events(self, predicate: Callable[[Event], bool] | None = None) -> list[Event]:
        with self._cond:
            return [e for e in self._events if predicate is None or predicate(e)]

    def wait_for(self, predicate: Callable[[Event], bool], count: int = 1, timeout: float = 10.0) -> list[Event]:
        """Waits until at least `count` received events satisfy `predicate`; returns them
        all. Raises AssertionError (with what did arrive) at the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matched = [e for e in self._events if predicate(e)]
                if len(matched) >= count:
                    return matched
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    last_error = f"; last decoding error: {self._errors[-1]}" if self._errors else ""
                    raise AssertionError(
                        f"collector: {len(matched)} of {count} expected events after {timeout}s "
                        f"({len(self._events)} events in total, {self._exports} exports{last_error})"
                    )
                self._cond.wait(remaining)

    def by_request_id(self, request_id: str, timeout: float = 10.0) -> Event:
        """The one event recorded for the request carrying `x-request-id: request_id`."""
        return self.wait_for(lambda e: e["attributes"].get("meshguard.request_id") == request_id,
                             timeout=timeout)[0]


def summary_line(e: Event) -> str:
    """One compact line for a human: time, trace id prefix, decision, agent, action, policy/rule."""
    a = e["attributes"]
    ts = _dt.datetime.fromtimestamp(e["time_unix_nano"] / 1e9, _dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    decided = "/".join(x for x in (a.get("meshguard.policy"), a.get("meshguard.rule")) if x) or "-"
    agent = a.get("meshguard.agent.id") or f"({a.get('meshguard.identity.error') or 'no identity'})"
    return (f"{ts}  {(e['trace_id'] or '-')[:8]:<8}  {a.get('meshguard.decision', ''):<16}  "
            f"{agent:<22}  {a.get('meshguard.action') or '-':<16}  {decided}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OTLP/gRPC logs collector printing MeshGuard audit events")
    parser.add_argument("--port", type=int, default=4317)
    args = parser.parse_args(argv)
    stop = threading.Event()
    collector = Collector(args.port, on_event=lambda e: print(summary_line(e), flush=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with collector:
        print(f"collector listening on 127.0.0.1:{collector.port}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
