"""Fault injection and steady load, for the faults-under-load suite and the soak run.

- `FaultProxy`: a TCP proxy on 127.0.0.1 in front of any server the filter talks to
  (collector, bundle, grants or JWKS server). Its mode decides what a connection gets:
  ``pass`` (forwarded), ``down`` (the port refuses connections), ``reset`` (accepted,
  then closed with a TCP RST), ``slow`` (held `delay` seconds before being forwarded:
  longer than the filter's timeouts). Changing the mode resets every open connection, so
  Envoy's pooled connections cannot dodge the new fault.
- `FaultyCollector`: the in-process OTLP collector whose Export can be made to answer
  gRPC errors (UNAVAILABLE, INTERNAL) or to answer late (beyond the export timeout).
- `sign_grants`: a signed ``meshguard-grants/v1`` document (README, "Grants document"),
  made in Python like the bundles of `harness.bundles`.
- `Load`: threads sending a fixed mix of request classes for a while, recording each
  request's class, status and request id, so a test can check every single decision.
- `wasm_failure_stats`, `audit_accounting`: what "no VM crash" and "every audit event
  accounted for" mean, in one place.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from .bundles import BundleSigner, b64url, canonical
from .client import Response
from .collector import Collector, Event, decode_request

GRANTS_FORMAT = "meshguard-grants/v1"


# --- TCP fault proxy ------------------------------------------------------------------

def _rst(sock: socket.socket) -> None:
    """Closes with a TCP RST (SO_LINGER 0) instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class FaultProxy:
    """A TCP proxy from a free 127.0.0.1 port to ``127.0.0.1:target_port``."""

    MODES = ("pass", "down", "reset", "slow")

    def __init__(self, target_port: int, *, delay: float = 3.0):
        self.target_port = target_port
        self.delay = delay
        self.mode = "pass"
        self.accepted = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0

    def start(self) -> "FaultProxy":
        self._listen()
        return self

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept_loop, args=(sock,), daemon=True).start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # listener closed (mode "down" or stop)
            with self._lock:
                self.accepted += 1
                mode = self.mode
            if mode == "reset":
                _rst(conn)
                continue
            threading.Thread(target=self._serve, args=(conn, mode), daemon=True).start()

    def _serve(self, conn: socket.socket, mode: str) -> None:
        self._track(conn)
        if mode == "slow":
            time.sleep(self.delay)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            upstream.settimeout(None)
        except OSError:
            self._drop(conn)
            return
        self._track(upstream)
        threading.Thread(target=self._pipe, args=(upstream, conn), daemon=True).start()
        self._pipe(conn, upstream)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        self._drop(src)
        self._drop(dst)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            present = sock in self._open
            self._open.discard(sock)
        if present:
            _rst(sock)

    def _reset_all(self) -> None:
        with self._lock:
            socks, self._open = list(self._open), set()
        for s in socks:
            _rst(s)

    def set_mode(self, mode: str) -> None:
        """Switches the fault; open connections are reset so the next use sees it."""
        if mode not in self.MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; one of {self.MODES}")
        with self._lock:
            previous, self.mode = self.mode, mode
        if mode == "down" and self._listener is not None:
            self._close_listener()
        elif previous == "down" and mode != "down":
            self._listen()
        self._reset_all()

    def _close_listener(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone does not on Linux
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None

    def stop(self) -> None:
        self._close_listener()
        self._reset_all()


# --- a collector that fails on demand ---------------------------------------------------

class _FaultyServicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, collector: "FaultyCollector"):
        self._collector = collector

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        c = self._collector
        mode = c.mode
        c.calls[mode] += 1
        if mode == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, "collector overloaded (fault injection)")
        if mode == "internal":
            context.abort(grpc.StatusCode.INTERNAL, "collector bug (fault injection)")
        if mode == "slow":
            # Answers (and stores) only after the filter gave up: the retry duplicates
            # the batch, which is why accounting counts distinct events.
            time.sleep(c.delay)
        c._receive(decode_request(request))
        return logs_service_pb2.ExportLogsServiceResponse()


