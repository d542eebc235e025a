"""Route walk-out and relabelling (issue 8), against the real Envoy, with and without
Envoy's own path normalisation (``normalize_path``, ``merge_slashes``,
``path_with_escaped_slashes_action: REJECT_REQUEST`` on the HTTP connection manager).

MeshGuard decides on the path the upstream will act on: dot segments (plain or
percent-encoded, any case) are resolved, duplicate slashes merged, unreserved escapes
decoded, and what has no single meaning (encoded ``/`` or ``\\``, a raw ``\\``, ``..``
above the root, ``//..``, ``..;``) is a 400 with a reason. A forwarded request reaches the
upstream with exactly the path that was decided on, labelled with the action it was
decided as. A client action or resource header never relabels a routed request.

Expectations are per Envoy setting: with Envoy's normalisation on, Envoy resolves or
refuses some forms before MeshGuard sees them (its 400s are Envoy's, not MeshGuard's).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass

import pytest

from harness import cli as cli_binary
from harness import expect, policies
from harness.client import http_request

ROUTES = [
    {"method": "POST", "path": "/v1/email/*", "action": "write:email", "resource": "notifications"},
    {"method": "GET", "path": "/v1/orders/**", "action": "read:orders", "resource": "orders"},
    {"method": "GET", "path": "/v1/admin/**", "action": "admin:read", "resource": "admin"},
]

# A verified agent may read (read:*) and nothing else: write:email and admin:read are
# default-denied, whatever the time of day.
POLICY = [{"name": "readers", "applies_to": {"trust_tiers": ["verified"]},
           "rules": [{"name": "read", "action": "read:*", "effect": "allow"}]}]


def config(jwks: dict, mode: str = "enforce") -> str:
    cfg = policies.seed_config(jwks, mode=mode)
    cfg["actions"]["routes"] = ROUTES
    cfg["policies"] = POLICY
    return policies.as_yaml(cfg)


@pytest.fixture(scope="module", params=[False, True], ids=["envoy-raw", "envoy-normalising"])
def mesh(request, launch, keyring):
    """One Envoy per setting of Envoy's path normalisation; ``mesh.normalising`` says which."""
    deployment = launch(request, f"paths-{'norm' if request.param else 'raw'}",
                        {"enforce": config(keyring.jwks), "audit": config(keyring.jwks, "audit")},
                        envoy_normalisation=request.param)
    deployment.normalising = request.param
    return deployment


@dataclass(frozen=True)
class Forward:
    """Forwarded: the upstream sees `path`, labelled `action`."""
    path: str
    action: str


@dataclass(frozen=True)
class Deny:
    """MeshGuard's 403, decided as `action` (None: no route, no action)."""
    action: str | None
    reason_contains: str


@dataclass(frozen=True)
class Reject:
    """MeshGuard's 400 with this errorCode."""
    code: str


@dataclass(frozen=True)
class EnvoyReject:
    """Envoy's own 400 (escaped slash with REJECT_REQUEST), before MeshGuard."""


ADMIN = Deny("admin:read", "")
NO_ROUTE = Deny(None, "no action")

