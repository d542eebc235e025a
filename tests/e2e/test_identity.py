"""Agent identity through the real Envoy: every way a token can be wrong is a 401 with
the right ``errorCode`` (and an audit event saying so), every supported key type
verifies, and hostile header values never take Envoy down.

Tokens are minted with PyJWT; the attacks PyJWT refuses to produce are hand-built in
`harness.keys`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from harness import expect, keys
from harness.client import traceparent

Make = Callable[[keys.TokenFactory, Any], Any]


def _now() -> int:
    return int(time.time())


def bearer(token: str) -> str:
    return f"Bearer {token}"


# (id, build the authorization header value from (tokens, keyring), expected errorCode)
REJECTED: list[tuple[str, Make, str]] = [
    ("missing-token", lambda t, k: None, "missing_token"),
    ("basic-scheme", lambda t, k: "Basic YWdlbnQ6c2VjcmV0", "not_bearer"),
    ("garbage", lambda t, k: bearer("garbage"), "malformed"),
    ("garbage-three-parts", lambda t, k: bearer("not.a.jwt"), "malformed"),
    ("alg-none", lambda t, k: bearer(keys.unsigned_token(t.claims("root", "privileged"))), "alg_none"),
    ("alg-none-with-kid", lambda t, k: bearer(keys.unsigned_token(
        t.claims("root", "privileged"), {"alg": "none", "kid": k.es256.kid})), "alg_none"),
    ("hs256-keyed-with-ec-public-key", lambda t, k: bearer(keys.hs256_token(
        t.claims("root", "privileged"), k.es256.public_pem(), k.es256.kid)), "alg_not_allowed"),
    ("hs256-keyed-with-rsa-public-key", lambda t, k: bearer(keys.hs256_token(
        t.claims("root", "privileged"), k.rs256.public_pem(), k.rs256.kid)), "alg_not_allowed"),
    ("tampered-tier", lambda t, k: bearer(keys.tamper(t.token("agent-x", "untrusted"),
                                                       trust_tier="privileged")), "bad_signature"),
    ("tampered-subject", lambda t, k: bearer(keys.tamper(t.token("agent-x", "verified"), sub="admin")),
     "bad_signature"),
    ("expired-beyond-skew", lambda t, k: bearer(t.token(exp=_now() - 120, iat=_now() - 700)), "expired"),
    ("not-before-in-future", lambda t, k: bearer(t.token(nbf=_now() + 300)), "not_yet_valid"),
    ("issued-in-future", lambda t, k: bearer(t.token(iat=_now() + 300, exp=_now() + 900)), "issued_in_future"),
    ("missing-exp", lambda t, k: bearer(t.token(exp=keys.OMIT)), "missing_exp"),
    ("wrong-issuer", lambda t, k: bearer(t.token(iss="https://evil.example")), "unknown_issuer"),
    ("missing-issuer", lambda t, k: bearer(t.token(iss=keys.OMIT)), "missing_issuer"),
    ("wrong-audience", lambda t, k: bearer(t.token(aud="billing-service")), "wrong_audience"),
    ("unknown-kid", lambda t, k: bearer(t.token(kid="no-such-kid")), "unknown_kid"),
    ("no-kid-with-several-keys", lambda t, k: bearer(t.token(kid=keys.OMIT)), "missing_kid"),
    ("right-kid-wrong-key", lambda t, k: bearer(t.token(key=k.stranger_ec, kid=k.es256.kid)), "bad_signature"),
    ("rs256-header-on-ec-key", lambda t, k: bearer(t.token(key=k.stranger_rsa, alg="RS256", kid=k.es256.kid)),
     "alg_not_allowed"),
    ("rs256-header-on-ps256-key", lambda t, k: bearer(t.token(key=k.ps256, alg="RS256")), "alg_not_allowed"),
    ("ec-signature-under-eddsa-kid", lambda t, k: bearer(t.token(kid=k.eddsa.kid)), "alg_not_allowed"),
    ("16KiB-token", lambda t, k: bearer(t.sign_claims(keys.padded_claims(t.claims(), 16 * 1024))),
     "token_too_large"),
    ("missing-subject", lambda t, k: bearer(t.token(sub=keys.OMIT)), "missing_claim"),
    ("tier-not-a-string", lambda t, k: bearer(t.token(tier=3)), "claim_type"),
    ("unknown-tier", lambda t, k: bearer(t.token(tier="root")), "unknown_tier"),
    ("act-not-an-object", lambda t, k: bearer(t.token(act="agent-b")), "bad_delegation"),
    ("act-without-sub", lambda t, k: bearer(t.token(act={"trust_tier": "verified"})), "bad_delegation"),
]


@pytest.mark.parametrize("make,code", [(m, c) for _, m, c in REJECTED], ids=[i for i, _, _ in REJECTED])
def test_bad_token_is_401_with_error_code(seed, tokens, keyring, collector, upstream, make, code):
    resp = seed.clients["enforce"].call(authorization=make(tokens, keyring), action="read:orders")
    expect.identity_failure(resp, code)
    assert not upstream.received(resp.request_id)
    a = collector.by_request_id(resp.request_id)["attributes"]
    assert a["meshguard.identity.error"] == code
    assert a["meshguard.decision"] == "deny"
    assert a["http.response.status_code"] == 401
    assert a["meshguard.agent.id"] == ""


def test_non_string_subject_is_rejected(seed, tokens):
    """``sub`` is a registered claim: the JWT library may reject a number there before
    MeshGuard's claim mapping sees it, so either code is a correct 401."""
    resp = seed.clients["enforce"].call(tokens.token(sub=12345), action="read:orders")
    assert resp.status == 401, resp
    expect.identity_failure(resp, resp.json()["errorCode"])
    assert resp.json()["errorCode"] in ("claim_type", "malformed"), resp


