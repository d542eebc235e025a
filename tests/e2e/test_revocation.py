"""Revocation (issue 10): a revoked token (``jti``) or a revoked agent anywhere in the
delegation chain gets 401 ``revoked``, also when the token was accepted (and its
verification cached) before the revocation arrived, by a new plugin configuration (LDS)
or by a signed bundle's ``revocations``.

Every Envoy here runs two workers: a revocation must reach both VMs' token caches.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from harness import bundles, expect, policies
from harness.client import MeshClient
from harness.docserver import DocServer
from harness.envoy import Envoy, Listener, load_template, make_listener, render, with_lds, write_lds
from harness.keys import delegation
from harness.poll import wait_until
from harness.ports import free_port

# Written against the README/issue-10 contract ahead of the filter's support.

ALLOW_READS = [{"name": "reads", "action": "read:*", "effect": "allow"}]
REVOKED_JTI = "jti-revoked-0001"
REVOKED_AGENTS = ["rogue-bot", "middle-bot"]


def jti() -> str:
    return f"jti-{uuid.uuid4()}"


@pytest.fixture(scope="module")
def inline(request, launch, keyring):
    cfg = policies.controls_config(keyring.jwks, ALLOW_READS,
                                   revoked={"jti": [REVOKED_JTI], "agents": REVOKED_AGENTS})
    return launch(request, "revocation", {"agents": policies.as_yaml(cfg)}, concurrency=2)


def test_revoked_jti(inline, tokens, upstream, collector):
    resp = inline.client.call(tokens.token("good-bot", "verified", jti=REVOKED_JTI), action="read:orders")
    expect.identity_failure(resp, "revoked")
    assert not upstream.received(resp.request_id)
    attrs = collector.by_request_id(resp.request_id)["attributes"]
    assert (attrs["meshguard.decision"], attrs["meshguard.identity.error"]) == ("deny", "revoked")
    # the same agent with another token id is fine
    expect.forwarded(inline.client.call(tokens.token("good-bot", "verified", jti=jti()), action="read:orders"),
                     agent="good-bot", tier="verified", action="read:orders")


def test_revoked_agent(inline, tokens):
    for token in (tokens.token("rogue-bot", "verified", jti=jti()), tokens.token("rogue-bot", "verified")):
        expect.identity_failure(inline.client.call(token, action="read:orders"), "revoked")


@pytest.mark.parametrize("chain", [
    pytest.param(("origin-user", [("middle-bot", "verified"), ("front-bot", "verified")]), id="revoked-in-the-middle"),
    pytest.param(("rogue-bot", [("front-bot", "verified")]), id="revoked-original-subject"),
    pytest.param(("origin-user", [("front-bot", "verified"), ("rogue-bot", "verified")]), id="revoked-current-actor"),
])
def test_revoked_agent_anywhere_in_the_delegation_chain(inline, tokens, upstream, chain):
    subject, actors = chain
    resp = inline.client.call(tokens.token(subject, "verified", act=delegation(*actors)), action="read:orders")
    expect.identity_failure(resp, "revoked")
    assert not upstream.received(resp.request_id)


def test_chain_without_revoked_agents_is_allowed(inline, tokens):
    """The control for the chain cases: the same shape with no revoked agent passes, and
    the outermost actor is the one acting."""
    token = tokens.token("origin-user", "verified", act=delegation(("helper-bot", "verified"), ("front-bot", "verified")))
    expect.forwarded(inline.client.call(token, action="read:orders"), agent="front-bot", tier="verified",
                     action="read:orders")


# --- revocation arriving after the token was accepted -------------------------------------

def _accepted_twice(client: MeshClient, token: str, agent: str) -> None:
    """Accepted, then accepted again (its verification now cached on that worker)."""
    for _ in range(2):
        expect.forwarded(client.call(token, action="read:orders"), agent=agent, tier="verified", action="read:orders")


# Longest wait between a worker publishing a document and another adopting it: one root
# tick (audit.flush_interval_ms, 200 ms by default) plus scheduling slack.
ADOPTION_TICK_S = 0.6


def _until_revoked(client: MeshClient, token: str, timeout: float = 20.0):
    """Polls until the token is refused (a new listener warms up or the next bundle poll
    lands), then asserts the refusal is the documented one, on several connections (so
    both workers are asked)."""
    resp = wait_until(lambda: (lambda r: r if r.status != 200 else None)(client.call(token, action="read:orders")),
                      timeout, "the revocation to take effect", interval=0.1)
    expect.identity_failure(resp, "revoked")
    # The worker that fetched the document refuses at once; the other adopts it from
    # shared data on its next tick (README "Signed policy bundles"): allow that one tick,
    # then every call on every connection must be refused.
    time.sleep(ADOPTION_TICK_S)
    for _ in range(6):
        expect.identity_failure(client.call(token, action="read:orders"), "revoked")


@pytest.fixture
def live(request, tmp_path_factory, keyring, upstream, collector):
    """An Envoy whose listener comes from a watched LDS file (live configuration updates)."""
    workdir = tmp_path_factory.mktemp("envoy-revocation-lds")
    lds_dir = workdir / "lds"
    lds_dir.mkdir()
    port = free_port()
    boot = render([Listener("agents", port, "")], admin_port=free_port(), upstream_port=upstream.port,
                  collector_port=collector.port)
    envoy = Envoy("revocation-lds", with_lds(boot, lds_dir), workdir, concurrency=2)

    def publish(cfg: dict) -> None:
        write_lds(lds_dir, [make_listener(load_template(), Listener("agents", port, policies.as_yaml(cfg)))])

    publish(policies.controls_config(keyring.jwks, ALLOW_READS))
    request.addfinalizer(envoy.stop)
    envoy.start()
    return envoy, MeshClient(port), publish


def test_revocation_by_new_configuration_after_the_token_was_cached(live, keyring, tokens):
    envoy, client, publish = live
    token_id = jti()
    by_jti = tokens.token("cached-bot", "verified", jti=token_id)
    by_agent = tokens.token("soon-rogue", "verified", jti=jti())
    chained = tokens.token("origin-user", "verified", act=delegation(("soon-rogue", "verified"), ("front-bot", "verified")))
    bystander = tokens.token("cached-bot", "verified", jti=jti())
    _accepted_twice(client, by_jti, "cached-bot")
    _accepted_twice(client, by_agent, "soon-rogue")
    _accepted_twice(client, chained, "front-bot")
    _accepted_twice(client, bystander, "cached-bot")

    accepted = envoy.stat("listener_manager.lds.update_success")
    rejected = envoy.stat("listener_manager.lds.update_rejected")
    publish(policies.controls_config(keyring.jwks, ALLOW_READS,
                                     revoked={"jti": [token_id], "agents": ["soon-rogue"]}))
    wait_until(lambda: envoy.stat("listener_manager.lds.update_success") > accepted
               or envoy.stat("listener_manager.lds.update_rejected") > rejected, 20, "the LDS update to be handled")
    assert envoy.stat("listener_manager.lds.update_rejected") == rejected, \
        "the configuration with `revoked` was refused:\n" + envoy.log_tail(5)
    _until_revoked(client, by_jti)
    _until_revoked(client, by_agent)
    _until_revoked(client, chained)
    _accepted_twice(client, bystander, "cached-bot")


BUNDLE_PATH = "/bundles/current.json"


@pytest.fixture(scope="module")
def bundled(request, launch, keyring):
    signer = bundles.BundleSigner.generate("revocation-bundles")
    server = DocServer().start()
    request.addfinalizer(server.stop)
    server.serve(BUNDLE_PATH, json.dumps(signer.sign(bundles.bundle(1, [{"name": "bundle-reads",
                                                                          "rules": ALLOW_READS}]))).encode())
    cfg = policies.controls_config(keyring.jwks, ALLOW_READS)
    cfg["bundle"] = {"cluster": "meshguard-bundles", "path": BUNDLE_PATH, "public_keys": [signer.public_key_b64],
                     "interval_seconds": 1}
    dep = launch(request, "revocation-bundle", {"agents": policies.as_json(cfg)}, concurrency=2,
                 clusters={"meshguard-bundles": server.port})
    wait_until(lambda: dep.envoy.stat("meshguard.bundle.version") == 1, 10, "bundle v1 applied")
    return dep, server, signer


def test_revocation_by_bundle_after_the_token_was_cached(bundled, tokens):
    dep, server, signer = bundled
    client = dep.client
    token_id = jti()
    by_jti = tokens.token("bundle-bot", "verified", jti=token_id)
    by_agent = tokens.token("bundle-rogue", "verified")
    chained = tokens.token("origin-user", "verified", act=delegation(("bundle-rogue", "verified"),
                                                                    ("front-bot", "verified")))
    bystander = tokens.token("bundle-bot", "verified", jti=jti())
    for token, agent in ((by_jti, "bundle-bot"), (by_agent, "bundle-rogue"), (chained, "front-bot"),
                         (bystander, "bundle-bot")):
        _accepted_twice(client, token, agent)

    doc = bundles.bundle(2, [{"name": "bundle-reads", "rules": ALLOW_READS}])
    doc["revocations"] = [{"jti": token_id, "reason": "leaked in a log"},
                          {"agent": "bundle-rogue", "reason": "compromised", "revoked_at": "2026-11-29T10:00:00Z"}]
    server.serve(BUNDLE_PATH, json.dumps(signer.sign(doc)).encode())
    _until_revoked(client, by_jti, timeout=10)
    _until_revoked(client, by_agent, timeout=5)
    _until_revoked(client, chained, timeout=5)
    assert dep.envoy.stat("meshguard.bundle.version") == 2
    _accepted_twice(client, bystander, "bundle-bot")
