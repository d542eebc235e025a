#!/usr/bin/env python3
"""Module size, Envoy time to ready and Envoy RSS, for one or more builds of the module.

    .venv/bin/python bench/footprint.py [--rounds 3] [--load 3] [A.wasm B.wasm ...]

The footprint half of issue 11, measured apart from the request-rate table of `run.py`
(whose Envoy setup, keys, collector and wrk runner it reuses) so that module variants
(opt-level, wasm-opt flags, dependency features) can be compared side by side in one run
without rebuilding `target/meshguard.wasm`. Per module and per `--concurrency` 1 and 2, in
alternating rounds with a fresh Envoy each time:

- ready: process start → admin `/ready` says `LIVE` (the same clock as run.py), and the
  CPU time Envoy spent until then (user + system, all threads: on a shared, loaded machine
  the steadier figure of the two);
- RSS idle: Envoy's VmRSS once ready (VM compiled, plugin configured on every worker);
- RSS loaded: VmRSS after `--load` seconds of wrk with one cached ES256 token (caches and
  audit buffers warmed);
- the same for Envoy without the filter (`baseline`), so "added" is module − baseline.

Medians over rounds are printed as a markdown table; the machine is shared, so compare
variants within one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
import urllib.request
import os
import statistics
import sys
import tempfile
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _load_run():
    spec = importlib.util.spec_from_file_location("bench_run", HERE / "run.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["bench_run"] = mod
    spec.loader.exec_module(mod)
    return mod


def _find(node, key: str):
    """Every value under `key` anywhere in a nested dict/list."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _find(v, key)


