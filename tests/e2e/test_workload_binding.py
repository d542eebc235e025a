"""Workload binding (issue 10): a token is accepted only from the workload it belongs to,
the SPIFFE id (URI SAN) of the mTLS peer certificate Envoy verified.

The certificates are generated at test time (harness/certs.py): a CA, a server
certificate for 127.0.0.1, and client certificates whose only SAN is a SPIFFE id, as Istio
issues them. The listener requires a client certificate signed by the CA
(``DownstreamTlsContext``, ``require_client_certificate``) in front of the MeshGuard filter.

The first half proves the harness itself (no binding configured): the mTLS listener
refuses clients without a certificate or with one from another CA, and the upstream sees
the verified URI SAN in ``x-forwarded-client-cert``. The second half is the control,
for both documented ways to name a token's workload (a claim holding the SPIFFE id, or an
``agents`` map from agent id to SPIFFE id).
"""

from __future__ import annotations

import http.client
import ssl
import time
from dataclasses import dataclass
from typing import Callable

import pytest

from harness import certs, expect, policies
from harness.client import MeshClient
from harness.envoy import Listener

ORDERS = certs.spiffe_id("agents", "orders-bot")
BILLING = certs.spiffe_id("agents", "billing-bot")
ALLOW_READS = [{"name": "reads", "action": "read:*", "effect": "allow"}]


def xfcc_uris(seen_headers: dict) -> list[str]:
    """The URI= elements of the x-forwarded-client-cert header the upstream received."""
    value = seen_headers.get("x-forwarded-client-cert", "")
    return [part.split("=", 1)[1].strip('"') for part in value.split(";") if part.startswith("URI=")]


@pytest.fixture(scope="module")
def mtls(tmp_path_factory) -> certs.MtlsMaterial:
    return certs.MtlsMaterial.generate(tmp_path_factory.mktemp("mtls"), [ORDERS, BILLING])


# --- the harness: certificates and the mTLS listener ------------------------------------

def test_certificates_have_the_spiffe_shape_and_are_fast(tmp_path):
    start = time.perf_counter()
    material = certs.MtlsMaterial.generate(tmp_path, [ORDERS, BILLING])
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"generating a CA, a server and two client certificates took {elapsed:.2f}s"
    ca_key = material.ca.cert.public_key()
    for spiffe, issued in material.clients.items():
        assert issued.uri_sans == [spiffe], "exactly one URI SAN, the SPIFFE id"
        assert issued.cert.issuer == material.ca.cert.subject
        ca_key.verify(issued.cert.signature, issued.cert.tbs_certificate_bytes,
                      certs.ec.ECDSA(issued.cert.signature_hash_algorithm))
        bc = issued.cert.extensions.get_extension_for_class(certs.x509.BasicConstraints).value
        assert bc.ca is False
        eku = issued.cert.extensions.get_extension_for_class(certs.x509.ExtendedKeyUsage).value
        assert list(eku) == [certs.ExtendedKeyUsageOID.CLIENT_AUTH]
    server_san = material.server.cert.extensions.get_extension_for_class(certs.x509.SubjectAlternativeName).value
    assert [str(ip) for ip in server_san.get_values_for_type(certs.x509.IPAddress)] == ["127.0.0.1"]
    assert material.server.uri_sans == []
    with pytest.raises(ValueError):
        material.ca.workload("https://not-spiffe.example/agents")


@pytest.fixture(scope="module")
def passthrough(request, launch, keyring, mtls):
    """mTLS in front of no filter (``pass``) and in front of MeshGuard with an allow rule
    and no binding (``filtered``)."""
    tls = certs.downstream_tls_context(mtls)
    cfg = policies.as_json(policies.controls_config(keyring.jwks, ALLOW_READS))
    return launch(request, "mtls-harness", {
        "pass": Listener("pass", 0, cfg, tls=tls, meshguard=False),
        "filtered": Listener("filtered", 0, cfg, tls=tls),
    })


def test_mtls_listener_forwards_the_verified_spiffe_id(passthrough, mtls, upstream):
    port = passthrough.clients["pass"].port
    for spiffe in (ORDERS, BILLING):
        resp = MeshClient(port, tls=mtls.client_context(spiffe)).call(
            headers={"x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/evil/sa/forged"})
        assert resp.status == 200, resp
        assert xfcc_uris(resp.upstream_headers) == [spiffe], "Envoy's verified URI SAN only, the forged one gone"
        assert upstream.received(resp.request_id)


@pytest.mark.parametrize("client", ["no-certificate", "other-ca"])
def test_mtls_listener_refuses_unverified_clients(passthrough, mtls, upstream, client):
    ctx = mtls.client_context(None) if client == "no-certificate" else mtls.foreign_client_context(ORDERS)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        MeshClient(passthrough.clients["pass"].port, tls=ctx).call()


