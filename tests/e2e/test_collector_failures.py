"""The audit pipeline failing must not touch the request path (README, "Audit events"): with the
collector down, or with an audit cluster Envoy does not know, requests are answered
exactly as usual; events wait in the buffer and are delivered once the collector is back.
"""

from __future__ import annotations

import time

import pytest

from harness import expect, policies
from harness.collector import Collector
from harness.ports import free_port

FAILED = "meshguard.audit.exports_failed"
ACKED = "meshguard.audit.acknowledged"


def _normal_answers(client, tokens, max_seconds: float = 1.0) -> list[str]:
    """An allowed, a denied and an unauthenticated call, each answered normally and
    quickly. Returns their request ids."""
    calls = [
        (dict(token=tokens.token("steady-agent", "verified"), action="read:orders"), 200),
        (dict(token=tokens.token("steady-agent", "verified"), action="delete:orders"), 403),
        (dict(token="garbage", action="read:orders"), 401),
    ]
    ids = []
    for kwargs, status in calls:
        started = time.monotonic()
        resp = client.call(**kwargs)
        took = time.monotonic() - started
        assert resp.status == status, resp
        assert took < max_seconds, f"request took {took:.2f}s with the audit pipeline failing"
        ids.append(resp.request_id)
    return ids


@pytest.fixture(scope="module")
def dead_port() -> int:
    """A port nobody listens on (until the test revives a collector there)."""
    return free_port()


@pytest.fixture(scope="module")
def collector_down(request, launch, keyring, dead_port):
    return launch(request, "dead-collector",
                  {"enforce": policies.as_yaml(policies.seed_config(keyring.jwks))},
                  collector_port=dead_port)


@pytest.fixture(scope="module")
def unknown_cluster(request, launch, keyring):
    cfg = policies.seed_config(keyring.jwks, audit_cluster="no-such-cluster")
    return launch(request, "unknown-cluster", {"enforce": policies.as_yaml(cfg)})


def test_collector_down_requests_unaffected_and_events_retried(collector_down, tokens, dead_port):
    envoy, client = collector_down.envoy, collector_down.client
    early = _normal_answers(client, tokens)
    # the filter really tried to export, and failed
    envoy.wait_stat(FAILED, 2)
    assert envoy.stat(ACKED) == 0
    later = _normal_answers(client, tokens)
    # the collector comes back on the configured port: buffered events are delivered
    with Collector(port=dead_port) as revived:
        for rid in early + later:
            revived.by_request_id(rid, timeout=20)
    assert envoy.alive()


def test_unknown_audit_cluster_vm_survives_and_requests_unaffected(unknown_cluster, tokens):
    envoy, client = unknown_cluster.envoy, unknown_cluster.client
    _normal_answers(client, tokens)
    # several flush attempts against the missing cluster have happened...
    envoy.wait_stat(FAILED, 2)
    # ...and the VM still decides requests
    _normal_answers(client, tokens)
    resp = client.call(tokens.token("after-failures", "verified"), action="read:orders")
    expect.forwarded(resp, agent="after-failures", tier="verified", action="read:orders")
    assert envoy.alive()
