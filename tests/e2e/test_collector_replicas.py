"""Replicated collectors on one PostgreSQL (issue 14): the real Envoy exports to two
`meshguard collector --store postgres://...` replicas (one audit cluster, both endpoints);
one replica is killed mid-stream (SIGKILL by PID) and restarted. Afterwards the stored
events are exactly the decisions, none twice, and `audit verify` finds every chain
intact. Retention (`--retain`) deletes old events on either backend and `audit verify`
still proves what remains, declaring the truncation."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from harness import keys
from harness.client import MeshClient
from harness.envoy import Envoy, Listener, render
from harness.mgcollector import MeshguardCollector
from harness.poll import wait_until
from harness.ports import free_port
from harness.postgres import PostgresCluster

POLICY = "name: p\nrules:\n  - {action: 'read:*', effect: allow}\n  - {action: 'delete:*', effect: deny, reason: no}\n"


def plugin_config(jwks: dict) -> str:
    return json.dumps({
        "identity": {"issuers": [{"issuer": keys.ISSUER, "audiences": [keys.AUDIENCE], "jwks": jwks}]},
        "policy_yaml": POLICY,
        "audit": {"cluster": "meshguard-collector", "flush_interval_ms": 100, "retry_max_backoff_ms": 500},
    })


def start_envoy(request, tmp_path_factory, name, jwks, upstream, collector_ports, concurrency=2):
    listener = Listener("agents", free_port(), plugin_config(jwks))
    boot = render([listener], admin_port=free_port(), upstream_port=upstream.port, collector_port=collector_ports[0])
    boot["node"] = {"id": f"test-{name}", "cluster": "meshguard-tests"}
    cluster = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "meshguard-collector")
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in collector_ports
    ]
    envoy = Envoy(name, boot, tmp_path_factory.mktemp(f"envoy-{name}"), concurrency=concurrency)
    request.addfinalizer(envoy.stop)
    envoy.start()
    return envoy, MeshClient(listener.port)


@pytest.fixture(scope="module")
def pg():
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


def per_host_successes(envoy: Envoy) -> dict[str, int]:
    """``rq_success`` of each collector endpoint, from Envoy's /clusters admin page."""
    out = {}
    for line in envoy.admin("/clusters").splitlines():
        m = re.match(r"meshguard-collector::(127\.0\.0\.1:\d+)::rq_success::(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def test_two_replicas_share_postgres_and_survive_losing_one(request, tmp_path_factory, keyring, tokens, upstream,
                                                            pg):
    url = pg.database("replicas")
    replicas = [MeshguardCollector(tmp_path_factory.mktemp(f"replica-{i}"), store=url) for i in (0, 1)]
    for r in replicas:
        request.addfinalizer(r.stop)
        r.start()
    envoy, client = start_envoy(request, tmp_path_factory, "replicas", keyring.jwks, upstream,
                                [r.port for r in replicas])
    token = tokens.token("agent-r", "verified")
    sent: dict[str, str] = {}

    def send(n: int) -> None:
        for i in range(n):
            rid = str(uuid.uuid4())
            action = "delete:orders" if i % 3 == 0 else "read:orders"
            r = client.call(token, action=action, request_id=rid)
            sent[rid] = {200: "allow", 403: "deny"}[r.status]
            time.sleep(0.005)

    send(150)
    # Both replicas have taken Exports before one of them is lost.
    wait_until(lambda: len(per_host_successes(envoy)) == 2 and all(per_host_successes(envoy).values()), 20,
               "both replicas acknowledged exports")
    replicas[0].kill()
    send(150)
    replicas[0].start()
    send(150)

    def all_stored():
        events = replicas[1].events()
        return events if len(events) >= len(sent) else None

    stored = wait_until(all_stored, 60, "every decision stored")
    rids = [e["attributes"]["meshguard.request_id"] for e in stored]
    assert len(rids) == len(set(rids)), "an event stored twice"
    assert set(rids) == set(sent), "stored events differ from the decisions"
    assert {e["attributes"]["meshguard.request_id"]: e["decision"] for e in stored} == sent
    # Queries through either replica's store see the same thing.
    assert len(replicas[0].events()) == len(sent)
    code, report = replicas[0].verify()
    assert code == 0 and report["intact"], report
    assert sum(s["events"] for s in report["streams"]) == len(sent)
    assert all(not s["declared_losses"] for s in report["streams"]), report
    hosts = per_host_successes(envoy)
    assert len(hosts) == 2 and all(hosts.values()), hosts


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_retention_deletes_old_events_and_verify_declares_the_truncation(request, tmp_path_factory, keyring,
                                                                         tokens, upstream, pg, backend):
    store = pg.database(f"retention_{backend}") if backend == "postgres" else None
    mgc = MeshguardCollector(tmp_path_factory.mktemp(f"retain-{backend}"), store=store,
                             extra=("--retain", "8s", "--retain-every", "1s"))
    request.addfinalizer(mgc.stop)
    mgc.start()
    envoy, client = start_envoy(request, tmp_path_factory, f"retain-{backend}", keyring.jwks, upstream, [mgc.port],
                                concurrency=1)
    token = tokens.token("agent-old", "verified")
    old = [client.call(token, action="read:orders", request_id=str(uuid.uuid4())).request_id for _ in range(20)]
    wait_until(lambda: len(mgc.events()) >= 20, 20, "old events stored")
    # Past the retention age, later decisions arrive; the old ones go at the next pass.
    time.sleep(9)
    new = [client.call(token, action="read:orders", request_id=str(uuid.uuid4())).request_id for _ in range(10)]

    def only_new():
        ids = [e["attributes"]["meshguard.request_id"] for e in mgc.events()]
        return ids if set(ids) == set(new) else None

    kept = wait_until(only_new, 30, "old events deleted, new ones kept")
    assert not set(kept) & set(old)
    code, report = mgc.verify()
    assert code == 0 and report["intact"], report
    (stream,) = report["streams"]
    assert stream["truncated_before"] == 21 and stream["events"] == 10, stream
    assert stream["first_seq"] == 21 and not stream["declared_losses"], stream
    table = mgc.run("verify")
    assert table.returncode == 0, table.stderr
    assert "truncated on purpose before seq 21" in table.stdout, table.stdout
    assert "all 1 stream(s) intact" in table.stdout, table.stdout


