"""The official MCP conformance suite (``@modelcontextprotocol/conformance``, server side)
against ``@modelcontextprotocol/server-everything``: directly, and through Envoy, must give
the same result for every check of every scenario.

Three paths through one Envoy:

- ``plain``: Envoy without the MeshGuard filter (the transport baseline: SSE streams,
  session headers, Host and Origin headers pass through Envoy unchanged);
- ``mg-route``: the MeshGuard filter with an allow-all policy, ``/mcp`` mapped by a
  route (what a filter without MCP body parsing accepts);
- ``mg-mcp`` (its own Envoy, since a filter that rejects ``actions.mcp`` fails the whole
  start): the same with ``actions.mcp.paths: ["/mcp"]``, so every JSON-RPC body is parsed
  and decided.

The conformance client cannot send an ``Authorization`` header, so each MeshGuard
listener sits behind a pass-through listener of the same Envoy whose route adds
``Authorization: Bearer <agent token>`` on its way to the MeshGuard listener (a header added
by a route of the MeshGuard listener itself would come too late: the router runs after
the filter). The suite talks to the front listener.
"""

from __future__ import annotations

import pytest

from harness import mcp_policies, node, policies
from harness.client import http_request
from harness.envoy import Listener
from harness.ports import free_port

AGENT = "conformance-agent"


@pytest.fixture(scope="module")
def everything(tmp_path_factory):
    server = node.ServerEverything(tmp_path_factory.mktemp("server-everything")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def direct(everything, tmp_path_factory):
    results, output = node.run_conformance(everything.url, tmp_path_factory.mktemp("conformance-direct"))
    print(f"\nconformance direct: {node.summary(results)}")
    return results


def _authorized_front(name: str, target_port: int, token: str) -> tuple[Listener, dict[str, int]]:
    """A listener without MeshGuard that adds the agent's token and forwards to `target_port`."""
    cluster = f"{name}-target"
    return (Listener(name, free_port(), cluster=cluster, route_timeout="0s", meshguard=False,
                     request_headers_to_add={"authorization": f"Bearer {token}"}),
            {cluster: target_port})


def _deployment(request, launch_listeners, everything, tokens, keyring, *, name: str, body_parsing: bool | None):
    """An Envoy with the listener under test and, for MeshGuard, its token-adding front.
    Returns it and the URL the suite should use."""
    clusters = {"everything": everything.port}
    if body_parsing is None:
        listeners = [Listener("plain", free_port(), cluster="everything", route_timeout="0s", meshguard=False)]
        entry = "plain"
    else:
        cfg = mcp_policies.allow_all_config(keyring.jwks, body_parsing=body_parsing)
        guarded = Listener("guarded", free_port(), policies.as_yaml(cfg), cluster="everything", route_timeout="0s")
        front, front_clusters = _authorized_front("front", guarded.port, tokens.token(f"{AGENT}-{name}", mcp_policies.TIER))
        listeners = [guarded, front]
        clusters.update(front_clusters)
        entry = "front"
    deployment = launch_listeners(request, name, listeners, clusters=clusters)
    return deployment, deployment.url(entry)


def _compare(direct: dict, via: dict, label: str) -> None:
    assert set(via) == set(direct), f"{label}: scenarios differ: {sorted(set(direct) ^ set(via))}"
    differences = {s: {"direct": direct[s], label: via[s]} for s in direct if direct[s] != via[s]}
    assert not differences, f"{label}: results differ from the direct run: {differences}"


@pytest.mark.parametrize("variant,body_parsing", [
    ("plain", None),
    ("mg-route", False),
    pytest.param("mg-mcp", True),
])
def test_conformance_through_envoy_matches_direct(request, variant, body_parsing, direct, everything,
                                                  launch_listeners, tokens, keyring, tmp_path_factory, collector):
    deployment, url = _deployment(request, launch_listeners, everything, tokens, keyring,
                      name=f"conformance-{variant}", body_parsing=body_parsing)
    via, output = node.run_conformance(url, tmp_path_factory.mktemp(f"conformance-{variant}"))
    print(f"\nconformance {variant}: {node.summary(via)}")
    # The direct run must have exercised the suite (a broken install gives no scenarios).
    assert node.summary(direct)["scenarios"] >= 25, direct
    assert node.summary(direct)["passed"] >= 10, direct
    _compare(direct, via, variant)
    if body_parsing is not None:
        # The suite's traffic really went through the filter, as the agent...
        decided = collector.wait_for(lambda e: e["attributes"].get("meshguard.agent.id") == f"{AGENT}-conformance-{variant}"
                                     and e["attributes"].get("meshguard.decision") == "allow", count=20)
        assert len(decided) >= 20
        # ...and the guarded listener itself refuses a caller without the token.
        bare = http_request(deployment.ports["guarded"], "POST", "/mcp",
                            {"content-type": "application/json", "accept": "application/json, text/event-stream"},
                            b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
        assert bare.status == 401, bare
