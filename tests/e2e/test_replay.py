"""`meshguard replay` end to end (issue 13): traffic through the real Envoy into the real
collector under the policy in force; then a candidate that tightens one rule and loosens
two others. Replay's flips, computed from the stored events alone, must be exactly the
flips seen when the same requests are sent through an Envoy running the candidate."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from harness import keys
from harness.cli import REPO, require
from harness.client import MeshClient, traceparent
from harness.envoy import Envoy, Listener, render
from harness.mgcollector import MeshguardCollector
from harness.poll import wait_until
from harness.ports import free_port

CURRENT = """
name: ops
rules:
  - {name: read, action: "read:*", effect: allow}
  - name: email
    action: "write:email"
    effect: allow
    conditions: ["request.headers.x-recipient-domain == 'customer.example'"]
  - {name: no-delete, action: "delete:*", effect: deny, reason: "no deletes"}
  - {name: refunds, action: "payments:refund", effect: require_approval, reason: "refunds need approval"}
  - name: team-reports
    action: "report:*"
    effect: allow
    conditions: ["agent.claims.team == 'finance'"]
"""

# Tightens `read` (secrets are now denied) and loosens `email` (partners too) and
# `refunds` (the finance team, by a claim, needs no approval).
CANDIDATE = """
name: ops
rules:
  - {name: read, action: "read:*", effect: allow}
  - {name: no-secrets, action: "read:secrets", effect: deny, reason: "secrets are closed"}
  - name: email
    action: "write:email"
    effect: allow
    conditions: ["request.headers.x-recipient-domain in ['customer.example', 'partner.example']"]
  - {name: no-delete, action: "delete:*", effect: deny, reason: "no deletes"}
  - name: refunds
    action: "payments:refund"
    effect: require_approval
    reason: "refunds need approval"
    conditions: ["agent.claims.team != 'finance'"]
---
name: finance
applies_to: {agents: ["agent-f*"]}
rules:
  - {name: refunds-ok, action: "payments:refund", effect: allow, conditions: ["agent.claims.team == 'finance'"]}
"""

# A candidate whose condition reads a header the current configuration never recorded.
UNRECORDED = """
name: ops
rules:
  - name: read
    action: "read:*"
    effect: allow
    conditions: ["request.headers.x-never-recorded != 'x'"]
