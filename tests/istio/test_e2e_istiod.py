"""End to end: the WasmPlugins of istio/ as a sidecar runs them. The pluginConfig of the
rendered manifest is turned into exactly what istiod sends (Go jsonpb JSON in a
StringValue, filter named <namespace>.<name>, root_id = pluginName, ISTIO_META_* VM
environment), and run in the real Envoy with Istio's cluster names
(`outbound|4317||meshguard-collector.meshguard.svc.cluster.local`, ...) pointing at local
servers: the harness's OTLP collector and echo upstream, and a small HTTP server standing
in for the bundle server and the issuer's JWKS endpoint.

Tokens are minted by PyJWT with the manifests' example issuer key, whose private half is
the test fixture tests/istio/fixtures/example-issuer-key.pem.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness import expect, keys
from harness.client import MeshClient
from harness.collector import Collector
from harness.envoy import Envoy
from harness.ports import free_port
from harness.upstream import EchoUpstream
from manifests import only
from meshguard_istio import bootstrap, istiod, paths

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class DocServer:
    """Serves fixed documents over HTTP/1.1 on 127.0.0.1 and remembers the Host header of
    every request (the :authority the filter sent)."""

    def __init__(self, documents: dict[str, bytes]):
        self.documents = documents
        self.hosts: dict[str, list[str]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server naming)
                server.hosts.setdefault(self.path, []).append(self.headers.get("host", ""))
                body = server.documents.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):  # keep test output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture(scope="module")
def collector():
    c = Collector().start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def upstream():
    u = EchoUpstream().start()
    yield u
    u.stop()


def eventually(attempt: Callable[[], object], timeout: float = 10.0) -> object:
    """Retries `attempt` until it stops raising AssertionError. Fetched bundles and keys
    reach each worker's VM on its next tick (shared data), shortly after the fetch."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return attempt()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _issuer(plugin: dict) -> dict:
    return plugin["spec"]["pluginConfig"]["identity"]["issuers"][0]


def _tokens(plugin: dict) -> keys.TokenFactory:
    issuer = _issuer(plugin)
    jwk = issuer["jwks"]["keys"][0]
    key = keys.load_pem(str(FIXTURES / "example-issuer-key.pem"), "ES256", jwk["kid"])
    assert key.jwk == jwk, "the fixture key is not the private half of the manifests' example JWKS key"
    return keys.TokenFactory(key, issuer=issuer["issuer"], audience=issuer["audiences"][0])


def _start_sidecar(request, tmp_path_factory, plugin: dict, upstream: EchoUpstream,
                   callouts: dict[str, tuple[int, bool]], name: str) -> tuple[Envoy, MeshClient]:
    sidecar = bootstrap.Sidecar(listener_port=free_port(), admin_port=free_port(), upstream_port=upstream.port,
                                namespace=plugin["metadata"]["namespace"], callouts=callouts)
    http_filter = {"name": f"{sidecar.namespace}.{plugin['metadata']['name']}",
                   "typed_config": istiod.wasm_filter(plugin, str(paths.WASM))}
    envoy = Envoy(name, bootstrap.render(sidecar, [http_filter]), tmp_path_factory.mktemp(name))
    request.addfinalizer(envoy.stop)
    envoy.start()
    return envoy, MeshClient(sidecar.listener_port)


# -- the default setup (istio/): inline policy from policy.yaml, inline JWKS -----------------------


@pytest.fixture(scope="module")
def plugin(rendered) -> dict:
    return only(rendered["istio"], "WasmPlugin")


@pytest.fixture(scope="module")
def sidecar(request, tmp_path_factory, plugin, module, collector, upstream) -> tuple[Envoy, MeshClient]:
    audit_cluster = plugin["spec"]["pluginConfig"]["audit"]["cluster"]
    assert audit_cluster == "outbound|4317||meshguard-collector.meshguard.svc.cluster.local"
    return _start_sidecar(request, tmp_path_factory, plugin, upstream, {audit_cluster: (collector.port, True)},
                          "istio-sidecar")


def test_envoy_runs_the_istiod_rendering(sidecar, plugin):
    envoy, _ = sidecar
    wasm = json.dumps(envoy.cfg["static_resources"]["listeners"][0])
    text = istiod.plugin_config_json(plugin["spec"]["pluginConfig"])
    assert json.dumps(text) in wasm
    assert text.startswith('{"actions":{') and "time.hour \\u003e= 9" in text


