"""Soak run (issue 12, ``make soak SOAK_SECONDS=600``): a steady mix of requests through the
real Envoy and the built module for a long while, sampling Envoy's resident memory and
the audit counters, then checking that memory did not drift and that every audit event
is accounted for.

The mix (a fixed rate, cycled by a few threads): allowed with a cached token, allowed
with a cold token (a new agent and token every time, so the token cache and per-agent
state keep meeting new keys), denied by a rule, a bad token (401), MCP ``tools/call``
through a JSON-RPC upstream (allowed and denied tools), and an agent hammering a
rate-limited action (429 once over its limit).

Passes when:
- every request got a status its class accepts (200/403/401/429 as appropriate);
- Envoy's RSS after warm-up (the first `--warmup` fraction of the run) drifts by at most
  `--max-drift` (median of the last 10 % of samples against the median of the first 10 %
  after warm-up);
- stored (distinct events in the collector) + dropped (``meshguard.audit.dropped``) =
  decisions, and the filter's decision counters saw every request;
- no wasm VM failed (Envoy's wasm stats, as in the faults suite).

Writes ``bench/results/soak.json`` and ``soak.md`` (or ``--out DIR``). Exit status 0 on
pass, 1 on fail.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import keys, mcp  # noqa: E402
from harness.client import MeshClient, http_request  # noqa: E402
from harness.collector import Collector  # noqa: E402
from harness.envoy import Envoy, Listener, add_cluster, render  # noqa: E402
from harness.faults import Load, RequestClass, audit_accounting, summary, wasm_failure_stats, wrong_decisions  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.upstream import EchoUpstream  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RATE_LIMIT = "5/s"
DECISION_STATS = ("meshguard.requests.allowed", "meshguard.requests.denied", "meshguard.requests.unauthenticated",
                  "meshguard.requests.would_deny")
AUDIT_STATS = ("meshguard.audit.emitted", "meshguard.audit.acknowledged", "meshguard.audit.dropped",
               "meshguard.audit.buffered", "meshguard.audit.exports_failed")


def plugin_config(jwks: dict) -> dict:
    return {
        "identity": {"issuers": [{"issuer": keys.ISSUER, "audiences": [keys.AUDIENCE], "jwks": jwks}]},
        "actions": {"mcp": {"paths": ["/mcp"], "tools": {"read_orders": "read:orders",
                                                          "delete_everything": "delete:everything"}}},
        "policies": [{"name": "soak", "rules": [
            {"name": "read", "action": "read:*", "effect": "allow"},
            {"name": "notes", "action": "write:notes", "effect": "allow"},
            {"name": "no-delete", "action": "delete:*", "effect": "deny", "reason": "Agents never delete"},
        ]}],
        "rate_limits": [{"name": "notes-burst", "agents": "limited-*", "action": "write:notes", "limit": RATE_LIMIT}],
        "audit": {"cluster": "meshguard-collector", "flush_interval_ms": 200},
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def jsonrpc_error(r) -> bool:
    try:
        return isinstance(r.json(), dict) and "error" in r.json()
    except ValueError:
        return False


def build_mix(signing_key: keys.SigningKey, agents_port: int, mcp_port: int) -> list[RequestClass]:
    client = MeshClient(agents_port)
    factory = keys.TokenFactory(signing_key)
    cached = factory.token("soak-agent", "verified")
    limited = factory.token("limited-agent", "verified")
    counter = iter(range(10**9))
    lock = threading.Lock()

    def cold() -> str:
        with lock:
            n = next(counter)
        return factory.token(f"cold-agent-{n}", "verified")

    def mcp_call(tool: str):
        def send():
            body = json.dumps(mcp.tool_call(1, tool, {"order": 7})).encode()
            rid = f"soak-mcp-{time.monotonic_ns()}-{threading.get_ident()}"
            r = http_request(mcp_port, "POST", "/mcp", {
                "authorization": f"Bearer {cached}", "content-type": "application/json",
                "accept": "application/json, text/event-stream", "x-request-id": rid}, body)
            r.request_id = rid
            return r
        return send

    return [
        RequestClass("allowed-cached", lambda: client.call(cached, action="read:orders"), frozenset({200})),
        RequestClass("allowed-cold", lambda: client.call(cold(), action="read:reports"), frozenset({200})),
        RequestClass("denied", lambda: client.call(cached, action="delete:orders"), frozenset({403})),
        RequestClass("bad-token", lambda: client.call("not.a.token", action="read:orders"), frozenset({401})),
        RequestClass("mcp-allowed", mcp_call("read_orders"), frozenset({200}), check=lambda r: not jsonrpc_error(r)),
        # a denied tools/call is a JSON-RPC error from the filter (README "Responses"), never forwarded
        RequestClass("mcp-denied", mcp_call("delete_everything"), frozenset({200, 403}), check=jsonrpc_error),
        RequestClass("rate-limited", lambda: client.call(limited, action="write:notes"), frozenset({200, 429})),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--rate", type=float, default=60.0, help="requests per second, all classes together")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="Envoy worker threads (--concurrency)")
    ap.add_argument("--sample-seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=0.2, help="fraction of the run before RSS counts")
    ap.add_argument("--max-drift", type=float, default=0.02)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args(argv)

    key = keys.generate("ES256", "soak-1")
    collector = Collector().start()
    upstream = EchoUpstream().start()
    rpc = mcp.JsonRpcEcho().start()
    envoy = None
    samples: list[dict] = []
    try:
        cfg_text = json.dumps(plugin_config(keys.jwks(key)))
        agents = Listener("agents", free_port(), cfg_text)
        mcp_listener = Listener("mcp", free_port(), cfg_text, cluster="rpc-echo")
        boot = render([agents, mcp_listener], admin_port=free_port(), upstream_port=upstream.port,
                      collector_port=collector.port)
        add_cluster(boot, "rpc-echo", rpc.port)
        workdir = Path(tempfile.mkdtemp(prefix="meshguard-soak-"))
        envoy = Envoy("soak", boot, workdir, concurrency=args.workers)
        envoy.start(timeout=60)
        pid = envoy.proc.pid
        classes = build_mix(key, agents.port, mcp_listener.port)
        load = Load(classes, threads=args.threads, rate=args.rate).start()
        started = time.monotonic()
        print(f"soak: {args.seconds:.0f} s at {args.rate:.0f} req/s, Envoy pid {pid}, {args.workers} workers", flush=True)
        while time.monotonic() - started < args.seconds:
            time.sleep(min(args.sample_seconds, max(0.0, args.seconds - (time.monotonic() - started))))
            stats = envoy.stats("meshguard.")
            sample = {"t": round(time.monotonic() - started, 1), "rss_kib": rss_kib(pid),
                      "requests": len(load.snapshot())}
            for name in AUDIT_STATS + DECISION_STATS:
                sample[name] = next((v for k, v in stats.items() if k.endswith(name)), 0)
            samples.append(sample)
            print(f"  t={sample['t']:>6.1f}s rss={sample['rss_kib']} KiB requests={sample['requests']} "
                  f"emitted={sample['meshguard.audit.emitted']} acked={sample['meshguard.audit.acknowledged']} "
                  f"dropped={sample['meshguard.audit.dropped']} buffered={sample['meshguard.audit.buffered']}",
                  flush=True)
        outcomes = load.stop()
        elapsed = time.monotonic() - started

        # drain: every event stored or declared lost
        rids = {o.request_id for o in outcomes if o.request_id}
        deadline = time.monotonic() + 60
        while True:
            acc = audit_accounting(collector, rids, envoy.stat("meshguard.audit.dropped"))
            if (acc.balanced and envoy.stat("meshguard.audit.buffered") == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        decided = sum(envoy.stat(n) for n in DECISION_STATS)
        wrong = wrong_decisions(outcomes, classes)
        failures = wasm_failure_stats(envoy.stats())

        post = [s for s in samples if s["t"] >= args.warmup * args.seconds]
        tenth = max(1, len(post) // 10)
        first = statistics.median(s["rss_kib"] for s in post[:tenth]) if post else 0
        last = statistics.median(s["rss_kib"] for s in post[-tenth:]) if post else 0
        drift = (last - first) / first if first else float("inf")
        checks = {
            "every request decided correctly": not wrong,
            f"RSS drift after warm-up <= {args.max_drift:.0%}": abs(drift) <= args.max_drift,
            "stored + dropped = decisions": acc.balanced and acc.decisions == len(outcomes),
            "decision counters = requests": decided == len(outcomes),
            "no wasm VM failure": bool(failures) and not any(failures.values()) and envoy.alive(),
        }
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs",
            "seconds": round(elapsed, 1), "rate_target": args.rate, "workers": args.workers,
            "requests": len(outcomes), "achieved_rps": round(len(outcomes) / elapsed, 1),
            "mix": summary(outcomes), "wrong": [o.__dict__ | {"body": o.body.decode("latin-1")} for o in wrong[:10]],
            "rss_kib": {"start": samples[0]["rss_kib"] if samples else 0, "after_warmup": first, "end": last,
                        "max_after_warmup": max((s["rss_kib"] for s in post), default=0),
                        "min_after_warmup": min((s["rss_kib"] for s in post), default=0),
                        "drift": round(drift, 4)},
            "audit": {"decisions": acc.decisions, "stored": acc.stored, "dropped": acc.dropped,
                      "late": acc.late, "duplicates": acc.duplicates, "decision_counters": decided},
            "vm_failure_stats": failures,
            "checks": checks, "passed": all(checks.values()),
            "samples": samples,
        }
        write(result, args.out)
        for name, ok in checks.items():
            print(f"{'PASS' if ok else 'FAIL'}  {name}")
        return 0 if result["passed"] else 1
    finally:
        if envoy is not None:
            envoy.stop()
        rpc.stop()
        upstream.stop()
        collector.stop()


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    r, a = result["rss_kib"], result["audit"]
    lines = [
        f"# Soak run {result['date']}",
        "",
        f"{result['seconds']:.0f} s, {result['requests']} requests ({result['achieved_rps']} req/s, target "
        f"{result['rate_target']:.0f}), Envoy with {result['workers']} workers, {result['machine']}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| Envoy RSS at start / after warm-up / end | {r['start'] / 1024:.1f} / {r['after_warmup'] / 1024:.1f} / "
        f"{r['end'] / 1024:.1f} MiB |",
        f"| RSS min / max after warm-up | {r['min_after_warmup'] / 1024:.1f} / {r['max_after_warmup'] / 1024:.1f} MiB |",
        f"| RSS drift after warm-up | {r['drift']:+.2%} |",
        f"| decisions / stored / dropped | {a['decisions']} / {a['stored']} / {a['dropped']} |",
        f"| decision counters | {a['decision_counters']} |",
        "",
        "| class | statuses |",
        "|---|---|",
        *(f"| {k} | {', '.join(f'{s}: {n}' for s, n in sorted(v.items()))} |" for k, v in sorted(result["mix"].items())),
        "",
        *(f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in result["checks"].items()),
        "",
    ]
    (out / "soak.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
