"""The demo's MCP act: an agent using the official MCP SDK discovers and calls tools of an
MCP server (the official SDK's server) through Envoy with MeshGuard.

The agent lists the tools (it sees only those it may call), calls an allowed one, a denied
one (the reason comes back as a JSON-RPC error), and a refund under and over its limit (an
argument condition); then `meshguard audit query` shows the decisions with the tool
names. `tests/demo.py` runs it after the HTTP act when called with ``--mcp`` (or with
``MESHGUARD_DEMO_MCP=1``); it needs a filter with MCP support (``actions.mcp``).
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from harness import keys, mcp, mcp_policies, policies
from harness.envoy import Envoy, Listener, add_cluster, render
from harness.mgcollector import MeshguardCollector
from harness.ports import free_port

AGENT = "support-bot"


def _outcome(o: mcp.ToolOutcome) -> tuple[str, str]:
    """(decision as the agent sees it, what came back)."""
    if o.error_code is not None:
        return "denied", f"JSON-RPC error {o.error_code}: {o.error_message}"
    if getattr(o.result, "is_error", False):
        return "denied", f"isError: {o.text}"
    return "allowed", o.text


def mcp_act(stack: ExitStack, workdir: Path, collector: MeshguardCollector, tokens: keys.TokenFactory,
            jwks: dict, heading: Callable[[str], None], clip: Callable[[str, int], str]) -> None:
    """Runs the act; everything it starts is stopped by `stack` (by PID)."""
    heading("MCP: an agent discovers and calls tools over the Model Context Protocol")
    # The SDK client warns when it calls a tool its (filtered) list did not show: that is
    # the point of the act, not news.
    logging.getLogger("client").setLevel(logging.ERROR)
    server = mcp.McpUpstream(workdir, json_response=False, extra_tools=0, name="demo-mcp")
    stack.callback(server.stop)
    server.start()
    listener = Listener("mcp", free_port(), policies.as_yaml(mcp_policies.mcp_config(jwks)),
                        cluster="mcp-server", route_timeout="0s")
    cfg = render([listener], admin_port=free_port(), upstream_port=server.port, collector_port=collector.port)
    add_cluster(cfg, "mcp-server", server.port)
    envoy = Envoy("demo-mcp", cfg, workdir / "envoy-mcp")
    stack.callback(envoy.stop)
    envoy.start()
    url = f"http://127.0.0.1:{listener.port}/mcp"
    print(f"MCP server (official Python SDK, SSE answers) 127.0.0.1:{server.port}; agents use {url}")
    print("policy mcp-agents: read:* allow, write:email allow, pay:refund allow when context.amount <= "
          f"{mcp_policies.REFUND_LIMIT}, delete:* deny")

    token = tokens.token(AGENT, mcp_policies.TIER)
    everything = mcp.sdk_list_tools(server.url, token)
    listed = mcp.sdk_list_tools(url, token)
    print(f"\n{AGENT} (verified) lists tools: sees {sorted(listed)}")
    print(f"  the server has {sorted(everything)}; hidden: {sorted(set(everything) - set(listed))}")

    calls: list[tuple[str, dict[str, Any]]] = [
        ("read_orders", {}),
        ("delete_everything", {}),
        ("refund", {"amount": 40, "order_id": "o-1"}),
        ("refund", {"amount": 4000, "order_id": "o-2"}),
    ]
    fmt = "{:<20} {:<34} {:<8} {}"
    print("\n" + fmt.format("tool", "arguments", "result", "what the agent got back"))
    for name, args in calls:
        decision, text = _outcome(mcp.sdk_call_tool(url, token, name, args))
        print(fmt.format(name, clip(str(args), 34), decision, clip(text.replace("\n", " "), 70)))
    ran = [c["tool"] for c in server.tool_calls()]
    print(f"\nthe server executed: {ran}")

    deadline = time.monotonic() + 15
    # every call's decision, allowed or denied, is audited; wait until all have arrived
    while time.monotonic() < deadline and sum(
            1 for e in collector.events(agent=AGENT)
            if e.get("attributes", e).get("gen_ai.tool.name")) < len(calls):
        time.sleep(0.2)
    heading(f"MCP decisions in the audit trail: meshguard audit query --agent {AGENT}")
    print(collector.run("query", "--agent", AGENT).stdout.rstrip())
    print("\ntool names recorded (gen_ai.tool.name, mcp.method.name):")
    for e in collector.events(agent=AGENT):
        a = e.get("attributes", e)
        if a.get("gen_ai.tool.name"):
            print(f"  {a.get('meshguard.decision', e.get('decision', '?')):<8} {a.get('mcp.method.name', ''):<11} "
                  f"{a['gen_ai.tool.name']}")