def test_allowed_request_is_forwarded_and_audited(sidecar, plugin, collector):
    _, client = sidecar
    resp = client.call(_tokens(plugin).token("mesh-agent", "verified"), path="/v1/orders/7")
    expect.forwarded(resp, agent="mesh-agent", tier="verified", action="read:orders")
    event = collector.by_request_id(resp.request_id)  # through outbound|4317||meshguard-collector...
    assert event["attributes"]["meshguard.decision"] == "allow"
    assert event["attributes"]["meshguard.policy"] == "verified-agent-policy"


def test_denied_request_gets_403(sidecar, plugin, upstream):
    _, client = sidecar
    resp = client.call(_tokens(plugin).token("mesh-agent", "verified"), method="DELETE", path="/v1/orders/7")
    expect.denied(resp, policy="verified-agent-policy", rule="rules[2]",
                  reason="Verified agents cannot delete resources", agent="mesh-agent", action="delete:orders")
    assert resp.json()["bundleVersion"].startswith("inline-")
    assert not upstream.received(resp.request_id)


def test_callers_cannot_name_their_own_action(sidecar, plugin, upstream):
    """The manifests disable the action header: only the routes map requests."""
    _, client = sidecar
    resp = client.call(_tokens(plugin).token("mesh-agent", "verified"), method="POST", path="/v1/admin/reset",
                       action="read:orders")
    assert resp.status == 403 and resp.json()["decision"] == "deny"
    assert not upstream.received(resp.request_id)


def test_token_of_another_key_is_refused(sidecar, plugin):
    _, client = sidecar
    issuer = _issuer(plugin)
    stranger = keys.TokenFactory(keys.generate("ES256", "stranger"), issuer=issuer["issuer"],
                                 audience=issuer["audiences"][0])
    expect.identity_failure(client.call(stranger.token("mesh-agent", "verified"), path="/v1/orders/7"), "unknown_kid")


# -- the live overlay (istio/live): signed bundle and remote JWKS ------------------------------------


@pytest.fixture(scope="module")
def issuer_second_key() -> keys.SigningKey:
    """A key the issuer publishes only through its JWKS endpoint (not inline)."""
    return keys.generate("ES256", "issuer-remote-only")


@pytest.fixture(scope="module")
def live(request, tmp_path_factory, rendered, module, collector, upstream, issuer_second_key):
    objects = rendered["istio/live"]
    plugin = only(objects, "WasmPlugin")
    config = plugin["spec"]["pluginConfig"]
    bundle = only(objects, "ConfigMap", "meshguard-bundle")["data"]["current.json"].encode()
    issuer = _issuer(plugin)
    docs = DocServer({config["bundle"]["path"]: bundle,
                      issuer["jwks_path"]: json.dumps(keys.jwks(issuer_second_key)).encode()})
    request.addfinalizer(docs.stop)
    callouts = {config["audit"]["cluster"]: (collector.port, True),
                config["bundle"]["cluster"]: (docs.port, False),
                issuer["jwks_cluster"]: (docs.port, False)}
    envoy, client = _start_sidecar(request, tmp_path_factory, plugin, upstream, callouts, "istio-live")
    return plugin, envoy, client, docs


def test_live_bundle_replaces_the_inline_policy(live):
    plugin, envoy, client, docs = live
    envoy.wait_stat("meshguard.bundle.version", 1, timeout=20)

    def denied_by_the_bundle():
        resp = client.call(_tokens(plugin).token("mesh-agent", "verified"), method="DELETE", path="/v1/orders/7")
        body = expect.denied(resp, policy="verified-agent-policy", rule="rules[2]")
        assert not body["bundleVersion"].startswith("inline-"), body

    eventually(denied_by_the_bundle)
    bundle_cfg = plugin["spec"]["pluginConfig"]["bundle"]
    assert docs.hosts[bundle_cfg["path"]][0] == bundle_cfg["authority"]


def test_live_remote_jwks_keys_are_trusted(live, issuer_second_key):
    plugin, envoy, client, _ = live
    issuer = _issuer(plugin)
    envoy.wait_stat("meshguard.jwks.updates", 1, timeout=20)
    remote = keys.TokenFactory(issuer_second_key, issuer=issuer["issuer"], audience=issuer["audiences"][0])
    eventually(lambda: expect.forwarded(client.call(remote.token("remote-agent", "verified"), path="/v1/orders/7"),
                                        agent="remote-agent", tier="verified", action="read:orders"))
    # the inline example key is still trusted next to the fetched ones
    resp = client.call(_tokens(plugin).token("mesh-agent", "verified"), path="/v1/orders/7")
    expect.forwarded(resp, agent="mesh-agent", tier="verified", action="read:orders")
