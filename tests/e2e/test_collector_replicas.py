"""Replicated collectors on one PostgreSQL (issue 14): the real Envoy exports to two
`meshguard collector --store postgres://...` replicas (one audit cluster, both endpoints);
one replica is killed mid-stream (SIGKILL by PID) and restarted. Afterwards the stored
events are exactly the decisions, none twice, and `audit verify` finds every chain
intact. Retention (`--retain`) deletes old events on either backend and `audit verify`
still proves what remains, declaring the truncation."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from harness import keys
from harness.client import MeshClient
from harness.envoy import Envoy, Listener, render
from harness.mgcollector import MeshguardCollector
from harness.poll import wait_until
from harness.ports import free_port
from harness.postgres import PostgresCluster

POLICY = "name: p\nrules:\n  - {action: 'read:*', effect: allow}\n  - {action: 'delete:*', effect: deny, reason: no}\n"


def plugin_config(jwks: dict) -> str:
    return json.dumps({
        "identity": {"issuers": [{"issuer": keys.ISSUER, "audiences": [keys.AUDIENCE], "jwks": jwks}]},
        "policy_yaml": POLICY,
        "audit": {"cluster": "meshguard-collector", "flush_interval_ms": 100, "retry_max_backoff_ms": 500},
    })


def start_envoy(request, tmp_path_factory, name, jwks, upstream, collector_ports, concurrency=2):
    listener = Listener("agents", free_port(), plugin_config(jwks))
    boot = render([listener], admin_port=free_port(), upstream_port=upstream.port, collector_port=collector_ports[0])
    boot["node"] = {"id": f"test-{name}", "cluster": "meshguard-tests"}
    cluster = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "meshguard-collector")
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in collector_ports
    ]
    envoy = Envoy(name, boot, tmp_path_factory.mktemp(f"envoy-{name}"), concurrency=concurrency)
    request.addfinalizer(envoy.stop)
    envoy.start()
    return envoy, MeshClient(listener.port)


@pytest.fixture(scope="module")
def pg():
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


def per_host_successes(envoy: Envoy) -> dict[str, int]:
    """``rq_success`` of each collector endpoint, from Envoy's /clusters admin page."""
    out = {}
    for line in envoy.admin("/clusters").splitlines():
        m = re.match(r"meshguard-collector::(127\.0\.0\.1:\d+)::rq_success::(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def test_two_replicas_share_postgres_and_survive_losing_one(request, tmp_path_factory, keyring, tokens, upstream,
                                                            pg):
    url = pg.database("replicas")
    replicas = [MeshguardCollector(tmp_path_factory.mktemp(f"replica-{i}"), store=url) for i in (0, 1)]
    for r in replicas:
        request.addfinalizer(r.stop)
        r.start()
    envoy, client = start_envoy(request, tmp_path_factory, "replicas", keyring.jwks, upstream,
                                [r.port for r in replicas])
    token = tokens.token("agent-r", "verified")
    sent: dict[str, str] = {}

    def send(n: int) -> None:
        for i in range(n):
            rid = str(uuid.uuid4())
            action = "delete:orders" if i % 3 == 0 else "read:orders"
            r = client.call(token, action=action, request_id=rid)
            sent[rid] = {200: "allow", 403: "deny"}[r.status]
            time.sleep(0.005)

    send(150)
    # Both replicas have taken Exports before one of them is lost.
    wait_until(lambda: len(per_host_successes(envoy)) == 2 and all(per_host_successes(envoy).values()), 20,
               "both replicas acknowledged exports")
    replicas[0].kill()
    send(150)
    replicas[0].start()
    send(150)

    def all_stored():
        events = replicas[1].events()
        return events if len(events) >= len(sent) else None

    stored = wait_until(all_stored, 60, "every decision stored")
    rids = [e["attributes"]["meshguard.request_id"] for e in stored]
    assert len(rids) == len(set(rids)), "an event stored twice"
    assert set(rids) == set(sent), "stored events differ from the decisions"
    assert {e["attributes"]["meshguard.request_id"]: e["decision"] for e in stored} == sent
    # Queries through either replica's store see the same thing.
    assert len(replicas[0].events()) == len(sent)
    code, report = replicas[0].verify()
    assert code == 0 and report["intact"], report
    assert sum(s["events"] for s in report["streams"]) == len(sent)
    assert all(not s["declared_losses"] for s in report["streams"]), report
    hosts = per_host_successes(envoy)
    assert len(hosts) == 2 and all(hosts.values()), hosts


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_retention_deletes_old_events_and_verify_declares_the_truncation(request, tmp_path_factory, keyring,
                                                                         tokens, upstream, pg, backend):
    store = pg.database(f"retention_{backend}") if backend == "postgres" else None
    mgc = MeshguardCollector(tmp_path_factory.mktemp(f"retain-{backend}"), store=store,
                             extra=("--retain", "8s", "--retain-every", "1s"))
    request.addfinalizer(mgc.stop)
    mgc.start()
    envoy, client = start_envoy(request, tmp_path_factory, f"retain-{backend}", keyring.jwks, upstream, [mgc.port],
                                concurrency=1)
    token = tokens.token("agent-old", "verified")
    old = [client.call(token, action="read:orders", request_id=str(uuid.uuid4())).request_id for _ in range(20)]
    wait_until(lambda: len(mgc.events()) >= 20, 20, "old events stored")
    # Past the retention age, later decisions arrive; the old ones go at the next pass.
    time.sleep(9)
    new = [client.call(token, action="read:orders", request_id=str(uuid.uuid4())).request_id for _ in range(10)]

    def only_new():
        ids = [e["attributes"]["meshguard.request_id"] for e in mgc.events()]
        return ids if set(ids) == set(new) else None

    kept = wait_until(only_new, 30, "old events deleted, new ones kept")
    assert not set(kept) & set(old)
    code, report = mgc.verify()
    assert code == 0 and report["intact"], report
    (stream,) = report["streams"]
    assert stream["truncated_before"] == 21 and stream["events"] == 10, stream
    assert stream["first_seq"] == 21 and not stream["declared_losses"], stream
    table = mgc.run("verify")
    assert table.returncode == 0, table.stderr
    assert "truncated on purpose before seq 21" in table.stdout, table.stdout
    assert "all 1 stream(s) intact" in table.stdout, table.stdout
