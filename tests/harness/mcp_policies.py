"""Plugin configurations for the MCP, A2A and decision-API tests (and the demo's MCP act).

- `allow_all_config`: any verified agent may do anything (``action: "**"``), for running
  the MCP conformance suite through the filter. ``body_parsing=True`` declares the MCP
  endpoint in ``actions.mcp.paths`` (the body decides); ``False`` maps ``/mcp`` with a
  route (``mcp:session``), which a filter without MCP body parsing accepts.
- `mcp_config`: the governed tool set of tests/harness/mcp_server.py:
  ``read_orders`` allowed, ``send_email`` mapped to ``write:email`` and allowed,
  ``refund`` mapped to ``pay:refund`` and allowed only for ``context.amount <= 100``,
  ``delete_everything`` mapped to ``delete:everything`` and denied by a rule with a
  reason, unmapped tools (``tool:<name>``) without a rule: default deny, except the
  catalog tools listed in `ALLOWED_CATALOG_TOOLS`; A2A on ``/a2a``; the decision API.
"""

from __future__ import annotations

import copy

from .mcp_server import EXTRA_TOOL_PREFIX
from .policies import seed_config

MCP_PATH = "/mcp"
A2A_PATH = "/a2a"
DECISION_PATHS = ["/enforce", "/enforce/batch", "/health"]

# The test agents' tier (the allow-all and A2A policies apply to it).
TIER = "verified"

DELETE_REASON = "Agents never delete everything"
REFUND_LIMIT = 100

# `actions.mcp.max_body_bytes` of the "small" test listener.
SMALL_BODY_LIMIT = 4096

# Out of `CATALOG_TOOLS` extra tools of the SSE server, these are allowed (by exact
# action), the others are unmapped and without a rule.
CATALOG_TOOLS = 40
ALLOWED_CATALOG_TOOLS = [f"{EXTRA_TOOL_PREFIX}{i}" for i in range(0, CATALOG_TOOLS, 4)]

TOOL_ACTIONS = {
    "send_email": "write:email",
    "refund": "pay:refund",
    "read_orders": "read:orders",
    "delete_everything": "delete:everything",
}

# Tools whose listing does not depend on call arguments.
LISTED = ["read_orders", "send_email"]
HIDDEN = ["delete_everything"]

ALLOW_ALL_POLICY = {
    "name": "allow-all",
    "applies_to": {"trust_tiers": [TIER]},
    "rules": [{"name": "everything", "action": "**", "effect": "allow"}],
}

# Each policy below applies to its own agents, so that exactly one rule can decide each
# action the tests use (the MCP and decision-API sets both speak of write:email).
MCP_AGENTS = ["mcp-*", "support-*"]
DECISION_AGENTS = ["agent_*"]

MCP_POLICY = {
    "name": "mcp-agents",
    "applies_to": {"agents": MCP_AGENTS},
    "rules": [
        {"name": "read", "action": "read:*", "effect": "allow"},
        {"name": "email", "action": "write:email", "effect": "allow"},
        {"name": "small-refunds", "action": "pay:refund", "effect": "allow",
         "conditions": [f"context.amount <= {REFUND_LIMIT}"]},
        {"name": "no-delete", "action": "delete:*", "effect": "deny", "reason": DELETE_REASON},
        *({"name": f"catalog-{t}", "action": f"tool:{t}", "effect": "allow"} for t in ALLOWED_CATALOG_TOOLS),
    ],
}

# A2A: verified agents may send messages (either spelling), never cancel tasks.
A2A_POLICY = {
    "name": "a2a-agents",
    "applies_to": {"trust_tiers": [TIER]},
    "rules": [
        {"name": "send", "action": "a2a:SendMessage", "effect": "allow"},
        {"name": "get-task", "action": "a2a:GetTask", "effect": "allow"},
        {"name": "no-cancel", "action": "a2a:CancelTask", "effect": "deny", "reason": "Agents may not cancel tasks"},
    ],
}

# Decision API: the seed's shapes (write:email allowed, an external-email deny with a reason).
DECISION_POLICY = {
    "name": "customer-service-agent",
    "applies_to": {"agents": DECISION_AGENTS},
    "rules": [
        {"name": "allow-email", "action": "write:email", "effect": "allow"},
        {"name": "deny-external-email", "action": "write:email", "effect": "deny",
         "conditions": ['context.recipient_domain != "example.com"'],
         "reason": "Email to external domains is not permitted"},
        {"name": "read-customer", "action": "read:customer", "effect": "allow"},
        {"name": "refund", "action": "write:refund", "effect": "allow", "conditions": ["context.amount <= 50"]},
    ],
}


def allow_all_config(jwks: dict, *, body_parsing: bool) -> dict:
    cfg = seed_config(jwks)
    cfg["policies"] = [copy.deepcopy(ALLOW_ALL_POLICY)]
    if body_parsing:
        cfg["actions"]["mcp"] = {"paths": [MCP_PATH]}
    else:
        cfg["actions"]["routes"] = [{"path": MCP_PATH, "action": "mcp:session", "resource": "mcp"}]
    return cfg


def mcp_config(jwks: dict, *, max_body_bytes: int | None = None, mode: str = "enforce") -> dict:
    cfg = seed_config(jwks, mode=mode)
    mcp: dict = {"paths": [MCP_PATH], "tools": dict(TOOL_ACTIONS)}
    if max_body_bytes is not None:
        mcp["max_body_bytes"] = max_body_bytes
    cfg["actions"]["mcp"] = mcp
    cfg["actions"]["a2a"] = {"paths": [A2A_PATH]}
    cfg["decision_api"] = {"paths": list(DECISION_PATHS)}
    cfg["policies"] = [copy.deepcopy(MCP_POLICY), copy.deepcopy(A2A_POLICY), copy.deepcopy(DECISION_POLICY)]
    return cfg