# id, raw path, outcome without Envoy's normalisation, outcome with it.
CASES = [
    ("plain", "/v1/orders/7", Forward("/v1/orders/7", "read:orders"), Forward("/v1/orders/7", "read:orders")),
    ("dotdot", "/v1/orders/../admin/delete", ADMIN, ADMIN),
    ("dotdot-encoded", "/v1/orders/%2e%2e/admin/delete", ADMIN, ADMIN),
    ("dotdot-encoded-upper", "/v1/orders/%2E%2E/admin/delete", ADMIN, ADMIN),
    ("dot-encoded-dot", "/v1/orders/.%2e/admin/delete", ADMIN, ADMIN),
    ("encoded-dot-dot", "/v1/orders/%2E./admin/delete", ADMIN, ADMIN),
    ("dotdot-to-unrouted", "/v1/orders/../secrets", NO_ROUTE, NO_ROUTE),
    ("trailing-dotdot", "/v1/orders/..", NO_ROUTE, NO_ROUTE),
    ("dotdot-encoded-slash", "/v1/orders/..%2fadmin/delete", Reject("encoded_slash"), EnvoyReject()),
    ("dotdot-encoded-slash-upper", "/v1/orders/..%2Fadmin/delete", Reject("encoded_slash"), EnvoyReject()),
    ("encoded-slash", "/v1/orders%2F..%2F..%2Fadmin", Reject("encoded_slash"), EnvoyReject()),
    ("encoded-backslash", "/v1/orders/..%5Cadmin/delete", Reject("encoded_backslash"), EnvoyReject()),
    ("encoded-backslash-lower", "/v1/orders/..%5cadmin/delete", Reject("encoded_backslash"), EnvoyReject()),
    ("double-slash", "/v1//orders///7", Forward("/v1/orders/7", "read:orders"),
     Forward("/v1/orders/7", "read:orders")),
    ("dot-segment", "/v1/orders/./7", Forward("/v1/orders/7", "read:orders"),
     Forward("/v1/orders/7", "read:orders")),
    ("unreserved-escape", "/v1/%6Frders/%37", Forward("/v1/orders/7", "read:orders"),
     Forward("/v1/orders/7", "read:orders")),
    ("query-kept", "/v1/orders/./7?next=/../admin", Forward("/v1/orders/7?next=/../admin", "read:orders"),
     Forward("/v1/orders/7?next=/../admin", "read:orders")),
    ("dotdot-inside-route", "/v1/orders/7/../8", Forward("/v1/orders/8", "read:orders"),
     Forward("/v1/orders/8", "read:orders")),
    # Envoy clamps `..` at the root (RFC 3986), MeshGuard alone refuses it.
    ("above-root", "/v1/orders/../../../admin/delete", Reject("above_root"), NO_ROUTE),
    # Envoy resolves `..;` as `..`; MeshGuard alone refuses it (servlet upstreams would).
    ("dotdot-param", "/v1/orders/..;/admin/delete", Reject("dot_segment_parameter"), ADMIN),
    # Envoy decodes once, like MeshGuard; a double-encoded dot is refused either way.
    ("double-encoded", "/v1/orders/%252e%252e/admin", Reject("double_encoded"), Reject("double_encoded")),
    # Envoy turns `\` into `/`; MeshGuard alone refuses it.
    ("backslash", "/v1/orders/..\\admin/delete", Reject("backslash"), ADMIN),
    # Envoy resolves before merging (`/v1/orders/admin`) and forwards that path, which is
    # then the path decided on; MeshGuard alone cannot know which the upstream does.
    ("empty-segment-dotdot", "/v1/orders//../admin", Reject("empty_segment_dot_dot"),
     Forward("/v1/orders/admin", "read:orders")),
    ("encoded-nul", "/v1/orders/%00", Reject("control_character"), EnvoyReject()),
    ("invalid-escape", "/v1/orders/%zz", Reject("invalid_escape"), Reject("invalid_escape")),
    ("fragment", "/v1/orders/7#x", EnvoyReject(), EnvoyReject()),
    ("asterisk", "*", EnvoyReject(), EnvoyReject()),
]


