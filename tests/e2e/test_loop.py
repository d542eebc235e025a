"""Loop detection (issue 10): the same agent repeating the same action on the same
resource with the same arguments more than ``loop.max_repeats`` times within
``loop.window_seconds`` is denied with a reason containing "loop detected", and audited.

``max_repeats: 3``: calls 1-3 pass, the 4th is denied. Each call opens a new connection,
and Envoy runs two workers, so the repeats land on both VMs: the count is shared.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from harness import expect, policies
from harness.client import MeshClient, Response

# Written against the README/issue-10 contract ahead of the filter's support.

MAX_REPEATS = 3
LOOP_REASON = "loop detected"
LOOP_RULE = "loop"
SHORT_WINDOW_S = 2
RULES = [
    {"name": "reads", "action": "read:*", "effect": "allow"},
    {"name": "tools", "action": "tool:*", "effect": "allow"},
]


@pytest.fixture(scope="module")
def deployment(request, launch, keyring):
    long_window = policies.controls_config(keyring.jwks, RULES, loop={"max_repeats": MAX_REPEATS,
                                                                       "window_seconds": 10})
    short_window = policies.controls_config(keyring.jwks, RULES, loop={"max_repeats": MAX_REPEATS,
                                                                        "window_seconds": SHORT_WINDOW_S})
    return launch(request, "loop", {"agents": policies.as_yaml(long_window),
                                    "short": policies.as_json(short_window)}, concurrency=2)


def agent() -> str:
    return f"looper-{uuid.uuid4().hex[:10]}"


def assert_loop_denial(resp: Response) -> dict:
    """403 deny by the loop rule (README "Responses": ``"rule": "loop"``, reason
    ``loop detected: …``)."""
    body = expect.refusal_body(resp, status=403, decision="deny")
    assert body["rule"] == LOOP_RULE, body
    assert LOOP_REASON in body["reason"], body
    return body


def test_fourth_identical_call_is_denied_not_before(deployment, tokens, upstream, collector):
    client = deployment.clients["agents"]
    who = agent()
    token = tokens.token(who, "verified")
    for _ in range(MAX_REPEATS):  # calls 1..max_repeats pass
        expect.forwarded(client.call(token, action="read:orders", resource="orders/42"), agent=who, tier="verified",
                         action="read:orders")
    resp = client.call(token, action="read:orders", resource="orders/42")
    assert_loop_denial(resp)
    assert not upstream.received(resp.request_id)
    attrs = collector.by_request_id(resp.request_id)["attributes"]
    assert (attrs["meshguard.decision"], attrs["meshguard.rule"]) == ("deny", LOOP_RULE)
    assert LOOP_REASON in attrs["meshguard.reason"]
    assert (attrs["meshguard.agent.id"], attrs["meshguard.action"], attrs["meshguard.resource"]) == (
        who, "read:orders", "orders/42")
    # still looping: the next identical call is denied too
    assert_loop_denial(client.call(token, action="read:orders", resource="orders/42"))


def test_other_resource_other_action_other_agent_do_not_count(deployment, tokens):
    client = deployment.clients["agents"]
    who = agent()
    token = tokens.token(who, "verified")
    for _ in range(MAX_REPEATS):
        assert client.call(token, action="read:orders", resource="orders/1").status == 200
    assert_loop_denial(client.call(token, action="read:orders", resource="orders/1"))
    # each of these is a first call of its own kind
    for resource in ("orders/2", "orders/3"):
        for _ in range(MAX_REPEATS):
            expect.forwarded(client.call(token, action="read:orders", resource=resource), agent=who,
                             tier="verified", action="read:orders")
    for _ in range(MAX_REPEATS):
        expect.forwarded(client.call(token, action="read:invoices", resource="orders/1"), agent=who,
                         tier="verified", action="read:invoices")
    other = agent()
    for _ in range(MAX_REPEATS):
        expect.forwarded(client.call(tokens.token(other, "verified"), action="read:orders", resource="orders/1"),
                         agent=other, tier="verified", action="read:orders")


def test_calls_spread_beyond_the_window_are_not_a_loop(deployment, tokens):
    """On the 2-s window listener: three calls, a pause longer than the window, three
    more: never denied; then four in a row: the 4th is."""
    client = deployment.clients["short"]
    who = agent()
    token = tokens.token(who, "verified")
    for _ in range(MAX_REPEATS):
        assert client.call(token, action="read:orders", resource="orders/9").status == 200
    time.sleep(SHORT_WINDOW_S + 0.3)
    for _ in range(MAX_REPEATS):
        assert client.call(token, action="read:orders", resource="orders/9").status == 200
    time.sleep(SHORT_WINDOW_S + 0.3)
    statuses = [client.call(token, action="read:orders", resource="orders/9").status for _ in range(MAX_REPEATS + 1)]
    assert statuses == [200] * MAX_REPEATS + [403], statuses


# --- MCP: the arguments are part of "the same call" ---------------------------------------

MCP_PATH = "/mcp"


@pytest.fixture(scope="module")
def mcp_listener(request, launch, keyring) -> MeshClient:
    cfg = policies.controls_config(keyring.jwks, RULES, loop={"max_repeats": MAX_REPEATS, "window_seconds": 10})
    cfg["actions"] = {"mcp": {"paths": [MCP_PATH]}}
    return launch(request, "loop-mcp", {"mcp": policies.as_json(cfg)}, concurrency=2).client


def tools_call(client: MeshClient, token: str, rpc_id: int, arguments: dict) -> Response:
    body = {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
            "params": {"name": "lookup_order", "arguments": arguments}}
    return client.call(token, method="POST", path=MCP_PATH, body=json.dumps(body).encode(), headers={
        "content-type": "application/json", "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2025-06-18"})


def test_mcp_same_arguments_loop_and_other_arguments_do_not(mcp_listener, tokens, upstream):
    who = agent()
    token = tokens.token(who, "verified")
    for n in range(MAX_REPEATS):
        resp = tools_call(mcp_listener, token, 100 + n, {"order": "A-1"})
        assert resp.status == 200 and upstream.received(resp.request_id), resp
    denied = tools_call(mcp_listener, token, 200, {"order": "A-1"})
    assert denied.status in (200, 403), denied
    assert not upstream.received(denied.request_id)
    rpc = denied.json()
    assert rpc["jsonrpc"] == "2.0" and rpc["id"] == 200, rpc
    assert LOOP_REASON in rpc["error"]["message"], rpc
    assert rpc["error"]["data"]["decision"] == "deny", rpc
    for n in range(MAX_REPEATS):
        resp = tools_call(mcp_listener, token, 300 + n, {"order": "B-2"})
        assert resp.status == 200 and upstream.received(resp.request_id), resp
