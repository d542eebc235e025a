"""Fixtures for the end-to-end suite: keys and tokens, the real collector and upstream,
and Envoys running the built module with a given plugin configuration.

Envoy takes a few seconds to start (V8 compiles the module), so configurations used by
several test modules are session-scoped and shared; a module with a configuration of its
own starts its Envoy at module scope. Every test tells its requests apart by
``x-request-id``, so sharing Envoys and the collector is safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest

from harness import keys, policies
from harness.client import MeshClient
from harness.collector import Collector
from harness.envoy import WASM, Envoy, Listener, render
from harness.ports import free_port
from harness.upstream import EchoUpstream


def pytest_sessionstart(session):
    if not WASM.exists():
        pytest.exit(f"{WASM} is missing: cargo build --release --target wasm32-wasip1 -p meshguard-filter", 2)


@dataclass
class Keyring:
    """The issuer's keys (all in its JWKS) and keys it does not know."""

    es256: keys.SigningKey
    eddsa: keys.SigningKey
    rs256: keys.SigningKey
    ps256: keys.SigningKey
    stranger_ec: keys.SigningKey
    stranger_rsa: keys.SigningKey

    @property
    def jwks(self) -> dict:
        return keys.jwks(self.es256, self.eddsa, self.rs256, self.ps256)


@pytest.fixture(scope="session")
def keyring() -> Keyring:
    return Keyring(
        es256=keys.generate("ES256", "es256-1"),
        eddsa=keys.generate("EdDSA", "ed25519-1"),
        # No "alg" in the JWK: an RSA key verifies RS256 by default.
        rs256=keys.generate("RS256", "rsa-1", jwk_alg=keys.OMIT),
        ps256=keys.generate("PS256", "rsa-pss-1"),
        stranger_ec=keys.generate("ES256", "stranger-ec"),
        stranger_rsa=keys.generate("RS256", "stranger-rsa"),
    )


@pytest.fixture(scope="session")
def tokens(keyring: Keyring) -> keys.TokenFactory:
    """Tokens from the configured issuer, signed with its ES256 key by default."""
    return keys.TokenFactory(keyring.es256)


@pytest.fixture(scope="session")
def collector():
    c = Collector().start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def upstream():
    u = EchoUpstream().start()
    yield u
    u.stop()


@dataclass
class Deployment:
    """A running Envoy and a client per listener."""

    envoy: Envoy
    clients: dict[str, MeshClient]

    @property
    def client(self) -> MeshClient:
        """The first (often only) listener's client."""
        return next(iter(self.clients.values()))


Launcher = Callable[..., Deployment]


@pytest.fixture(scope="session")
def launch(tmp_path_factory, collector: Collector, upstream: EchoUpstream) -> Launcher:
    """``launch(request, name, {listener: plugin_config_text}, collector_port=None,
    envoy_normalisation=True)`` starts an Envoy whose lifetime is the calling fixture's
    scope (stopped by PID in a finalizer, also when start-up fails);
    ``envoy_normalisation=False`` runs it without Envoy's path normalisation."""

    def _launch(request, name: str, listeners: dict[str, str], *, collector_port: int | None = None,
                envoy_normalisation: bool = True) -> Deployment:
        ls = [Listener(n, free_port(), text) for n, text in listeners.items()]
        cfg = render(ls, admin_port=free_port(), upstream_port=upstream.port,
                     collector_port=collector.port if collector_port is None else collector_port,
                     envoy_normalisation=envoy_normalisation)
        envoy = Envoy(name, cfg, tmp_path_factory.mktemp(f"envoy-{name}"))
        request.addfinalizer(envoy.stop)
        envoy.start()
        return Deployment(envoy, {l.name: MeshClient(l.port) for l in ls})

    return _launch


@pytest.fixture(scope="session")
def seed(request, launch: Launcher, keyring: Keyring) -> Deployment:
    """The committed plugin configuration (YAML) with the test keys: listener ``enforce``,
    and the same configuration in audit mode on listener ``audit``."""
    return launch(request, "seed", {
        "enforce": policies.as_yaml(policies.seed_config(keyring.jwks)),
        "audit": policies.as_yaml(policies.seed_config(keyring.jwks, mode="audit")),
    })


@pytest.fixture(scope="session")
def rich_config(keyring: Keyring) -> dict:
    return policies.rich_config(keyring.jwks)


@pytest.fixture(scope="session")
def rich(request, launch: Launcher, rich_config: dict) -> Deployment:
    """The rich policy set (JSON plugin configuration)."""
    return launch(request, "rich", {"enforce": policies.as_json(rich_config)})
