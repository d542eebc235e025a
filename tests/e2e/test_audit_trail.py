"""The audit trail through the real Envoy into the real `meshguard collector` (issue 3):
exact counts, hash chains intact, nothing lost across a collector outage, and exact
accounting (stored + dropped = requests) when the buffer overflows."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from harness import keys
from harness.client import MeshClient
from harness.envoy import Envoy, Listener, render
from harness.mgcollector import MeshguardCollector
from harness.poll import wait_until
from harness.ports import free_port

POLICY = "name: p\nrules:\n  - {action: 'read:*', effect: allow}\n  - {action: 'delete:*', effect: deny, reason: no}\n"


def plugin_config(jwks: dict, **audit) -> str:
    return json.dumps({
        "identity": {"issuers": [{"issuer": keys.ISSUER, "audiences": [keys.AUDIENCE], "jwks": jwks}]},
        "policy_yaml": POLICY,
        "audit": {"cluster": "meshguard-collector", "flush_interval_ms": 100, "retry_max_backoff_ms": 1000, **audit},
    })


def start_envoy(request, tmp_path_factory, name, cfg_text, upstream, collector_port, concurrency=1):
    listener = Listener("agents", free_port(), cfg_text)
    boot = render([listener], admin_port=free_port(), upstream_port=upstream.port, collector_port=collector_port)
    boot["node"] = {"id": f"test-{name}", "cluster": "meshguard-tests"}
    envoy = Envoy(name, boot, tmp_path_factory.mktemp(f"envoy-{name}"), concurrency=concurrency)
    request.addfinalizer(envoy.stop)
    envoy.start()
    return envoy, MeshClient(listener.port)


@pytest.fixture
def mgc(request, tmp_path):
    c = MeshguardCollector(tmp_path).start()
    request.addfinalizer(c.stop)
    return c


def test_every_request_stored_once_with_an_intact_chain(request, tmp_path_factory, keyring, tokens, upstream, mgc):
    envoy, client = start_envoy(request, tmp_path_factory, "trail", plugin_config(keyring.jwks), upstream, mgc.port,
                                concurrency=2)
    token = tokens.token("agent-t", "verified")
    sent = {}
    for i in range(120):
        rid = str(uuid.uuid4())
        action = "delete:orders" if i % 4 == 0 else "read:orders"
        trace = uuid.uuid4().hex
        r = client.call(token if i % 10 else "garbage", action=action, request_id=rid,
                        headers={"traceparent": f"00-{trace}-{uuid.uuid4().hex[:16]}-01"})
        sent[rid] = (r.status, action, trace)
    stored = wait_until(lambda: (lambda e: e if len(e) >= len(sent) else None)(mgc.events()), 20, "all events stored")
    assert len(stored) == len(sent), "exactly one stored event per request"
    by_rid = {e["attributes"]["meshguard.request_id"]: e for e in stored}
    assert set(by_rid) == set(sent)
    for rid, (status, action, trace) in sent.items():
        e = by_rid[rid]
        attrs = e["attributes"]
        assert attrs["meshguard.action"] == action
        assert e["trace_id"] == trace
        expected = {200: "allow", 403: "deny", 401: "deny"}[status]
        assert attrs["meshguard.decision"] == expected
        for key in ("meshguard.enforced", "meshguard.agent.id", "meshguard.trust_tier", "meshguard.delegation.chain",
                    "meshguard.resource", "meshguard.policy", "meshguard.rule", "meshguard.reason", "meshguard.mode",
                    "meshguard.bundle.version", "http.request.method", "url.path", "server.address",
                    "meshguard.latency_us", "meshguard.seq", "meshguard.hash", "meshguard.prev_hash"):
            assert key in attrs, key
    code, report = mgc.verify()
    assert code == 0 and report["intact"], report
    assert sum(s["events"] for s in report["streams"]) == len(sent)


def test_collector_outage_loses_nothing(request, tmp_path_factory, keyring, tokens, upstream, mgc):
    """A steady stream of requests; the collector is down for 10 s in the middle."""
    envoy, client = start_envoy(request, tmp_path_factory, "outage", plugin_config(keyring.jwks), upstream, mgc.port)
    token = tokens.token("agent-o", "verified")
    statuses: list[int] = []
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            statuses.append(client.call(token, action="read:orders").status)
            time.sleep(0.02)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        time.sleep(3)
        mgc.stop()
        time.sleep(10)
        mgc.start()
        time.sleep(3)
    finally:
        stop.set()
        t.join(30)
    total = len(statuses)
    assert total > 200
    assert set(statuses) == {200}, f"requests were affected by the outage: {sorted(set(statuses))}"
    stored = wait_until(lambda: (lambda e: e if len(e) >= total else None)(mgc.events()), 30, f"{total} events stored")
    assert len(stored) == total, "no event lost"
    assert len({e["attributes"]["meshguard.request_id"] for e in stored}) == total, "no duplicate"
    assert envoy.stat("meshguard.audit.exports_failed") > 0, "the outage was noticed"
    assert envoy.stat("meshguard.audit.dropped") == 0
    code, report = mgc.verify()
    assert code == 0 and report["intact"], report


def test_overflow_is_counted_exactly(request, tmp_path_factory, keyring, tokens, upstream, tmp_path):
    """A 40-event buffer, the collector down while 150 requests pass: what is stored plus
    what the filter counts as dropped is exactly the number of requests, and the chain
    shows the loss as declared."""
    port = free_port()
    envoy, client = start_envoy(request, tmp_path_factory, "overflow", plugin_config(keyring.jwks, buffer_events=40),
                                upstream, port)
    token = tokens.token("agent-x", "verified")
    n = 150
    assert all(client.call(token, action="read:orders").status == 200 for _ in range(n))
    mgc = MeshguardCollector(tmp_path, port=port).start()
    request.addfinalizer(mgc.stop)
    stored = wait_until(lambda: (lambda e: e if len(e) >= 40 else None)(mgc.events()), 20, "buffered events delivered")
    time.sleep(1.0)
    stored = mgc.events()
    dropped = envoy.stat("meshguard.audit.dropped")
    assert dropped > 0
    assert len(stored) + dropped == n, (len(stored), dropped)
    code, report = mgc.verify()
    assert code == 0 and report["intact"], report
    assert sum(s["declared_lost_events"] for s in report["streams"]) == dropped, report
