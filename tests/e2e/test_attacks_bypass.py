"""Attack corpus, policy bypass (issue 12; SECURITY.md "Policy bypass"): ways to make the
filter decide on something other than what the upstream will do, against the real Envoy
with the built module.

- Paths against the route table, with and without Envoy's normalisation. The common
  walk-outs (``..`` plain and encoded, ``%2F``, ``%5C``, ``//``, ``..;``, double encoding,
  ``#``, query) are in test_path_normalisation.py and not repeated; here are the forms it
  does not cover: a walk-out of the email route, case, trailing dots, ``;`` parameters,
  encoded ``?`` and ``#``, a leading ``//``, overlong UTF-8 and full-width dots.
- Headers: ``x-meshguard-*`` spelled with underscores or mixed case, a spoofed
  ``x-forwarded-client-cert`` against workload binding, headers without a token.
- MCP bodies: duplicate JSON members, look-alike tool names, control characters in names,
  batches hiding a denied call, a ``tools/call`` split across TCP writes.

Each case says what must happen; "denied" always also means "the upstream never saw it".
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from dataclasses import dataclass

import pytest

from harness import certs, expect, mcp, policies
from harness.client import MeshClient
from harness.envoy import Listener
from harness.mcp_policies import DELETE_REASON, TIER
from harness.ports import free_port

# --- paths ------------------------------------------------------------------------------

ROUTES = [
    {"method": "POST", "path": "/v1/email/*", "action": "write:email", "resource": "notifications"},
    {"method": "GET", "path": "/v1/email/**", "action": "read:email", "resource": "notifications"},
    {"method": "GET", "path": "/v1/orders/**", "action": "read:orders", "resource": "orders"},
    {"method": "GET", "path": "/v1/admin/**", "action": "admin:read", "resource": "admin"},
]
# Verified agents may read (read:*), nothing else.
POLICY = [{"name": "readers", "applies_to": {"trust_tiers": ["verified"]},
           "rules": [{"name": "read", "action": "read:*", "effect": "allow"}]}]


@dataclass(frozen=True)
class Forward:
    path: str
    action: str


@dataclass(frozen=True)
class Deny:
    action: str  # "" = no route matched: default deny, "no action"


@dataclass(frozen=True)
class Reject:
    code: str


@dataclass(frozen=True)
class EnvoyReject:
    pass


ADMIN = Deny("admin:read")
NO_ROUTE = Deny("")

# id, path, outcome without Envoy's normalisation, outcome with it
PATHS = [
    ("email-walk-out-to-admin", "/v1/email/../admin/delete", ADMIN, ADMIN),
    ("email-encoded-walk-out", "/v1/email/%2E%2E/admin/delete", ADMIN, ADMIN),
    ("leading-double-slash", "//v1/admin/delete", ADMIN, ADMIN),
    ("double-slashes-everywhere", "/v1//admin//delete", ADMIN, ADMIN),
    # Routes are case-sensitive, so an upper-case path matches no route: default deny,
    # never the read:orders of its lower-case twin (a case-insensitive upstream would
    # otherwise serve /v1/admin under no rule at all).
    ("upper-case-prefix", "/V1/ADMIN/delete", NO_ROUTE, NO_ROUTE),
    ("mixed-case-segment", "/v1/Orders/7", NO_ROUTE, NO_ROUTE),
    ("trailing-dot-segment", "/v1/admin./delete", NO_ROUTE, NO_ROUTE),
    ("trailing-dot-kept", "/v1/orders/7.", Forward("/v1/orders/7.", "read:orders"),
     Forward("/v1/orders/7.", "read:orders")),
    # Routes also match with `;` parameters stripped (as servlet upstreams route), so the
    # parameter does not hide /v1/admin from its route.
    ("semicolon-parameter-on-prefix", "/v1/admin;jsessionid=1/delete", ADMIN, ADMIN),
    ("semicolon-parameter-on-allowed-prefix", "/v1/orders;x=1/7", Forward("/v1/orders;x=1/7", "read:orders"),
     Forward("/v1/orders;x=1/7", "read:orders")),
    ("semicolon-parameter-then-dotdot", "/v1/orders;x=1/../admin/delete", ADMIN, ADMIN),
    ("query-holds-a-walk-out", "/v1/admin/delete?/../../orders/7", ADMIN, ADMIN),
    ("encoded-question-mark-is-a-segment", "/v1/admin%3F/../orders/7", Forward("/v1/orders/7", "read:orders"),
     Forward("/v1/orders/7", "read:orders")),
    ("encoded-hash-then-dotdot", "/v1/orders/7%23/../../admin/delete", ADMIN, ADMIN),
    ("encoded-slashes-in-prefix", "/v1%2Fadmin%2Fdelete", Reject("encoded_slash"), EnvoyReject()),
    # Not dots to MeshGuard, Envoy or any RFC 3986 reader: forwarded under the route they
    # are in (escapes in upper-case hex), so the upstream acts on the path decided on.
    ("overlong-utf8-dots", "/v1/orders/%c0%ae%c0%ae/admin", Forward("/v1/orders/%C0%AE%C0%AE/admin", "read:orders"),
     Forward("/v1/orders/%C0%AE%C0%AE/admin", "read:orders")),
    ("fullwidth-dots", "/v1/orders/%EF%BC%8E%EF%BC%8E/admin",
     Forward("/v1/orders/%EF%BC%8E%EF%BC%8E/admin", "read:orders"),
     Forward("/v1/orders/%EF%BC%8E%EF%BC%8E/admin", "read:orders")),
]


@pytest.fixture(scope="module", params=[False, True], ids=["envoy-raw", "envoy-normalising"])
def mesh(request, launch, keyring):
    cfg = policies.seed_config(keyring.jwks)
    cfg["actions"]["routes"] = ROUTES
    cfg["policies"] = POLICY
    dep = launch(request, f"attack-paths-{'norm' if request.param else 'raw'}", {"enforce": policies.as_yaml(cfg)},
                 envoy_normalisation=request.param)
    dep.normalising = request.param
    return dep


@pytest.mark.parametrize("case", PATHS, ids=[c[0] for c in PATHS])
def test_path_bypass(mesh, tokens, upstream, collector, case):
    _, path, raw, normalising = case
    want = normalising if mesh.normalising else raw
    resp = mesh.client.call(tokens.token("walker", "verified"), path=path)
    if isinstance(want, Forward):
        expect.forwarded(resp, agent="walker", tier="verified", action=want.action)
        assert resp.json()["path"] == want.path, resp
        assert collector.by_request_id(resp.request_id)["attributes"]["meshguard.action"] == want.action
        return
    assert not upstream.received(resp.request_id), f"{path} reached the upstream: {resp}"
    if isinstance(want, Deny):
        body = expect.denied(resp, policy=None, rule=None, agent="walker", action=want.action)
        if not want.action:
            assert "no action" in body["reason"], body
        assert collector.by_request_id(resp.request_id)["attributes"]["meshguard.action"] == want.action
    elif isinstance(want, Reject):
        assert (resp.status, resp.json()["errorCode"]) == (400, want.code), resp
    else:
        assert resp.status == 400 and b"errorCode" not in resp.body, resp


# --- headers ----------------------------------------------------------------------------

OURS = {"x-meshguard-agent": "reader", "x-meshguard-trust-tier": "verified",
        "x-meshguard-decision": "allow", "x-meshguard-action": "read:orders"}


@pytest.mark.parametrize("name", [
    "x_meshguard_agent", "X_MESHGUARD_TRUST_TIER", "x-meshguard_decision", "X-MeshGuard-Shadow-Policy",
    "x-meshguard-approval-id",
])
def test_spoofed_meshguard_header_spellings_never_reach_the_upstream(seed, tokens, name):
    """Underscore spellings are the same variable to CGI-style upstreams (WSGI, PHP):
    removed like the hyphenated ones. Only MeshGuard's four headers arrive."""
    resp = seed.clients["enforce"].call(tokens.token("reader", "verified"), action="read:orders",
                                        headers={name: "privileged-admin"})
    seen = expect.forwarded(resp, agent="reader", tier="verified", action="read:orders")
    leaked = {k: v for k, v in seen.items() if "meshguard" in k.replace("_", "-") and k not in OURS}
    assert leaked == {}, leaked
    assert "privileged-admin" not in json.dumps(seen)


