"""Audit integrity against someone who can write the store (issue 12): the real Envoy
signs checkpoints of its stream with a key the collector never holds, the real collector
writes them into its SQLite file and into a checkpoint log kept outside it, and
`meshguard audit verify --keys` tells the attacks on that file apart from an intact trail.

The attacker rewrites the database with sqlite3 and recomputes the hash chain with the
construction documented in the README ("Hash chain": chain v3, which the filter writes, and
v2 before it), implemented here in Python from that text alone, so the test also checks
the documentation byte for byte."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import struct
import time
import uuid
from pathlib import Path

import pytest

from harness.mgcollector import MeshguardCollector, grants_keypair
from harness.poll import wait_until

from test_audit_trail import plugin_config, start_envoy

WORKLOAD = "test-integrity"


# --- the v2 chain construction, from the README --------------------------------------------

def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # two's complement for negative ints
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _any_value(v) -> bytes:
    if isinstance(v, str):
        return _len_field(1, v.encode())
    if isinstance(v, bool):
        return _varint(2 << 3) + _varint(int(v))
    if isinstance(v, int):
        return _varint(3 << 3) + _varint(v)
    if isinstance(v, list) and all(isinstance(i, str) for i in v):
        return _len_field(5, b"".join(_len_field(1, _len_field(1, i.encode())) for i in v))
    return _len_field(7, json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode())


def chain_v2_hash(time_unix_nano: int, trace_id_hex: str, attributes: dict) -> str:
    trace = bytes.fromhex(trace_id_hex) if len(trace_id_hex) == 32 else bytes(16)
    data = b"meshguard-audit-v2\n" + struct.pack("<Q", time_unix_nano) + trace
    for key in sorted(k for k in attributes if k != "meshguard.hash"):
        kv = _len_field(1, key.encode()) + _len_field(2, _any_value(attributes[key]))
        data += _len_field(6, kv)
    return hashlib.sha256(data).hexdigest()


# --- the v3 chain construction, from the README --------------------------------------------

V3_KEYS = """meshguard.decision meshguard.effect meshguard.enforced meshguard.agent.id
meshguard.trust_tier meshguard.delegation.chain meshguard.delegation.depth meshguard.action
meshguard.resource meshguard.policy meshguard.rule meshguard.reason meshguard.mode
meshguard.bundle.version meshguard.identity.error http.request.method url.path server.address
http.response.status_code meshguard.request_id meshguard.latency_us mcp.method.name
gen_ai.tool.name mcp.session.id mcp.protocol.version mcp.resource.uri jsonrpc.request.id
meshguard.mcp.arguments meshguard.a2a.method meshguard.shadow.policy meshguard.approval_id
meshguard.grant meshguard.inputs meshguard.mcp.argument_keys meshguard.stream meshguard.seq
meshguard.prev_hash meshguard.chain.version""".split()
V3_ID = {k: i + 1 for i, k in enumerate(V3_KEYS)}


def _v3_str(b: bytes) -> bytes:
    return _varint(len(b)) + b


def _v3_value(v) -> bytes:
    if isinstance(v, str):
        return b"\x01" + _v3_str(v.encode())
    if isinstance(v, bool):
        return b"\x02" + bytes([int(v)])
    if isinstance(v, int) and -(1 << 63) <= v < (1 << 63):
        return b"\x03" + _varint(v)
    if isinstance(v, list) and all(isinstance(i, str) for i in v):
        return b"\x05" + _varint(len(v)) + b"".join(_v3_str(i.encode()) for i in v)
    return b"\x07" + _v3_str(json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode())


def chain_v3_hash(time_unix_nano: int, trace_id_hex: str, attributes: dict) -> str:
    trace = bytes.fromhex(trace_id_hex) if len(trace_id_hex) == 32 else bytes(16)
    data = b"meshguard-audit-v3\n" + struct.pack("<Q", time_unix_nano) + trace
    keys = [k for k in attributes if k != "meshguard.hash"]
    known = sorted((k for k in keys if k in V3_ID), key=V3_ID.get)
    unknown = sorted((k for k in keys if k not in V3_ID), key=str.encode)
    for key in known:
        data += bytes([V3_ID[key]]) + _v3_value(attributes[key])
    for key in unknown:
        data += b"\x00" + _v3_str(key.encode()) + _v3_value(attributes[key])
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def chain_hash(time_unix_nano: int, trace_id_hex: str, attributes: dict) -> str:
    """The hash by the event's `meshguard.chain.version` (the filter writes 3)."""
    version = attributes.get("meshguard.chain.version")
    return {2: chain_v2_hash, 3: chain_v3_hash}[version](time_unix_nano, trace_id_hex, attributes)


