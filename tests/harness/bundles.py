"""Signed policy bundles, produced independently of the Rust code (Python `cryptography`
Ed25519 over the canonical JSON documented in README "Signed policy bundles").

The canonical form is JSON with sorted keys and no whitespace; Python's json.dumps with
``sort_keys=True, separators=(",", ":"), ensure_ascii=False`` produces exactly that for
documents holding strings, whole numbers, booleans, null, lists and objects.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

FORMAT = "meshguard-bundle/v1"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class BundleSigner:
    """An Ed25519 key that signs bundles."""

    key: Ed25519PrivateKey
    kid: str

    @classmethod
    def generate(cls, kid: str = "bundle-key") -> "BundleSigner":
        return cls(Ed25519PrivateKey.generate(), kid)

    @property
    def public_key_b64(self) -> str:
        """The form `bundle.public_keys` takes: base64 of the 32 raw bytes."""
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def sign(self, bundle: dict) -> dict:
        unsigned = {k: v for k, v in bundle.items() if k != "signatures"}
        sig = self.key.sign(FORMAT.encode() + b"\n" + canonical(unsigned))
        return {**unsigned, "signatures": [{"alg": "Ed25519", "kid": self.kid, "sig": b64url(sig)}]}


def bundle(version: int, policies: list[dict], *, created_at: str = "2026-11-22T10:00:00Z",
           agents: list[dict] | None = None) -> dict:
    """An unsigned bundle document."""
    return {
        "format": FORMAT,
        "version": version,
        "created_at": created_at,
        "policies": copy.deepcopy(policies),
        "agents": agents or [],
        "grants": [],
        "revocations": [],
    }


def tampered(signed: dict) -> dict:
    """A copy whose policy was altered after signing (the signature no longer fits)."""
    doc = copy.deepcopy(signed)
    doc["policies"][0]["rules"][0]["effect"] = "allow" if doc["policies"][0]["rules"][0]["effect"] == "deny" else "deny"
    return doc