def test_identity_headers_without_a_token_are_not_an_identity(seed, upstream, collector):
    resp = seed.clients["enforce"].call(action="read:orders", headers={
        "x-meshguard-agent": "admin", "x-meshguard-trust-tier": "privileged", "x-meshguard-decision": "allow",
        "x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/agents/sa/admin"})
    expect.identity_failure(resp, "missing_token")
    assert not upstream.received(resp.request_id)
    assert collector.by_request_id(resp.request_id)["attributes"]["meshguard.agent.id"] == ""


def test_spoofed_xfcc_on_plain_text_is_not_forwarded(seed, tokens):
    """Over plain text Envoy sanitises x-forwarded-client-cert (its default), so the caller's
    value never reaches the upstream as if Envoy had verified it."""
    resp = seed.clients["enforce"].call(tokens.token("reader", "verified"), action="read:orders",
                                        headers={"x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/x/sa/admin"})
    seen = expect.forwarded(resp, agent="reader", tier="verified", action="read:orders")
    assert "x-forwarded-client-cert" not in seen, seen


ORDERS_ID = certs.spiffe_id("agents", "orders-bot")
BILLING_ID = certs.spiffe_id("agents", "billing-bot")


@pytest.fixture(scope="module")
def binding(request, launch, keyring, tmp_path_factory):
    """Workload binding by claim, over mTLS (listener ``mtls``) and plain text (``plain``)."""
    material = certs.MtlsMaterial.generate(tmp_path_factory.mktemp("attack-mtls"), [ORDERS_ID, BILLING_ID])
    rules = [{"name": "reads", "action": "read:*", "effect": "allow"}]
    cfg = policies.as_json(policies.controls_config(keyring.jwks, rules,
                                                    identity_workload_binding={"claim": "spiffe_id"}))
    dep = launch(request, "attack-binding", {
        "mtls": Listener("mtls", 0, cfg, tls=certs.downstream_tls_context(material)), "plain": cfg})
    return dep, material


