"""MCP governance end to end (README "MCP"): the official SDK client, Envoy with the
filter, the official SDK server (tests/harness/mcp_server.py), under the policies of
tests/harness/mcp_policies.py.

What the filter must do on ``actions.mcp.paths``:

- ``tools/list`` answers (JSON or SSE, however Envoy chunks them) list only the tools the
  agent may call, and the SDK client parses them (a wrong length would break it);
  2026-07-28 answers are marked ``cacheScope: "private"``;
- a denied ``tools/call`` reaches the client as a JSON-RPC error (or an ``isError``
  result) naming the reason, and the tool never runs; an allowed one returns the result;
  an argument condition (``context.amount``) decides both ways; an unmapped tool
  without a rule is denied;
- a batch is decided per element: only the allowed elements reach the server, every
  element gets an answer with its id;
- ``Mcp-Method``/``Mcp-Name`` disagreeing with the body: 400; a body over
  ``max_body_bytes``: 413; malformed or absurdly nested JSON: a JSON-RPC error; none of
  these reaches the server; nor does an unauthenticated request;
- ``Mcp-Session-Id`` passes untouched; audit events carry the MCP attributes.

Every scenario asserts what the server recorded, so "denied" always means "not executed".
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from harness import expect, mcp
from harness.mcp_policies import (ALLOWED_CATALOG_TOOLS, CATALOG_TOOLS, DELETE_REASON, HIDDEN, LISTED, REFUND_LIMIT,
                                  SMALL_BODY_LIMIT, TIER)
from harness.mcp_server import EXTRA_TOOL_PREFIX


AGENT = "mcp-agent"
KINDS = ["json", "sse"]

# JSON-RPC 2.0 error codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600


@pytest.fixture(scope="module")
def token(tokens) -> str:
    return tokens.token(AGENT, TIER)


def _denied(outcome: mcp.ToolOutcome) -> bool:
    return outcome.error_code is not None or bool(getattr(outcome.result, "is_error", False))


def _assert_denial(outcome: mcp.ToolOutcome, *, reason: str | None, rule: str | None) -> None:
    """A denial as the contract words it: a JSON-RPC error whose message carries the
    reason and whose data carries decision, policy, rule and traceId, or an ``isError``
    tool result whose text carries the reason."""
    assert _denied(outcome), f"expected a denial, got {outcome}"
    if reason is not None:
        assert reason in outcome.denied_text, outcome
    if outcome.error_code is not None:
        if reason is not None:
            assert reason in outcome.error_message, outcome
        data = outcome.error_data
        assert isinstance(data, dict), outcome
        assert data["decision"] == "deny", data
        assert "policy" in data and "traceId" in data, data
        if rule is not None:
            assert data["rule"] == rule, data


def _expected_listing() -> tuple[set[str], set[str]]:
    """(names that must be listed, names that must not). ``refund`` is allowed only under
    an argument condition, so whether it is listed is not asserted."""
    catalog = {f"{EXTRA_TOOL_PREFIX}{i}" for i in range(CATALOG_TOOLS)}
    allowed_catalog = set(ALLOWED_CATALOG_TOOLS)
    return set(LISTED) | allowed_catalog, set(HIDDEN) | (catalog - allowed_catalog)


# --- discovery ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", mcp.PROTOCOL_MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_tools_list_shows_only_allowed_tools(mcp_stack, token, kind, mode):
    names = mcp.sdk_list_tools(mcp_stack.url(kind), token, mode)
    must, must_not = _expected_listing()
    assert must <= set(names), f"missing allowed tools: {sorted(must - set(names))}"
    assert not (must_not & set(names)), f"listed tools the agent may not call: {sorted(must_not & set(names))}"
    assert len(names) == len(set(names)), names
    # Direct to the server, the same client sees everything: the filter did the filtering.
    assert len(mcp.sdk_list_tools(mcp_stack.servers[kind].url, token, mode)) == 4 + CATALOG_TOOLS


def test_tools_list_is_private_on_2026_07_28(mcp_stack, token):
    async def listing(url: str):
        async with mcp.sdk_session(url, token, mode=mcp.MODERN) as client:
            return await client.list_tools()

    direct = mcp.run(listing, mcp_stack.servers["json"].url)
    assert direct.cache_scope == "public"  # the server says shareable...
    filtered = mcp.run(listing, mcp_stack.url("json"))
    assert filtered.cache_scope == "private"  # ...a per-agent list is not


@pytest.mark.parametrize("kind", KINDS)
def test_raw_tools_list_answer_is_well_formed(mcp_stack, token, kind):
    raw = mcp.RawMcp(mcp_stack.port(kind), token).initialize()
    resp = raw.post(mcp.request("list-1", "tools/list", {}))
    assert resp.status == 200, resp
    if "content-length" in resp.headers:
        assert int(resp.headers["content-length"]) == len(resp.body)
    (answer,) = mcp.parse_messages(resp)
    assert answer["id"] == "list-1"
    names = [t["name"] for t in answer["result"]["tools"]]
    must, must_not = _expected_listing()
    assert must <= set(names) and not (must_not & set(names)), names
    # The kept entries are whole: schema and description as the server wrote them.
    orders = next(t for t in answer["result"]["tools"] if t["name"] == "read_orders")
    assert orders["description"] == "Lists recent orders." and orders["inputSchema"]["type"] == "object"


# --- calls --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", mcp.PROTOCOL_MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_denied_call_names_the_reason_and_never_runs(mcp_stack, token, kind, mode):
    outcome = mcp.sdk_call_tool(mcp_stack.url(kind), token, "delete_everything", {}, mode)
    _assert_denial(outcome, reason=DELETE_REASON, rule="no-delete")
    assert mcp_stack.servers[kind].tool_calls("delete_everything") == []


@pytest.mark.parametrize("mode", mcp.PROTOCOL_MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_allowed_call_returns_the_result(mcp_stack, token, kind, mode):
    server = mcp_stack.servers[kind]
    before = len(server.tool_calls("read_orders"))
    outcome = mcp.sdk_call_tool(mcp_stack.url(kind), token, "read_orders", {}, mode)
    assert not _denied(outcome), outcome
    assert json.loads(outcome.text)[0]["id"] == "o-1"
    assert len(server.tool_calls("read_orders")) == before + 1


@pytest.mark.parametrize("kind", KINDS)
def test_argument_condition_decides_both_ways(mcp_stack, token, kind):
    server = mcp_stack.servers[kind]
    small = mcp.sdk_call_tool(mcp_stack.url(kind), token, "refund",
                              {"amount": REFUND_LIMIT, "order_id": f"small-{kind}"})
    assert not _denied(small) and f"refunded {float(REFUND_LIMIT)}" in small.text, small
    big = mcp.sdk_call_tool(mcp_stack.url(kind), token, "refund",
                            {"amount": REFUND_LIMIT + 0.5, "order_id": f"big-{kind}"})
    _assert_denial(big, reason=None, rule=None)
    order_ids = [c["arguments"]["order_id"] for c in server.tool_calls("refund")]
    assert f"small-{kind}" in order_ids and f"big-{kind}" not in order_ids


@pytest.mark.parametrize("kind", KINDS)
def test_unmapped_tool_without_a_rule_is_denied(mcp_stack, token, kind):
    server = mcp_stack.servers[kind]
    unmapped = f"{EXTRA_TOOL_PREFIX}1"
    assert unmapped not in ALLOWED_CATALOG_TOOLS
    outcome = mcp.sdk_call_tool(mcp_stack.url(kind), token, unmapped, {"query": "x"})
    _assert_denial(outcome, reason=None, rule=None)
    assert server.tool_calls(unmapped) == []
    # Its neighbour with a rule for tool:<name> runs.
    allowed = mcp.sdk_call_tool(mcp_stack.url(kind), token, ALLOWED_CATALOG_TOOLS[0], {"query": "y"})
    assert not _denied(allowed), allowed
    assert server.tool_calls(ALLOWED_CATALOG_TOOLS[0])


def test_forwarded_call_carries_meshguard_headers(mcp_stack, token):
    raw = mcp.RawMcp(mcp_stack.port("json"), token).initialize()
    resp = raw.post(mcp.tool_call(5, "read_orders"), {"x-meshguard-agent": "forged"})
    assert resp.status == 200, resp
    (seen,) = mcp_stack.servers["json"].http_requests(resp.request_id)
    ours = {k: v for k, v in seen["headers"].items() if k.startswith("x-meshguard-")}
    assert ours == {"x-meshguard-agent": AGENT, "x-meshguard-trust-tier": TIER,
                    "x-meshguard-decision": "allow", "x-meshguard-action": "read:orders"}
    # The body the server got is the one the client sent.
    assert json.loads(seen["body"]) == mcp.tool_call(5, "read_orders")


def test_action_header_cannot_override_the_body(mcp_stack, token):
    raw = mcp.RawMcp(mcp_stack.port("json"), token).initialize()
    resp = raw.post(mcp.tool_call(6, "delete_everything"), {"x-meshguard-action": "read:orders"})
    (answer,) = mcp.parse_messages(resp)
    assert answer["id"] == 6 and DELETE_REASON in answer["error"]["message"], answer
    assert mcp_stack.servers["json"].http_requests(resp.request_id) == []


# --- batches ------------------------------------------------------------------------------

def test_batch_only_denied_elements_fail(mcp_stack, token):
    raw = mcp.RawMcp(mcp_stack.port("rpc"), token, protocol_version="2025-03-26")
    resp = raw.post([mcp.tool_call(1, "read_orders"), mcp.tool_call("two", "delete_everything"),
                     mcp.tool_call(3, "send_email", {"to": "a@example.com", "subject": "s", "body": "b"})])
    assert resp.status == 200, resp
    answers = mcp.by_id(mcp.parse_messages(resp))
    assert set(answers) == {1, "two", 3}, answers
    assert answers[1]["result"]["echo"]["params"]["name"] == "read_orders"
    assert answers[3]["result"]["echo"]["params"]["name"] == "send_email"
    assert "result" not in answers["two"] and DELETE_REASON in answers["two"]["error"]["message"], answers["two"]
    assert answers["two"]["error"]["data"]["rule"] == "no-delete"
    # Only the allowed elements reached the upstream.
    assert sorted(mcp_stack.echo.methods(resp.request_id), key=str) == [("tools/call", 1), ("tools/call", 3)]


def test_batch_with_every_element_denied_never_reaches_upstream(mcp_stack, token):
    raw = mcp.RawMcp(mcp_stack.port("rpc"), token, protocol_version="2025-03-26")
    resp = raw.post([mcp.tool_call(1, "delete_everything"), mcp.tool_call(2, f"{EXTRA_TOOL_PREFIX}3")])
    answers = mcp.by_id(mcp.parse_messages(resp))
    assert set(answers) == {1, 2} and all("error" in a for a in answers.values()), answers
    assert mcp_stack.echo.received(resp.request_id) == []


# --- malformed and mismatched requests -----------------------------------------------------

def _jsonrpc_error(resp, status: int | tuple[int, ...]) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status in statuses, f"expected {statuses}, got {resp}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert body["jsonrpc"] == "2.0" and isinstance(body["error"]["code"], int), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body


@pytest.mark.parametrize("headers", [
    {"mcp-method": "tools/list"},
    {"mcp-method": "tools/call", "mcp-name": "read_orders"},
], ids=["method", "name"])
def test_routing_header_disagreeing_with_body_is_400(mcp_stack, token, headers):
    raw = mcp.RawMcp(mcp_stack.port("json"), token, protocol_version=mcp.MODERN)
    resp = raw.post(mcp.tool_call(9, "delete_everything"), headers)
    body = _jsonrpc_error(resp, 400)
    assert body["id"] in (9, None), body
    assert mcp_stack.servers["json"].http_requests(resp.request_id) == []


def test_body_over_the_limit_is_413(mcp_stack, token):
    raw = mcp.RawMcp(mcp_stack.port("small"), token)
    message = mcp.tool_call(10, "send_email", {"to": "a@example.com", "subject": "big", "body": "x" * (2 * SMALL_BODY_LIMIT)})
    resp = raw.post(message)
    _jsonrpc_error(resp, 413)
    assert mcp_stack.servers["json"].http_requests(resp.request_id) == []
    # Under the limit, the same listener forwards.
    ok = raw.post(mcp.tool_call(11, "read_orders"))
    assert ok.status != 413 and mcp_stack.servers["json"].http_requests(ok.request_id), ok


def test_malformed_json_is_a_parse_error(mcp_stack, token):
    raw = mcp.RawMcp(mcp_stack.port("json"), token)
    resp = raw.post_bytes(b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": ')
    body = _jsonrpc_error(resp, (200, 400))
    assert body["error"]["code"] == PARSE_ERROR and body["id"] is None, body
    assert mcp_stack.servers["json"].http_requests(resp.request_id) == []


def test_not_a_jsonrpc_request_is_invalid(mcp_stack, token):
    raw = mcp.RawMcp(mcp_stack.port("json"), token)
    resp = raw.post({"hello": "world"})
    body = _jsonrpc_error(resp, (200, 400))
    assert body["error"]["code"] == INVALID_REQUEST, body
    assert mcp_stack.servers["json"].http_requests(resp.request_id) == []


def test_deep_nesting_is_refused_and_the_filter_survives(mcp_stack, token):
    # ~30 KB: far deeper than any parser should follow, yet well under max_body_bytes.
    depth = 5_000
    nested = b'{"a":' * depth + b"1" + b"}" * depth
    body = (b'{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"send_email","arguments":'
            + nested + b"}}")
    raw = mcp.RawMcp(mcp_stack.port("json"), token)
    resp = raw.post_bytes(body)
    err = _jsonrpc_error(resp, (200, 400))
    assert err["error"]["code"] in (PARSE_ERROR, INVALID_REQUEST), err
    assert mcp_stack.servers["json"].http_requests(resp.request_id) == []
    # The VM did not crash: the next call is decided normally.
    assert not _denied(mcp.sdk_call_tool(mcp_stack.url("json"), token, "read_orders", {}))


# --- identity and sessions ------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_unauthenticated_request_never_reaches_the_server(mcp_stack, tokens, kind):
    for token, code in ((None, "missing_token"),
                        (tokens.token(AGENT, TIER, exp=int(time.time()) - 120, iat=int(time.time()) - 700), "expired")):
        raw = mcp.RawMcp(mcp_stack.port(kind), token)
        resp = raw.post(mcp.request(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                                        "clientInfo": {"name": "anon", "version": "1"}}))
        expect.identity_failure(resp, code)
        assert mcp_stack.servers[kind].http_requests(resp.request_id) == []


def test_sdk_client_without_token_is_refused(mcp_stack):
    before = len(mcp_stack.servers["json"].http_requests())
    with pytest.raises(Exception):
        mcp.sdk_list_tools(mcp_stack.url("json"), None)
    assert len(mcp_stack.servers["json"].http_requests()) == before


def test_session_id_passes_untouched(mcp_stack, token):
    server = mcp_stack.servers["json"]
    raw = mcp.RawMcp(mcp_stack.port("json"), token).initialize()
    assert raw.session_id, "the server's Mcp-Session-Id did not reach the client"
    resp = raw.post(mcp.request(13, "tools/list", {}))
    assert resp.status == 200, resp  # the server accepted the session it issued
    (seen,) = server.http_requests(resp.request_id)
    assert seen["headers"]["mcp-session-id"] == raw.session_id
    # A session id the server never issued also arrives as sent (the server decides).
    foreign = "7f3c9a5e-session/with:odd=chars"
    raw.session_id = foreign
    resp = raw.post(mcp.request(14, "tools/list", {}))
    (seen,) = server.http_requests(resp.request_id)
    assert seen["headers"]["mcp-session-id"] == foreign


# --- audit --------------------------------------------------------------------------------

def _keys(value) -> set[str]:
    """``meshguard.mcp.argument_keys`` as a set, whether an array or a comma-separated string."""
    if isinstance(value, list):
        return set(value)
    return {k.strip() for k in str(value).split(",") if k.strip()}


def test_audit_events_carry_mcp_attributes(mcp_stack, token, collector):
    raw = mcp.RawMcp(mcp_stack.port("json"), token).initialize()
    trace = uuid.uuid4().hex
    allowed = raw.post(mcp.request("call-42", "tools/call", {
        "name": "send_email", "arguments": {"to": "a@example.com", "subject": "hi", "body": "secret text"},
        "_meta": {"traceparent": f"00-{trace}-b7ad6b7169203331-01"}}))
    assert allowed.status == 200, allowed
    event = collector.by_request_id(allowed.request_id)
    a = event["attributes"]
    assert a["meshguard.decision"] == "allow" and a["meshguard.action"] == "write:email", a
    assert a["mcp.method.name"] == "tools/call"
    assert a["gen_ai.tool.name"] == "send_email"
    assert str(a["jsonrpc.request.id"]) == "call-42"
    assert a["mcp.session.id"] == raw.session_id
    assert a["mcp.protocol.version"] == "2025-11-25"
    assert _keys(a["meshguard.mcp.argument_keys"]) == {"to", "subject", "body"}
    assert "secret text" not in json.dumps(a)  # argument values only when configured
    assert event["trace_id"] == trace  # params._meta.traceparent

    denied = raw.post(mcp.tool_call(43, "delete_everything"))
    a = collector.by_request_id(denied.request_id)["attributes"]
    assert (a["meshguard.decision"], a["meshguard.rule"], a["meshguard.reason"]) == ("deny", "no-delete", DELETE_REASON)
    assert (a["gen_ai.tool.name"], a["mcp.method.name"], str(a["jsonrpc.request.id"])) == (
        "delete_everything", "tools/call", "43")
    assert a["meshguard.action"] == "delete:everything"


def test_audit_events_for_a_batch_name_each_element(mcp_stack, token, collector):
    raw = mcp.RawMcp(mcp_stack.port("rpc"), token, protocol_version="2025-03-26")
    resp = raw.post([mcp.tool_call(21, "read_orders"), mcp.tool_call(22, "delete_everything")])
    assert resp.status == 200, resp
    events = collector.wait_for(lambda e: e["attributes"].get("meshguard.request_id") == resp.request_id, count=2)
    by_tool = {e["attributes"]["gen_ai.tool.name"]: e["attributes"] for e in events}
    assert by_tool["read_orders"]["meshguard.decision"] == "allow"
    assert str(by_tool["read_orders"]["jsonrpc.request.id"]) == "21"
    assert by_tool["delete_everything"]["meshguard.decision"] == "deny"
    assert str(by_tool["delete_everything"]["jsonrpc.request.id"]) == "22"
