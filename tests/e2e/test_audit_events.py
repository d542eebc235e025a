"""Audit events at the real OTLP/gRPC collector: the attributes of a decision, trace
correlation, and exactly one event per request, exported in batches."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from harness import expect
from harness.client import traceparent

REQUIRED_ATTRIBUTES = {
    "meshguard.decision", "meshguard.effect", "meshguard.enforced", "meshguard.agent.id",
    "meshguard.trust_tier", "meshguard.delegation.chain", "meshguard.delegation.depth",
    "meshguard.action", "meshguard.resource", "meshguard.policy", "meshguard.rule",
    "meshguard.reason", "meshguard.mode", "meshguard.bundle.version", "meshguard.identity.error",
    "http.request.method", "url.path", "server.address", "http.response.status_code",
    "meshguard.request_id", "meshguard.latency_us",
}


def _bundle_version(seed, tokens) -> str:
    """The policy version the seed listener reports in its 403 bodies."""
    resp = seed.clients["enforce"].call(tokens.token("version-probe", "verified"), action="delete:x")
    return expect.denied(resp, policy="verified-agent-policy", rule="rules[2]")["bundleVersion"]


def _variable(attrs: dict) -> tuple[dict, str, int]:
    """The contract's attributes (README "Audit events"; the contract says "at least": extra ones are welcome and
    ignored here), minus the two whose exact value is not predictable, returned apart."""
    missing = REQUIRED_ATTRIBUTES - set(attrs)
    assert not missing, f"audit event lacks {missing}"
    attrs = {k: attrs[k] for k in REQUIRED_ATTRIBUTES}
    return attrs, attrs.pop("meshguard.reason"), attrs.pop("meshguard.latency_us")


def test_allowed_request_event(seed, tokens, collector):
    trace, span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    resp = seed.clients["enforce"].call(
        tokens.token("audit-agent", "verified"), path="/v1/orders/7?verbose=1",
        headers={"traceparent": traceparent(trace, span), "host": "tools.internal"})
    expect.forwarded(resp, agent="audit-agent", tier="verified", action="read:orders")
    event = collector.by_request_id(resp.request_id)
    attrs, reason, latency = _variable(event["attributes"])
    assert attrs == {
        "meshguard.decision": "allow",
        "meshguard.effect": "allow",
        "meshguard.enforced": True,
        "meshguard.agent.id": "audit-agent",
        "meshguard.trust_tier": "verified",
        "meshguard.delegation.chain": ["audit-agent"],
        "meshguard.delegation.depth": 0,
        "meshguard.action": "read:orders",
        "meshguard.resource": "orders",
        "meshguard.policy": "verified-agent-policy",
        "meshguard.rule": "rules[0]",
        "meshguard.mode": "enforce",
        "meshguard.bundle.version": _bundle_version(seed, tokens),
        "meshguard.identity.error": "",
        "http.request.method": "GET",
        "url.path": "/v1/orders/7",
        "server.address": "tools.internal",
        "http.response.status_code": 0,
        "meshguard.request_id": resp.request_id,
    }
    assert isinstance(reason, str) and reason
    assert isinstance(latency, int) and 0 <= latency < 1_000_000
    assert (event["trace_id"], event["span_id"]) == (trace, span)
    assert event["resource"]["service.name"] == "meshguard"


def test_denied_request_event_matches_the_403(seed, tokens, collector):
    resp = seed.clients["enforce"].call(tokens.token("audit-agent", "verified"), method="DELETE",
                                        path="/v1/orders/7")
    body = expect.denied(resp, policy="verified-agent-policy", rule="rules[2]")
    event = collector.by_request_id(resp.request_id)
    attrs, reason, _ = _variable(event["attributes"])
    assert reason == body["reason"] == "Verified agents cannot delete resources"
    assert attrs == {
        "meshguard.decision": "deny",
        "meshguard.effect": "deny",
        "meshguard.enforced": True,
        "meshguard.agent.id": "audit-agent",
        "meshguard.trust_tier": "verified",
        "meshguard.delegation.chain": ["audit-agent"],
        "meshguard.delegation.depth": 0,
        "meshguard.action": "delete:orders",
        "meshguard.resource": "orders",
        "meshguard.policy": "verified-agent-policy",
        "meshguard.rule": "rules[2]",
        "meshguard.mode": "enforce",
        "meshguard.bundle.version": body["bundleVersion"],
        "meshguard.identity.error": "",
        "http.request.method": "DELETE",
        "url.path": "/v1/orders/7",
        "server.address": f"127.0.0.1:{seed.clients['enforce'].port}",
        "http.response.status_code": 403,
        "meshguard.request_id": resp.request_id,
    }
    # without traceparent the trace id is the UUID x-request-id, and the 403 says the same
    assert event["trace_id"] == resp.request_id.replace("-", "") == body["traceId"]
    assert event["span_id"] == ""


def test_identity_failure_event(seed, tokens, collector):
    expired = tokens.token("gone-agent", "verified", exp=int(time.time()) - 600)
    resp = seed.clients["enforce"].call(expired, action="read:orders")
    body = expect.identity_failure(resp, "expired")
    a = collector.by_request_id(resp.request_id)["attributes"]
    assert {k: a[k] for k in (
        "meshguard.decision", "meshguard.effect", "meshguard.enforced", "meshguard.agent.id",
        "meshguard.trust_tier", "meshguard.delegation.chain", "meshguard.delegation.depth",
        "meshguard.policy", "meshguard.rule", "meshguard.identity.error", "http.response.status_code",
        "meshguard.mode")} == {
        "meshguard.decision": "deny", "meshguard.effect": "deny", "meshguard.enforced": True,
        "meshguard.agent.id": "", "meshguard.trust_tier": "", "meshguard.delegation.chain": [],
        "meshguard.delegation.depth": 0, "meshguard.policy": "", "meshguard.rule": "",
        "meshguard.identity.error": "expired", "http.response.status_code": 401, "meshguard.mode": "enforce",
    }
    assert a["meshguard.reason"] == body["reason"]


def test_one_event_per_request_in_batches(seed, tokens, collector):
    """50 concurrent requests (allowed, denied and unauthenticated) give exactly 50
    events, each once, in far fewer Export calls than events."""
    client = seed.clients["enforce"]
    good = tokens.token("burst-agent", "verified")

    def one(i: int):
        if i % 3 == 0:
            return client.call(good, action="read:orders")
        if i % 3 == 1:
            return client.call(good, action="delete:orders")
        return client.call("not-a-token", action="read:orders")

    exports_before = collector.exports
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(one, range(50)))
    assert sorted({r.status for r in responses}) == [200, 401, 403]
    ids = {r.request_id for r in responses}
    assert len(ids) == 50
    # Events leave each worker in order: once a later sentinel has arrived, every burst
    # event has too, so the exact count below needs no sleep.
    sentinel = client.call(good, action="read:orders")
    collector.by_request_id(sentinel.request_id)
    elapsed = time.monotonic() - started
    burst = collector.events(lambda e: e["attributes"].get("meshguard.request_id") in ids)
    assert len(burst) == 50, f"{len(burst)} events for 50 requests"
    assert {e["attributes"]["meshguard.request_id"] for e in burst} == ids
    exports = collector.exports - exports_before
    # flush_interval_ms is 200: one Export per tick at most, plus a full-batch flush
    assert exports <= elapsed / 0.2 + 2, f"{exports} exports in {elapsed:.2f}s"
    assert exports < 51
