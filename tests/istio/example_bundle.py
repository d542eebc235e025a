"""The example signed bundle of the live overlay (istio/live/bundles/current.json).

Real bundles are produced with `meshguard bundle sign`. This module exists so the
committed example stays reproducible and verifiable without the CLI: it signs the
policies of istio/wasmplugin/policy.yaml with the example key
tests/istio/fixtures/example-bundle-key.pem (test-only, its public half is in
istio/live/bundle-patch.yaml), following the `meshguard-bundle/v1` format documented in
src/bundle.rs: Ed25519 over b"meshguard-bundle/v1\\n" + canonical JSON (sorted keys, no
whitespace) of the bundle without `signatures`.

    .venv/bin/python tests/istio/example_bundle.py     # rewrites istio/live/bundles/current.json
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

REPO = Path(__file__).resolve().parents[2]
KEY = Path(__file__).resolve().parent / "fixtures" / "example-bundle-key.pem"
POLICY = REPO / "istio" / "wasmplugin" / "policy.yaml"
BUNDLE = REPO / "istio" / "live" / "bundles" / "current.json"
FORMAT = "meshguard-bundle/v1"
KID = "meshguard-example-bundle-key-not-for-production"
VERSION = 1
CREATED_AT = "2026-11-22T00:00:00Z"


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_bytes(bundle: dict) -> bytes:
    return FORMAT.encode() + b"\n" + canonical({k: v for k, v in bundle.items() if k != "signatures"})


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(bundle: dict, public_key_b64: str) -> bool:
    """True when some signature of `bundle` verifies with the base64 Ed25519 key."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
    for sig in bundle.get("signatures", []):
        try:
            key.verify(b64url_decode(sig["sig"]), signed_bytes(bundle))
            return True
        except Exception:  # noqa: BLE001 - InvalidSignature or a malformed entry: try the next
            continue
    return False


def build() -> dict:
    policies = [p for doc in yaml.safe_load_all(POLICY.read_text()) if doc
                for p in (doc if isinstance(doc, list) else [doc])]
    bundle = {"format": FORMAT, "version": VERSION, "created_at": CREATED_AT, "policies": policies,
              "trust_tiers": {}, "agents": [], "grants": [], "revocations": []}
    key = serialization.load_pem_private_key(KEY.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    sig = base64.urlsafe_b64encode(key.sign(signed_bytes(bundle))).rstrip(b"=").decode()
    return {**bundle, "signatures": [{"alg": "Ed25519", "kid": KID, "sig": sig}]}


def main() -> int:
    BUNDLE.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {BUNDLE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