def test_mtls_listener_in_front_of_meshguard(passthrough, mtls, tokens):
    resp = MeshClient(passthrough.clients["filtered"].port, tls=mtls.client_context(ORDERS)).call(
        tokens.token("orders-bot", "verified"), action="read:orders")
    seen = expect.forwarded(resp, agent="orders-bot", tier="verified", action="read:orders")
    assert xfcc_uris(seen) == [ORDERS]


# --- the control --------------------------------------------------------------------------

@dataclass
class Shape:
    """One documented way to bind tokens: the `workload_binding` section and how a token
    names its workload (`bound` mints a token of `agent` bound to `spiffe`; `unbound`
    one that names no workload)."""

    section: dict
    bound: Callable[..., str]
    unbound: Callable[..., str]


SHAPES: dict[str, Callable[[], Shape]] = {
    "claim": lambda: Shape(
        {"claim": "spiffe_id"},
        lambda tokens, agent, spiffe: tokens.token(agent, "verified", spiffe_id=spiffe),
        lambda tokens, agent: tokens.token(agent, "verified"),
    ),
    "agents-map": lambda: Shape(
        {"agents": {"orders-bot": ORDERS, "billing-bot": BILLING}},
        # The map decides, so the token carries nothing extra; `spiffe` must be the map's.
        lambda tokens, agent, spiffe: tokens.token(agent, "verified"),
        lambda tokens, agent: tokens.token(agent, "verified"),
    ),
}


@dataclass
class Bound:
    shape: Shape
    mtls_port: int
    plain: MeshClient
    material: certs.MtlsMaterial

    def over(self, spiffe: str) -> MeshClient:
        return MeshClient(self.mtls_port, tls=self.material.client_context(spiffe))


@pytest.fixture(scope="module", params=sorted(SHAPES))
def bound(request, launch, keyring, mtls) -> Bound:
    """Listener ``mtls``: mTLS + binding; listener ``plain``: no TLS, binding with
    ``required: true`` (a connection without a peer certificate can never be bound)."""
    shape = SHAPES[request.param]()
    on_mtls = policies.controls_config(keyring.jwks, ALLOW_READS, identity_workload_binding=shape.section)
    on_plain = policies.controls_config(keyring.jwks, ALLOW_READS,
                                        identity_workload_binding={**shape.section, "required": True})
    dep = launch(request, f"binding-{request.param}", {
        "mtls": Listener("mtls", 0, policies.as_json(on_mtls), tls=certs.downstream_tls_context(mtls)),
        "plain": policies.as_json(on_plain),
    }, concurrency=2)
    return Bound(shape, dep.clients["mtls"].port, dep.clients["plain"], mtls)


def test_token_from_its_own_workload_is_allowed(bound, tokens, collector):
    token = bound.shape.bound(tokens, "orders-bot", ORDERS)
    for _ in range(3):  # also once its verification is cached
        resp = bound.over(ORDERS).call(token, action="read:orders")
        seen = expect.forwarded(resp, agent="orders-bot", tier="verified", action="read:orders")
        assert xfcc_uris(seen) == [ORDERS]
    assert collector.by_request_id(resp.request_id)["attributes"]["meshguard.decision"] == "allow"


def test_token_presented_by_another_workload_is_refused(bound, tokens, upstream, collector):
    token = bound.shape.bound(tokens, "orders-bot", ORDERS)
    expect.forwarded(bound.over(ORDERS).call(token, action="read:orders"), agent="orders-bot", tier="verified",
                     action="read:orders")  # accepted (and cached) from its own workload first
    resp = bound.over(BILLING).call(token, action="read:orders")
    expect.identity_failure(resp, "wrong_workload")
    assert not upstream.received(resp.request_id)
    attrs = collector.by_request_id(resp.request_id)["attributes"]
    assert attrs["meshguard.identity.error"] == "wrong_workload"
    assert attrs["meshguard.decision"] == "deny"


def test_the_other_workload_with_its_own_token_is_allowed(bound, tokens):
    token = bound.shape.bound(tokens, "billing-bot", BILLING)
    expect.forwarded(bound.over(BILLING).call(token, action="read:invoices"), agent="billing-bot", tier="verified",
                     action="read:invoices")
    expect.identity_failure(bound.over(ORDERS).call(token, action="read:invoices"), "wrong_workload")


def test_bound_token_over_plain_text_is_refused(bound, tokens, upstream):
    resp = bound.plain.call(bound.shape.bound(tokens, "orders-bot", ORDERS), action="read:orders")
    expect.identity_failure(resp, "wrong_workload")
    assert not upstream.received(resp.request_id)


def test_binding_required_refuses_unbound_tokens_without_mtls(bound, tokens):
    expect.identity_failure(bound.plain.call(bound.shape.unbound(tokens, "free-agent"), action="read:orders"),
                            "wrong_workload")


def test_unbound_token_is_not_bound_unless_required(bound, tokens):
    """Without ``required``, binding applies to tokens that name a workload; others pass
    (whatever certificate the connection has)."""
    expect.forwarded(bound.over(BILLING).call(bound.shape.unbound(tokens, "free-agent"), action="read:orders"),
                     agent="free-agent", tier="verified", action="read:orders")
