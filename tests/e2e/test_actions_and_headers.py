"""Request -> action mapping (route table, explicit headers) and the headers MeshGuard
owns: client-supplied ``x-meshguard-*`` never reach the upstream, MeshGuard's own do."""

from __future__ import annotations

import pytest

from harness import expect

SPOOFED = {
    "x-meshguard-agent": "admin",
    "X-MeshGuard-Trust-Tier": "privileged",
    "x-meshguard-decision": "allow",
    "x-meshguard-whatever": "1",
}


@pytest.mark.parametrize("method,path,action,resource", [
    ("POST", "/v1/email/send", "write:email", "notifications"),
    ("GET", "/v1/orders/7", "read:orders", "orders"),
    ("GET", "/v1/orders/7/lines/2?expand=true", "read:orders", "orders"),
    ("DELETE", "/v1/orders/7", "delete:orders", "orders"),
])
def test_route_table_maps_requests_to_actions(seed, tokens, collector, method, path, action, resource):
    """Routes: ``POST /v1/email/*`` -> write:email/notifications, ``GET|DELETE
    /v1/orders/**`` -> read|delete:orders/orders (``**`` crosses segments, the query is
    ignored). The decided action and resource are read back from the audit event."""
    resp = seed.clients["enforce"].call(tokens.token("router-agent", "verified"), method=method, path=path)
    assert resp.status in (200, 403), resp
    event = collector.by_request_id(resp.request_id)
    assert event["attributes"]["meshguard.action"] == action
    assert event["attributes"]["meshguard.resource"] == resource


def test_route_read_orders_is_allowed_by_rule_0(seed, tokens, collector):
    resp = seed.clients["enforce"].call(tokens.token("router-agent", "verified"), path="/v1/orders/7")
    expect.forwarded(resp, agent="router-agent", tier="verified", action="read:orders")
    event = collector.by_request_id(resp.request_id)
    assert (event["attributes"]["meshguard.policy"], event["attributes"]["meshguard.rule"]) == (
        "verified-agent-policy", "rules[0]")


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/unmapped"),
    ("POST", "/v1/orders/7"),      # orders routes are GET and DELETE only
    ("GET", "/v1/email/send"),     # email route is POST only
    ("POST", "/v1/email/a/b"),     # `*` stays within one segment
])
def test_no_route_and_no_header_is_denied(seed, tokens, upstream, method, path):
    resp = seed.clients["enforce"].call(tokens.token("router-agent", "verified"), method=method, path=path)
    expect.denied(resp, policy=None, rule=None, reason_contains="no action")
    assert not upstream.received(resp.request_id)


def test_route_decides_over_a_disagreeing_action_header(seed, tokens, upstream):
    """A matching route decides; a client action header that disagrees is refused (403
    naming both), never obeyed (tests/e2e/test_path_normalisation.py has the rest)."""
    resp = seed.clients["enforce"].call(tokens.token("router-agent", "verified"), action="delete:orders",
                                        path="/v1/orders/7")
    body = expect.denied(resp, policy=None, rule=None, action="read:orders")
    assert '"delete:orders"' in body["reason"] and '"read:orders"' in body["reason"], body
    assert not upstream.received(resp.request_id)


def test_action_header_maps_unrouted_requests(seed, tokens):
    resp = seed.clients["enforce"].call(tokens.token("router-agent", "verified"), action="delete:orders",
                                        path="/v1/unrouted")
    expect.denied(resp, policy="verified-agent-policy", rule="rules[2]", action="delete:orders")


def test_spoofed_meshguard_headers_are_replaced(seed, tokens):
    resp = seed.clients["enforce"].call(tokens.token("honest-agent", "verified"), action="read:orders",
                                        resource="orders", headers=SPOOFED)
    seen = expect.forwarded(resp, agent="honest-agent", tier="verified", action="read:orders")
    assert "x-meshguard-resource" not in seen and "x-meshguard-whatever" not in seen


def test_spoofed_headers_removed_on_routed_requests(seed, tokens):
    resp = seed.clients["enforce"].call(tokens.token("honest-agent", "verified"), path="/v1/orders/9",
                                        headers=SPOOFED)
    expect.forwarded(resp, agent="honest-agent", tier="verified", action="read:orders")


def test_spoofed_identity_headers_do_not_grant_access(seed, tokens):
    """An untrusted agent claiming to be a verified admin through headers is still untrusted."""
    resp = seed.clients["enforce"].call(tokens.token("sneaky-agent", "untrusted"), action="read:orders",
                                        headers=SPOOFED)
    expect.denied(resp, policy=None, rule=None, agent="sneaky-agent")
