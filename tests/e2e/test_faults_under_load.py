"""Faults under steady load (issue 12): while a fixed mix of requests flows through the real
Envoy and the built module, the collector, the bundle, grants and JWKS servers fail in
every way we could think of, and a bad configuration is pushed. Each case checks that

1. every request was decided correctly (the status its class expects: allowed, denied,
   bad token, granted by the signed grants document, outside the grant);
2. no wasm VM failed (Envoy's own wasm stats count no failure, the log holds no panic,
   Envoy is alive);
3. every audit event is accounted for: stored in the collector + declared lost by the
   filter (``meshguard.audit.dropped``, announced as ``meshguard.audit.gap``) = decisions,
   once the fault is over and the buffers have drained.

One Envoy per worker count (1 and 2) serves every case; its listener comes from a
filesystem LDS file so a bad configuration can be pushed while traffic flows. The
collector and each document server sit behind a `FaultProxy` (down, RST, slow), the
collector can answer gRPC errors or answer late, and the document servers answer
garbage, tampered or rolled-back documents. Timeouts are short (audit 1 s, bundle 1 s,
JWKS/grants 5 s) and the audit buffer small (200 events per worker) so that the faults
bite within a few seconds and the drop accounting is exercised for real.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

from harness import bundles, keys
from harness.client import MeshClient
from harness.docserver import DocServer
from harness.envoy import Envoy, Listener, add_cluster, load_template, make_listener, render, with_lds, write_lds
from harness.faults import (FaultProxy, FaultyCollector, Load, RequestClass, audit_accounting, grants_doc,
                            sign_grants, summary, wasm_failure_stats, wrong_decisions)
from harness.poll import wait_until
from harness.ports import free_port

JWKS_PATH = "/.well-known/jwks.json"
BUNDLE_PATH = "/bundles/current.json"
GRANTS_PATH = "/grants"
LOAD_SECONDS = 5.0
# Longer than every fetch timeout (bundle 1 s, JWKS and grants 5 s): a slow server times out.
SLOW_DOC_DELAY = 6.0
# Longer than the audit export timeout (1 s).
SLOW_COLLECTOR_DELAY = 2.5
# Nothing in the request path waits on a callout: a request slower than this was blocked.
MAX_REQUEST_SECONDS = 5.0

RULES = [
    {"name": "read", "action": "read:*", "effect": "allow"},
    {"name": "no-delete", "action": "delete:*", "effect": "deny", "reason": "Agents never delete"},
]
# A validly signed but older bundle: if it were taken, denied requests would pass.
ROLLED_BACK_RULES = [{"name": "everything", "action": "**", "effect": "allow"}]
FAR = "2099-01-01T00:00:00Z"
GRANT = {"id": "g-refund", "agent": "grant-bot", "action": "refund:orders", "expires_at": FAR,
         "reason": "INC-12", "approved_by": "alice"}
ROGUE_GRANT = {"id": "g-wipe", "agent": "grant-bot", "action": "wipe:orders", "expires_at": FAR,
               "reason": "forged", "approved_by": "mallory"}
BUNDLE_VERSION = 2
GRANTS_VERSION = 10


def _bundle(signer, version: int, rules: list[dict], name: str) -> bytes:
    return json.dumps(signer.sign(bundles.bundle(version, [{"name": name, "version": version, "rules": rules}]))).encode()


@dataclass
class Stack:
    envoy: Envoy
    port: int
    lds_dir: "object"
    plugin_config: dict
    collector: FaultyCollector
    collector_proxy: FaultProxy
    docs: dict  # kind -> (DocServer, FaultProxy)
    jwks_keys: dict
    bundle_signer: bundles.BundleSigner
    grants_signer: bundles.BundleSigner
    workers: int
    rotated: bool = False  # key b was added to the JWKS

    def publish(self, plugin_text: str) -> None:
        write_lds(self.lds_dir, [make_listener(load_template(), Listener("agents", self.port, plugin_text))])

    def serve(self, kind: str, body: bytes) -> None:
        path = {"jwks": JWKS_PATH, "bundle": BUNDLE_PATH, "grants": GRANTS_PATH}[kind]
        self.docs[kind][0].serve(path, body)

    def proxy(self, kind: str) -> FaultProxy:
        return self.docs[kind][1]


@pytest.fixture(scope="module", params=[1, 2], ids=["workers-1", "workers-2"])
def stack(request, tmp_path_factory, upstream):
    workers = request.param
    jwks_keys = {"a": keys.generate("ES256", "faults-a"), "b": keys.generate("ES256", "faults-b")}
    bundle_signer = bundles.BundleSigner.generate("faults-bundles")
    grants_signer = bundles.BundleSigner.generate("faults-grants")

    collector = FaultyCollector(delay=SLOW_COLLECTOR_DELAY).start()
    request.addfinalizer(collector.stop)
    collector_proxy = FaultProxy(collector.port).start()
    request.addfinalizer(collector_proxy.stop)
    docs = {}
    for kind in ("jwks", "bundle", "grants"):
        server = DocServer().start()
        request.addfinalizer(server.stop)
        proxy = FaultProxy(server.port, delay=SLOW_DOC_DELAY).start()
        request.addfinalizer(proxy.stop)
        docs[kind] = (server, proxy)
    docs["jwks"][0].serve(JWKS_PATH, json.dumps(keys.jwks(jwks_keys["a"])).encode())
    docs["bundle"][0].serve(BUNDLE_PATH, _bundle(bundle_signer, BUNDLE_VERSION, RULES, "bundle-policy"))
    docs["grants"][0].serve(GRANTS_PATH, json.dumps(sign_grants(grants_signer, grants_doc(GRANTS_VERSION, [GRANT]))).encode())

    plugin_config = {
        "identity": {"issuers": [{"issuer": keys.ISSUER, "audiences": [keys.AUDIENCE], "jwks_cluster": "jwks",
                                  "jwks_path": JWKS_PATH, "jwks_refresh_seconds": 1}]},
        "policies": [{"name": "inline-policy", "rules": RULES}],
        "bundle": {"cluster": "bundles", "path": BUNDLE_PATH, "public_keys": [bundle_signer.public_key_b64],
                   "interval_seconds": 1, "timeout_ms": 1000},
        "grants": {"cluster": "grants", "path": GRANTS_PATH, "public_keys": [grants_signer.public_key_b64],
                   "interval_seconds": 1},
        "audit": {"cluster": "meshguard-collector", "flush_interval_ms": 100, "timeout_ms": 1000,
                  "buffer_events": 200, "retry_max_backoff_ms": 1000},
    }
    workdir = tmp_path_factory.mktemp(f"envoy-faults-{workers}")
    lds_dir = workdir / "lds"
    lds_dir.mkdir()
    port = free_port()
    boot = render([Listener("agents", port, "")], admin_port=free_port(), upstream_port=upstream.port,
                  collector_port=collector_proxy.port)
    for cluster, kind in (("jwks", "jwks"), ("bundles", "bundle"), ("grants", "grants")):
        add_cluster(boot, cluster, docs[kind][1].port)
    envoy = Envoy(f"faults-{workers}", with_lds(boot, lds_dir), workdir, concurrency=workers)
    s = Stack(envoy, port, lds_dir, plugin_config, collector, collector_proxy, docs, jwks_keys,
              bundle_signer, grants_signer, workers)
    s.publish(json.dumps(plugin_config))
    request.addfinalizer(envoy.stop)
    envoy.start(timeout=60)
    # Every source in force before the first fault: bundle v2, grants v10, JWKS key a.
    wait_until(lambda: envoy.stat("meshguard.bundle.version") == BUNDLE_VERSION, timeout=30, what="bundle v2")
    wait_until(lambda: envoy.stat("meshguard.grants.updates") >= 1, timeout=30, what="grants document")
    client = MeshClient(port)
    token = keys.TokenFactory(jwks_keys["a"]).token("grant-bot", "verified")
    wait_until(lambda: client.call(token, action="refund:orders").status == 200, timeout=30,
               what="the grant from the grants document applies")
    return s


def mix(stack: Stack, *, rotated: bool = False) -> list[RequestClass]:
    """The request classes of every case (and the rotated-key class for the JWKS rotation)."""
    client = MeshClient(stack.port)
    factory_a = keys.TokenFactory(stack.jwks_keys["a"])
    cached = factory_a.token("load-agent", "verified")
    granted = factory_a.token("grant-bot", "verified")
    forged = keys.TokenFactory(keys.generate("ES256", "faults-a")).token("load-agent", "verified")
    classes = [
        RequestClass("allowed", lambda: client.call(cached, action="read:orders"), frozenset({200})),
        RequestClass("allowed-cold", lambda: client.call(factory_a.token("cold-agent", "verified"),
                                                          action="read:reports"), frozenset({200})),
        RequestClass("denied", lambda: client.call(cached, action="delete:orders"), frozenset({403})),
        RequestClass("bad-token", lambda: client.call("not.a.token", action="read:orders"), frozenset({401})),
        # a known kid with another key's signature: the signature check must fail
        RequestClass("forged", lambda: client.call(forged, action="read:orders"), frozenset({401})),
        RequestClass("granted", lambda: client.call(granted, action="refund:orders"), frozenset({200})),
        RequestClass("not-granted", lambda: client.call(granted, action="wipe:orders"), frozenset({403})),
    ]
    if rotated:
        factory_b = keys.TokenFactory(stack.jwks_keys["b"])
        classes.append(RequestClass("rotated-key", lambda: client.call(factory_b.token("new-agent", "verified"),
                                                                        action="read:orders"),
                                    frozenset({200, 401})))
    return classes


DECISION_STATS = ("meshguard.requests.allowed", "meshguard.requests.denied", "meshguard.requests.unauthenticated")


def _counters(envoy: Envoy) -> dict[str, int]:
    names = DECISION_STATS + ("meshguard.audit.emitted", "meshguard.audit.dropped", "meshguard.audit.sent",
                              "meshguard.audit.acknowledged", "meshguard.audit.retried", "meshguard.audit.buffered", "meshguard.audit.exports_failed",
                              "meshguard.bundle.fetch_failures", "meshguard.bundle.rejected",
                              "meshguard.grants.fetch_failures", "meshguard.grants.rejected",
                              "meshguard.jwks.fetch_failures", "meshguard.jwks.rejected")
    return {n: envoy.stat(n) for n in names}


def _quiet(counters: dict[str, int]) -> bool:
    """Nothing waits and nothing is in flight: every event handed to an Export call was
    either acknowledged or came back for a retry (a redundant retry of a batch the
    collector already stored would otherwise fail in the next case and be dropped
    there, counted against the wrong case)."""
    return (counters["meshguard.audit.buffered"] == 0 and counters["meshguard.audit.sent"]
            == counters["meshguard.audit.acknowledged"] + counters["meshguard.audit.retried"])


def _healthy(stack: Stack) -> None:
    stack.collector.set_mode("ok")
    stack.collector_proxy.set_mode("pass")
    for _, proxy in stack.docs.values():
        if proxy.mode != "pass":
            proxy.set_mode("pass")


def run_case(stack: Stack, fault, *, restore=None, during=None, rotated=False, seconds=LOAD_SECONDS,
             fault_shows: tuple[str, ...] = ()) -> dict:
    """Starts the load, applies `fault`, keeps the load for `seconds` (running `during`
    meanwhile), restores health, then checks decisions, VM health and audit accounting.
    `fault_shows`: counters of which at least one must have grown (the fault was real)."""
    envoy = stack.envoy
    classes = mix(stack, rotated=rotated)
    # start from drained buffers, whatever the previous case left
    _healthy(stack)
    wait_until(lambda: _quiet(_counters(envoy)), timeout=30, what="audit buffers drained, no export in flight")
    time.sleep(0.3)  # one flush tick, so the published counters are current
    before = _counters(envoy)
    load = Load(classes, threads=6)
    try:
        load.start()
        time.sleep(0.5)  # some traffic before the fault
        fault()
        end = time.monotonic() + seconds
        if during is not None:
            during()
        time.sleep(max(0.0, end - time.monotonic()))
    finally:
        outcomes = load.stop()
        (restore or _healthy)(stack)
        _healthy(stack)

    # 1. every request decided correctly, none blocked on the fault
    wrong = wrong_decisions(outcomes, classes)
    assert not wrong, f"{len(wrong)} wrong decisions of {len(outcomes)}: {wrong[:5]}; mix {summary(outcomes)}"
    slowest = max(o.ended - o.started for o in outcomes)
    assert slowest < MAX_REQUEST_SECONDS, f"a request took {slowest:.2f}s: the request path waited on the fault"
    assert len(outcomes) >= 50, f"too little load to mean anything: {summary(outcomes)}"

    # 2. no VM failure
    assert envoy.alive()
    failures = wasm_failure_stats(envoy.stats())
    assert failures, "Envoy's wasm VM stats are missing: the no-crash check would check nothing"
    assert not any(failures.values()), failures
    log = envoy.log_text()
    assert "panicked" not in log and "wasm trap" not in log.lower(), envoy.log_tail(30)

    # the decision counters saw exactly these requests
    after = _counters(envoy)
    decided = sum(after[n] - before[n] for n in DECISION_STATS)
    assert decided == len(outcomes), (decided, len(outcomes), summary(outcomes))
    if fault_shows:
        grew = {n: after[n] - before[n] for n in fault_shows}
        assert any(grew.values()), f"the fault left no trace in {grew}"

    # 3. stored + declared lost = decisions (after the drain)
    rids = {o.request_id for o in outcomes}

    # The audit stats are published from each worker's counters on its flush tick, so
    # they may trail the requests by a tick: poll until they settle.
    def settled():
        now = _counters(envoy)
        acc = audit_accounting(stack.collector, rids, now["meshguard.audit.dropped"] - before["meshguard.audit.dropped"])
        emitted = now["meshguard.audit.emitted"] - before["meshguard.audit.emitted"]
        # every drop was also announced to the collector, not only counted
        announced = acc.announced == now["meshguard.audit.dropped"]
        done = acc.balanced and announced and emitted == len(outcomes) and _quiet(now)
        return (acc, emitted) if done else None

    try:
        acc, _ = wait_until(settled, timeout=30, interval=0.25, what="audit events stored or declared lost")
    except AssertionError:
        now = _counters(envoy)
        acc = audit_accounting(stack.collector, rids, now["meshguard.audit.dropped"] - before["meshguard.audit.dropped"])
        raise AssertionError(
            f"audit accounting does not balance: {acc}, emitted "
            f"{now['meshguard.audit.emitted'] - before['meshguard.audit.emitted']} for {len(outcomes)} decisions, "
            f"{now['meshguard.audit.dropped']} dropped in all, "
            f"buffered={envoy.stat('meshguard.audit.buffered')}")
    print(f"[{stack.workers} worker(s)] {len(outcomes)} requests {summary(outcomes)}; {acc}; "
          f"VM failure stats {failures}")
    return {"outcomes": outcomes, "accounting": acc, "counters": {n: after[n] - before[n] for n in after}}


# --- the collector ---------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["down", "reset", "slow", "unavailable", "internal"])
def test_collector_fault(stack, fault):
    def apply():
        if fault in ("down", "reset"):
            stack.collector_proxy.set_mode(fault)
        else:
            stack.collector.set_mode(fault)

    result = run_case(stack, apply, fault_shows=("meshguard.audit.exports_failed",))
    acc = result["accounting"]
    if fault in ("unavailable", "internal"):
        # the collector refused these batches before storing anything, so nothing declared
        # lost can have arrived (a late answer or a connection cut after the collector
        # stored a batch can make that happen for the other faults)
        assert acc.late == 0, acc


# --- bundle, grants and JWKS servers --------------------------------------------------------

def _every_doc_proxy(mode: str):
    def apply(stack: Stack):
        for kind in ("jwks", "bundle", "grants"):
            stack.proxy(kind).set_mode(mode)
    return apply


def _garbage(stack: Stack):
    for kind in ("jwks", "bundle", "grants"):
        stack.serve(kind, b"<html>502 Bad Gateway</html>")


def _tampered(stack: Stack):
    # signed, then changed: the bundle would deny reads, the grants would add a grant
    signed = stack.bundle_signer.sign(bundles.bundle(BUNDLE_VERSION + 1, [{"name": "bundle-policy", "version": 3,
                                                                          "rules": RULES}]))
    stack.serve("bundle", json.dumps(bundles.tampered(signed)).encode())
    grants = sign_grants(stack.grants_signer, grants_doc(GRANTS_VERSION + 1, [GRANT]))
    grants["grants"].append(ROGUE_GRANT)
    stack.serve("grants", json.dumps(grants).encode())


def _rolled_back(stack: Stack):
    # validly signed, but older than what is in force: would allow everything / drop the grant
    stack.serve("bundle", _bundle(stack.bundle_signer, BUNDLE_VERSION - 1, ROLLED_BACK_RULES, "old-policy"))
    stack.serve("grants", json.dumps(sign_grants(stack.grants_signer,
                                                 grants_doc(GRANTS_VERSION - 5, [ROGUE_GRANT]))).encode())


def _restore_documents(stack: Stack):
    _healthy(stack)
    current = [stack.jwks_keys["a"]] + ([stack.jwks_keys["b"]] if stack.rotated else [])
    stack.serve("jwks", json.dumps(keys.jwks(*current)).encode())
    stack.serve("bundle", _bundle(stack.bundle_signer, BUNDLE_VERSION, RULES, "bundle-policy"))
    stack.serve("grants", json.dumps(sign_grants(stack.grants_signer, grants_doc(GRANTS_VERSION, [GRANT]))).encode())


FAILED_FETCHES = ("meshguard.bundle.fetch_failures", "meshguard.grants.fetch_failures",
                  "meshguard.jwks.fetch_failures")
REJECTED = ("meshguard.bundle.rejected", "meshguard.grants.rejected", "meshguard.jwks.rejected")

DOC_FAULTS = {
    "down": (_every_doc_proxy("down"), FAILED_FETCHES, LOAD_SECONDS),
    "reset": (_every_doc_proxy("reset"), FAILED_FETCHES, LOAD_SECONDS),
    "slow": (_every_doc_proxy("slow"), FAILED_FETCHES, SLOW_DOC_DELAY + 1.5),
    "garbage": (_garbage, FAILED_FETCHES + REJECTED, LOAD_SECONDS),
    "tampered": (_tampered, ("meshguard.bundle.rejected", "meshguard.grants.rejected"), LOAD_SECONDS),
    "rolled-back": (_rolled_back, ("meshguard.bundle.rejected", "meshguard.grants.rejected"), LOAD_SECONDS),
}


@pytest.mark.parametrize("fault", list(DOC_FAULTS))
def test_document_servers_fault(stack, fault):
    apply, shows, seconds = DOC_FAULTS[fault]
    run_case(stack, lambda: apply(stack), restore=_restore_documents, seconds=seconds, fault_shows=shows)
    # the sources in force did not move
    assert stack.envoy.stat("meshguard.bundle.version") == BUNDLE_VERSION


def test_jwks_rotation_while_the_server_flaps(stack):
    """The issuer adds key b while its JWKS server goes down and up every 0.4 s: key-a
    tokens keep working throughout; key-b tokens are refused only until the new set was
    fetched, and never again after."""
    proxy = stack.proxy("jwks")

    def rotate():
        stack.rotated = True
        stack.serve("jwks", json.dumps(keys.jwks(stack.jwks_keys["a"], stack.jwks_keys["b"])).encode())

    def flap():
        end = time.monotonic() + LOAD_SECONDS - 1
        while time.monotonic() < end:
            proxy.set_mode("down")
            time.sleep(0.4)
            proxy.set_mode("pass")
            time.sleep(0.4)

    result = run_case(stack, rotate, during=flap, rotated=True, restore=_restore_documents)
    rotated = sorted((o for o in result["outcomes"] if o.cls == "rotated-key"), key=lambda o: o.started)
    first_ok = next((o for o in rotated if o.status == 200), None)
    if first_ok is not None:
        # once one worker has the new key, every worker has it within a tick
        grace = first_ok.ended + 1.5
        relapses = [o for o in rotated if o.started > grace and o.status != 200]
        assert not relapses, f"{len(relapses)} key-b refusals after the new set was in force: {relapses[:3]}"
    # with the server steady again, key b is accepted
    client = MeshClient(stack.port)
    factory_b = keys.TokenFactory(stack.jwks_keys["b"])
    wait_until(lambda: client.call(factory_b.token("new-agent", "verified"), action="read:orders").status == 200,
               timeout=40, what="key b accepted once the JWKS server is steady")


# --- configuration ---------------------------------------------------------------------------

def test_bad_configuration_pushed_under_load(stack):
    """Broken plugin configurations arrive through LDS while traffic flows: Envoy refuses
    each, and the configuration in force keeps deciding every request."""
    rejected = stack.envoy.stat("listener_manager.lds.update_rejected")
    broken = []
    no_audiences = json.loads(json.dumps(stack.plugin_config))
    no_audiences["identity"]["issuers"][0]["audiences"] = []
    broken.append(json.dumps(no_audiences))
    typo = json.loads(json.dumps(stack.plugin_config))
    typo["policies"][0]["rules"][1]["conditions"] = ["time.hours >= 0"]
    broken.append(json.dumps(typo))
    broken.append("identity: [not, a, mapping")

    def push():
        for i, text in enumerate(broken):
            stack.publish(text)
            stack.envoy.wait_stat("listener_manager.lds.update_rejected", rejected + i + 1, timeout=20)
            time.sleep(0.5)

    run_case(stack, lambda: None, during=push)
    assert stack.envoy.stat("listener_manager.lds.update_rejected") == rejected + len(broken)