class FaultyCollector(Collector):
    """`Collector` whose Export answers per `mode`: ``ok``, ``unavailable``,
    ``internal`` (gRPC errors before storing anything) or ``slow`` (stores after
    `delay` seconds)."""

    MODES = ("ok", "unavailable", "internal", "slow")

    def __init__(self, *, delay: float = 2.5):
        super().__init__()
        self.mode = "ok"
        self.delay = delay
        self.calls: Counter = Counter()

    def start(self) -> "FaultyCollector":
        from concurrent import futures

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_FaultyServicer(self), server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def set_mode(self, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"unknown collector mode {mode!r}; one of {self.MODES}")
        self.mode = mode


# --- signed grants documents ------------------------------------------------------------

def sign_grants(signer: BundleSigner, doc: dict) -> dict:
    """Signs a grants document: ``meshguard-grants/v1\\n`` + canonical JSON without
    ``signatures`` (README, "Grants document")."""
    unsigned = {k: v for k, v in doc.items() if k != "signatures"}
    sig = signer.key.sign(GRANTS_FORMAT.encode() + b"\n" + canonical(unsigned))
    return {**unsigned, "signatures": [{"alg": "Ed25519", "kid": signer.kid, "sig": b64url(sig)}]}


def grants_doc(version: int, grants: list[dict], created_at: str = "2026-11-29T10:00:00Z") -> dict:
    return {"format": GRANTS_FORMAT, "version": version, "created_at": created_at, "grants": grants}


# --- steady load --------------------------------------------------------------------------

@dataclass
class RequestClass:
    """One kind of request in the mix: how to send it and which statuses are correct.
    `send` returns the response; `expected` is the set of acceptable statuses; `check`
    (optional) must hold for the response too (e.g. a JSON-RPC error in a 200 body)."""

    name: str
    send: Callable[[], Response]
    expected: frozenset[int]
    check: Callable[[Response], bool] | None = None


@dataclass
class Outcome:
    cls: str
    status: int  # 0: no HTTP answer (connection error)
    request_id: str
    started: float
    ended: float
    error: str = ""
    body: bytes = b""


@dataclass
class Load:
    """`threads` threads cycling through `classes` until stopped (or for `seconds` with
    `run`). `rate` (requests/s over all threads, 0 = as fast as possible) keeps a steady
    pace for long runs."""

    classes: list[RequestClass]
    threads: int = 6
    rate: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _worker(self, offset: int) -> None:
        i = offset
        interval = self.threads / self.rate if self.rate else 0.0
        next_at = time.monotonic()
        while not self._stop.is_set():
            cls = self.classes[i % len(self.classes)]
            i += 1
            started = time.monotonic()
            try:
                r = cls.send()
                out = Outcome(cls.name, r.status, r.request_id, started, time.monotonic(), body=r.body[:300])
                if cls.check is not None and not cls.check(r):
                    out.error = "response check failed"
            except Exception as e:  # the point is to count these, not to stop the load
                out = Outcome(cls.name, 0, "", started, time.monotonic(), error=f"{type(e).__name__}: {e}")
            with self._lock:
                self.outcomes.append(out)
            if interval:
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> "Load":
        for t in range(self.threads):
            w = threading.Thread(target=self._worker, args=(t,), daemon=True)
            w.start()
            self._workers.append(w)
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for w in self._workers:
            w.join(30)
        return self.snapshot()

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def run(self, seconds: float, during: Callable[[], Any] | None = None) -> list[Outcome]:
        """Runs the load for `seconds`; `during` (if given) runs in this thread meanwhile
        (e.g. a fault that flaps), and the load stops when both are done."""
        self.start()
        deadline = time.monotonic() + seconds
        try:
            if during is not None:
                during()
            remaining = deadline - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
        finally:
            outcomes = self.stop()
        return outcomes