@pytest.mark.parametrize("over", ["plain", "other-workload"])
def test_spoofed_xfcc_does_not_satisfy_workload_binding(binding, tokens, upstream, collector, over):
    """The peer identity comes from the TLS connection Envoy verified, never from a header:
    a token bound to orders-bot, with an XFCC header naming orders-bot, presented over plain
    text or by billing-bot's certificate, is 401 wrong_workload."""
    dep, material = binding
    token = tokens.token("orders-bot", "verified", spiffe_id=ORDERS_ID)
    spoof = {"x-forwarded-client-cert": f'By=spiffe://cluster.local/ns/mesh/sa/envoy;URI={ORDERS_ID}'}
    client = (dep.clients["plain"] if over == "plain"
              else MeshClient(dep.clients["mtls"].port, tls=material.client_context(BILLING_ID)))
    resp = client.call(token, action="read:orders", headers=spoof)
    body = expect.identity_failure(resp, "wrong_workload")
    assert not upstream.received(resp.request_id)
    assert collector.by_request_id(resp.request_id)["attributes"]["meshguard.identity.error"] == "wrong_workload"
    if over == "other-workload":
        assert BILLING_ID in body["reason"], body
    # The control: the real workload is accepted.
    ok = MeshClient(dep.clients["mtls"].port, tls=material.client_context(ORDERS_ID)).call(token, action="read:orders")
    expect.forwarded(ok, agent="orders-bot", tier="verified", action="read:orders")


# --- MCP bodies ---------------------------------------------------------------------------

AGENT = "mcp-agent"
INVALID_REQUEST, INVALID_PARAMS = -32600, -32602


@pytest.fixture(scope="module")
def token(tokens) -> str:
    return tokens.token(AGENT, TIER)


def _error(resp, code: int) -> dict:
    assert resp.status in (200, 400), resp
    body = resp.json()
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body


@pytest.mark.parametrize("body,code", [
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
                 b'"params":{"name":"read_orders","name":"delete_everything","arguments":{}}}',
                 INVALID_REQUEST, id="tool-name-twice"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call",'
                 b'"params":{"name":"delete_everything","arguments":{}}}', INVALID_REQUEST, id="method-twice"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund",'
                 b'"arguments":{"amount":1,"amount":100000,"order_id":"dup"}}}', INVALID_REQUEST, id="argument-twice"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
                 b'"params":{"name":"read_orders","\\u006eame":"delete_everything"}}', INVALID_REQUEST,
                 id="escaped-name-twice"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_everything\\r\\nx: 1"}}',
                 INVALID_PARAMS, id="crlf-in-tool-name"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"tools/call\\u0000","params":{"name":"read_orders"}}',
                 INVALID_REQUEST, id="nul-in-method"),
    pytest.param(b'[[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_everything"}}]]',
                 INVALID_REQUEST, id="nested-batch"),
])
def test_ambiguous_mcp_bodies_are_refused(mcp_stack, token, body, code):
    """A body that two JSON readers could read differently (a member named twice, however
    spelled), or whose names cannot travel in a header, is a JSON-RPC error and never
    reaches the server."""
    raw = mcp.RawMcp(mcp_stack.port("rpc"), token, protocol_version="2025-03-26")
    resp = raw.post_bytes(body)
    if body.startswith(b"[["):
        (answer,) = mcp.parse_messages(resp)
        assert answer["error"]["code"] == code, answer
    else:
        _error(resp, code)
    assert mcp_stack.echo.received(resp.request_id) == []


