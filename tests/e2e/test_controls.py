"""Agent controls through the real Envoy (one worker): revocation, rate limits (429 +
Retry-After), loop detection, temporal grants and approval ids, with their audit events.

Counters are per worker until the host passes Envoy's shared data to the engine
(`Engine::handle_with`); these runs use one worker, so the limits are exact either way."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from harness import policies
from harness.keys import delegation

LIMIT = 3


def _in(seconds: int) -> str:
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def controls(request, launch, keyring):
    cfg = policies.rich_config(keyring.jwks)
    cfg["policies"] = [{
        "name": "controls",
        "rules": [
            {"name": "reads", "action": "read:*", "effect": "allow"},
            {"name": "searches", "action": "tool:search", "effect": "allow"},
            {"name": "refunds", "action": "write:refund", "effect": "require_approval"},
            {"name": "no-deletes", "action": "delete:*", "effect": "deny", "reason": "never"},
        ],
    }]
    cfg["revoked"] = {"jti": ["tok-revoked"], "agents": ["agent-revoked"]}
    cfg["rate_limits"] = [{"name": "limited-reads", "agents": "limited-*", "action": "read:*",
                           "limit": f"{LIMIT}/m"}]
    cfg["loop"] = {"max_repeats": 3, "window_seconds": 60}
    cfg["grants"] = {"inline": [
        {"id": "g-refund", "agent": "granted-agent", "action": "write:refund", "expires_at": _in(3600),
         "approved_by": "alice", "reason": "INC-7"},
        {"id": "g-delete", "agent": "granted-agent", "action": "delete:*", "expires_at": _in(3600)},
        {"id": "g-expired", "agent": "late-agent", "action": "write:refund", "expires_at": _in(-1)},
    ]}
    return launch(request, "controls", {"enforce": policies.as_json(cfg)})


def test_revoked_token_is_401_even_after_it_was_cached(controls, tokens, collector):
    ok = tokens.token("agent-fine", jti="tok-fine")
    assert controls.client.call(ok, action="read:x").status == 200
    assert controls.client.call(ok, action="read:x").status == 200
    revoked = tokens.token("agent-fine", jti="tok-revoked")
    resp = controls.client.call(revoked, action="read:x")
    assert resp.status == 401
    assert resp.json()["errorCode"] == "revoked"
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]
    a = collector.by_request_id(resp.request_id)["attributes"]
    assert a["meshguard.identity.error"] == "revoked"


def test_revoked_agent_anywhere_in_the_chain(controls, tokens):
    token = tokens.token("origin", act=delegation(("agent-revoked", "verified"), ("caller", "verified")))
    resp = controls.client.call(token, action="read:x")
    assert resp.status == 401, resp
    assert "agent-revoked" in resp.json()["reason"]


def test_rate_limit_answers_429_with_retry_after_and_is_audited(controls, tokens, collector, upstream):
    token = tokens.token("limited-1")
    # distinct paths, so that loop detection (max_repeats 3) does not answer first
    codes = [controls.client.call(token, action="read:orders", path=f"/o/{i}").status for i in range(LIMIT)]
    assert codes == [200] * LIMIT
    resp = controls.client.call(token, action="read:orders", path="/o/last")
    assert resp.status == 429, resp
    assert 1 <= int(resp.headers["retry-after"]) <= 60 // LIMIT
    body = resp.json()
    assert (body["decision"], body["rule"], body["mode"]) == ("rate_limited", "limited-reads", "enforce")
    assert not upstream.received(resp.request_id)
    a = collector.by_request_id(resp.request_id)["attributes"]
    assert (a["meshguard.decision"], a["http.response.status_code"]) == ("rate_limited", 429)
    # another agent has its own budget; agents outside the glob are not limited
    assert controls.client.call(tokens.token("limited-2"), action="read:orders").status == 200
    free = tokens.token("unlimited")
    assert all(controls.client.call(free, action="read:orders", path=f"/r/{i}").status == 200
               for i in range(LIMIT + 2))


def test_loop_detection_denies_the_fourth_identical_call(controls, tokens, collector):
    token = tokens.token("looper")
    codes = [controls.client.call(token, action="tool:search", path="/search?q=same").status for _ in range(4)]
    assert codes == [200, 200, 200, 403]
    resp = controls.client.call(token, action="tool:search", path="/search?q=same")
    assert resp.json()["reason"].startswith("loop detected"), resp.json()
    assert collector.by_request_id(resp.request_id)["attributes"]["meshguard.rule"] == "loop"
    # other arguments are another call
    assert controls.client.call(token, action="tool:search", path="/search?q=other").status == 200


def test_require_approval_carries_a_stable_approval_id(controls, tokens, collector):
    token = tokens.token("needs-approval")
    first = controls.client.call(token, action="write:refund", resource="order-7")
    second = controls.client.call(token, action="write:refund", resource="order-7")
    expected = "apr_" + hashlib.sha256(b"needs-approval\nwrite:refund\norder-7").hexdigest()[:32]
    assert first.status == 403
    assert first.json()["decision"] == "require_approval"
    assert first.json()["approvalId"] == second.json()["approvalId"] == expected
    assert collector.by_request_id(first.request_id)["attributes"]["meshguard.approval_id"] == expected


def test_grants_allow_until_expiry_and_deny_rules_still_win(controls, tokens, collector):
    token = tokens.token("granted-agent")
    resp = controls.client.call(token, action="write:refund")
    assert resp.status == 200, resp
    a = collector.by_request_id(resp.request_id)["attributes"]
    assert (a["meshguard.decision"], a["meshguard.grant"]) == ("allow", "g-refund")
    assert "approved by alice" in a["meshguard.reason"]
    assert controls.client.call(token, action="delete:orders").status == 403
    late = controls.client.call(tokens.token("late-agent"), action="write:refund")
    assert (late.status, late.json()["decision"]) == (403, "require_approval")