def rechain(db: Path, stream: str, from_seq: int, edit=None, new_stream: str | None = None) -> None:
    """What a store writer does: edit event(s) and recompute every hash from `from_seq`
    on, so that the chain verifies again. With `new_stream`, copies the stream under a
    new id instead (an invented stream)."""
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, seq, time_unix_nano, trace_id, prev_hash, attributes FROM events "
                       "WHERE stream=? ORDER BY seq", (stream,)).fetchall()
    prev = None
    for rid, seq, t, trace, prev_hash, attrs_text in rows:
        attrs = json.loads(attrs_text)
        if seq < from_seq:
            prev = attrs["meshguard.hash"]
            continue
        if prev is None:
            prev = prev_hash
        if edit:
            edit(seq, attrs)
        if new_stream:
            attrs["meshguard.stream"] = new_stream
        attrs["meshguard.prev_hash"] = prev
        h = chain_hash(t, trace, attrs)
        attrs["meshguard.hash"] = h
        if new_stream:
            con.execute(
                "INSERT INTO events (time_unix_nano, received_unix_nano, workload, stream, seq, trace_id, span_id,"
                " severity, body, agent, tier, action, resource, decision, effect, enforced, policy, rule, reason,"
                " mode, bundle_version, method, path, server_address, status, request_id, latency_us,"
                " delegation_chain, prev_hash, hash, content_hash, attributes, resource_attributes)"
                " SELECT time_unix_nano, received_unix_nano, workload, ?, seq, trace_id, span_id, severity, body,"
                " agent, tier, action, resource, decision, effect, enforced, policy, rule, reason, mode,"
                " bundle_version, method, path, server_address, status, request_id, latency_us, delegation_chain,"
                " ?, ?, ?, ?, resource_attributes FROM events WHERE id=?",
                (new_stream, prev, h, h, json.dumps(attrs), rid))
        else:
            con.execute("UPDATE events SET decision=?, attributes=?, prev_hash=?, hash=?, content_hash=? WHERE id=?",
                        (attrs.get("meshguard.decision"), json.dumps(attrs), prev, h, h, rid))
        prev = h
    con.commit()
    con.close()


def kinds(report: dict) -> list[tuple[str, str]]:
    return [(s["stream"], f["kind"]) for s in report["streams"] for f in s["findings"]]


@pytest.fixture
def signed_trail(request, tmp_path, tmp_path_factory, keyring, tokens, upstream):
    """A stream written by the real Envoy with a signing key, stored by the real collector,
    the collector stopped (database checkpointed into one file)."""
    key_file, public = grants_keypair(tmp_path / "keys", kid="audit-e2e")
    seed = json.loads(key_file.read_text())["d"]
    keys_file = tmp_path / "audit-keys.txt"
    keys_file.write_text(f"# workload  public key\n{WORKLOAD} {public[0]['x']}\n")
    log = tmp_path / "checkpoints.jsonl"
    mgc = MeshguardCollector(tmp_path, checkpoint_log=log).start()
    request.addfinalizer(mgc.stop)
    envoy, client = start_envoy(request, tmp_path_factory, "integrity",
                                plugin_config(keyring.jwks, signing_key=seed), upstream, mgc.port)
    token = tokens.token("agent-i", "verified")
    sent = 0
    for burst in range(4):  # several batches, so several checkpoints
        for i in range(8):
            r = client.call(token, action="delete:orders" if i % 2 else "read:orders", request_id=str(uuid.uuid4()))
            assert r.status in (200, 403)
            sent += 1
        time.sleep(0.5)
    wait_until(lambda: len(mgc.events()) >= sent or None, 20, "all events stored")
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 2 or None, 10, "checkpoints logged")
    envoy.stop()
    mgc.stop()
    return mgc, keys_file, log, sent


def attacked(mgc: MeshguardCollector, name: str) -> Path:
    copy = mgc.db.parent / f"{name}.db"
    shutil.copyfile(mgc.db, copy)
    return copy


def the_stream(db: Path) -> str:
    con = sqlite3.connect(db)
    (stream,) = con.execute("SELECT DISTINCT stream FROM events").fetchone()
    con.close()
    return stream


