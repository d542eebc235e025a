"""Plugin configurations shared by the e2e tests and the demo.

- `seed_config`: the plugin configuration committed in envoy/envoy.yaml (the seed
  ``verified-agent-policy`` verbatim), with the issuer's JWKS swapped for keys generated
  at test time. Rendered as YAML, like the committed file.
- `rich_config`: the seed policy plus several more (wildcard actions, resources,
  min_trust_tier, require_approval, conditions on headers, claims and delegation depth,
  agent globs), and a ``clock`` policy whose rules depend on the current UTC hour. Used
  for parity with ``meshguard check``, for delegation and for time conditions. Rendered
  as JSON.
- `demo_config`: the seed plus a require_approval rule, for `make demo`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

import sys
from pathlib import Path

from .envoy import committed_plugin_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "istio" / "tools"))
from meshguard_istio.istiod import plugin_config_json  # noqa: E402
from .keys import AUDIENCE, ISSUER

# Rich configuration: the delegation depth limit is lower than the default (4) so a
# test can exceed it with a short chain.
RICH_MAX_DELEGATION_DEPTH = 3

RICH_EXTRA_POLICIES: list[dict] = [
    {
        "name": "trusted-agent-policy",
        "version": 2,
        "applies_to": {"trust_tiers": ["trusted"]},
        "rules": [
            {"name": "trusted-read", "action": "read:*", "effect": "allow"},
            {"name": "trusted-write-orders", "action": "write:orders", "resource": "orders/**", "effect": "allow"},
            {"name": "email-internal", "action": "write:email", "effect": "allow",
             "conditions": ['request.headers.x-recipient-domain == "example.com"']},
            {"name": "email-external", "action": "write:email", "effect": "require_approval",
             "conditions": ['request.headers.x-recipient-domain != "example.com"'],
             "reason": "External email needs human approval"},
            {"action": "pay:*", "effect": "require_approval"},
        ],
    },
    {
        "name": "privileged-admin",
        "applies_to": {"trust_tiers": ["privileged"]},
        "rules": [
            {"name": "admin-all", "action": "*", "effect": "allow"},
            {"action": "delete:*", "resource": "prod/**", "effect": "deny",
             "reason": "Production data is never deleted by agents"},
        ],
    },
    {
        "name": "finance-bots",
        "applies_to": {"agents": ["billing-*"]},
        "rules": [
            {"name": "billing-pay", "action": "pay:invoice", "effect": "allow",
             "conditions": ['agent.claims.department == "finance"']},
            {"name": "billing-big", "action": "pay:invoice", "effect": "require_approval",
             "conditions": ["request.headers.x-amount > 1000"]},
            {"name": "billing-read", "action": "read:invoices", "effect": "allow", "min_trust_tier": "verified"},
        ],
    },
    {
        "name": "reporting",
        "applies_to": {"agents": ["reporter-*"]},
        "rules": [{"name": "export", "action": "export:report", "effect": "allow"}],
    },
    {
        "name": "guardrails",
        "description": "applies to every agent",
        "rules": [
            {"name": "no-secrets", "action": "read:secrets", "effect": "deny",
             "reason": "Secrets are never readable by agents"},
            {"name": "health", "action": "read:health", "effect": "allow"},
            {"name": "search", "action": "search:*", "effect": "allow", "min_trust_tier": "verified",
             "conditions": ['agent.claims.team in ["research", "analytics"]']},
            {"action": "*:admin", "effect": "deny"},
            {"name": "delegated-limit", "action": "write:*", "effect": "deny",
             "conditions": ["delegation.depth >= 2"],
             "reason": "Writes may not be delegated more than once"},
        ],
    },
]


def clock_policy() -> dict:
    """Rules whose outcome depends only on the current UTC hour H: action ``clock:eq-H``
    is allowed exactly when ``time.hour == H`` and ``clock:ne-H`` exactly when
    ``time.hour != H``. One rule pair per hour, so the expected decision is known from
    the wall clock without restarting Envoy when the hour changes."""
    rules = []
    for h in range(24):
        rules.append({"name": f"hour-eq-{h}", "action": f"clock:eq-{h}", "effect": "allow",
                      "conditions": [f"time.hour == {h}"]})
        rules.append({"name": f"hour-ne-{h}", "action": f"clock:ne-{h}", "effect": "allow",
                      "conditions": [f"time.hour != {h}"]})
    return {"name": "clock", "rules": rules}


def committed_config() -> dict:
    """The committed plugin configuration, parsed."""
    return yaml.safe_load(committed_plugin_config())


def seed_policies() -> list[dict]:
    return copy.deepcopy(committed_config()["policies"])


def _with_issuer(cfg: dict, jwks: dict, *, jwks_as_string: bool = True) -> dict:
    cfg["identity"]["issuers"] = [{
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "jwks": json.dumps(jwks) if jwks_as_string else jwks,
    }]
    return cfg


def seed_config(jwks: dict, *, mode: str = "enforce", audit_cluster: str | None = "meshguard-collector") -> dict:
    """The committed configuration with these keys (and optionally another mode or
    audit cluster)."""
    cfg = _with_issuer(committed_config(), jwks)
    cfg["mode"] = mode
    if audit_cluster != "meshguard-collector":
        cfg["audit"]["cluster"] = audit_cluster
    return cfg


def rich_config(jwks: dict, *, mode: str = "enforce") -> dict:
    cfg = _with_issuer(committed_config(), jwks, jwks_as_string=False)
    cfg["mode"] = mode
    cfg["identity"]["max_delegation_depth"] = RICH_MAX_DELEGATION_DEPTH
    cfg["policies"] = seed_policies() + copy.deepcopy(RICH_EXTRA_POLICIES) + [clock_policy()]
    return cfg


DEMO_APPROVAL_POLICY = {
    "name": "payments",
    "applies_to": {"trust_tiers": ["verified", "trusted"]},
    "rules": [{"name": "payments-need-approval", "action": "pay:*", "effect": "require_approval",
               "reason": "Payments need a human in the loop"}],
}


def demo_config(jwks: dict, *, mode: str = "enforce") -> dict:
    cfg = seed_config(jwks, mode=mode)
    cfg["policies"].append(copy.deepcopy(DEMO_APPROVAL_POLICY))
    return cfg


def as_yaml(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


def as_json(cfg: dict) -> str:
    return json.dumps(cfg)


def canonical_json(obj: Any) -> str:
    """What istiod renders: the one implementation in istio/tools (sorted compact JSON,
    Go float64 numbers, Go's HTML-safe string escaping)."""
    return plugin_config_json(obj)


def controls_config(jwks: dict, rules: list[dict], *, mode: str = "enforce", policy_name: str = "controls",
                    **sections: Any) -> dict:
    """A small configuration for the agent-control suites: the test issuer, one policy
    applying to every agent with `rules`, fast audit flushing, plus any top-level
    `sections` as written in the README (``revoked=``, ``rate_limits=``, ``loop=``,
    ``grants=``, ``identity_workload_binding=`` for ``identity.workload_binding``)."""
    cfg: dict[str, Any] = {
        "mode": mode,
        "identity": {"issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks": jwks}]},
        "policies": [{"name": policy_name, "rules": copy.deepcopy(rules)}],
        "audit": {"cluster": "meshguard-collector", "flush_interval_ms": 100},
    }
    binding = sections.pop("identity_workload_binding", None)
    if binding is not None:
        cfg["identity"]["workload_binding"] = binding
    cfg.update(copy.deepcopy(sections))
    return cfg
