"""Delegation (RFC 8693 ``act``) through the real Envoy with the rich policy set: the
caller is the outermost actor, the effective tier is the lowest along the chain, every
delegator must itself be allowed the action, cycles and over-deep chains are refused."""

from __future__ import annotations

from harness import expect
from harness.keys import OMIT, delegation
from harness.policies import RICH_MAX_DELEGATION_DEPTH


def test_chain_within_limits_is_allowed(rich, tokens, collector):
    token = tokens.token("planner-1", "trusted", act=delegation(("worker-1", "trusted")))
    resp = rich.client.call(token, action="read:orders")
    expect.forwarded(resp, agent="worker-1", tier="trusted", action="read:orders")
    a = collector.by_request_id(resp.request_id)["attributes"]
    assert a["meshguard.delegation.chain"] == ["planner-1", "worker-1"]
    assert a["meshguard.delegation.depth"] == 1
    assert (a["meshguard.policy"], a["meshguard.rule"]) == ("trusted-agent-policy", "trusted-read")


def test_two_hop_chain_orders_actors_outermost_last(rich, tokens, collector):
    token = tokens.token("origin", "trusted", act=delegation(("middle", "trusted"), ("caller", "trusted")))
    resp = rich.client.call(token, action="read:orders")
    expect.forwarded(resp, agent="caller", tier="trusted", action="read:orders")
    a = collector.by_request_id(resp.request_id)["attributes"]
    assert a["meshguard.delegation.chain"] == ["origin", "middle", "caller"]
    assert a["meshguard.delegation.depth"] == 2


def test_effective_tier_is_the_lowest_along_the_chain(rich, tokens):
    token = tokens.token("boss", "privileged", act=delegation(("helper", "verified")))
    resp = rich.client.call(token, action="read:orders")
    expect.forwarded(resp, agent="helper", tier="verified", action="read:orders")


def test_actor_without_tier_makes_the_chain_untrusted(rich, tokens):
    token = tokens.token("boss", "privileged", act=delegation(("anonymous-helper", OMIT)))
    resp = rich.client.call(token, action="read:orders")
    expect.denied(resp, policy=None, rule=None, agent="anonymous-helper")


def test_permission_ceiling_delegator_not_allowed(rich, tokens, upstream):
    """reporter-1 may export reports (policy ``reporting``), but it acts for intern-7,
    who may not: a delegate never gets more than its delegator."""
    alone = rich.client.call(tokens.token("reporter-1", "trusted"), action="export:report")
    expect.forwarded(alone, agent="reporter-1", tier="trusted", action="export:report")
    token = tokens.token("intern-7", "trusted", act=delegation(("reporter-1", "trusted")))
    resp = rich.client.call(token, action="export:report")
    expect.denied(resp, policy=None, rule=None, agent="reporter-1", reason_contains="intern-7")
    assert not upstream.received(resp.request_id)


def test_delegators_allowed_so_delegate_allowed(rich, tokens):
    token = tokens.token("reporter-2", "verified", act=delegation(("reporter-3", "verified")))
    expect.forwarded(rich.client.call(token, action="export:report"), agent="reporter-3", tier="verified",
                     action="export:report")


def test_cycle_is_denied(rich, tokens):
    token = tokens.token("loop-a", "trusted", act=delegation(("loop-b", "trusted"), ("loop-a", "trusted")))
    expect.denied(rich.client.call(token, action="read:orders"), policy=None, rule=None,
                  reason_contains="delegation cycle")


def test_depth_beyond_the_mesh_limit_is_denied(rich, tokens):
    actors = [(f"hop-{i}", "trusted") for i in range(RICH_MAX_DELEGATION_DEPTH + 1)]
    token = tokens.token("root-agent", "trusted", act=delegation(*actors))
    expect.denied(rich.client.call(token, action="read:orders"), policy=None, rule=None,
                  reason_contains="delegation depth")


def test_depth_at_the_mesh_limit_is_allowed(rich, tokens):
    actors = [(f"hop-{i}", "trusted") for i in range(RICH_MAX_DELEGATION_DEPTH)]
    token = tokens.token("root-agent", "trusted", act=delegation(*actors))
    expect.forwarded(rich.client.call(token, action="read:orders"), agent=f"hop-{RICH_MAX_DELEGATION_DEPTH - 1}",
                     tier="trusted", action="read:orders")


def test_policy_condition_on_delegation_depth(rich, tokens):
    """guardrails/delegated-limit denies writes delegated more than once."""
    once = tokens.token("writer-a", "trusted", act=delegation(("writer-b", "trusted")))
    expect.forwarded(rich.client.call(once, action="write:orders", resource="orders/1"), agent="writer-b",
                     tier="trusted", action="write:orders")
    twice = tokens.token("writer-a", "trusted", act=delegation(("writer-b", "trusted"), ("writer-c", "trusted")))
    expect.denied(rich.client.call(twice, action="write:orders", resource="orders/1"), policy="guardrails",
                  rule="delegated-limit", reason="Writes may not be delegated more than once")