def test_intact_signed_trail_verifies_with_keys_and_log(signed_trail):
    mgc, keys_file, log, sent = signed_trail
    code, report = mgc.verify("--keys", str(keys_file), "--checkpoints", str(log))
    assert code == 0 and report["intact"], report
    (stream,) = report["streams"]
    assert stream["events"] == sent and stream["verdict"] == "intact"
    con = sqlite3.connect(mgc.db)
    (n,) = con.execute("SELECT count(*) FROM signatures WHERE kind='checkpoint'").fetchone()
    assert n >= 2, "one checkpoint per exported batch"
    assert con.execute("SELECT count(*) FROM events WHERE attributes LIKE '%\"meshguard.chain.version\":3%'"
                       ).fetchone()[0] == sent
    con.close()
    # The Python construction from the README agrees with the filter, byte for byte.
    for e in mgc.events():
        a = e["attributes"]
        assert a["meshguard.chain.version"] == 3
        assert chain_v3_hash(e["time_unix_nano"], e["trace_id"], a) == a["meshguard.hash"]
        # tamper evidence per event: any one attribute edited, the hash no longer matches
        for key in a:
            if key != "meshguard.hash":
                edited = dict(a, **{key: [a[key]] if not isinstance(a[key], list) else a[key] + ["x"]})
                assert chain_v3_hash(e["time_unix_nano"], e["trace_id"], edited) != a["meshguard.hash"], key


def test_rewritten_suffix_is_reported(signed_trail):
    mgc, keys_file, log, _ = signed_trail
    db = attacked(mgc, "rewritten")
    stream = the_stream(db)

    def allow_the_first_denial(seq, attrs):
        if seq == 2:
            assert attrs["meshguard.decision"] == "deny"
            attrs["meshguard.decision"] = "allow"

    rechain(db, stream, 2, allow_the_first_denial)
    code, report = mgc.verify(db=db)
    assert code == 0 and report["intact"], "the recomputed chain alone is fooled"
    code, report = mgc.verify("--keys", str(keys_file), db=db)
    assert code == 1 and not report["intact"]
    assert (stream, "rewritten") in kinds(report), report
    out = mgc.run("verify", "--keys", str(keys_file), db=db)
    assert out.returncode == 1 and "rewritten: the filter signed hash" in out.stdout, out.stdout


def test_invented_stream_is_unauthenticated(signed_trail):
    mgc, keys_file, log, _ = signed_trail
    db = attacked(mgc, "invented")
    stream = the_stream(db)
    rechain(db, stream, 1, new_stream="forged-0001")
    code, report = mgc.verify(db=db)
    assert code == 0, "both streams chain correctly"
    code, report = mgc.verify("--keys", str(keys_file), db=db)
    assert code == 1
    assert kinds(report) == [("forged-0001", "unauthenticated")], report
    forged = next(s for s in report["streams"] if s["stream"] == "forged-0001")
    assert "no checkpoint signed by the key" in forged["findings"][0]["detail"]
    # A workload the keys file does not know at all.
    other = keys_file.parent / "other-keys.txt"
    other.write_text(keys_file.read_text().replace(WORKLOAD, "some-other-workload"))
    code, report = mgc.verify("--keys", str(other), db=db)
    assert code == 1 and all(k == "unauthenticated" for _, k in kinds(report)), report


def test_truncation_after_the_last_checkpoint_is_reported_with_the_outside_log(signed_trail):
    mgc, keys_file, log, sent = signed_trail
    db = attacked(mgc, "truncated")
    con = sqlite3.connect(db)
    seqs = [s for (s,) in con.execute("SELECT to_seq FROM signatures WHERE kind='checkpoint' ORDER BY to_seq")]
    cut = seqs[-2]  # keep everything up to the second-to-last checkpoint
    con.execute("DELETE FROM events WHERE seq > ?", (cut,))
    con.execute("DELETE FROM signatures WHERE to_seq > ?", (cut,))
    con.commit()
    con.close()
    code, report = mgc.verify("--keys", str(keys_file), db=db)
    assert code == 0 and report["intact"], "the store alone cannot show a clean cut"
    code, report = mgc.verify("--keys", str(keys_file), "--checkpoints", str(log), db=db)
    assert code == 1
    (stream,) = report["streams"]
    assert [f["kind"] for f in stream["findings"]] == ["truncated"], report
    assert stream["findings"][0]["checkpoint_seq"] == sent
    assert stream["findings"][0]["stored_last_seq"] == cut
