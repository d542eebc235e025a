"""Temporal grants written in the configuration (issue 10): ``grants.inline`` entries
``{id, agent, action, resource, expires_at, reason, approved_by}`` turn a
require_approval decision or a default deny into allow until ``expires_at``, and not
after; an explicit deny rule still wins; the audit event names the grant
(``meshguard.grant``).
"""

from __future__ import annotations

import datetime as _dt
import math
import time
import uuid

import pytest

from harness import expect, policies
from harness.poll import wait_until

# Written against the README/issue-10 contract ahead of the filter's support.

POLICY = "payments"
RULES = [
    {"name": "payments-need-approval", "action": "pay:*", "effect": "require_approval",
     "reason": "Payments need a human in the loop"},
    {"name": "no-wire-transfers", "action": "pay:wire", "effect": "deny", "reason": "Agents never wire money"},
    {"name": "reads", "action": "read:*", "effect": "allow"},
]
# The short grant must still be valid when its Envoy is up (V8 compiles the module for a
# few seconds on a busy machine) and expire soon after: it expires this long after the
# configuration is written.
SHORT_GRANT_S = 15
# Grant expiry is compared with the filter's clock at one-second resolution.
CLOCK_TOLERANCE_S = 1.0


def rfc3339(ts: float) -> str:
    return _dt.datetime.fromtimestamp(math.ceil(ts), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def grant(gid: str, agent: str, action: str, expires_at: str, resource: str | None = None) -> dict:
    g = {"id": gid, "agent": agent, "action": action, "expires_at": expires_at,
         "reason": f"ticket for {gid}", "approved_by": "alice"}
    if resource is not None:
        g["resource"] = resource
    return g


@pytest.fixture(scope="module")
def granted(request, launch, keyring):
    later = rfc3339(time.time() + 3600)
    inline = [
        grant("g-all-payments", "grant-bot", "pay:*", later),            # also covers the denied pay:wire
        grant("g-default-deny", "grant-bot", "refund:orders", later),    # no rule: default deny
        grant("g-glob-agent", "batch-*", "pay:payroll", later),
        grant("g-expired", "late-bot", "pay:invoice", "2020-01-01T00:00:00Z"),
    ]
    cfg = policies.controls_config(keyring.jwks, RULES, policy_name=POLICY, grants={"inline": inline})
    return launch(request, "grants", {"agents": policies.as_yaml(cfg)}, concurrency=2)


def test_grant_turns_default_deny_into_allow_and_is_audited(granted, tokens, collector):
    dep = granted
    resp = dep.client.call(tokens.token("grant-bot", "verified"), action="refund:orders", resource="orders/7")
    expect.forwarded(resp, agent="grant-bot", tier="verified", action="refund:orders")
    attrs = collector.by_request_id(resp.request_id)["attributes"]
    assert attrs["meshguard.decision"] == "allow"
    assert attrs["meshguard.grant"] == "g-default-deny"
    # without the grant (another agent) the same call is a default deny
    expect.denied(dep.client.call(tokens.token("other-bot", "verified"), action="refund:orders",
                                  resource="orders/7"), policy=None, rule=None)


def test_grant_turns_require_approval_into_allow(granted, tokens, collector):
    dep = granted
    resp = dep.client.call(tokens.token("grant-bot", "verified"), action="pay:supplier", resource="acme")
    expect.forwarded(resp, agent="grant-bot", tier="verified", action="pay:supplier")
    assert collector.by_request_id(resp.request_id)["attributes"]["meshguard.grant"] == "g-all-payments"


def test_agent_glob_and_scope_of_a_grant(granted, tokens):
    dep = granted
    expect.forwarded(dep.client.call(tokens.token("batch-7", "verified"), action="pay:payroll"),
                     agent="batch-7", tier="verified", action="pay:payroll")
    for agent, action in (("batch-7", "pay:invoice"), ("other-bot", "pay:payroll")):
        expect.denied(dep.client.call(tokens.token(agent, "verified"), action=action), policy=POLICY,
                      rule="payments-need-approval", decision="require_approval")


def test_explicit_deny_beats_a_grant(granted, tokens, upstream, collector):
    dep = granted
    resp = dep.client.call(tokens.token("grant-bot", "verified"), action="pay:wire", resource="bank")
    expect.denied(resp, policy=POLICY, rule="no-wire-transfers", reason="Agents never wire money")
    assert not upstream.received(resp.request_id)
    attrs = collector.by_request_id(resp.request_id)["attributes"]
    assert attrs["meshguard.decision"] == "deny"
    assert not attrs.get("meshguard.grant"), attrs


def test_expired_grant_does_not_apply(granted, tokens):
    dep = granted
    expect.denied(dep.client.call(tokens.token("late-bot", "verified"), action="pay:invoice"), policy=POLICY,
                  rule="payments-need-approval", decision="require_approval")


def test_short_grant_expires(request, launch, keyring, tokens, collector):
    """A grant of its own Envoy, valid for a few seconds after start-up: allowed before
    ``expires_at``, require_approval after (polled, with the clock tolerance)."""
    agent = f"brief-{uuid.uuid4().hex[:8]}"
    expiry = math.ceil(time.time() + SHORT_GRANT_S)
    cfg = policies.controls_config(keyring.jwks, RULES, policy_name=POLICY, grants={"inline": [
        grant("g-brief", agent, "pay:invoice", rfc3339(expiry), resource="invoices/*")]})
    dep = launch(request, "grants-expiry", {"agents": policies.as_json(cfg)}, concurrency=2)
    token = tokens.token(agent, "verified")
    remaining = expiry - time.time()
    assert remaining > 2 * CLOCK_TOLERANCE_S, f"Envoy took too long to start: the grant has {remaining:.1f}s left"

    resp = dep.client.call(token, action="pay:invoice", resource="invoices/1")
    expect.forwarded(resp, agent=agent, tier="verified", action="pay:invoice")
    assert collector.by_request_id(resp.request_id)["attributes"]["meshguard.grant"] == "g-brief"
    # outside the grant's resource glob: not granted
    expect.denied(dep.client.call(token, action="pay:invoice", resource="receipts/1"), policy=POLICY,
                  rule="payments-need-approval", decision="require_approval")

    last_allowed = time.time()

    def refused():
        nonlocal last_allowed
        r = dep.client.call(token, action="pay:invoice", resource="invoices/1")
        if r.status == 200:
            last_allowed = time.time()
            return None
        return r

    resp = wait_until(refused, remaining + 3 * CLOCK_TOLERANCE_S, "the grant to expire", interval=0.2)
    first_refused = time.time()
    expect.denied(resp, policy=POLICY, rule="payments-need-approval", decision="require_approval")
    assert last_allowed < expiry + CLOCK_TOLERANCE_S, "allowed after expires_at"
    assert first_refused > expiry - CLOCK_TOLERANCE_S, "refused before expires_at"