def test_16KiB_token_fits_envoy_but_not_the_filter(tokens):
    """Guards the test above: the big token really is ~16 KiB (over the 8 KiB default)."""
    token = tokens.sign_claims(keys.padded_claims(tokens.claims(), 16 * 1024))
    assert 15 * 1024 < len(token) < 20 * 1024


@pytest.mark.parametrize("offsets", [
    pytest.param({"exp": -30, "iat": -630}, id="expired-within-skew"),
    pytest.param({"nbf": 30}, id="not-before-within-skew"),
    pytest.param({"iat": 30}, id="issued-slightly-in-future"),
])
def test_clock_skew_is_tolerated(seed, tokens, offsets):
    """Times off by 30 s (within the 60 s skew) are accepted. `offsets` are seconds from now."""
    now = _now()
    claims = {name: now + offset for name, offset in offsets.items()}
    resp = seed.clients["enforce"].call(tokens.token("skewed-agent", "verified", **claims), action="read:orders")
    expect.forwarded(resp, agent="skewed-agent", tier="verified", action="read:orders")


@pytest.mark.parametrize("key_name", ["es256", "eddsa", "rs256", "ps256"])
def test_every_key_type_of_the_issuer_verifies(seed, tokens, keyring, key_name):
    """One issuer, one JWKS with EC P-256, Ed25519, RSA (no alg: RS256) and RSA PS256 keys."""
    key = getattr(keyring, key_name)
    resp = seed.clients["enforce"].call(tokens.token(f"{key_name}-agent", "verified", key=key),
                                        action="read:orders")
    expect.forwarded(resp, agent=f"{key_name}-agent", tier="verified", action="read:orders")


def test_bearer_scheme_is_case_insensitive(seed, tokens):
    resp = seed.clients["enforce"].call(authorization=f"bearer {tokens.token('lower-agent')}",
                                        action="read:orders")
    expect.forwarded(resp, agent="lower-agent", tier="verified", action="read:orders")


class TestHostileHeaders:
    """Odd bytes and sizes in headers are answered (by the filter or by Envoy's codec)
    and never crash Envoy: a normal request still works afterwards."""

    @staticmethod
    def _still_serving(seed, tokens) -> None:
        assert seed.envoy.alive(), seed.envoy.log_tail()
        resp = seed.clients["enforce"].call(tokens.token("canary", "verified"), action="read:orders")
        expect.forwarded(resp, agent="canary", tier="verified", action="read:orders")

    def test_non_ascii_header_values_are_fine(self, seed, tokens, collector):
        resp = seed.clients["enforce"].call(
            tokens.token("unicode-agent", "verified"),
            headers={"x-meshguard-action": "read:ördérs".encode(), "x-note": "héllo ☃ 日本".encode(),
                     "traceparent": "00-☃☃-é-01".encode()})
        # the echo upstream decodes header bytes as latin-1
        expect.forwarded(resp, agent="unicode-agent", tier="verified",
                         action="read:ördérs".encode().decode("latin-1"))
        event = collector.by_request_id(resp.request_id)
        assert event["attributes"]["meshguard.action"] == "read:ördérs"
        # an unusable traceparent falls back to the UUID request id
        assert event["trace_id"] == resp.request_id.replace("-", "")
        self._still_serving(seed, tokens)

    @pytest.mark.parametrize("authorization,code", [
        ("Bearer ☃.☃.☃".encode(), "malformed"),
        (b"Bearer \xff\xfe.\xff\xff.\xfe", "malformed"),
        (b"Bearer " + keys.b64url_json({"alg": "ES256", "kid": "\u2603"}).encode() + b".e30.AA", "missing_issuer"),
    ], ids=["utf8-token", "invalid-utf8-token", "unicode-kid-no-claims"])
    def test_non_ascii_tokens_are_rejected(self, seed, tokens, authorization, code):
        resp = seed.clients["enforce"].call(authorization=authorization, action="read:orders")
        expect.identity_failure(resp, code)
        self._still_serving(seed, tokens)

    def test_50KiB_header_value_passes(self, seed, tokens):
        resp = seed.clients["enforce"].call(tokens.token("big-header-agent", "verified"), action="read:orders",
                                            headers={"x-big": "v" * (50 * 1024)})
        seen = expect.forwarded(resp, agent="big-header-agent", tier="verified", action="read:orders")
        assert len(seen["x-big"]) == 50 * 1024
        self._still_serving(seed, tokens)

    def test_oversized_headers_are_refused_by_envoy(self, seed, tokens):
        resp = seed.clients["enforce"].call(tokens.token("huge-header-agent", "verified"), action="read:orders",
                                            headers={"x-huge": "v" * (100 * 1024)})
        assert resp.status == 431, resp
        self._still_serving(seed, tokens)

    def test_huge_authorization_header(self, seed, tokens):
        resp = seed.clients["enforce"].call(authorization="Bearer " + "A" * (50 * 1024), action="read:orders")
        expect.identity_failure(resp, "token_too_large")
        self._still_serving(seed, tokens)

    def test_traceparent_of_a_valid_request_is_used(self, seed, tokens, collector):
        trace, span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        resp = seed.clients["enforce"].call(tokens.token("traced-agent", "verified"), action="read:orders",
                                            headers={"traceparent": traceparent(trace, span)})
        expect.forwarded(resp, agent="traced-agent", tier="verified", action="read:orders")
        event = collector.by_request_id(resp.request_id)
        assert (event["trace_id"], event["span_id"]) == (trace, span)