def tls_audit_cluster(boot: dict, ca, client) -> None:
    """The audit cluster speaks TLS to the collector and presents `client`'s certificate."""
    cluster = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "meshguard-collector")
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [{"certificate_chain": {"inline_bytes": _b64(client.cert_pem)},
                                      "private_key": {"inline_bytes": _b64(client.key_pem)}}],
                "validation_context": {"trusted_ca": {"inline_bytes": _b64(ca.cert_pem)},
                                       "match_typed_subject_alt_names": [
                                           {"san_type": "IP_ADDRESS", "matcher": {"exact": "127.0.0.1"}}]},
            },
        },
    }


def _b64(pem: bytes) -> str:
    import base64
    return base64.b64encode(pem).decode()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_tls_ingest_records_the_peer_and_verify_flags_an_impostor(request, tmp_path_factory, keyring, tokens,
                                                                  upstream, pg, backend):
    from harness.certs import CertificateAuthority, spiffe_id

    work = tmp_path_factory.mktemp(f"tls-{backend}")
    ca = CertificateAuthority()
    ca_file = work / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    server_crt, server_key = ca.server().write(work, "collector")
    store = pg.database(f"tls_{backend}") if backend == "postgres" else None
    mgc = MeshguardCollector(work, store=store,
                             extra=("--tls-cert", str(server_crt), "--tls-key", str(server_key),
                                    "--tls-client-ca", str(ca_file)))
    request.addfinalizer(mgc.stop)
    mgc.start()

    # Two sidecars: one whose certificate is of the namespace its node claims, one whose
    # node claims namespace "payments" while its certificate says "shop".
    sidecars = {}
    for name, claimed, cert_ns in (("honest", "shop", "shop"), ("impostor", "payments", "shop")):
        listener = Listener("agents", free_port(), plugin_config(keyring.jwks))
        boot = render([listener], admin_port=free_port(), upstream_port=upstream.port, collector_port=mgc.port)
        boot["node"] = {"id": f"sidecar~{name}", "cluster": "meshguard-tests", "metadata": {"NAMESPACE": claimed}}
        tls_audit_cluster(boot, ca, ca.workload(spiffe_id(cert_ns, name)))
        envoy = Envoy(f"tls-{name}-{backend}", boot, tmp_path_factory.mktemp(f"envoy-tls-{name}"))
        request.addfinalizer(envoy.stop)
        envoy.start()
        sidecars[name] = MeshClient(listener.port)
    token = tokens.token("agent-tls", "verified")
    for client in sidecars.values():
        for _ in range(5):
            client.call(token, action="read:orders", request_id=str(uuid.uuid4()))
    wait_until(lambda: len(mgc.events()) >= 10, 30, "events over TLS stored")
    code, report = mgc.verify()
    assert code == 1 and not report["intact"], report
    by_workload = {s["workload"]: s for s in report["streams"]}
    honest, impostor = by_workload["sidecar~honest"], by_workload["sidecar~impostor"]
    assert honest["verdict"] == "intact" and honest["peers"] == [spiffe_id("shop", "honest")], honest
    assert impostor["verdict"] == "broken", impostor
    assert impostor["peers"] == [spiffe_id("shop", "impostor")]
    assert [f["kind"] for f in impostor["findings"]] == ["peer"], impostor
    assert '"payments"' in impostor["findings"][0]["detail"]

    # Without a client certificate the ingest refuses the TLS handshake: nothing stored.
    plain = subprocess_grpc_export_without_client_cert(mgc.port, ca_file)
    assert plain is not None, "a client without a certificate was served"


def subprocess_grpc_export_without_client_cert(port: int, ca_file) -> str | None:
    """An Export over TLS without a client certificate; the error text, or None if served."""
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

    creds = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as ch:
        stub = logs_service_pb2_grpc.LogsServiceStub(ch)
        try:
            stub.Export(logs_service_pb2.ExportLogsServiceRequest(), timeout=10)
        except grpc.RpcError as e:
            return f"{e.code()}: {e.details()}"
    return None
