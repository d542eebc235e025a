"""The approval loop through the real collector and CLI (issue 10).

A require_approval decision answers 403 with a stable ``approvalId``; the filter's audit
event reaches ``meshguard collector``, which records the approval as pending; the operator
approves with ``meshguard approvals approve <id> --for <ttl> --by <who>``; the collector
publishes the signed grants document (``GET /grants``) that the filter polls every second
(``grants: {cluster, path, public_keys, interval_seconds: 1}``), so the agent's retry is
allowed within about one poll interval, and refused again once the TTL has run out. A
grants document altered after signing is refused (and counted), whatever it grants.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import time
import urllib.request
import uuid

import pytest

from harness import expect, policies
from harness.docserver import DocServer
from harness.mgcollector import MeshguardCollector, grants_keypair
from harness.poll import wait_until

# Written against the README/issue-10 contract ahead of the filter's and collector's support.

POLICY = "payments"
RULE = "payments-need-approval"
RULES = [{"name": RULE, "action": "pay:*", "effect": "require_approval", "reason": "Payments need a human"}]
GRANTS_PATH = "/grants"
POLL_S = 1
# Approval -> allowed: the collector publishes, then the next poll (<= POLL_S, with the
# filter's jitter) fetches and applies it; this is the slack the test gives that.
PROPAGATION_S = 3 * POLL_S + 0.5
TTL_S = 6
# The filter compares expiry with its clock at one-second resolution.
CLOCK_TOLERANCE_S = 1.0
# The Envoy stat counting grants documents refused (bad signature, rollback, malformed).
GRANTS_REJECTED_STAT = "meshguard.grants.rejected"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The collector as audit sink and approval service, signing with a fresh key."""
    work = tmp_path_factory.mktemp("approvals")
    key, public = grants_keypair(work)
    mgc = MeshguardCollector(work, http=True, grants_key=key).start()
    yield mgc, public
    mgc.stop()


def grants_section(cluster: str, public_keys: list) -> dict:
    return {"cluster": cluster, "path": GRANTS_PATH, "public_keys": public_keys, "interval_seconds": POLL_S}


@pytest.fixture(scope="module")
def loop(request, launch, keyring, service):
    mgc, public = service
    cfg = policies.controls_config(keyring.jwks, RULES, policy_name=POLICY,
                                   grants=grants_section("meshguard-grants", public))
    dep = launch(request, "approvals", {"agents": policies.as_json(cfg)}, collector_port=mgc.port,
                 clusters={"meshguard-grants": mgc.http_port}, concurrency=2)
    return dep.client, mgc


def unix_seconds(rfc3339: str) -> float:
    return _dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def needs_approval(resp) -> str:
    """A 403 require_approval by the payments rule; returns its approvalId."""
    body = expect.denied(resp, policy=POLICY, rule=RULE, decision="require_approval")
    assert isinstance(body.get("approvalId"), str) and body["approvalId"], body
    return body["approvalId"]


def pending(mgc: MeshguardCollector, approval_id: str) -> dict:
    return wait_until(lambda: (lambda a: a if a and a["status"] == "pending" else None)(mgc.approval(approval_id)),
                      10, f"approval {approval_id} pending in `meshguard approvals list`")


def stored_event(mgc: MeshguardCollector, request_id: str) -> dict:
    return wait_until(lambda: next((e["attributes"] for e in mgc.events()
                                    if e["attributes"].get("meshguard.request_id") == request_id), None),
                      10, f"the audit event of {request_id} stored")


def test_approve_then_allowed_within_a_poll_then_expired(loop, tokens):
    client, mgc = loop
    agent = f"payer-{uuid.uuid4().hex[:8]}"
    token = tokens.token(agent, "verified")

    first = client.call(token, action="pay:invoice", resource="invoices/7")
    approval_id = needs_approval(first)
    assert needs_approval(client.call(token, action="pay:invoice", resource="invoices/7")) == approval_id, \
        "the same request gets the same approvalId"
    assert needs_approval(client.call(token, action="pay:invoice", resource="invoices/8")) != approval_id, \
        "another resource is another approval"
    assert stored_event(mgc, first.request_id)["meshguard.approval_id"] == approval_id

    record = pending(mgc, approval_id)
    assert (record["agent"], record["action"], record["resource"]) == (agent, "pay:invoice", "invoices/7"), record

    out = mgc.approve(approval_id, f"{TTL_S}s", "alice", "INC-42")
    assert out.returncode == 0, out.stderr
    decided = json.loads(out.stdout)
    assert (decided["id"], decided["status"], decided["decided_by"]) == (approval_id, "approved", "alice"), decided
    expires_at = unix_seconds(decided["expires_at"])
    assert 0 < expires_at - time.time() <= TTL_S, decided

    # the retry is allowed within about one poll interval
    allowed = wait_until(lambda: (lambda r: r if r.status == 200 else None)(
        client.call(token, action="pay:invoice", resource="invoices/7")), PROPAGATION_S,
        "the approved retry to be allowed", interval=0.1)
    expect.forwarded(allowed, agent=agent, tier="verified", action="pay:invoice")
    assert stored_event(mgc, allowed.request_id)["meshguard.grant"], "the allowing grant is named"
    # the grant is for exactly what was approved
    needs_approval(client.call(token, action="pay:invoice", resource="invoices/8"))
    needs_approval(client.call(tokens.token(f"{agent}-twin", "verified"), action="pay:invoice",
                               resource="invoices/7"))

    # after the TTL: refused again, with the same approvalId
    last_allowed = time.time()

    def refused():
        nonlocal last_allowed
        r = client.call(token, action="pay:invoice", resource="invoices/7")
        if r.status == 200:
            last_allowed = time.time()
            return None
        return r

    resp = wait_until(refused, expires_at - time.time() + PROPAGATION_S, "the grant to expire", interval=0.2)
    assert time.time() > expires_at - CLOCK_TOLERANCE_S, "refused before expires_at"
    assert last_allowed < expires_at + CLOCK_TOLERANCE_S, "allowed after expires_at"
    assert needs_approval(resp) == approval_id
    # cli/COLLECTOR.md: a new request for an expired approval reopens it as pending
    pending(mgc, approval_id)