"""


def plugin_config(jwks: dict, policy: str) -> str:
    return json.dumps({
        "identity": {"issuers": [{"issuer": keys.ISSUER, "audiences": [keys.AUDIENCE], "jwks": jwks}]},
        "actions": {"header": "x-meshguard-action", "resource_header": "x-meshguard-resource"},
        "policy_yaml": policy,
        "audit": {"cluster": "meshguard-collector", "flush_interval_ms": 100},
    })


def run_envoy(request, tmp_path_factory, name, cfg, upstream, collector):
    listener = Listener("agents", free_port(), cfg)
    boot = render([listener], admin_port=free_port(), upstream_port=upstream.port, collector_port=collector.port)
    boot["node"] = {"id": f"test-{name}", "cluster": "meshguard-tests"}
    envoy = Envoy(name, boot, tmp_path_factory.mktemp(f"envoy-{name}"))
    request.addfinalizer(envoy.stop)
    envoy.start()
    return envoy, MeshClient(listener.port)


def traffic(tokens):
    """(trace id, token, call kwargs) for a mix that exercises every rule."""
    support = tokens.token("agent-s", "verified", team="support")
    finance = tokens.token("agent-f1", "verified", team="finance")
    calls = []
    for tok in (support, finance):
        for action, headers in [
            ("read:orders", {}),
            ("read:secrets", {}),
            ("read:secrets", {}),
            ("write:email", {"x-recipient-domain": "customer.example"}),
            ("write:email", {"x-recipient-domain": "partner.example"}),
            ("write:email", {"x-recipient-domain": "evil.example"}),
            ("delete:orders", {}),
            ("payments:refund", {"x-amount": "small"}),
            ("payments:refund", {"x-amount": "big"}),
        ]:
            calls.append((uuid.uuid4().hex, tok, action, headers))
    return calls


def send(client, calls):
    for trace, tok, action, headers in calls:
        client.call(tok, action=action, headers={**headers, "traceparent": traceparent(trace, uuid.uuid4().hex[:16])})


def stored(collector, n):
    return wait_until(lambda: (lambda e: e if len(e) >= n else None)(collector.events()), 30, f"{n} events stored")


def side(e):
    a = e["attributes"]
    return {"effect": a["meshguard.effect"], "policy": a["meshguard.policy"], "rule": a["meshguard.rule"],
            "grant": a.get("meshguard.grant", "")}


def kind(frm, to):
    if frm == to:
        return None
    allow = lambda s: s["effect"] == "allow"  # noqa: E731
    if allow(frm) and not allow(to):
        return f"allow->{to['effect']}"
    if not allow(frm) and allow(to):
        return f"{frm['effect']}->allow"
    if frm["effect"] != to["effect"]:
        return f"{frm['effect']}->{to['effect']}"
    return "rule-change"


def replay(db, policy_path, *extra):
    out = subprocess.run([require(), "replay", "--db", db, "--config", policy_path, "--format", "json",
                          "--examples", "1000", *extra], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def collectors(request, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = MeshguardCollector(tmp_path / "a").start()
    request.addfinalizer(a.stop)
    b = MeshguardCollector(tmp_path / "b").start()
    request.addfinalizer(b.stop)
    return a, b


def test_replay_reports_exactly_the_flips_of_a_rerun(request, tmp_path, tmp_path_factory, keyring, tokens,
                                                    upstream, collectors):
    current_c, candidate_c = collectors
    calls = traffic(tokens)
    _, current = run_envoy(request, tmp_path_factory, "replay-current", plugin_config(keyring.jwks, CURRENT),
                           upstream, current_c)
    send(current, calls)
    before = {e["trace_id"]: e for e in stored(current_c, len(calls))}
    assert len(before) == len(calls)
    # The current configuration's conditions read these names: every event carries them.
    some = next(iter(before.values()))["attributes"]
    assert set(json.loads(some["meshguard.inputs"])) == {"agent.claims.team", "request.headers.x-recipient-domain"}

    candidate_cfg = plugin_config(keyring.jwks, CANDIDATE)
    (tmp_path / "candidate.json").write_text(candidate_cfg)
    report = replay(current_c.db, tmp_path / "candidate.json")

    # The same requests through an Envoy running the candidate.
    _, cand = run_envoy(request, tmp_path_factory, "replay-candidate", candidate_cfg, upstream, candidate_c)
    send(cand, calls)
    after = {e["trace_id"]: e for e in stored(candidate_c, len(calls))}
    assert set(after) == set(before)

    direct = {}
    for trace, e in before.items():
        frm, to = side(e), side(after[trace])
        k = kind(frm, to)
        if k:
            key = (k, json.dumps(frm, sort_keys=True), json.dumps(to, sort_keys=True),
                   e["attributes"]["meshguard.agent.id"], e["attributes"]["meshguard.action"])
            direct.setdefault(key, set()).add(trace)
    replayed = {
        (f["kind"], json.dumps(f["from"], sort_keys=True), json.dumps(f["to"], sort_keys=True), f["agent"], f["action"]):
        set(f["examples"])
        for f in report["flips"]
    }
    assert {f["count"] for f in report["flips"]} >= {1}
    assert replayed == direct, json.dumps(report, indent=1)
    kinds = {k[0] for k in direct}
    # tightened and loosened, as designed
    assert {"allow->deny", "deny->allow", "require_approval->allow"} <= kinds, kinds
    assert report["replayed"] == len(calls) and report["approximate"] == 0
    assert report["flipped"] == sum(len(v) for v in direct.values())

    # A candidate reading a header the current configuration never recorded: replay says
    # so (approximate) instead of pretending.
    (tmp_path / "unrecorded.json").write_text(plugin_config(keyring.jwks, UNRECORDED))
    approx = replay(current_c.db, tmp_path / "unrecorded.json", "--action", "read:*")
    assert approx["replayed"] == 6 and approx["approximate"] == 6