LOOKALIKES = [
    pytest.param("rеad_orders", id="cyrillic-e-in-allowed-tool"),         # U+0435
    pytest.param("send_emаil", id="cyrillic-a-in-allowed-tool"),          # U+0430
    pytest.param("ｒｅａｄ_orders", id="fullwidth-allowed-tool"),
    pytest.param("read_orders\u200b", id="zero-width-space"),
    pytest.param("READ_ORDERS", id="upper-case-allowed-tool"),
]


@pytest.mark.parametrize("name", LOOKALIKES)
def test_lookalike_of_an_allowed_tool_is_not_allowed(mcp_stack, token, collector, name):
    """Tool names compare byte for byte: a look-alike of an allowed tool is another,
    unmapped tool (``tool:<name>``) without a rule, so default deny."""
    raw = mcp.RawMcp(mcp_stack.port("rpc"), token, protocol_version="2025-03-26")
    resp = raw.post(mcp.tool_call(7, name))
    (answer,) = mcp.parse_messages(resp)
    assert answer["id"] == 7 and answer["error"]["data"]["decision"] == "deny", answer
    assert mcp_stack.echo.received(resp.request_id) == []
    a = collector.by_request_id(resp.request_id)["attributes"]
    assert (a["meshguard.action"], a["gen_ai.tool.name"]) == (f"tool:{name}", name), a


@pytest.fixture(scope="module")
def wildcard_tools(request, launch_listeners, keyring, mcp_stack):
    """A permissive policy: every tool allowed (``tool:*``) except the explicitly denied
    delete (mapped to delete:everything), in front of the SDK server."""
    cfg = policies.seed_config(keyring.jwks)
    cfg["actions"]["mcp"] = {"paths": ["/mcp"], "tools": {"delete_everything": "delete:everything"}}
    cfg["policies"] = [{"name": "wildcard", "applies_to": {"agents": ["mcp-*"]}, "rules": [
        {"name": "any-tool", "action": "tool:*", "effect": "allow"},
        {"name": "no-delete", "action": "delete:*", "effect": "deny", "reason": DELETE_REASON}]}]
    listener = Listener("wild", free_port(), policies.as_yaml(cfg), cluster="mcp-json", route_timeout="0s")
    return launch_listeners(request, "attack-wildcard", [listener],
                            clusters={"mcp-json": mcp_stack.servers["json"].port})


@pytest.mark.parametrize("name", ["dеlete_everything", "ｄｅｌｅｔｅ_everything", "delete_everything\u00ad",
                                  "Delete_Everything"],
                         ids=["cyrillic-e", "fullwidth", "soft-hyphen", "case"])
def test_lookalike_cannot_reach_a_denied_tool(wildcard_tools, mcp_stack, token, name):
    """Even where a wildcard allows the look-alike, the denied tool never runs: the filter
    decides on the exact name and the server runs only the exact name (it answers "unknown
    tool"). The ASCII name itself stays denied."""
    server = mcp_stack.servers["json"]
    before = len(server.tool_calls("delete_everything"))
    outcome = mcp.sdk_call_tool(wildcard_tools.url("wild"), token, name, {})
    assert outcome.error_code is not None or getattr(outcome.result, "is_error", False), outcome
    exact = mcp.sdk_call_tool(wildcard_tools.url("wild"), token, "delete_everything", {})
    assert DELETE_REASON in exact.denied_text, exact
    assert len(server.tool_calls("delete_everything")) == before
    assert server.tool_calls(name) == []