def wrong_decisions(outcomes: list[Outcome], classes: list[RequestClass]) -> list[Outcome]:
    """The outcomes whose status is not one their class accepts, or whose response
    failed the class's check (or never came)."""
    expected = {c.name: c.expected for c in classes}
    return [o for o in outcomes if o.status not in expected[o.cls] or o.error]


def summary(outcomes: list[Outcome]) -> dict[str, dict[int, int]]:
    out: dict[str, Counter] = {}
    for o in outcomes:
        out.setdefault(o.cls, Counter())[o.status] += 1
    return {k: dict(v) for k, v in out.items()}


# --- what "no crash" and "every event accounted for" mean -------------------------------

# Envoy's own stats for wasm VMs and the wasm HTTP filter. Found in a run (`/stats | grep
# -i wasm`, Envoy 1.40): `wasm.envoy.wasm.runtime.v8.{created,active}`, `wasm.wasm_vm_count`,
# `wasm.remote_load_*` and, per plugin, `wasm.<plugin>.vm_reload`, `.vm_reload_success`,
# `.vm_reload_failure`, `.vm_reload_backoff`: a VM that crashed (a trap, a panic) is
# reloaded under the failure policy and counted there. Any failure-sounding name is
# included so a stat added by a later Envoy is not silently ignored.
FAILURE_WORDS = ("vm_reload", "fail", "crash", "abort", "panic", "error")


def wasm_failure_stats(stats: dict[str, int]) -> dict[str, int]:
    """Envoy's wasm stats (not the filter's own ``wasmcustom.*`` stats) that count a VM
    failure or reload, with their values (``remote_load_*`` is module download, not VMs)."""
    return {k: v for k, v in stats.items()
            if "wasm" in k.lower() and not k.startswith("wasmcustom.") and "remote_load" not in k
            and any(w in k.lower() for w in FAILURE_WORDS)}


@dataclass
class Accounting:
    """Per-case audit arithmetic: `decisions` requests decided, `stored` distinct ones
    the collector holds, `dropped` the filter declared lost (``meshguard.audit.dropped``
    delta), `late` events declared lost that arrived anyway (a slow collector storing a
    batch after the filter gave up on it), `duplicates` extra copies stored, `announced`
    how many events the collector was told were lost (``meshguard.audit.gap`` records,
    every stream, all time: compare with the cumulative ``meshguard.audit.dropped``)."""

    decisions: int
    stored: int
    dropped: int
    late: int
    duplicates: int
    announced: int = 0

    @property
    def balanced(self) -> bool:
        return self.stored + self.dropped - self.late == self.decisions


def declared_lost(events: list[Event]) -> set[tuple[str, int]]:
    """(stream, seq) of every event announced as dropped by a ``meshguard.audit.gap``."""
    lost = set()
    for e in events:
        if e.get("event_name") != "meshguard.audit.gap":
            continue
        a = e["attributes"]
        stream = a.get("meshguard.stream")
        for seq in range(int(a.get("meshguard.gap.from_seq", 0)), int(a.get("meshguard.gap.to_seq", -1)) + 1):
            lost.add((stream, seq))
    return lost


def audit_accounting(collector: Collector, request_ids: set[str], dropped: int) -> Accounting:
    """Matches the collector's events against the requests of one case."""
    events = collector.events()
    lost = declared_lost(events)
    seen: Counter = Counter()
    late = 0
    for e in events:
        a = e["attributes"]
        rid = a.get("meshguard.request_id")
        if rid not in request_ids:
            continue
        seen[rid] += 1
        if seen[rid] == 1 and (a.get("meshguard.stream"), a.get("meshguard.seq")) in lost:
            late += 1
    return Accounting(decisions=len(request_ids), stored=len(seen), dropped=dropped, late=late,
                      duplicates=sum(seen.values()) - len(seen), announced=len(lost))
