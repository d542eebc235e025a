"""Assertions on MeshGuard's answers, written once from the response contract (README, "Responses")
so every test checks a 401, a 403 or a forwarded request the same complete way."""

from __future__ import annotations

import re

from .client import Response

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _trace_id_ok(value: str) -> bool:
    return value == "" or bool(HEX32.match(value))


def identity_failure(resp: Response, code: str) -> dict:
    """A 401 with ``WWW-Authenticate: Bearer ... error="invalid_token"`` and the JSON body
    naming `code`. Returns the body."""
    assert resp.status == 401, f"expected 401 {code}, got {resp}"
    challenge = resp.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer "), challenge
    assert 'error="invalid_token"' in challenge, challenge
    assert resp.headers.get("content-type", "").startswith("application/json")
    body = resp.json()
    assert body["decision"] == "deny", body
    assert body["error"] == "invalid_token", body
    assert body["errorCode"] == code, body
    assert body["mode"] == "enforce", body
    assert isinstance(body["reason"], str) and body["reason"], body
    assert _trace_id_ok(body["traceId"]), body
    return body


def denied(resp: Response, *, policy: str | None, rule: str | None, decision: str = "deny",
           reason: str | None = None, reason_contains: str | None = None,
           agent: str | None = None, action: str | None = None) -> dict:
    """A 403 policy denial with these fields. Returns the body."""
    assert resp.status == 403, f"expected 403 ({decision} by {policy}/{rule}), got {resp}"
    body = resp.json()
    assert body["decision"] == decision, body
    assert body["policy"] == policy, body
    assert body["rule"] == rule, body
    assert body["mode"] == "enforce", body
    assert isinstance(body["bundleVersion"], str) and body["bundleVersion"], body
    assert _trace_id_ok(body["traceId"]), body
    if reason is not None:
        assert body["reason"] == reason, body
    if reason_contains is not None:
        assert reason_contains in body["reason"], body
    if agent is not None:
        assert body["agent"] == agent, body
    if action is not None:
        assert body["action"] == action, body
    return body


def forwarded(resp: Response, *, agent: str | None, tier: str, action: str | None,
              decision: str = "allow") -> dict:
    """Forwarded to the upstream with MeshGuard's headers (and no others of its prefix).
    `agent=None` means no x-meshguard-agent header (unidentified, audit mode).
    Returns the headers the upstream saw."""
    assert resp.status == 200, f"expected the request to be forwarded, got {resp}"
    seen = resp.upstream_headers
    expected = {"x-meshguard-trust-tier": tier, "x-meshguard-decision": decision}
    if agent is not None:
        expected["x-meshguard-agent"] = agent
    if action is not None:
        expected["x-meshguard-action"] = action
    ours = {k: v for k, v in seen.items() if k.startswith("x-meshguard-")}
    assert ours == expected, f"upstream saw MeshGuard headers {ours}, expected {expected}"
    return seen


def refusal_body(resp: Response, *, status: int, decision: str, mode: str = "enforce") -> dict:
    """A refusal answered by MeshGuard with the policy-denial body shape (403 deny or
    require_approval, 429 rate_limited): every documented field present, whatever the
    policy and rule are. Returns the body."""
    assert resp.status == status, f"expected {status} {decision}, got {resp}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert body["decision"] == decision, body
    for key in ("policy", "rule", "reason", "bundleVersion", "traceId"):
        assert key in body, f"{key} missing from {body}"
    assert body["mode"] == mode, body
    assert isinstance(body["reason"], str) and body["reason"], body
    assert isinstance(body["bundleVersion"], str) and body["bundleVersion"], body
    assert _trace_id_ok(body["traceId"]), body
    return body


def rate_limited(resp: Response, *, limit: str) -> tuple[dict, int]:
    """A 429 for the rate limit named `limit` (reported as the rule), with an integer
    ``Retry-After`` of at least one second. Returns the body and Retry-After."""
    body = refusal_body(resp, status=429, decision="rate_limited")
    assert body["rule"] == limit, body
    retry_after = resp.headers.get("retry-after", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, f"Retry-After {retry_after!r} in {resp.headers}"
    return body, int(retry_after)
