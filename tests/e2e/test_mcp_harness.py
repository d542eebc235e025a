"""Self-test of the MCP harness, independent of MeshGuard's MCP support: the official SDK
client talks to the SDK server directly and through a plain Envoy listener (no filter),
in both protocol generations and both response kinds (JSON and SSE), and the server
records what it received. If these fail, the MCP governance tests cannot be trusted."""

from __future__ import annotations

import pytest

from harness import mcp
from harness.envoy import Listener
from harness.mcp_server import TOOL_NAMES
from harness.ports import free_port


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mcp-harness")
    started = []
    try:
        for json_response in (True, False):
            started.append(mcp.McpUpstream(workdir, json_response=json_response, extra_tools=5,
                                           chunk_bytes=256).start())
        yield {"json": started[0], "sse": started[1]}
    finally:
        for s in started:
            s.stop()


@pytest.fixture(scope="module")
def plain(request, launch_listeners, servers):
    listeners = [Listener(f"plain-{kind}", free_port(), cluster=f"mcp-{kind}", route_timeout="0s", meshguard=False)
                 for kind in servers]
    return launch_listeners(request, "mcp-plain", listeners,
                            clusters={f"mcp-{kind}": s.port for kind, s in servers.items()})


@pytest.mark.parametrize("mode", mcp.PROTOCOL_MODES)
@pytest.mark.parametrize("kind", ["json", "sse"])
@pytest.mark.parametrize("via", ["direct", "envoy"])
def test_sdk_lists_and_calls_tools(servers, plain, kind, via, mode):
    server = servers[kind]
    url = server.url if via == "direct" else plain.url(f"plain-{kind}")
    names = mcp.sdk_list_tools(url, "not-checked-here", mode)
    assert set(TOOL_NAMES) <= set(names), names
    assert len(names) == len(TOOL_NAMES) + 5
    before = len(server.tool_calls("refund"))
    outcome = mcp.sdk_call_tool(url, "not-checked-here", "refund", {"amount": 12.5, "order_id": f"{via}-{mode}"}, mode)
    assert outcome.error_code is None and "refunded 12.5" in outcome.text, outcome
    calls = server.tool_calls("refund")
    assert len(calls) == before + 1
    assert calls[-1]["arguments"] == {"amount": 12.5, "order_id": f"{via}-{mode}"}
    # The bearer token reached the server untouched (no filter on these paths).
    assert any(r["headers"].get("authorization") == "Bearer not-checked-here" for r in server.http_requests())


def test_answers_are_json_or_sse_as_configured(servers, plain):
    for kind, ctype in (("json", "application/json"), ("sse", "text/event-stream")):
        raw = mcp.RawMcp(plain.ports[f"plain-{kind}"], None).initialize()
        resp = raw.post(mcp.request(7, "tools/list", {}))
        assert resp.status == 200, resp
        assert resp.headers["content-type"].startswith(ctype), resp.headers
        (answer,) = mcp.parse_messages(resp)
        assert answer["id"] == 7 and len(answer["result"]["tools"]) == len(TOOL_NAMES) + 5


def test_jsonrpc_echo_answers_batches():
    echo = mcp.JsonRpcEcho().start()
    try:
        raw = mcp.RawMcp(echo.port, None, path="/a2a")
        resp = raw.post([mcp.request(1, "SendMessage", {"x": 1}), mcp.request("b", "GetTask", {})])
        answers = mcp.by_id(mcp.parse_messages(resp))
        assert answers[1]["result"]["echo"] == {"method": "SendMessage", "params": {"x": 1}}
        assert answers["b"]["result"]["echo"]["method"] == "GetTask"
        assert echo.methods(resp.request_id) == [("SendMessage", 1), ("GetTask", "b")]
    finally:
        echo.stop()
