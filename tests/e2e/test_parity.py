"""``meshguard check`` (the CLI) and the filter in Envoy decide identically (DESIGN §2).

Each case is decided three ways: by the filter (effect/policy/rule read from its audit
event at the real collector), by ``meshguard check --token`` and, for every third case,
by ``meshguard check --claims``. All must equal the expected decision written in the
table, so a bug shared by both sides of the engine is caught too. The policy set is the
rich one (several policies, wildcards, resources, min_trust_tier, require_approval,
conditions on headers, claims and delegation depth, agent globs). Identity failures must
get the same ``errorCode`` from both.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import keys, policies
from harness.envoy import REPO
from harness.keys import OMIT, delegation

from harness.cli import CLI

ALLOW, DENY, APPROVAL = "allow", "deny", "require_approval"
DEFAULT_DENY = (DENY, None, None)


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
def config_file(tmp_path_factory, rich_config) -> Path:
    """The very configuration text the rich Envoy runs, for ``--config``."""
    path = tmp_path_factory.mktemp("parity") / "plugin-config.json"
    path.write_text(policies.as_json(rich_config))
    return path


def _check(cli: Path, config: Path, case: Case, identity: list[str]) -> tuple[str, str | None, str | None]:
    args = [str(cli), "check", "--config", str(config), *identity]
    if case.route:
        args += ["--method", case.route[0], "--path", case.route[1]]
    else:
        args += ["--action", case.action]
        if case.resource is not None:
            args += ["--resource", case.resource]
    for k, v in case.headers.items():
        args += ["--header", f"{k}={v}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert proc.returncode in (0, 1), f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    out = json.loads(proc.stdout)
    assert out["decision"] == out["effect"], out
    assert proc.returncode == (0 if out["effect"] == ALLOW else 1), (proc.returncode, out)
    assert (out["action"] or "") == case.action and out["resource"] == case.resource, out
    return out["effect"], out["policy"], out["rule"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_and_filter_agree(case, rich, tokens, collector, cli, config_file):
    claims = tokens.claims(case.sub, case.tier, **case.claims)
    token = tokens.sign_claims(claims)

    if case.route:
        resp = rich.client.call(token, method=case.route[0], path=case.route[1], headers=case.headers)
    else:
        resp = rich.client.call(token, action=case.action, resource=case.resource, headers=case.headers)
    a = collector.by_request_id(resp.request_id)["attributes"]
    assert (a["meshguard.action"], _none_if_empty(a["meshguard.resource"])) == (case.action, case.resource)
    filter_decision = (a["meshguard.effect"], _none_if_empty(a["meshguard.policy"]),
                       _none_if_empty(a["meshguard.rule"]))
    assert resp.status == (200 if case.expected[0] == ALLOW else 403), resp

    cli_token = _check(cli, config_file, case, ["--token", token])
    assert filter_decision == cli_token == case.expected, (
        f"filter {filter_decision}, cli --token {cli_token}, expected {case.expected}")
    if CASES.index(case) % 3 == 0:
        cli_claims = _check(cli, config_file, case, ["--claims", json.dumps(claims)])
        assert cli_claims == case.expected, f"cli --claims {cli_claims}, expected {case.expected}"


def test_enough_parity_cases():
    assert len(CASES) >= 30
    assert {c.expected[0] for c in CASES} == {ALLOW, DENY, APPROVAL}


IDENTITY_CASES = [
    ("garbage", lambda t: "garbage", "malformed"),
    ("tampered", lambda t: keys.tamper(t.token("agent-v", "verified"), trust_tier="privileged"), "bad_signature"),
    ("expired", lambda t: t.token("agent-v", "verified", exp=t.claims()["iat"] - 600), "expired"),
    ("wrong-audience", lambda t: t.token("agent-v", "verified", aud="other"), "wrong_audience"),
    ("unknown-tier", lambda t: t.token("agent-v", "root"), "unknown_tier"),
]


@pytest.mark.parametrize("make,code", [(m, c) for _, m, c in IDENTITY_CASES], ids=[i for i, _, _ in IDENTITY_CASES])
def test_cli_and_filter_agree_on_identity_failures(make, code, rich, tokens, cli, config_file):
    token = make(tokens)
    resp = rich.client.call(token, action="read:orders")
    assert resp.status == 401, resp
    proc = subprocess.run([str(cli), "check", "--config", str(config_file), "--token", token, "--action",
                           "read:orders"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc
    out = json.loads(proc.stdout)
    assert (out["decision"], out["error"]) == ("deny", "invalid_token"), out
    assert out["errorCode"] == resp.json()["errorCode"] == code