def test_batch_cannot_hide_a_denied_call(mcp_stack, token, collector):
    """A denied call as a notification (no id, so no answer to show it was refused), and a
    denied call reusing an allowed call's id: each is refused on its own, audited, and only
    the allowed call reaches the upstream."""
    raw = mcp.RawMcp(mcp_stack.port("rpc"), token, protocol_version="2025-03-26")
    resp = raw.post([
        mcp.tool_call(1, "read_orders"),
        {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "delete_everything", "arguments": {}}},
        mcp.tool_call(1, "delete_everything"),
    ])
    assert resp.status == 200, resp
    assert mcp_stack.echo.methods(resp.request_id) == [("tools/call", 1)]
    (seen,) = mcp_stack.echo.received(resp.request_id)
    assert [m["params"]["name"] for m in seen["body"]] == ["read_orders"], seen["body"]
    answers = mcp.parse_messages(resp)
    assert any("error" in a and DELETE_REASON in a["error"]["message"] for a in answers), answers
    events = collector.wait_for(lambda e: e["attributes"].get("meshguard.request_id") == resp.request_id, count=3)
    decisions = sorted((e["attributes"]["gen_ai.tool.name"], e["attributes"]["meshguard.decision"]) for e in events)
    assert decisions == [("delete_everything", "deny"), ("delete_everything", "deny"), ("read_orders", "allow")]


def _split_post(port: int, token: str, pieces: list[bytes], *, chunked: bool, pause: float = 0.3):
    """POST /mcp whose body leaves in `pieces`, each its own TCP write `pause` s apart
    (HTTP/1.1 chunked encoding, or one Content-Length)."""
    rid = str(uuid.uuid4())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.putrequest("POST", "/mcp", skip_accept_encoding=True)
        for k, v in {"authorization": f"Bearer {token}", "content-type": "application/json",
                     "accept": mcp.ACCEPT, "mcp-protocol-version": "2025-03-26", "x-request-id": rid}.items():
            conn.putheader(k, v)
        conn.putheader(*(("transfer-encoding", "chunked") if chunked
                         else ("content-length", str(sum(map(len, pieces))))))
        conn.endheaders()
        for piece in pieces:
            time.sleep(pause)
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        return resp.status, resp.read(), rid
    finally:
        conn.close()


def _pieces(message: dict) -> list[bytes]:
    """The message cut inside the tool name and inside the arguments."""
    text = json.dumps(message).encode()
    cut1, cut2 = text.index(b"_every") if b"_every" in text else text.index(b"_orders"), len(text) - 5
    return [text[:12], text[12:cut1], text[cut1:cut2], text[cut2:]]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_tools_call_split_across_writes_is_decided_whole(mcp_stack, token, chunked):
    status, body, rid = _split_post(mcp_stack.port("rpc"), token, _pieces(mcp.tool_call(31, "delete_everything")),
                                    chunked=chunked)
    answer = json.loads(body)
    assert answer["id"] == 31 and DELETE_REASON in answer["error"]["message"], (status, answer)
    assert mcp_stack.echo.received(rid) == []


def test_allowed_call_split_across_writes_arrives_whole(mcp_stack, token):
    message = mcp.tool_call(32, "read_orders", {"note": "split"})
    status, body, rid = _split_post(mcp_stack.port("rpc"), token, _pieces(message), chunked=False)
    assert status == 200, body
    (seen,) = mcp_stack.echo.received(rid)
    assert seen["body"] == message
    assert json.loads(body)["result"]["headers"]["x-meshguard-action"] == "read:orders"


@pytest.mark.parametrize("method", ["sendMessage", "SendMessage ", "SendMessage\u200b", "message/send/",
                                    "cancelTask", "Tasks/Cancel", "CancelTаsk"])
def test_a2a_method_variants_are_default_denied(mcp_stack, tokens, collector, method):
    """A2A methods map by exact name (v1.0 names and the v0.3 aliases); any other spelling
    of an allowed (SendMessage) or denied (CancelTask) method is ``a2a:<as sent>``, for
    which no rule exists: denied with the request's id, never forwarded."""
    raw = mcp.RawMcp(mcp_stack.port("rpc"), tokens.token("a2a-agent", TIER), path="/a2a")
    raw.extra_headers = {"a2a-version": "1.0"}
    resp = raw.post(mcp.request("v-1", method, {"message": {"role": "user", "messageId": "m", "parts": []}}))
    (answer,) = mcp.parse_messages(resp)
    assert answer["id"] == "v-1" and answer["error"]["data"]["decision"] == "deny", answer
    assert mcp_stack.echo.received(resp.request_id) == []
    assert collector.by_request_id(resp.request_id)["attributes"]["meshguard.action"] == f"a2a:{method}"
