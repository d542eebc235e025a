"""Audit mode: nothing is blocked, would-be denials are labelled for the upstream and
recorded as ``would_deny`` with ``enforced: false``."""

from __future__ import annotations

from harness import expect, keys


def test_would_be_denial_is_forwarded_and_recorded(seed, tokens, collector, upstream):
    resp = seed.clients["audit"].call(tokens.token("auditor-agent", "verified"), action="delete:orders",
                                      resource="orders")
    expect.forwarded(resp, agent="auditor-agent", tier="verified", action="delete:orders", decision="would_deny")
    assert upstream.received(resp.request_id)
    a = collector.by_request_id(resp.request_id)["attributes"]
    assert a["meshguard.decision"] == "would_deny"
    assert a["meshguard.enforced"] is False
    assert a["meshguard.effect"] == "deny"
    assert a["meshguard.mode"] == "audit"
    assert (a["meshguard.policy"], a["meshguard.rule"]) == ("verified-agent-policy", "rules[2]")
    assert a["meshguard.reason"] == "Verified agents cannot delete resources"
    assert a["http.response.status_code"] == 0


def test_allowed_request_is_plainly_allowed(seed, tokens, collector):
    resp = seed.clients["audit"].call(tokens.token("auditor-agent", "verified"), action="read:orders")
    expect.forwarded(resp, agent="auditor-agent", tier="verified", action="read:orders")
    a = collector.by_request_id(resp.request_id)["attributes"]
    assert (a["meshguard.decision"], a["meshguard.enforced"], a["meshguard.mode"]) == ("allow", True, "audit")


def test_identity_failure_is_forwarded_without_an_agent(seed, tokens, collector):
    """A bad token in audit mode: forwarded as an unidentified, untrusted caller; a
    spoofed agent header must not survive."""
    expired = tokens.token("late-agent", "verified", exp=tokens.claims()["iat"] - 3600)
    resp = seed.clients["audit"].call(expired, action="read:orders", headers={"x-meshguard-agent": "admin"})
    expect.forwarded(resp, agent=None, tier="untrusted", action=None, decision="would_deny")
    a = collector.by_request_id(resp.request_id)["attributes"]
    assert a["meshguard.decision"] == "would_deny"
    assert a["meshguard.enforced"] is False
    assert a["meshguard.identity.error"] == "expired"
    assert a["meshguard.agent.id"] == ""


def test_missing_token_is_forwarded_in_audit_mode(seed, collector):
    resp = seed.clients["audit"].call(None, action="read:orders")
    expect.forwarded(resp, agent=None, tier="untrusted", action=None, decision="would_deny")
    assert collector.by_request_id(resp.request_id)["attributes"]["meshguard.identity.error"] == "missing_token"


def test_no_tier_agent_would_be_denied(seed, tokens, collector):
    resp = seed.clients["audit"].call(tokens.token("tierless", keys.OMIT), action="read:orders")
    expect.forwarded(resp, agent="tierless", tier="untrusted", action="read:orders", decision="would_deny")
    a = collector.by_request_id(resp.request_id)["attributes"]
    assert (a["meshguard.decision"], a["meshguard.policy"], a["meshguard.trust_tier"]) == (
        "would_deny", "", "untrusted")
