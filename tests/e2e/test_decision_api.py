"""The Guardian-compatible decision API (README "Decision API"): on
``decision_api.paths`` the filter answers itself, with the shapes of the Guardian
sidecar's API reference (``POST /enforce``, ``POST /enforce/batch``, ``GET /health``),
for the bearer token's agent; an ``agentId`` naming another agent is refused (403); every
decision is audited like a proxied one. Policy: ``customer-service-agent`` in
tests/harness/mcp_policies.py, which mirrors the sidecar documentation's examples."""

from __future__ import annotations

import json

import pytest

from harness import expect
from harness.client import http_request
from harness.mcp_policies import TIER


AGENT = "agent_abc123"

ENFORCE_FIELDS = {"decision", "policy", "rule", "latencyMs", "bundleVersion", "mode"}
BATCH_FIELDS = {"results", "allAllowed", "bundleVersion", "mode"}
HEALTH_FIELDS = {"status", "mode", "bundleVersion", "bundleAge", "lastSync", "lastSyncSuccess",
                 "gatewayReachable", "cachedPolicies", "cachedAgents", "uptimeSeconds"}


def _post(mcp_stack, path: str, body: dict, token: str | None):
    headers = {"content-type": "application/json", "x-request-id": f"decision-{path}-{json.dumps(body)[:40]}"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return http_request(mcp_stack.port("json"), "POST", path, headers, json.dumps(body).encode())


def _upstream_untouched(mcp_stack, before: int) -> None:
    assert len(mcp_stack.servers["json"].http_requests()) == before, "the decision API must not reach the upstream"


@pytest.fixture(scope="module")
def token(tokens) -> str:
    return tokens.token(AGENT, TIER)


def _latency(value) -> None:
    assert isinstance(value, (int, float)) and 0 <= value < 1000, value


def test_enforce_allow(mcp_stack, token):
    before = len(mcp_stack.servers["json"].http_requests())
    resp = _post(mcp_stack, "/enforce", {"agentId": AGENT, "action": "write:email", "resource": "customer-data",
                                         "context": {"recipient": "user@example.com", "recipient_domain": "example.com",
                                                     "amount": 45.00}}, token)
    assert resp.status == 200, resp
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert ENFORCE_FIELDS <= set(body), body
    assert (body["decision"], body["policy"], body["rule"], body["mode"]) == (
        "allow", "customer-service-agent", "allow-email", "enforce"), body
    _latency(body["latencyMs"])
    assert isinstance(body["bundleVersion"], str) and body["bundleVersion"]
    _upstream_untouched(mcp_stack, before)


def test_enforce_deny_carries_the_reason(mcp_stack, token, collector):
    resp = _post(mcp_stack, "/enforce", {"agentId": AGENT, "action": "write:email", "resource": "customer-data",
                                         "context": {"recipient": "x@evil.example", "recipient_domain": "evil.example"}},
                 token)
    # The question was answered: the answer is a deny, not an HTTP refusal.
    assert resp.status == 200, resp
    body = resp.json()
    assert ENFORCE_FIELDS | {"reason"} <= set(body), body
    assert (body["decision"], body["policy"], body["rule"], body["reason"]) == (
        "deny", "customer-service-agent", "deny-external-email", "Email to external domains is not permitted"), body
    _latency(body["latencyMs"])
    # Audited like a proxied decision.
    events = collector.wait_for(lambda e: e["attributes"].get("meshguard.agent.id") == AGENT
                                and e["attributes"].get("meshguard.rule") == "deny-external-email")
    a = events[-1]["attributes"]
    assert (a["meshguard.decision"], a["meshguard.action"], a["meshguard.resource"]) == (
        "deny", "write:email", "customer-data"), a


def test_enforce_without_agent_id_uses_the_token(mcp_stack, token):
    resp = _post(mcp_stack, "/enforce", {"action": "read:customer", "resource": "customer-db"}, token)
    assert resp.status == 200, resp
    assert resp.json()["decision"] == "allow" and resp.json()["rule"] == "read-customer"


def test_enforce_batch(mcp_stack, token):
    before = len(mcp_stack.servers["json"].http_requests())
    resp = _post(mcp_stack, "/enforce/batch", {"agentId": AGENT, "actions": [
        {"action": "read:customer", "resource": "customer-db"},
        {"action": "write:refund", "resource": "payments", "context": {"amount": 25.00}},
        {"action": "write:refund", "resource": "payments", "context": {"amount": 2500.00}},
    ]}, token)
    assert resp.status == 200, resp
    body = resp.json()
    assert BATCH_FIELDS <= set(body), body
    assert [(r["action"], r["decision"]) for r in body["results"]] == [
        ("read:customer", "allow"), ("write:refund", "allow"), ("write:refund", "deny")], body
    for r in body["results"]:
        assert {"action", "decision", "latencyMs"} <= set(r), r
        _latency(r["latencyMs"])
    assert isinstance(body["results"][2]["reason"], str) and body["results"][2]["reason"]
    assert body["allAllowed"] is False and body["mode"] == "enforce"
    assert isinstance(body["bundleVersion"], str) and body["bundleVersion"]
    _upstream_untouched(mcp_stack, before)

    every = _post(mcp_stack, "/enforce/batch", {"agentId": AGENT, "actions": [
        {"action": "read:customer", "resource": "customer-db"}]}, token).json()
    assert every["allAllowed"] is True and every["results"][0]["decision"] == "allow", every


@pytest.mark.parametrize("path,body", [
    ("/enforce", {"agentId": "someone-else", "action": "read:customer", "resource": "customer-db"}),
    ("/enforce/batch", {"agentId": "someone-else", "actions": [{"action": "read:customer"}]}),
])
def test_agent_id_mismatch_is_403(mcp_stack, token, path, body):
    resp = _post(mcp_stack, path, body, token)
    assert resp.status == 403, resp
    refused = resp.json()
    assert refused["decision"] == "deny" and "agentId" in refused["reason"], refused


def test_enforce_requires_a_token(mcp_stack):
    resp = _post(mcp_stack, "/enforce", {"agentId": AGENT, "action": "read:customer"}, None)
    expect.identity_failure(resp, "missing_token")


def test_health(mcp_stack, token):
    resp = http_request(mcp_stack.port("json"), "GET", "/health", {"authorization": f"Bearer {token}"})
    assert resp.status == 200, resp
    body = resp.json()
    assert HEALTH_FIELDS <= set(body), f"missing {HEALTH_FIELDS - set(body)}"
    assert body["status"] == "healthy" and body["mode"] == "enforce"
    assert isinstance(body["bundleVersion"], str) and body["bundleVersion"]
    assert isinstance(body["bundleAge"], str)
    assert isinstance(body["lastSyncSuccess"], bool) and isinstance(body["gatewayReachable"], bool)
    assert body["cachedPolicies"] == 3  # mcp-agents, a2a-agents, customer-service-agent
    assert isinstance(body["cachedAgents"], int) and body["cachedAgents"] >= 0
    assert isinstance(body["uptimeSeconds"], (int, float)) and body["uptimeSeconds"] >= 0
