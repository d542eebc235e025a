"""A bad plugin configuration is rejected with a message naming the field (and the
column or line), and a running Envoy keeps its previous good configuration (README, "Configuration reference")."""

from __future__ import annotations

import copy
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from harness import cli, expect, policies
from harness.client import MeshClient
from harness.envoy import Envoy, Listener, load_template, make_listener, render, validate, with_lds, write_lds
from harness.ports import free_port


def _bootstrap(plugin_text: str, port: int = 1) -> dict:
    """A complete bootstrap around one plugin configuration (ports are irrelevant to
    ``--mode validate``, which binds nothing)."""
    return render([Listener("agents", port, plugin_text)], admin_port=free_port(), upstream_port=free_port(),
                  collector_port=free_port())


def _no_audiences(cfg: dict) -> str:
    cfg["identity"]["issuers"][0]["audiences"] = []
    return policies.as_yaml(cfg)


def _audiences_missing(cfg: dict) -> str:
    del cfg["identity"]["issuers"][0]["audiences"]
    return policies.as_json(cfg)


def _bad_condition(cfg: dict) -> str:
    cfg["policies"][0]["rules"][1]["conditions"] = ["time.hour >= "]
    return policies.as_json(cfg)


def _bad_condition_in_policy_yaml(cfg: dict) -> str:
    rules = cfg.pop("policies")
    broken = copy.deepcopy(rules[0])
    broken["name"] = "second"
    broken["rules"][0]["conditions"] = ["agent.id == 'x' AND"]
    cfg["policy_yaml"] = policies.as_yaml(rules[0]) + "---\n" + policies.as_yaml(broken)
    return policies.as_yaml(cfg)


TYPO = "time.hours >= 0"
# The message the filter (Envoy's log) and `meshguard check` (stderr) both give for TYPO in
# the seed policy's delete rule (rules[2], a deny: the typo would make it fail open).
TYPO_MESSAGE = (f'policies[0].rules[2].conditions[0]: condition "{TYPO}": unknown name `time.hours` at column 1 '
                "(valid names: time.hour, time.minute, time.weekday, agent.id, agent.trust_tier, action, "
                "resource, request.method, request.path, mcp.method, mcp.tool, a2a.method, delegation.depth, "
                "delegation.chain, time.unix, agent.issuer, request.host, agent.claims.<claim>, "
                "request.headers.<header>, context.<field>)")


def _typo_in_condition_name(cfg: dict) -> str:
    cfg["policies"][0]["rules"][2]["conditions"] = [TYPO]
    return policies.as_json(cfg)


def _typo_in_policy_yaml(cfg: dict) -> str:
    rules = cfg.pop("policies")
    rules[0]["rules"][2]["conditions"] = ["agent.id == 'x' OR time.hours >= 0"]
    cfg["policy_yaml"] = policies.as_yaml(rules[0])
    return policies.as_yaml(cfg)


def _yaml_wrong_type(cfg: dict) -> str:
    cfg["identity"]["clock_skew_seconds"] = "soon"
    return policies.as_yaml(cfg)


# (id, break the seed config into text, fragments the error output must contain)
BROKEN: list[tuple[str, Callable[[dict], str], list[str]]] = [
    ("issuer-with-empty-audiences", _no_audiences, ["identity.issuers[0].audiences"]),
    ("issuer-without-audiences", _audiences_missing, ["identity.issuers[0]", "audiences"]),
    ("condition-syntax", _bad_condition, ["policies[0].rules[1].conditions[0]", "column"]),
    ("condition-syntax-in-policy-yaml", _bad_condition_in_policy_yaml, ["policy_yaml", "conditions[0]", "column"]),
    ("yaml-wrong-type", _yaml_wrong_type, ["identity.clock_skew_seconds", "line"]),
    ("condition-name-typo", _typo_in_condition_name, [TYPO_MESSAGE]),
    ("condition-name-typo-in-policy-yaml", _typo_in_policy_yaml,
     ["policy_yaml[0].rules[2].conditions[0]", "unknown name `time.hours` at column 20", "valid names: time.hour"]),
]


@pytest.mark.parametrize("breaker,fragments", [(b, f) for _, b, f in BROKEN], ids=[i for i, _, _ in BROKEN])
def test_validate_rejects_bad_plugin_config(tmp_path, keyring, breaker, fragments):
    result = validate(_bootstrap(breaker(policies.seed_config(keyring.jwks))), tmp_path)
    assert result.returncode != 0, result.stdout[-3000:]
    rejection = [l for l in result.stdout.splitlines() if "meshguard" in l and "rejected" in l]
    assert rejection, result.stdout[-3000:]
    for fragment in fragments:
        assert fragment in rejection[0], rejection[0]