def _outcome(case, normalising: bool):
    _, _, raw, with_envoy = case
    return with_envoy if normalising else raw


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_path_forms(mesh, tokens, upstream, collector, case):
    """Every form is forwarded with the normalised path and the action it was decided as,
    or denied/refused without reaching the upstream."""
    _, path, _, _ = case
    want = _outcome(case, mesh.normalising)
    resp = mesh.client.call(tokens.token("walker", "verified"), path=path)
    if isinstance(want, Forward):
        seen = expect.forwarded(resp, agent="walker", tier="verified", action=want.action)
        assert resp.json()["path"] == want.path, resp
        assert seen["x-meshguard-action"] == want.action
        event = collector.by_request_id(resp.request_id)["attributes"]
        assert event["url.path"] == want.path.split("?")[0]
        assert event["meshguard.action"] == want.action
        return
    assert not upstream.received(resp.request_id), f"{path} reached the upstream: {resp}"
    if isinstance(want, Deny):
        body = expect.denied(resp, policy=None, rule=None, agent="walker",
                             reason_contains=want.reason_contains)
        assert body["action"] == (want.action or ""), body
        event = collector.by_request_id(resp.request_id)["attributes"]
        assert event["meshguard.action"] == (want.action or "")
    elif isinstance(want, Reject):
        assert resp.status == 400, resp
        body = resp.json()
        assert (body["decision"], body["error"], body["errorCode"]) == ("deny", "invalid_request", want.code), body
        assert body["reason"], body
        event = collector.by_request_id(resp.request_id)["attributes"]
        assert event["meshguard.decision"] == "deny"
        assert event["meshguard.reason"] == body["reason"]
        assert event["meshguard.agent.id"] == "walker"
    else:
        assert resp.status == 400, resp
        assert not resp.headers.get("content-type", "").startswith("application/json"), \
            f"expected Envoy's own 400, got {resp}"
        assert b"errorCode" not in resp.body, resp


def test_audit_mode_observes_walk_outs_and_relabelling_as_what_they_are(mesh, tokens, upstream, collector):
    """Audit mode forwards would-be denials, but as what they are: the walked-out path is
    forwarded normalised and labelled admin:read, the relabelled email send as
    write:email. An ambiguous path is a 400 in audit mode too."""
    audit = mesh.clients["audit"]
    resp = audit.call(tokens.token("walker", "verified"), path="/v1/orders/%2e%2e/admin/delete")
    expect.forwarded(resp, agent="walker", tier="verified", action="admin:read", decision="would_deny")
    assert resp.json()["path"] == "/v1/admin/delete"
    resp = audit.call(tokens.token("mailer", "verified"), method="POST", path="/v1/email/send",
                      action="read:orders")
    expect.forwarded(resp, agent="mailer", tier="verified", action="write:email", decision="would_deny")
    event = collector.by_request_id(resp.request_id)["attributes"]
    assert (event["meshguard.decision"], event["meshguard.action"]) == ("would_deny", "write:email")
    assert "disagrees" in event["meshguard.reason"]
    resp = audit.call(tokens.token("walker", "verified"), path="/v1/orders/../../../admin")
    if mesh.normalising:
        # Envoy clamps at the root first: /admin, unrouted, forwarded as would_deny
        expect.forwarded(resp, agent="walker", tier="verified", action="", decision="would_deny")
        assert resp.json()["path"] == "/admin"
    else:
        assert (resp.status, resp.json()["errorCode"]) == (400, "above_root"), resp
        assert not upstream.received(resp.request_id)


def test_write_email_is_denied_by_route(mesh, tokens, upstream):
    resp = mesh.client.call(tokens.token("mailer", "verified"), method="POST", path="/v1/email/send")
    expect.denied(resp, policy=None, rule=None, action="write:email", reason_contains="no policy allows")
    assert not upstream.received(resp.request_id)


def test_action_header_cannot_relabel_a_routed_request(mesh, tokens, upstream, collector):
    """Issue 8, bug 2: ``x-meshguard-action: read:orders`` on ``POST /v1/email/send`` used to
    be decided as read:orders and forwarded to the email endpoint. The route decides: 403
    naming both actions, audited as write:email."""
    resp = mesh.client.call(tokens.token("mailer", "verified"), method="POST", path="/v1/email/send",
                            action="read:orders")
    body = expect.denied(resp, policy=None, rule=None, agent="mailer", action="write:email")
    assert '"read:orders"' in body["reason"] and '"write:email"' in body["reason"], body
    assert not upstream.received(resp.request_id)
    event = collector.by_request_id(resp.request_id)["attributes"]
    assert (event["meshguard.action"], event["meshguard.resource"]) == ("write:email", "notifications")
    assert event["meshguard.reason"] == body["reason"]