def test_denied_approval_stays_refused(loop, tokens):
    client, mgc = loop
    token = tokens.token(f"payer-{uuid.uuid4().hex[:8]}", "verified")
    approval_id = needs_approval(client.call(token, action="pay:payroll"))
    pending(mgc, approval_id)
    out = mgc.deny(approval_id, "bob", "not this month")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "denied"
    deadline = time.time() + 2.5 * POLL_S  # a couple of polls: nothing is granted
    while time.time() < deadline:
        assert needs_approval(client.call(token, action="pay:payroll")) == approval_id
        time.sleep(0.25)
    assert mgc.approval(approval_id)["status"] == "denied"


def test_unknown_approval_id_is_an_error(loop):
    _, mgc = loop
    out = mgc.approve("apr_00000000000000000000000000000000", "30s", "alice")
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)


# --- a grants document altered after signing ------------------------------------------------

def fetch_grants(mgc: MeshguardCollector) -> dict:
    with urllib.request.urlopen(mgc.url + GRANTS_PATH, timeout=5) as r:
        return json.loads(r.read())


def _grant_for(doc: dict, agent: str) -> dict | None:
    return next((g for g in doc.get("grants", []) if g.get("agent") == agent), None)


def _everyone(doc: dict, agent: str) -> dict:
    doc = copy.deepcopy(doc)
    _grant_for(doc, agent)["agent"] = "*"
    return doc


def _forever(doc: dict, agent: str) -> dict:
    doc = copy.deepcopy(doc)
    _grant_for(doc, agent)["expires_at"] = "2099-01-01T00:00:00Z"
    return doc


def _more_actions(doc: dict, agent: str) -> dict:
    doc = copy.deepcopy(doc)
    _grant_for(doc, agent)["action"] = "*"
    return doc


def _unsigned(doc: dict, agent: str) -> dict:
    doc = copy.deepcopy(doc)
    doc["signatures"] = []
    return doc


TAMPERINGS = [("agent-widened", _everyone), ("expiry-extended", _forever), ("action-widened", _more_actions),
              ("signature-removed", _unsigned)]


def test_tampered_grants_document_is_refused(request, launch, keyring, tokens, service):
    """The filter polls a copy of the collector's document from another server: every
    altered copy is refused (and counted), the genuine one is then accepted."""
    mgc, public = service
    server = DocServer().start()
    request.addfinalizer(server.stop)
    cfg = policies.controls_config(keyring.jwks, RULES, policy_name=POLICY,
                                   grants=grants_section("copied-grants", public))
    dep = launch(request, "approvals-tampered", {"agents": policies.as_json(cfg)}, collector_port=mgc.port,
                 clusters={"copied-grants": server.port}, concurrency=2)
    client, envoy = dep.client, dep.envoy
    agent = f"payer-{uuid.uuid4().hex[:8]}"
    token = tokens.token(agent, "verified")
    approval_id = needs_approval(client.call(token, action="pay:refund", resource="orders/5"))
    pending(mgc, approval_id)
    assert mgc.approve(approval_id, "120s", "alice").returncode == 0
    genuine = wait_until(lambda: (lambda d: d if _grant_for(d, agent) else None)(fetch_grants(mgc)), 5,
                         "the approval published in the grants document")

    for name, tamper in TAMPERINGS:
        rejected, fetched = envoy.stat(GRANTS_REJECTED_STAT), server.count(GRANTS_PATH)
        server.serve(GRANTS_PATH, json.dumps(tamper(genuine, agent)).encode())
        # two more fetches: the second certainly started after the altered copy was served
        wait_until(lambda: server.count(GRANTS_PATH) >= fetched + 2 and envoy.stat(GRANTS_REJECTED_STAT) > rejected,
                   3 * PROPAGATION_S, f"the {name} document fetched and refused ({GRANTS_REJECTED_STAT})")
        needs_approval(client.call(token, action="pay:refund", resource="orders/5"))
        needs_approval(client.call(tokens.token("mallory-bot", "verified"), action="pay:refund",
                                   resource="orders/5"))

    server.serve(GRANTS_PATH, json.dumps(genuine).encode())
    allowed = wait_until(lambda: (lambda r: r if r.status == 200 else None)(
        client.call(token, action="pay:refund", resource="orders/5")), PROPAGATION_S, "the genuine document applied",
        interval=0.1)
    expect.forwarded(allowed, agent=agent, tier="verified", action="pay:refund")
    needs_approval(client.call(tokens.token("mallory-bot", "verified"), action="pay:refund", resource="orders/5"))