def test_validate_accepts_the_seed_config(tmp_path, keyring):
    result = validate(_bootstrap(policies.as_yaml(policies.seed_config(keyring.jwks))), tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize("breaker", [_typo_in_condition_name, _typo_in_policy_yaml])
def test_check_rejects_what_the_filter_rejects(tmp_path, keyring, breaker):
    """`meshguard check` refuses the same configuration with the same message, exit 2."""
    text = breaker(policies.seed_config(keyring.jwks))
    config = tmp_path / "plugin-config"
    config.write_text(text)
    envoy = validate(_bootstrap(text), tmp_path)
    rejection = [l for l in envoy.stdout.splitlines() if "meshguard" in l and "rejected" in l]
    assert envoy.returncode != 0 and rejection, envoy.stdout[-3000:]
    proc = subprocess.run([str(cli.require()), "check", "--config", str(config), "--claims", "{}",
                           "--action", "delete:orders"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc
    assert proc.stdout == "", proc.stdout
    message = proc.stderr.strip().split("configuration rejected: ", 1)[1]
    assert "unknown name `time.hours`" in message, proc.stderr
    assert rejection[0].endswith(message), (rejection[0], message)


# --- live reload through filesystem LDS -------------------------------------------------

@dataclass
class LiveListener:
    envoy: Envoy
    port: int
    lds_dir: Path

    def publish(self, plugin_text: str) -> None:
        write_lds(self.lds_dir, [make_listener(load_template(), Listener("agents", self.port, plugin_text))])

    @property
    def client(self) -> MeshClient:
        return MeshClient(self.port)


@pytest.fixture(scope="module")
def live(request, tmp_path_factory, keyring, upstream, collector) -> LiveListener:
    workdir = tmp_path_factory.mktemp("envoy-lds")
    lds_dir = workdir / "lds"
    lds_dir.mkdir()
    port = free_port()
    bootstrap = render([Listener("agents", port, "")], admin_port=free_port(), upstream_port=upstream.port,
                       collector_port=collector.port)
    envoy = Envoy("lds", with_lds(bootstrap, lds_dir), workdir)
    live = LiveListener(envoy, port, lds_dir)
    live.publish(policies.as_yaml(policies.seed_config(keyring.jwks)))
    request.addfinalizer(envoy.stop)
    envoy.start()
    return live


LOCKDOWN = {"name": "lockdown", "rules": [{"action": "read:*", "effect": "deny", "reason": "maintenance"}]}


def test_live_reload_keeps_previous_config_then_takes_a_valid_one(live, keyring, tokens):
    def read_orders():
        return live.client.call(tokens.token("reload-agent", "verified"), action="read:orders")

    expect.forwarded(read_orders(), agent="reload-agent", tier="verified", action="read:orders")
    accepted = live.envoy.stat("listener_manager.lds.update_success")

    # an invalid plugin config: Envoy refuses the listener update...
    cfg = policies.seed_config(keyring.jwks)
    live.publish(_no_audiences(cfg))
    live.envoy.wait_stat("listener_manager.lds.update_rejected", 1, timeout=20)
    assert "identity.issuers[0].audiences" in live.envoy.log_text()
    # ...and the old configuration keeps deciding
    expect.forwarded(read_orders(), agent="reload-agent", tier="verified", action="read:orders")

    # a valid new config with another policy takes over
    cfg = policies.seed_config(keyring.jwks)
    cfg["policies"].append(LOCKDOWN)
    live.publish(policies.as_yaml(cfg))
    live.envoy.wait_stat("listener_manager.lds.update_success", accepted + 1, timeout=20)
    deadline = time.monotonic() + 20
    resp = read_orders()
    while resp.status == 200 and time.monotonic() < deadline:
        time.sleep(0.1)  # the new listener is warming (compiling the module); poll again
        resp = read_orders()
    expect.denied(resp, policy="lockdown", rule="rules[0]", reason="maintenance")
    assert live.envoy.alive()


def test_live_reload_rejects_a_typo_in_a_condition_and_keeps_deciding(live, keyring, tokens):
    def read_orders():
        return live.client.call(tokens.token("reload-agent", "verified"), action="read:orders")

    before = read_orders()
    rejected = live.envoy.stat("listener_manager.lds.update_rejected")
    live.publish(_typo_in_condition_name(policies.seed_config(keyring.jwks)))
    live.envoy.wait_stat("listener_manager.lds.update_rejected", rejected + 1, timeout=20)
    assert TYPO_MESSAGE in live.envoy.log_text()
    after = read_orders()

    def decided(r):  # the decision and the policy version in force, not the per-request ids
        if r.status == 200:
            return 200, r.upstream_headers.get("x-meshguard-decision")
        return r.status, {k: v for k, v in r.json().items() if k != "traceId"}

    assert decided(after) == decided(before)
    assert live.envoy.alive()
