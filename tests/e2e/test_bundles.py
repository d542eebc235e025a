"""Signed policy bundles in the real Envoy (issue 4).

A document server plays the bundle source; bundles are signed in Python (an independent
Ed25519 + canonical-JSON implementation). The filter polls every second. The Envoy runs
two workers so the "one fetch per interval per Envoy" promise is actually exercised.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from harness import bundles, keys
from harness.cli import require
from harness.client import MeshClient
from harness.docserver import DocServer
from harness.envoy import Envoy, Listener, add_cluster, render
from harness.poll import wait_until
from harness.ports import free_port

BUNDLE_PATH = "/bundles/current.json"
HEALTH = "/.meshguard/health"
INTERVAL_S = 1

INLINE_POLICY = "name: inline-policy\nrules:\n  - {name: inline-read, action: 'read:*', effect: allow}\n"


# A signed bundle with a typo in a condition's name: rejected like a bad signature.
TYPO_POLICY = [{"name": "bundle-deny", "version": 1, "rules": [
    {"name": "bundle-deny-read", "action": "read:*", "effect": "deny"},
    {"name": "typo", "action": "write:*", "effect": "deny", "conditions": ["time.hours >= 0"]},
]}]


def bundle_policy(name: str, effect: str) -> list[dict]:
    return [{"name": name, "version": 1, "rules": [{"name": f"{name}-read", "action": "read:*", "effect": effect}]}]


@pytest.fixture(scope="module")
def signer() -> bundles.BundleSigner:
    return bundles.BundleSigner.generate("bundle-2026")


@pytest.fixture(scope="module")
def server():
    s = DocServer().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def deployment(request, tmp_path_factory, keyring, collector, upstream, server, signer):
    cfg = {
        "identity": {"issuers": [{"issuer": keys.ISSUER, "audiences": [keys.AUDIENCE], "jwks": keyring.jwks}]},
        "policy_yaml": INLINE_POLICY,
        "bundle": {"cluster": "meshguard-bundles", "path": BUNDLE_PATH, "public_keys": [signer.public_key_b64],
                   "interval_seconds": INTERVAL_S, "max_bytes": 64 * 1024},
        "audit": {"cluster": "meshguard-collector"},
    }
    agents_port, other_port = free_port(), free_port()
    cfg["status"] = {"path": HEALTH, "ports": [agents_port]}
    listeners = [Listener("agents", agents_port, json.dumps(cfg)), Listener("other", other_port, json.dumps(cfg))]
    boot = render(listeners, admin_port=free_port(), upstream_port=upstream.port, collector_port=collector.port)
    add_cluster(boot, "meshguard-bundles", server.port)
    envoy = Envoy("bundles", boot, tmp_path_factory.mktemp("envoy-bundles"), concurrency=2)
    request.addfinalizer(envoy.stop)
    envoy.start()
    return envoy, MeshClient(listeners[0].port), MeshClient(listeners[1].port)


def decision_policy(client: MeshClient, tokens) -> tuple[int, str | None]:
    """Status and deciding policy of a verified agent's read (from the 403 body or the
    upstream's view: allowed requests carry no policy header, so allow → policy from audit
    is not needed here; the tests use allow/deny bundles to tell sources apart)."""
    r = client.call(tokens.token("agent-b", "verified"), action="read:orders")
    return r.status, (r.json().get("policy") if r.status == 403 else None)


def health(client: MeshClient) -> dict:
    r = client.call(None, path=HEALTH)
    assert r.status in (200, 503), r
    return r.json()


def publish(server: DocServer, doc) -> None:
    body = doc if isinstance(doc, bytes) else json.dumps(doc, indent=2).encode()
    server.serve(BUNDLE_PATH, body)


def test_lifecycle(deployment, server, signer, tokens):
    envoy, client, other = deployment

    # 1. No bundle yet (404): the inline policy applies, health says degraded.
    assert decision_policy(client, tokens) == (200, None)
    h = wait_until(lambda: (lambda h: h if "404" in (h.get("lastError") or "") else None)(health(client)),
                   what="the first fetch (404) reported")
    assert h["policySource"] == "inline" and h["lastSync"] == ""
    assert h["status"] == "degraded" and h["lastSyncSuccess"] is False
    assert h["gatewayReachable"] is True, "404 is an answer"

    # 2. A signed bundle denying reads replaces the inline policy within an interval or two.
    publish(server, signer.sign(bundles.bundle(1, bundle_policy("bundle-deny", "deny"))))
    wait_until(lambda: decision_policy(client, tokens) == (403, "bundle-deny"), what="bundle v1 in force")
    h = wait_until(lambda: (lambda h: h if h["bundleVersion"] == "1" and h["lastSyncSuccess"] else None)(health(client)),
                   what="health shows v1")
    assert h["status"] == "healthy" and h["policySource"] == "bundle" and h["cachedPolicies"] == 1
    assert h["lastSync"].endswith("Z") and h["bundleAge"] != ""
    assert envoy.stat("meshguard.bundle.version") == 1

    # 3. A newer version is applied.
    publish(server, signer.sign(bundles.bundle(2, bundle_policy("bundle-allow", "allow"), agents=[{"id": "agent-b"}])))
    wait_until(lambda: decision_policy(client, tokens) == (200, None), what="bundle v2 in force")
    wait_until(lambda: health(client)["bundleVersion"] == "2", what="health shows v2")
    assert health(client)["cachedAgents"] == 1

    rejected_before = envoy.stat("meshguard.bundle.rejected")

    # 4. Tampered, older, unsigned, oversized and non-JSON bundles are rejected; v2 keeps enforcing.
    bad = [
        bundles.tampered(signer.sign(bundles.bundle(3, bundle_policy("bundle-deny", "deny")))),
        signer.sign(bundles.bundle(1, bundle_policy("bundle-deny", "deny"))),  # rollback
        bundles.bundle(4, bundle_policy("bundle-deny", "deny")),  # unsigned
        bundles.BundleSigner.generate("intruder").sign(bundles.bundle(5, bundle_policy("bundle-deny", "deny"))),
        signer.sign(bundles.bundle(6, bundle_policy("bundle-deny", "deny"), agents=[{"pad": "x" * 70_000}])),
        b"<html>not a bundle</html>",
        b'{"format": "meshguard-bundle/v1", "version": 7',  # truncated
        # signed and newer, but a condition names `time.hours` (a typo): were it accepted,
        # its unconditional deny would take over
        signer.sign(bundles.bundle(8, TYPO_POLICY)),
    ]
    for n, doc in enumerate(bad, start=1):
        publish(server, doc)
        wait_until(lambda: envoy.stat("meshguard.bundle.rejected") >= rejected_before + n, what=f"rejection #{n}")
        assert decision_policy(client, tokens) == (200, None), f"bad bundle #{n} changed the decision"
    h = health(client)
    assert h["bundleVersion"] == "2" and h["lastSyncSuccess"] is False and h["lastError"]
    assert "bundle.policies[0].rules[1].conditions[0]" in h["lastError"], h
    typo = ('bundle.policies[0].rules[1].conditions[0]: condition "time.hours >= 0": '
            "unknown name `time.hours` at column 1 (valid names: time.hour,")
    # Envoy writes its log file in batches: poll for the line
    wait_until(lambda: typo in envoy.log_text(), 15, what="the typo's rejection in Envoy's log")

    # 5. The server failing (500) or going away changes nothing but the health report.
    server.serve(BUNDLE_PATH, b"oops", status=500)
    failures = envoy.stat("meshguard.bundle.fetch_failures")
    wait_until(lambda: envoy.stat("meshguard.bundle.fetch_failures") > failures, what="500 counted")
    server.stop()
    wait_until(lambda: health(client)["gatewayReachable"] is False, what="unreachable reported")
    assert decision_policy(client, tokens) == (200, None)
    assert health(client)["bundleVersion"] == "2"
    server.start()

    # 6. The status endpoint is answered only on the configured listener.
    r = other.call(None, path=HEALTH)
    assert r.status == 401, "on another listener the path is just a request (and needs a token)"


def test_one_fetch_per_interval_per_envoy(deployment, server, signer):
    """Two workers plus the main thread, one poll per interval: over 5 s the server sees
    about 5 fetches (jitter ±10%), not 10 or 15."""
    publish(server, signer.sign(bundles.bundle(2, bundle_policy("bundle-allow", "allow"))))
    start = server.count(BUNDLE_PATH)
    time.sleep(5.0)
    fetched = server.count(BUNDLE_PATH) - start
    assert 3 <= fetched <= 7, f"{fetched} fetches in 5 s with a 1 s interval"
    assert server.not_modified.get(BUNDLE_PATH, 0) > 0, "If-None-Match/ETag avoids re-sending"


@pytest.fixture(scope="module")
def configmap_flow(request, tmp_path_factory, keyring, collector, upstream):
    """Flow (b) of istio/README.md with the real tools: `meshguard bundle sign` writes the
    bundle into a directory laid out like a mounted ConfigMap (`..data` symlink swapped on
    update), `meshguard bundle serve` serves it, the filter polls it. No VM reload."""
    cli = require()
    work = tmp_path_factory.mktemp("configmap")
    subprocess.run([cli, "keygen", "--alg", "EdDSA", "--kid", "bundle-cm", "--out-dir", work],
                   check=True, capture_output=True)
    mount = work / "mount"
    mount.mkdir()

    def publish(version: int, effect: str) -> None:
        """Kubernetes' atomic ConfigMap update: a new timestamped dir, then the `..data`
        symlink is replaced by a rename; `current.json` links through `..data`."""
        policy = work / f"policy-{version}.yaml"
        policy.write_text(f"name: cm-{effect}\nrules:\n  - {{name: cm-read, action: 'read:*', effect: {effect}}}\n")
        stamp = mount / f"..{version}"
        stamp.mkdir()
        subprocess.run([cli, "bundle", "sign", "--key", work / "bundle-cm.key.json", "--version", str(version),
                        policy, "-o", stamp / "current.json"], check=True, capture_output=True)
        tmp_link = mount / "..data_tmp"
        tmp_link.symlink_to(stamp.name)
        os.replace(tmp_link, mount / "..data")
        if not (mount / "current.json").is_symlink():
            (mount / "current.json").symlink_to("..data/current.json")

    publish(1, "deny")
    port = free_port()
    serve = subprocess.Popen([cli, "bundle", "serve", "--dir", mount, "--listen", f"127.0.0.1:{port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    request.addfinalizer(lambda: (serve.terminate(), serve.wait(10)))
    jwks = json.loads((work / "bundle-cm.jwks.json").read_text())
    cfg = {
        "identity": {"issuers": [{"issuer": keys.ISSUER, "audiences": [keys.AUDIENCE], "jwks": keyring.jwks}]},
        "bundle": {"cluster": "meshguard-bundles", "path": "/bundles/current.json",
                   "public_keys": jwks["keys"], "interval_seconds": 1},
    }
    listener = Listener("agents", free_port(), json.dumps(cfg))
    boot = render([listener], admin_port=free_port(), upstream_port=upstream.port, collector_port=collector.port)
    add_cluster(boot, "meshguard-bundles", port)
    envoy = Envoy("configmap", boot, tmp_path_factory.mktemp("envoy-configmap"))
    request.addfinalizer(envoy.stop)
    envoy.start()
    return MeshClient(listener.port), publish


def test_signed_bundle_served_from_a_configmap_mount(configmap_flow, tokens):
    client, publish = configmap_flow
    wait_until(lambda: decision_policy(client, tokens) == (403, "cm-deny"), what="CLI-signed bundle v1")
    publish(2, "allow")
    wait_until(lambda: decision_policy(client, tokens) == (200, None), what="v2 after the symlink swap")
