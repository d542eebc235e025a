#!/usr/bin/env python3
"""Writes the committed seed corpora (fuzz/corpus/<target>/) from the repository's own
configurations, bundles and examples. Rerun after changing a fixture: `python3 fuzz/seeds.py`.

Selector bytes match the targets' first byte (see each fuzz_targets/*.rs). Tokens are
signed with the fixed Ed25519 seed of fuzz/src/lib.rs (seed bytes 7 * 32), so mode-0 token
seeds verify; needs `cryptography` (in the project's .venv)."""
import base64
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
NOW = 1_800_000_000


def write(target: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def plugin_configs() -> list[bytes]:
    out = []
    for f in sorted((ROOT / "envoy").glob("envoy*.yaml")):
        text = f.read_text()
        # The plugin configuration is the block scalar under `configuration: ... value: |`.
        for m in re.finditer(r"\n( +)value: \|\n((?:\1  .*\n|\s*\n)+)", text):
            indent = len(m.group(1)) + 2
            block = "\n".join(line[indent:] for line in m.group(2).splitlines())
            if "identity" in block or "policy" in block:
                out.append(block.encode())
    for f in [ROOT / "tests/fixtures/istiod-plugin-config.json",
              ROOT / "istio/envoyfilter/plugin-config.json"]:
        if f.exists():
            out.append(f.read_bytes())
    return out


def main() -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(bytes([7] * 32))

    def token(header: dict, claims: dict) -> str:
        si = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        return si + "." + b64(key.sign(si.encode()))

    # config
    for c in plugin_configs():
        write("config", c)
    write("config", b"mode: audit\nidentity:\n  issuers: []\npolicy_yaml: |\n  name: p\n  rules: []\n")

    # token: 0 raw, 1 claims behind a valid signature, 2 header NUL claims
    header = {"alg": "EdDSA", "typ": "JWT", "kid": "fuzz-ed"}
    claims = {"iss": "https://issuer.example", "aud": "agents", "sub": "agent-a", "iat": NOW,
              "exp": NOW + 600, "trust_tier": "verified", "team": "research"}
    delegated = dict(claims, act={"sub": "agent-b", "act": {"sub": "agent-c"}})
    write("token", b"\x00Bearer " + token(header, claims).encode())
    write("token", b"\x00" + token(header, delegated).encode())
    write("token", b"\x00" + token(dict(header, alg="none"), claims).encode())
    write("token", b"\x01" + json.dumps(claims).encode())
    write("token", b"\x01" + json.dumps(delegated).encode())
    write("token", b"\x01" + json.dumps(dict(claims, aud=["agents", "x"], exp="soon")).encode())
    write("token", b"\x02" + json.dumps(dict(header, crit=["b64"], jku="http://x")).encode()
          + b"\x00" + json.dumps(claims).encode())

    # condition: source NUL context
    ctx = json.dumps({"time": {"hour": 10}, "agent": {"trust_tier": "verified",
                      "claims": {"team": "research", "groups": ["a", "b"]}},
                      "context": {"amount": 42, "currency": "EUR"},
                      "request": {"headers": {"x-recipient-domain": "example.com"}}}).encode()
    for src in [
        'time.hour >= 9 AND time.hour <= 17',
        '(time.hour >= 9 AND time.hour <= 17) AND NOT agent.trust_tier == "untrusted" AND '
        '(request.headers.x-recipient-domain == "example.com" OR context.amount < 100)',
        'agent.claims.team in ["research", "ops"]',
        '"a" in agent.claims.groups',
        'context.amount <= 100 AND context.currency == "EUR"',
        'NOT NOT (context.amount != 1.5e2)',
    ]:
        write("condition", src.encode() + b"\x00" + ctx)

    # jsonrpc: selector (bits 0-1 endpoint /mcp /a2a /enforce /enforce/batch, bit 2 SSE
    # response, bit 3 oversized response, bit 4 oversized request) body NUL response
    list_resp = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
        {"name": "pay", "inputSchema": {}}, {"name": "rm_all"}, {"name": "send_email"}]}}).encode()
    mcp = [
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, list_resp),
        ({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
          "params": {"name": "pay", "arguments": {"amount": 42, "currency": "EUR"}}}, b""),
        ([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
          {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "rm_all"}},
          {"jsonrpc": "2.0", "method": "notifications/initialized"}], list_resp),
        ({"jsonrpc": "2.0", "id": 4, "method": "initialize",
          "params": {"protocolVersion": "2025-06-18", "capabilities": {}}}, b""),
    ]
    for body, resp in mcp:
        write("jsonrpc", b"\x00" + json.dumps(body).encode() + b"\x00" + resp)
    sse = b"event: message\nid: 7\ndata: " + list_resp + b"\n\n: keepalive\n\ndata: {\"partial"
    write("jsonrpc", b"\x04" + json.dumps(mcp[0][0]).encode() + b"\x00" + sse)
    write("jsonrpc", b"\x01" + json.dumps({"jsonrpc": "2.0", "id": "a", "method": "message/send",
          "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": "hi"}]}}}).encode())
    write("jsonrpc", b"\x01" + json.dumps({"jsonrpc": "2.0", "id": 1, "method": "SendMessage"}).encode())
    write("jsonrpc", b"\x02" + json.dumps({"agent_id": "agent-a", "action": "read:email",
          "resource": "email", "context": {"amount": 3}}).encode())
    write("jsonrpc", b"\x03" + json.dumps({"agent_id": "agent-a", "actions": [
          {"action": "read:email"}, {"action": "tool:pay", "context": {"amount": 500}}]}).encode())

    # documents: 0 bundle, 1 grants, 2 bundle signed by the harness, 3 grants signed, 4 JWKS
    bundle = (ROOT / "istio/live/bundles/current.json").read_bytes()
    write("documents", b"\x00" + bundle)
    write("documents", b"\x02" + bundle)
    grants = {"format": "meshguard-grants/v1", "version": 2, "created_at": "2026-11-22T00:00:00Z",
              "grants": [{"id": "g1", "agent": "agent-*", "action": "tool:pay", "resource": "acct/**",
                          "expires_at": "2027-01-01T00:00:00Z", "reason": "ticket 7"}]}
    write("documents", b"\x01" + json.dumps(dict(grants, signatures=[{"alg": "Ed25519", "sig": "AA"}])).encode())
    write("documents", b"\x03" + json.dumps(grants).encode())
    jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "a", "x": b64(bytes(32))},
                     {"kty": "EC", "crv": "P-256", "kid": "b", "x": b64(bytes(32)), "y": b64(bytes(32))},
                     {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}]}
    write("documents", b"\x04" + json.dumps(jwks).encode())

    # otlp: arbitrary bytes drive the structure; a few lengths to start from
    write("otlp", bytes(range(256)))
    write("otlp", b"\x01" + bytes(range(255, 0, -1)) * 2)
    write("otlp", b"\x00meshguard.decision\x00allow\x00agent-a" * 4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
