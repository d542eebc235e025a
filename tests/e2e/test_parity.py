"""``meshguard check`` (the CLI) and the filter in Envoy run the same request path
(``Engine::handle``) and so record the same decision (README, "CLI").

Every case is sent to the filter, in enforce mode and in audit mode, and the very same
request (method, path, headers, token, ``x-request-id``, authority, time) is given to
``meshguard check``. The CLI prints the audit event's attributes; the test compares that
whole JSON object with the attributes of the filter's audit event as the collector
decoded it: every attribute, with only the per-stream ones (hash chain, latency) left out
by name, and the set of keys compared must be exactly the event's keys minus those. Each
decision must also equal the expected one written in the table, so a bug shared by both
callers of the engine is caught too. Every third case is also run with ``--claims``
(unsigned claims) and must produce the same JSON. Identity failures (missing, malformed,
bad signature, expired, wrong audience, unknown key, unknown tier) are compared the same
way.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from harness import keys, policies
from harness.cli import CLI
from harness.keys import OMIT, delegation

ALLOW, DENY, APPROVAL = "allow", "deny", "require_approval"
DEFAULT_DENY = (DENY, None, None)
MODES = ("enforce", "audit")

# Attributes of the filter's event that ``check`` does not print, and why: the hash chain
# belongs to the worker VM's stream, latency is measured around the filter callback.
PER_STREAM = {"meshguard.stream", "meshguard.seq", "meshguard.prev_hash", "meshguard.hash",
              "meshguard.chain.version", "meshguard.latency_us"}
# ``check``'s key for the log record's trace id (an OTLP field, not an attribute).
TRACE_ID = "trace_id"
# The client's default request line for explicit actions (harness.client.MeshClient.call).
DEFAULT_REQUEST = ("GET", "/tools/call")


@dataclass(frozen=True)
class Case:
    id: str
    sub: str
    tier: Any
    action: str
    expected: tuple[str, str | None, str | None]
    resource: str | None = None
    headers: dict = field(default_factory=dict)
    claims: dict = field(default_factory=dict)
    # (method, path): map the action through the route table instead of sending it;
    # `action`/`resource` are then what the route should map to ("" for no match).
    route: tuple[str, str] | None = None


def _chain(*actors: str, tier: str = "trusted") -> dict:
    return {"act": delegation(*[(a, tier) for a in actors])}


CASES = [
    # the seed policy
    Case("verified-read", "agent-v", "verified", "read:orders", (ALLOW, "verified-agent-policy", "rules[0]")),
    Case("verified-delete", "agent-v", "verified", "delete:orders", (DENY, "verified-agent-policy", "rules[2]"),
         resource="orders"),
    Case("verified-write-orders", "agent-v", "verified", "write:orders", DEFAULT_DENY, resource="orders/1"),
    Case("untrusted-read", "agent-u", "untrusted", "read:orders", DEFAULT_DENY),
    Case("no-tier-read", "agent-n", OMIT, "read:orders", DEFAULT_DENY),
    # guardrails apply to everyone; deny wins, the most specific allow is reported
    Case("verified-read-secrets", "agent-v", "verified", "read:secrets", (DENY, "guardrails", "no-secrets")),
    Case("trusted-read-secrets", "agent-t", "trusted", "read:secrets", (DENY, "guardrails", "no-secrets")),
    Case("verified-read-health", "agent-v", "verified", "read:health", (ALLOW, "guardrails", "health")),
    Case("untrusted-read-health", "agent-u", "untrusted", "read:health", (ALLOW, "guardrails", "health")),
    Case("privileged-config-admin", "root-1", "privileged", "config:admin", (DENY, "guardrails", "rules[3]")),
    # trusted tier
    Case("trusted-read", "agent-t", "trusted", "read:orders", (ALLOW, "trusted-agent-policy", "trusted-read")),
    Case("trusted-write-orders", "agent-t", "trusted", "write:orders",
         (ALLOW, "trusted-agent-policy", "trusted-write-orders"), resource="orders/42"),
    Case("trusted-write-other-resource", "agent-t", "trusted", "write:orders", DEFAULT_DENY, resource="customers/1"),
    Case("trusted-write-no-resource", "agent-t", "trusted", "write:orders", DEFAULT_DENY),
    Case("trusted-email-internal", "agent-t", "trusted", "write:email",
         (ALLOW, "trusted-agent-policy", "email-internal"), headers={"x-recipient-domain": "example.com"}),
    Case("trusted-email-external", "agent-t", "trusted", "write:email",
         (APPROVAL, "trusted-agent-policy", "email-external"), headers={"x-recipient-domain": "evil.test"}),
    Case("trusted-email-no-header", "agent-t", "trusted", "write:email", DEFAULT_DENY),
    Case("trusted-pay", "agent-t", "trusted", "pay:invoice", (APPROVAL, "trusted-agent-policy", "rules[4]")),
    # privileged tier
    Case("privileged-delete-prod", "root-1", "privileged", "delete:orders",
         (DENY, "privileged-admin", "rules[1]"), resource="prod/db"),
    Case("privileged-delete-staging", "root-1", "privileged", "delete:orders",
         (ALLOW, "privileged-admin", "admin-all"), resource="staging/db"),
    Case("privileged-delete-no-resource", "root-1", "privileged", "delete:orders",
         (ALLOW, "privileged-admin", "admin-all")),
    # agent globs, claim and header conditions
    Case("billing-small-payment", "billing-7", "verified", "pay:invoice", (ALLOW, "finance-bots", "billing-pay"),
         headers={"x-amount": "50"}, claims={"department": "finance"}),
    Case("billing-big-payment", "billing-7", "verified", "pay:invoice", (APPROVAL, "finance-bots", "billing-big"),
         headers={"x-amount": "5000"}, claims={"department": "finance"}),
    Case("billing-no-amount", "billing-7", "verified", "pay:invoice", (ALLOW, "finance-bots", "billing-pay"),
         claims={"department": "finance"}),
    Case("billing-wrong-department", "billing-8", "verified", "pay:invoice", DEFAULT_DENY,
         headers={"x-amount": "50"}, claims={"department": "sales"}),
    Case("billing-trusted-payment", "billing-5", "trusted", "pay:invoice", (APPROVAL, "trusted-agent-policy", "rules[4]"),
         headers={"x-amount": "50"}, claims={"department": "finance"}),
    Case("billing-read-verified", "billing-9", "verified", "read:invoices", (ALLOW, "finance-bots", "billing-read")),
    Case("billing-read-untrusted", "billing-9", "untrusted", "read:invoices", DEFAULT_DENY),
    Case("search-research", "agent-v", "verified", "search:docs", (ALLOW, "guardrails", "search"),
         claims={"team": "research"}),
    Case("search-sales", "agent-v", "verified", "search:docs", DEFAULT_DENY, claims={"team": "sales"}),
    Case("search-untrusted", "agent-u", "untrusted", "search:docs", DEFAULT_DENY, claims={"team": "research"}),
    Case("non-billing-agent-pays", "agent-v", "verified", "pay:invoice", DEFAULT_DENY,
         claims={"department": "finance"}),
    # the route table instead of an explicit action
    Case("route-read-orders", "agent-v", "verified", "read:orders", (ALLOW, "verified-agent-policy", "rules[0]"),
         resource="orders", route=("GET", "/v1/orders/7")),
    Case("route-delete-orders", "agent-v", "verified", "delete:orders", (DENY, "verified-agent-policy", "rules[2]"),
         resource="orders", route=("DELETE", "/v1/orders/7?force=true")),
    Case("route-email-internal", "agent-t", "trusted", "write:email",
         (ALLOW, "trusted-agent-policy", "email-internal"), resource="notifications",
         headers={"x-recipient-domain": "example.com"}, route=("POST", "/v1/email/send")),
    Case("route-no-match", "agent-v", "verified", "", DEFAULT_DENY, route=("GET", "/v1/unmapped")),
    # delegation
    Case("delegated-read", "planner-1", "trusted", "read:orders", (ALLOW, "trusted-agent-policy", "trusted-read"),
         claims=_chain("worker-1")),
    Case("delegated-lowest-tier", "boss", "privileged", "read:orders", (ALLOW, "verified-agent-policy", "rules[0]"),
         claims={"act": delegation(("helper", "verified"))}),
    Case("delegation-ceiling", "intern-7", "trusted", "export:report", DEFAULT_DENY, claims=_chain("reporter-1")),
    Case("delegation-both-allowed", "reporter-2", "verified", "export:report", (ALLOW, "reporting", "export"),
         claims={"act": delegation(("reporter-3", "verified"))}),
    Case("delegated-twice-write", "writer-a", "trusted", "write:orders", (DENY, "guardrails", "delegated-limit"),
         resource="orders/1", claims=_chain("writer-b", "writer-c")),
    Case("delegation-cycle", "loop-a", "trusted", "read:orders", DEFAULT_DENY, claims=_chain("loop-b", "loop-a")),
    Case("delegation-too-deep", "deep-0", "trusted", "read:orders", DEFAULT_DENY,
         claims=_chain(*[f"deep-{i}" for i in range(1, policies.RICH_MAX_DELEGATION_DEPTH + 2)])),
]


def _none_if_empty(v: str) -> str | None:
    return v or None


@pytest.fixture(scope="module")
def cli() -> Path:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: cargo build -p meshguard-cli")
    return CLI


@pytest.fixture(scope="module")
def parity(request, launch, keyring):
    """The rich configuration on two listeners, enforce and audit, and the very same
    configuration text in a file per mode for ``--config``."""
    texts = {m: policies.as_json(policies.rich_config(keyring.jwks, mode=m)) for m in MODES}
    deployment = launch(request, "parity", texts)
    folder = Path(request.config._tmp_path_factory.mktemp("parity"))  # noqa: SLF001
    files = {}
    for mode, text in texts.items():
        files[mode] = folder / f"plugin-config-{mode}.json"
        files[mode].write_text(text)
    return deployment, files


def _check(cli: Path, config: Path, *, method: str, path: str, headers: dict, authority: str,
           at: int, identity: list[str], action: str | None = None,
           resource: str | None = None) -> tuple[int, dict]:
    args = [str(cli), "check", "--config", str(config), *identity, "--method", method, "--path", path,
            "--authority", authority, "--at", str(at)]
    if action is not None:
        args += ["--action", action]
    if resource is not None:
        args += ["--resource", resource]
    for k, v in headers.items():
        args += ["--header", f"{k}={v}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert proc.returncode in (0, 1), f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


def _compare(cli_out: dict, event: dict) -> None:
    """The whole decision: every attribute of the event but the per-stream ones."""
    attrs = event["attributes"]
    assert PER_STREAM <= set(attrs), f"the event lacks {PER_STREAM - set(attrs)}: update PER_STREAM"
    compared = set(attrs) - PER_STREAM
    assert set(cli_out) - {TRACE_ID} == compared, (
        f"only in check: {set(cli_out) - {TRACE_ID} - compared}, only in the event: {compared - set(cli_out)}")
    diff = {k: (cli_out[k], attrs[k]) for k in compared if cli_out[k] != attrs[k]}
    assert not diff, f"check vs filter differ (check, filter): {diff}"
    assert cli_out[TRACE_ID] == event["trace_id"], (cli_out[TRACE_ID], event["trace_id"])


def _run_both(parity, collector, cli, mode: str, *, token: str | None, method: str, path: str,
              headers: dict, action: str | None = None, resource: str | None = None,
              claims: dict | None = None) -> tuple[int, dict, list[dict]]:
    """Sends the request to the filter, then gives the same request to ``check`` (with
    --token and, when `claims` is given, with --claims too); returns the HTTP status, the
    event attributes and the CLI outputs, each already compared in full with the event."""
    deployment, files = parity
    client = deployment.clients[mode]
    resp = client.call(token, action=action, resource=resource, method=method, path=path, headers=headers)
    event = collector.by_request_id(resp.request_id)
    at = event["time_unix_nano"] // 1_000_000_000
    same = dict(headers, **{"x-request-id": resp.request_id})
    request = dict(method=method, path=path, headers=same, authority=f"127.0.0.1:{client.port}", at=at,
                   action=action, resource=resource)
    outs = []
    identities = [["--token", token]] if token is not None else [[]]
    if claims is not None:
        identities.append(["--claims", json.dumps(claims)])
    for identity in identities:
        code, out = _check(cli, files[mode], identity=identity, **request)
        _compare(out, event)
        assert code == (0 if out["meshguard.effect"] == ALLOW else 1), (code, out)
        outs.append(out)
    return resp.status, event["attributes"], outs


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_and_filter_agree(case, mode, parity, tokens, collector, cli):
    claims = tokens.claims(case.sub, case.tier, **case.claims)
    token = tokens.sign_claims(claims)
    method, path = case.route or DEFAULT_REQUEST
    explicit = case.route is None
    status, attrs, _ = _run_both(
        parity, collector, cli, mode, token=token, method=method, path=path, headers=case.headers,
        action=case.action if explicit else None, resource=case.resource if explicit else None,
        claims=claims if CASES.index(case) % 3 == 0 else None)

    assert (attrs["meshguard.action"], _none_if_empty(attrs["meshguard.resource"])) == (case.action, case.resource)
    decided = (attrs["meshguard.effect"], _none_if_empty(attrs["meshguard.policy"]),
               _none_if_empty(attrs["meshguard.rule"]))
    assert decided == case.expected
    allowed = case.expected[0] == ALLOW
    if mode == "enforce":
        assert status == (200 if allowed else 403)
        assert (attrs["meshguard.decision"], attrs["meshguard.enforced"]) == (case.expected[0], True)
    else:
        assert status == 200
        assert (attrs["meshguard.decision"], attrs["meshguard.enforced"]) == (
            (ALLOW, True) if allowed else ("would_deny", False))


IDENTITY_CASES: list[tuple[str, Callable[[Any, Any], str | None], str]] = [
    ("missing", lambda t, k: None, "missing_token"),
    ("garbage", lambda t, k: "garbage", "malformed"),
    ("tampered", lambda t, k: keys.tamper(t.token("agent-v", "verified"), trust_tier="privileged"),
     "bad_signature"),
    ("expired", lambda t, k: t.token("agent-v", "verified", exp=t.claims()["iat"] - 600), "expired"),
    ("wrong-audience", lambda t, k: t.token("agent-v", "verified", aud="other"), "wrong_audience"),
    ("unknown-kid", lambda t, k: t.token("agent-v", "verified", key=k.stranger_ec), "unknown_kid"),
    ("unknown-tier", lambda t, k: t.token("agent-v", "root"), "unknown_tier"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("make,code", [(m, c) for _, m, c in IDENTITY_CASES], ids=[i for i, _, _ in IDENTITY_CASES])
def test_cli_and_filter_agree_on_identity_failures(make, code, mode, parity, tokens, keyring, collector, cli):
    token = make(tokens, keyring)
    status, attrs, (out,) = _run_both(parity, collector, cli, mode, token=token, method="GET",
                                      path="/tools/call", headers={}, action="read:orders")
    assert attrs["meshguard.identity.error"] == code, attrs
    assert (attrs["meshguard.agent.id"], attrs["meshguard.effect"]) == ("", DENY)
    if mode == "enforce":
        assert status == 401
        assert (attrs["meshguard.decision"], attrs["http.response.status_code"]) == (DENY, 401)
    else:
        assert status == 200
        assert (attrs["meshguard.decision"], attrs["meshguard.enforced"]) == ("would_deny", False)


def test_enough_parity_cases():
    per_run = len(CASES) + len(IDENTITY_CASES)
    assert per_run >= 40, per_run
    assert {c.expected[0] for c in CASES} == {ALLOW, DENY, APPROVAL}
