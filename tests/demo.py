"""`make demo`: MeshGuard in a real Envoy, end to end, in well under a minute.

Starts the reference audit collector (`meshguard collector`, SQLite) and an echo tool
service, generates an ES256 signing key and its JWKS, and starts Envoy with the MeshGuard
module on two listeners: one enforcing, one in audit mode. Then a few agents make calls
with real tokens: allowed, delegated, denied by a rule, denied by tier, a tampered token,
one needing human approval, and the same denials again in audit mode. Each decision is
printed as a table row, then the audit trail as the operator sees it: `meshguard audit
query`, `meshguard audit trace` and `meshguard audit verify`. Everything started here is
stopped by PID on the way out, also on Ctrl-C or an error.

Run from the repository root: ``.venv/bin/python tests/demo.py``. An MCP act follows
(tests/demo_mcp.py; ``--no-mcp`` or ``MESHGUARD_DEMO_MCP=0`` leaves it out): an agent using
the MCP SDK lists and calls tools through the same collector. Last, the approval loop:
require_approval, `meshguard approvals approve`, the retry allowed through the signed
grants document.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import keys, policies  # noqa: E402
from harness.client import MeshClient, Response  # noqa: E402
from harness.mgcollector import MeshguardCollector, grants_keypair  # noqa: E402
from harness.envoy import WASM, Envoy, Listener, add_cluster, render  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.upstream import EchoUpstream  # noqa: E402

WIDTH = 132
DEMO_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def heading(text: str) -> None:
    print(f"\n{'=' * WIDTH}\n  {text}\n{'=' * WIDTH}", flush=True)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass
class Step:
    """One scripted call: who, how, where, and why it is in the demo."""

    label: str
    listener: str
    agent: str
    tier: str
    token: str
    method: str = "GET"
    path: str = "/v1/orders/42"
    action: str | None = None
    headers: dict = field(default_factory=dict)


def decision_of(resp: Response) -> str:
    if resp.status == 200:
        return resp.upstream_headers.get("x-meshguard-decision", "?")
    body = resp.json()
    if resp.status == 401:
        return f"deny ({body.get('errorCode')})"
    return body.get("decision", "?")


def decided_by(attrs: dict) -> str:
    if attrs.get("meshguard.identity.error"):
        return "(identity check)"
    if attrs.get("meshguard.policy"):
        return f"{attrs['meshguard.policy']}/{attrs['meshguard.rule']}"
    return "(default deny)" if attrs.get("meshguard.effect") != "allow" else "-"


def print_table(rows: list[tuple[Step, Response, dict]]) -> None:
    fmt = "{:<2} {:<7} {:<12} {:<11} {:<34} {:>4}  {:<21} {:<33} {}"
    print(fmt.format("#", "mode", "agent", "tier", "request", "HTTP", "decision", "policy/rule", "reason"))
    print("-" * WIDTH)
    for i, (step, resp, event) in enumerate(rows, 1):
        a = event["attributes"]
        request = f"{step.method} {step.path}" + (f" [{step.action}]" if step.action else "")
        print(fmt.format(i, step.listener, clip(step.agent, 12), step.tier, clip(request, 34), resp.status,
                         clip(decision_of(resp), 21), clip(decided_by(a), 33),
                         clip(a.get("meshguard.reason", ""), 34)))


def scenario(tokens: keys.TokenFactory) -> list[Step]:
    reader = tokens.token("orders-bot", "verified")
    delegated = tokens.token("orders-bot", "verified", act={"sub": "planner-bot", "trust_tier": "verified"})
    scraper = tokens.token("scraper-bot", "untrusted")
    tampered = keys.tamper(tokens.token("orders-bot", "verified"), trust_tier="privileged")
    return [
        Step("allowed: a verified agent reads orders (with a W3C traceparent)", "enforce", "orders-bot",
             "verified", reader, headers={"traceparent": f"00-{DEMO_TRACE}-00f067aa0ba902b7-01"}),
        Step("delegated in the same trace: planner-bot acts for orders-bot", "enforce", "planner-bot",
             "verified", delegated, headers={"traceparent": f"00-{DEMO_TRACE}-b7ad6b7169203331-01"}),
        Step("denied by rule: verified agents cannot delete", "enforce", "orders-bot", "verified", reader,
             method="DELETE"),
        Step("denied by tier: no policy for untrusted agents", "enforce", "scraper-bot", "untrusted", scraper),
        Step("bad token: claims changed after signing", "enforce", "orders-bot", "forged", tampered),
        Step("needs approval: payments need a human", "enforce", "orders-bot", "verified", reader,
             method="POST", path="/v1/payments", action="pay:invoice"),
        Step("office hours only (UTC 9-17): sending email", "enforce", "orders-bot", "verified", reader,
             method="POST", path="/v1/email/send"),
        Step("audit mode: the delete passes, recorded as would_deny", "audit", "orders-bot", "verified", reader,
             method="DELETE"),
        Step("audit mode: the untrusted read passes too", "audit", "scraper-bot", "untrusted", scraper),
    ]


APPROVAL_TTL = "20s"


def approval_act(stack: ExitStack, workdir: Path, tokens: keys.TokenFactory, jwks: dict, upstream: EchoUpstream) -> None:
    """The approval loop, end to end (README "Agent controls"): a payment needs a human,
    the 403 carries an approvalId, the collector lists it as pending, an operator approves
    it for a while with the CLI, the collector publishes the signed grants document that
    the filter polls every second, and the agent's retry goes through. Its own collector
    (with the HTTP API and a grants signing key) and Envoy, stopped by PID via `stack`.
    Call it from `run` to make it part of `make demo`."""
    heading("The approval loop: require_approval -> meshguard approvals approve -> allowed")
    act_dir = workdir / "approvals"
    grants_key, public_keys = grants_keypair(act_dir)
    service = MeshguardCollector(act_dir, http=True, grants_key=grants_key).start()
    stack.callback(service.stop)
    print(f"meshguard collector    127.0.0.1:{service.port} (OTLP/gRPC), approvals API and "
          f"signed grants document at {service.url}/grants")
    cfg = policies.demo_config(jwks)
    cfg["grants"] = {"cluster": "meshguard-grants", "path": "/grants", "public_keys": public_keys,
                     "interval_seconds": 1}
    listener = Listener("approvals", free_port(), policies.as_yaml(cfg))
    boot = render([listener], admin_port=free_port(), upstream_port=upstream.port, collector_port=service.port)
    add_cluster(boot, "meshguard-grants", service.http_port)
    envoy = Envoy("demo-approvals", boot, act_dir / "envoy", concurrency=2)
    stack.callback(envoy.stop)
    envoy.start()
    client = MeshClient(listener.port)
    token = tokens.token("orders-bot", "verified")

    def pay() -> Response:
        return client.call(token, method="POST", path="/v1/payments", action="pay:invoice")

    first = pay()
    approval_id = first.json().get("approvalId", "") if first.status == 403 else ""
    print(f"\n1. orders-bot pays an invoice: HTTP {first.status}, decision {decision_of(first)}, "
          f"approvalId {approval_id or '(none)'}")
    if not approval_id:
        print("   no approvalId in the answer: the filter does not support approvals yet")
        return
    deadline = time.monotonic() + 10
    while service.approval(approval_id) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    print(f"\n2. the operator's queue: meshguard approvals list --url {service.url}")
    print(service.approvals_cli("list").stdout.rstrip())
    print(f"\n3. meshguard approvals approve {approval_id} --for {APPROVAL_TTL} --by alice")
    decided = service.approvals_cli("approve", approval_id, "--for", APPROVAL_TTL, "--by", "alice",
                                    "--reason", "invoice INV-7 checked")
    print((decided.stdout or decided.stderr).rstrip())
    approved_at = time.monotonic()
    retry = pay()
    while retry.status != 200 and time.monotonic() - approved_at < 5:
        time.sleep(0.2)
        retry = pay()
    print(f"\n4. orders-bot retries: HTTP {retry.status}, decision {decision_of(retry)} "
          f"({time.monotonic() - approved_at:.1f}s after the approval; the filter polls /grants every second)")
    print(f"   the grant lasts {APPROVAL_TTL}; after that the same call needs approval again.")


def wait_for_events(collector: MeshguardCollector, count: int, timeout: float = 15.0) -> list[dict]:
    """The collector's stored events, once `count` have arrived (the filter exports in
    batches on a timer)."""
    deadline = time.monotonic() + timeout
    while True:
        events = collector.events()
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def mcp_act_enabled(argv: list[str]) -> bool:
    """The MCP act is on unless ``--no-mcp`` (or ``MESHGUARD_DEMO_MCP=0``) says otherwise."""
    return "--no-mcp" not in argv and os.environ.get("MESHGUARD_DEMO_MCP") != "0"


def run(workdir: Path, *, with_mcp: bool = False) -> int:
    with ExitStack() as stack:
        heading("MeshGuard demo: identity, policy and audit for AI agents, inside Envoy")
        print(f"module: {WASM}")
        collector = MeshguardCollector(workdir).start()
        stack.callback(collector.stop)
        upstream = stack.enter_context(EchoUpstream())
        print(f"meshguard collector    127.0.0.1:{collector.port} (OTLP/gRPC) -> {collector.db}")
        print(f"tool service (echo)    127.0.0.1:{upstream.port}")

        key = keys.generate("ES256", "demo-es256")
        tokens = keys.TokenFactory(key)
        jwks = keys.jwks(key)
        print(f"issuer {tokens.issuer}, audience {tokens.audience}, ES256 key kid={key.kid} (generated now)")

        listeners = [
            Listener("enforce", free_port(), policies.as_yaml(policies.demo_config(jwks))),
            Listener("audit", free_port(), policies.as_yaml(policies.demo_config(jwks, mode="audit"))),
        ]
        cfg = render(listeners, admin_port=free_port(), upstream_port=upstream.port, collector_port=collector.port)
        envoy = Envoy("demo", cfg, workdir)
        stack.callback(envoy.stop)
        started = time.monotonic()
        envoy.start()
        print(f"envoy pid {envoy.proc.pid} ready in {time.monotonic() - started:.1f}s: "
              + ", ".join(f"{l.name} listener 127.0.0.1:{l.port}" for l in listeners)
              + f", admin 127.0.0.1:{envoy.admin_port}")
        print("policies: verified-agent-policy (read:* allow, write:email in office hours, delete:* deny), "
              "payments (pay:* require_approval)")

        heading("Agents calling tools through Envoy")
        clients = {l.name: MeshClient(l.port) for l in listeners}
        calls = []
        for step in scenario(tokens):
            resp = clients[step.listener].call(step.token, method=step.method, path=step.path, action=step.action,
                                               headers=step.headers)
            calls.append((step, resp))
        events = wait_for_events(collector, len(calls))
        by_request = {e["attributes"].get("meshguard.request_id"): e for e in events}
        rows: list[tuple[Step, Response, dict[str, Any]]] = [
            (step, resp, by_request[resp.request_id]) for step, resp in calls
        ]
        print_table(rows)
        print()
        for i, (step, _, _) in enumerate(rows, 1):
            print(f"  {i}. {step.label}")

        heading(f"The audit trail: meshguard audit query --db {collector.db.name}")
        print(collector.run("query").stdout.rstrip())
        heading(f"One trace across agents: meshguard audit trace {DEMO_TRACE[:8]}")
        print(collector.run("trace", DEMO_TRACE[:8]).stdout.rstrip())
        heading("Nothing removed or altered: meshguard audit verify")
        print(collector.run("verify").stdout.rstrip())

        if with_mcp:
            from demo_mcp import mcp_act

            mcp_act(stack, workdir, collector, tokens, jwks, heading, clip)

        approval_act(stack, workdir, tokens, jwks, upstream)

        heading("Stopping")
    print("envoy, collector and tool service stopped.")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    if not WASM.exists():
        print(f"{WASM} is missing: cargo build --release --target wasm32-wasip1 -p meshguard-filter",
              file=sys.stderr)
        return 2
    # SIGTERM, and SIGINT even when a non-interactive shell started us with it ignored,
    # unwind like Ctrl-C, so the ExitStack stops Envoy by PID.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="meshguard-demo-"))
    try:
        code = run(workdir, with_mcp=mcp_act_enabled(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped.", file=sys.stderr)
        code = 130
    except Exception:
        print(f"\ndemo failed; everything started was stopped. Envoy's files are kept in {workdir}",
              file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    return code

if __name__ == "__main__":
    sys.exit(main())