def print_smaps(pid: int, label: str, top: int = 8) -> None:
    """The resident size of the process's mappings, largest first (anonymous ones by
    permissions), to tell V8 code space from heaps from linear memory."""
    rss: dict[str, int] = {}
    key = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            vsz = (hi - lo) >> 20
            key = f"{parts[1]} {parts[5] if len(parts) > 5 else '[anon]'} ({vsz} MiB virtual)"
        elif parts and parts[0] == "Rss:":
            rss[key] = rss.get(key, 0) + int(parts[1])
    print(f"  smaps {label}: total {sum(rss.values()) / 1024:.1f} MiB")
    for k, v in sorted(rss.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {v / 1024:7.1f} MiB  {k}")


def speed(run, args, modules: list[Path]) -> int:
    """Request rate and Envoy CPU time per request, per module variant, cached and cold
    tokens of one algorithm (`--alg`, ES256 by default), against the no-filter baseline of
    the same round. On a shared machine req/s moves with the neighbours; Envoy's own CPU time per request (user + system, all
    threads, divided by the requests wrk completed) barely does, so it is the figure to
    compare: opt-level and wasm-opt choices must not cost speed."""
    ncpu = len(os.sched_getaffinity(0))
    cpus = ("0", "1") if ncpu >= 2 else ("", "")
    workdir = Path(tempfile.mkdtemp(prefix="meshguard-speed-"))
    alg = args.alg
    cfgs = {c.name: c for c in run.ALL_CONFIGS}
    if args.speed_configs:
        names = [n for n in args.speed_configs.split(",") if n]
    else:
        names = [f"mg-{alg.lower()}-cached"] + ([] if args.cached_only else [f"mg-{alg.lower()}-cold"])
    cold = any(cfgs[n].cold for n in names)
    k = run.Keys(workdir, {alg: 12000} if cold else {}, warm_count=1500 if cold else 0)
    b = run.Bench(argparse.Namespace(duration=args.load, warmup=1.0, stage_probe=None), k, workdir, cpus)
    # each MeshGuard config against the no-filter config of its own load (MCP bodies differ)
    bases = sorted({f"baseline-mcp-{cfgs[n].mcp}" if cfgs[n].mcp else "baseline" for n in names})
    plan = [(b_name, b_name, run.henvoy.WASM) for b_name in bases] + [
        (str(m), n, m) for m in modules for n in names]
    got: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for rnd in range(1, args.rounds + 1):
            for label, n, wasm in plan:
                c = cfgs[n]
                e, port = b.start_envoy(c, f"speed{rnd}", wasm=Path(wasm).resolve())
                try:
                    if c.mcp:
                        body = workdir / f"mcp-{c.mcp}.json"
                        body.write_bytes(run.mcp_request_body(c.mcp))
                        run.run_wrk(port, 1.0, cpu=cpus[1], token=k.token["ES256"], body_file=body)
                        before = e.cpu_s()
                        w = run.run_wrk(port, args.load, cpu=cpus[1], token=k.token["ES256"], body_file=body)
                    elif c.cold:
                        run.run_wrk(port, 1.0, cpu=cpus[1], token_file=k.warm_file[alg])
                        before = e.cpu_s()
                        w = run.run_wrk(port, args.load, cpu=cpus[1], token_file=k.cold_file[alg])
                        if w["requests"] > k.cold_count[alg]:
                            raise RuntimeError("cold run reused tokens: lower --load")
                    else:
                        run.run_wrk(port, 1.0, cpu=cpus[1], token=k.token[alg])
                        before = e.cpu_s()
                        w = run.run_wrk(port, args.load, cpu=cpus[1], token=k.token[alg])
                    used = e.cpu_s() - before
                finally:
                    e.stop()
                if w["non_2xx"] or not w["requests"]:
                    raise RuntimeError(f"{label} {n}: {w['non_2xx']} refused of {w['requests']}")
                us = used * 1e6 / w["requests"]
                got.setdefault((label, n), []).append((w["rps"], us))
                print(f"  round {rnd} {Path(label).name:<24} {n:<16} {w['rps']:>9,.0f} req/s "
                      f"{us:7.1f} µs Envoy CPU/request", flush=True)
    finally:
        b.collector.stop()
        for e in list(run.henvoy.Envoy.running):
            e.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    base = {}
    for b_name in bases:
        rounds = got[(b_name, b_name)]
        # The minimum over rounds is printed too: Envoy's time-driven work (ticks, audit
        # flushes) is spread over fewer requests in a round the neighbours slowed down.
        base[b_name] = (statistics.median(x[0] for x in rounds),
                        statistics.median(x[1] for x in rounds),
                        min(x[1] for x in rounds))
        print(f"\n{b_name} {base[b_name][0]:,.0f} req/s, {base[b_name][1]:.1f} µs Envoy CPU per request")
    print("| module | config | req/s | ratio | Envoy CPU µs/req | added CPU µs/req | added, min of rounds | rounds (µs) |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for label, n, _ in plan[len(bases):]:
        base_rps, base_us, base_min = base[f"baseline-mcp-{cfgs[n].mcp}" if cfgs[n].mcp else "baseline"]
        v = statistics.median(x[0] for x in got[(label, n)])
        us = statistics.median(x[1] for x in got[(label, n)])
        low = min(x[1] for x in got[(label, n)])
        print(f"| {Path(label).name} | {n} | {v:,.0f} | {v / base_rps:.2f} | {us:.1f} | {us - base_us:+.1f} | "
              f"{low - base_min:+.1f} | "
              f"{', '.join(f'{x[1]:.1f}' for x in got[(label, n)])} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    run = _load_run()
    # A loaded machine can take longer than run.py's 30 s to compile the module.
    run.BenchEnvoy.start.__defaults__ = (180.0,)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wasm", nargs="*", type=Path, help="modules to compare (default target/meshguard.wasm)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load", type=float, default=3.0, help="seconds of wrk before the loaded RSS")
    ap.add_argument("--concurrency", default="1,2")
    ap.add_argument("--runtime", default="", help="vm_config.runtime instead of envoy.wasm.runtime.v8")
    ap.add_argument("--release", action="store_true",
                    help="bootstrap memory_allocator_manager: return free allocator pages to the OS")
    ap.add_argument("--speed", action="store_true",
                    help="instead: req/s and Envoy CPU µs per request of baseline, mg-<alg>-cached "
                         "and mg-<alg>-cold per module, modules interleaved per round")
    ap.add_argument("--cached-only", action="store_true",
                    help="with --speed: only mg-<alg>-cached per module (no cold runs)")
    ap.add_argument("--speed-configs", default="",
                    help="with --speed: the run.py configs to compare instead (e.g. mg-mcp-list); "
                         "each is measured against the no-filter config of the same load")
    ap.add_argument("--alg", default="ES256", choices=["ES256", "EdDSA"],
                    help="--speed: the token algorithm of the cached and cold configs")
    ap.add_argument("--json", action="store_true",
                    help="plugin configuration as JSON (as istiod sends it) instead of run.py's YAML")
    ap.add_argument("--smaps", action="store_true", help="print where the idle RSS is (largest mappings)")
    args = ap.parse_args(argv)
    if args.json:
        # run.py renders the plugin configuration through harness.policies.as_yaml; istiod
        # delivers JSON, which skips the YAML parser (and a build without one still loads).
        run.policies.as_yaml = lambda cfg: json.dumps(cfg, sort_keys=True)
    render = run.envoy_config

    def patched(*a, **kw):
        cfg = render(*a, **kw)
        if args.runtime:
            for vm in _find(cfg, "vm_config"):
                vm["runtime"] = args.runtime
        if args.release:
            # Envoy's tcmalloc keeps freed pages (V8's compile-time zones) in its page heap;
            # the allocator manager hands them back to the OS in the background.
            cfg["memory_allocator_manager"] = {"bytes_to_release": 256 << 20,
                                               "memory_release_interval": "0.25s"}
        return cfg
    run.envoy_config = patched
    modules = args.wasm or [run.henvoy.WASM]
    conc = [int(c) for c in args.concurrency.split(",") if c]
    if args.speed:
        return speed(run, args, modules)
    ncpu = len(os.sched_getaffinity(0))
    cpus = ("0", "1") if ncpu >= 2 else ("", "")
    workdir = Path(tempfile.mkdtemp(prefix="meshguard-footprint-"))
    k = run.Keys(workdir, {}, warm_count=0)
    # run.Bench reads stage_probe (the module to load instead of target/meshguard.wasm).
    bargs = argparse.Namespace(duration=args.load, warmup=0.5, stage_probe=None)
    b = run.Bench(bargs, k, workdir, cpus)
    base_cfg = next(c for c in run.ALL_CONFIGS if c.name == "baseline")
    mg_cfg = next(c for c in run.ALL_CONFIGS if c.name == "mg-es256-cached")
    variants = [("baseline", base_cfg, run.henvoy.WASM)] + [(str(m), mg_cfg, m) for m in modules]
    samples: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
    try:
        for rnd in range(1, args.rounds + 1):
            for name, cfg, wasm in variants:
                for c in conc:
                    e_cpus = cpus[0] if c == 1 else (f"{cpus[0]},{cpus[1]}" if cpus[1] else "")
                    e, port = b.start_envoy(cfg, f"fp{rnd}c{c}-{abs(hash(name)) % 10000}", concurrency=c,
                                            cpus=e_cpus, wasm=Path(wasm).resolve())
                    try:
                        cpu_s = e.cpu_s()
                        if args.release:
                            time.sleep(1.5)
                        idle = e.rss_mb()
                        if args.smaps:
                            print_smaps(e.proc.pid, f"{Path(name).name} c{c}")
                            with urllib.request.urlopen(f"http://127.0.0.1:{e.admin_port}/memory") as r:
                                print(f"    Envoy /memory: {json.loads(r.read())}")
                        w = run.run_wrk(port, args.load, cpu=cpus[1], token=k.token["ES256"])
                        if w["non_2xx"]:
                            raise RuntimeError(f"{name}: {w['non_2xx']} requests refused\n{e.log_tail()}")
                        loaded = e.rss_mb()
                    finally:
                        e.stop()
                    samples.setdefault((name, c), []).append((e.ready_s, idle, loaded, w["rps"], cpu_s))
                    print(f"  round {rnd} c{c} {Path(name).name:<28} ready {e.ready_s:5.2f}s "
                          f"(cpu {cpu_s:5.2f}s) rss idle "
                          f"{idle:6.1f} loaded {loaded:6.1f} MB  {w['rps']:,.0f} req/s", flush=True)
    finally:
        b.collector.stop()
        for e in list(run.henvoy.Envoy.running):
            e.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def med(name: str, c: int, i: int) -> float:
        return statistics.median(s[i] for s in samples[(name, c)])

    print("\n| module | bytes | conc | ready s | CPU s to ready | RSS idle MB (added) | RSS loaded MB (added) | req/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, _, wasm in variants:
        size = "—" if name == "baseline" else f"{Path(wasm).stat().st_size:,}"
        for c in conc:
            bi, bl = med("baseline", c, 1), med("baseline", c, 2)
            print(f"| {Path(name).name} | {size} | {c} | {med(name, c, 0):.2f} | {med(name, c, 4):.2f} | {med(name, c, 1):.1f} "
                  f"(+{med(name, c, 1) - bi:.1f}) | {med(name, c, 2):.1f} (+{med(name, c, 2) - bl:.1f}) | "
                  f"{med(name, c, 3):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
