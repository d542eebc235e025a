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

from harness import keys, mcp, mcp_policies, policies
from harness.client import MeshClient
from harness.collector import Collector
from harness.envoy import WASM, Envoy, Listener, add_cluster, render
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
    """``launch(request, name, {listener: plugin_config_text}, collector_port=None)``
    starts an Envoy whose lifetime is the calling fixture's scope (stopped by PID in a
    finalizer, also when start-up fails)."""

    def _launch(request, name: str, listeners: dict[str, str], *, collector_port: int | None = None) -> Deployment:
        ls = [Listener(n, free_port(), text) for n, text in listeners.items()]
        cfg = render(ls, admin_port=free_port(), upstream_port=upstream.port,
                     collector_port=collector.port if collector_port is None else collector_port)
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


@dataclass
class ListenerSet:
    """A running Envoy built from explicit `Listener`s (see harness.envoy.Listener), with
    the port of each listener by name."""

    envoy: Envoy
    ports: dict[str, int]

    def url(self, listener: str, path: str = "/mcp") -> str:
        return f"http://127.0.0.1:{self.ports[listener]}{path}"


@pytest.fixture(scope="session")
def launch_listeners(tmp_path_factory, collector: Collector, upstream: EchoUpstream):
    """``launch_listeners(request, name, [Listener, ...], clusters={name: port})`` starts an
    Envoy with these listeners and extra upstream clusters (for MCP servers, JSON-RPC
    upstreams, or another listener of the same Envoy), stopped by PID in a finalizer of
    the calling fixture. ``upstream`` stays the shared echo server."""

    def _launch(request, name: str, listeners: list[Listener], *, clusters: dict[str, int] | None = None,
                collector_port: int | None = None) -> ListenerSet:
        cfg = render(listeners, admin_port=free_port(), upstream_port=upstream.port,
                     collector_port=collector.port if collector_port is None else collector_port)
        for cluster, port in (clusters or {}).items():
            add_cluster(cfg, cluster, port)
        envoy = Envoy(name, cfg, tmp_path_factory.mktemp(f"envoy-{name}"))
        request.addfinalizer(envoy.stop)
        envoy.start()
        return ListenerSet(envoy, {l.name: l.port for l in listeners})

    return _launch


@dataclass
class McpStack:
    """The MCP/A2A/decision-API deployment: the SDK server answering JSON and another
    answering SSE (both with the catalog tools, answers sent in 1 KB pieces), a JSON-RPC echo, and one Envoy whose
    listeners all carry `mcp_policies.mcp_config`: ``json`` and ``sse`` (to the SDK
    servers), ``rpc`` (to the echo: MCP batches and A2A) and ``small`` (to the JSON
    server, with ``actions.mcp.max_body_bytes`` = `mcp_policies.SMALL_BODY_LIMIT`)."""

    servers: dict
    echo: mcp.JsonRpcEcho
    listeners: ListenerSet

    def url(self, listener: str, path: str = "/mcp") -> str:
        return self.listeners.url(listener, path)

    def port(self, listener: str) -> int:
        return self.listeners.ports[listener]



@pytest.fixture(scope="session")
def mcp_stack(request, tmp_path_factory, launch_listeners, keyring: Keyring) -> McpStack:
    workdir = tmp_path_factory.mktemp("mcp-stack")
    servers: dict = {}
    echo = mcp.JsonRpcEcho().start()
    request.addfinalizer(echo.stop)
    for kind, json_response in (("json", True), ("sse", False)):
        # ~38 KB tools/list answers sent in 1 KB pieces: the filter must reassemble them.
        server = mcp.McpUpstream(workdir, json_response=json_response, extra_tools=mcp_policies.CATALOG_TOOLS,
                                 chunk_bytes=1024)
        request.addfinalizer(server.stop)
        servers[kind] = server.start()
    full = policies.as_yaml(mcp_policies.mcp_config(keyring.jwks))
    small = policies.as_yaml(mcp_policies.mcp_config(keyring.jwks, max_body_bytes=mcp_policies.SMALL_BODY_LIMIT))
    listeners = [
        Listener("json", free_port(), full, cluster="mcp-json", route_timeout="0s"),
        Listener("sse", free_port(), full, cluster="mcp-sse", route_timeout="0s"),
        Listener("rpc", free_port(), full, cluster="rpc-echo", route_timeout="0s"),
        Listener("small", free_port(), small, cluster="mcp-json", route_timeout="0s"),
    ]
    deployment = launch_listeners(request, "mcp", listeners, clusters={
        "mcp-json": servers["json"].port, "mcp-sse": servers["sse"].port, "rpc-echo": echo.port})
    return McpStack(servers, echo, deployment)