def test_resource_header_cannot_relabel_a_routed_request(mesh, tokens, upstream):
    resp = mesh.client.call(tokens.token("reader", "verified"), path="/v1/orders/7", resource="public")
    body = expect.denied(resp, policy=None, rule=None, action="read:orders")
    assert '"public"' in body["reason"] and '"orders"' in body["reason"], body
    assert not upstream.received(resp.request_id)


def test_relabelling_through_a_walked_out_path_is_refused(mesh, tokens, upstream):
    """Both tricks together: the path walks out of /v1/orders into /v1/admin and the header
    claims read:orders; the route of the normalised path decides (admin:read) and the
    header disagrees with it."""
    resp = mesh.client.call(tokens.token("walker", "verified"), path="/v1/orders/%2e%2e/admin/delete",
                            action="read:orders")
    body = expect.denied(resp, policy=None, rule=None, action="admin:read")
    assert "disagrees" in body["reason"], body
    assert not upstream.received(resp.request_id)


def test_agreeing_header_and_header_fallback_still_work(mesh, tokens):
    resp = mesh.client.call(tokens.token("reader", "verified"), path="/v1/orders/7", action="read:orders",
                            resource="orders")
    expect.forwarded(resp, agent="reader", tier="verified", action="read:orders")
    # no route maps /tools/call: the header is the (caller-trusted) fallback
    resp = mesh.client.call(tokens.token("reader", "verified"), path="/tools/call", action="read:things")
    expect.forwarded(resp, agent="reader", tier="verified", action="read:things")


@pytest.mark.parametrize("path", ["/tools/call", "/v1/email/send"])
def test_duplicate_action_headers_are_refused(mesh, tokens, upstream, path):
    """Two ``x-meshguard-action`` values (or one comma-separated list): which one counts
    would depend on the reader, so neither does: 400 before any decision."""
    token = tokens.token("dup", "verified")
    for extra in ([("x-meshguard-action", "read:orders"), ("x-meshguard-action", "write:email")],
                  [("x-meshguard-action", "read:orders, write:email")]):
        rid = str(uuid.uuid4())
        resp = http_request(mesh.client.port, "POST", path,
                            [("authorization", f"Bearer {token}"), ("x-request-id", rid), *extra], b"")
        assert resp.status == 400, (path, extra, resp)
        body = resp.json()
        assert body["errorCode"] == "duplicate_header", body
        assert "x-meshguard-action" in body["reason"], body
        assert not upstream.received(rid)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, keyring):
    path = tmp_path_factory.mktemp("paths") / "plugin-config.yaml"
    path.write_text(config(keyring.jwks))
    return path


def _check(config_path, token: str, method: str, path: str, *headers: str) -> dict:
    args = [str(cli_binary.require()), "check", "--config", str(config_path), "--token", token,
            "--method", method, "--path", path]
    for h in headers:
        args += ["--header", h]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert proc.returncode in (0, 1), f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.mark.parametrize("case", [c for c in CASES if not isinstance(c[2], EnvoyReject)], ids=lambda c: c[0])
def test_cli_check_decides_on_the_same_path(config_file, tokens, case):
    """`meshguard check --path` normalises like the filter (without Envoy in front)."""
    _, path, want, _ = case
    out = _check(config_file, tokens.token("walker", "verified"), "GET", path)
    # `check` prints the audit event's attributes (README, "meshguard check").
    decision, action = out["meshguard.decision"], out.get("meshguard.action", "")
    if isinstance(want, Reject):
        assert (decision, out["http.response.status_code"]) == ("deny", 400), out
    elif isinstance(want, Deny):
        assert (decision, action) == ("deny", want.action or ""), out
    else:
        assert (decision, action) == ("allow", want.action), out


def test_cli_check_refuses_relabelling(config_file, tokens):
    out = _check(config_file, tokens.token("mailer", "verified"), "POST", "/v1/email/send",
                 "x-meshguard-action=read:orders")
    assert out["meshguard.decision"] == "deny" and "disagrees" in out["meshguard.reason"], out
