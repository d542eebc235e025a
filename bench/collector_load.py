#!/usr/bin/env python3
"""`make bench-collector`: sustained ingest of `meshguard collector`, with zero loss.

Pre-builds OTLP Export requests of real hash-chained decision events (the filter's chain:
`meshguard::audit::chain_input`, re-implemented here independently), then sends them
as fast as the collector acknowledges them, from several concurrent gRPC senders, to

  - one replica on SQLite,
  - one replica on PostgreSQL,
  - two replicas sharing one PostgreSQL (Exports alternate between them, as Envoy's
    round robin does),

and reports events/s (acknowledged events over wall time). Afterwards the store must
hold exactly the events sent and `meshguard audit verify` must find every chain intact,
or the run fails. PostgreSQL is a throwaway cluster (tests/harness/postgres.py).

    .venv/bin/python bench/collector_load.py [--events N] [--batch N] [--streams N]
        [--senders N] [--cli PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import grpc  # noqa: E402
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc  # noqa: E402
from opentelemetry.proto.common.v1 import common_pb2  # noqa: E402
from opentelemetry.proto.logs.v1 import logs_pb2  # noqa: E402
from opentelemetry.proto.resource.v1 import resource_pb2  # noqa: E402

from harness.mgcollector import MeshguardCollector  # noqa: E402
from harness.postgres import PostgresCluster  # noqa: E402

GENESIS = "0" * 64


def any_value(v) -> common_pb2.AnyValue:
    if isinstance(v, bool):
        return common_pb2.AnyValue(bool_value=v)
    if isinstance(v, int):
        return common_pb2.AnyValue(int_value=v)
    if isinstance(v, list):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[any_value(x) for x in v]))
    return common_pb2.AnyValue(string_value=str(v))


def chain_hash(prev: str, time_ns: int, trace_hex: str, attrs: dict) -> str:
    out = f"meshguard-audit-v1\n{prev}\n{time_ns}\n{trace_hex}\n"
    for k in sorted(attrs):
        out += f"{k}={json.dumps(attrs[k], separators=(',', ':'), ensure_ascii=False)}\n"
    return hashlib.sha256(out.encode()).hexdigest()


def build_requests(events: int, batch: int, streams: int) -> list[bytes]:
    """Serialized Export requests; each stream's events in seq order across requests."""
    per_stream = events // streams
    chains = {f"s{i}": (GENESIS, 1) for i in range(streams)}
    base = time.time_ns()
    records: dict[str, list] = {s: [] for s in chains}
    n = 0
    for s in chains:
        prev, seq = chains[s]
        for _ in range(per_stream):
            n += 1
            t = base + n * 1000
            trace = os.urandom(16)
            attrs = {
                "meshguard.decision": "deny" if n % 5 == 0 else "allow",
                "meshguard.agent.id": f"agent-{n % 50}",
                "meshguard.action": "read:orders",
                "meshguard.resource": "orders/1",
                "meshguard.request_id": f"r-{n}",
                "meshguard.stream": s,
                "meshguard.seq": seq,
                "meshguard.prev_hash": prev,
            }
            h = chain_hash(prev, t, trace.hex(), attrs)
            kv = [common_pb2.KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]
            kv.append(common_pb2.KeyValue(key="meshguard.hash", value=any_value(h)))
            records[s].append(logs_pb2.LogRecord(time_unix_nano=t, event_name="meshguard.decision",
                                                 trace_id=trace, attributes=kv))
            prev, seq = h, seq + 1
    resource = resource_pb2.Resource(attributes=[common_pb2.KeyValue(key="envoy.node.id",
                                                                     value=any_value("bench-node"))])
    # Interleave streams batch by batch, as many workers' buffers would.
    out = []
    offsets = {s: 0 for s in records}
    while any(offsets[s] < len(records[s]) for s in records):
        for s in records:
            chunk = records[s][offsets[s]:offsets[s] + batch]
            offsets[s] += len(chunk)
            if chunk:
                req = logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
                    resource=resource, scope_logs=[logs_pb2.ScopeLogs(log_records=chunk)])])
                out.append(req.SerializeToString())
    return out


def send_all(ports: list[int], requests: list[bytes], senders: int) -> float:
    """Sends every request (retrying UNAVAILABLE), `senders` at a time; wall seconds."""
    channels = [grpc.insecure_channel(f"127.0.0.1:{p}") for p in ports]
    calls = [ch.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                            request_serializer=lambda b: b,
                            response_deserializer=logs_service_pb2.ExportLogsServiceResponse.FromString)
             for ch in channels]
    lock = threading.Lock()
    nxt = [0]
    errors: list[str] = []

    def worker():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(requests):
                return
            for attempt in range(20):
                try:
                    calls[(i + attempt) % len(calls)](requests[i], timeout=30)
                    break
                except grpc.RpcError as e:
                    if attempt == 19:
                        errors.append(str(e))
                    time.sleep(0.05)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    for ch in channels:
        ch.close()
    if errors:
        raise RuntimeError(f"{len(errors)} exports failed: {errors[0]}")
    return took


def check(collector: MeshguardCollector, expected: int) -> None:
    out = collector.run("verify", "--format", "json")
    report = json.loads(out.stdout)
    stored = sum(s["events"] for s in report["streams"])
    if out.returncode != 0 or not report["intact"] or stored != expected:
        raise RuntimeError(f"loss or broken chains: stored {stored} of {expected}, intact={report['intact']}")


def run(label: str, work: Path, stores: list[str | None], requests: list[bytes], events: int, senders: int,
        cli: str | None) -> dict:
    replicas = []
    try:
        for i, store in enumerate(stores):
            c = MeshguardCollector(work / f"{label}-{i}", store=store)
            c.db.parent.mkdir(parents=True, exist_ok=True)
            if cli:
                c.cli = cli
            replicas.append(c.start())
        took = send_all([c.port for c in replicas], requests, senders)
        check(replicas[0], events)
    finally:
        for c in replicas:
            c.stop()
    rate = events / took
    print(f"{label}: {events} events in {took:.2f}s = {rate:,.0f} events/s, zero loss, chains intact", flush=True)
    return {"label": label, "events": events, "seconds": round(took, 3), "events_per_second": round(rate)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=40_000)
    p.add_argument("--batch", type=int, default=200, help="events per Export (the filter's max_batch default)")
    p.add_argument("--streams", type=int, default=8, help="chains (Envoy workers) in flight")
    p.add_argument("--senders", type=int, default=8, help="concurrent Exports")
    p.add_argument("--cli", help="meshguard binary (default: the harness's, target/debug/meshguard or "
                                 "$MESHGUARD_CLI; its dependencies are optimised)")
    p.add_argument("--out", type=Path, default=ROOT / "target" / "bench-collector.json")
    args = p.parse_args()
    cli = args.cli
    events = args.events - args.events % args.streams
    requests = build_requests(events, args.batch, args.streams)
    print(f"collector load: {events} events, {len(requests)} Exports of <= {args.batch}, {args.streams} streams, "
          f"{args.senders} senders, cli {cli or 'harness default'}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="meshguard-bench-collector-") as tmp, PostgresCluster() as pg:
        work = Path(tmp)
        results.append(run("sqlite-1-replica", work, [None], requests, events, args.senders, cli))
        results.append(run("postgres-1-replica", work, [pg.database("one")], requests, events, args.senders, cli))
        url = pg.database("two")
        results.append(run("postgres-2-replicas", work, [url, url], requests, events, args.senders, cli))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "cpus": os.cpu_count(),
                                    "load_avg": os.getloadavg()}, indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
