"""Signing keys, JWKS documents and tokens, made with PyJWT and `cryptography`.

The filter verifies tokens with jwt-simple (Rust); minting them with an independent
implementation is what makes these tests meaningful: a shared bug in encoding and
decoding cannot cancel out. Keys are generated at test time, never committed (except the
istiod fixture key, which is test-only by design).

Attack tokens that PyJWT refuses to produce on purpose (``alg: none``, HS256 keyed with a
public key, claims altered after signing) are assembled by hand here, from the JOSE
compact serialization rules.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.example"
AUDIENCE = "agents"
TOKEN_LIFETIME = 600

# Marker: pass as a claim value to drop that claim from the token entirely.
OMIT = object()


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(obj: Any) -> str:
    """A JOSE segment: compact JSON, base64url."""
    return b64url(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@dataclass
class SigningKey:
    """A private key, the algorithm it signs with and its public JWK (with ``kid``)."""

    kid: str
    alg: str
    private_key: Any
    jwk: dict = field(default_factory=dict)

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict, *, alg: str | None = None, kid: Any = None, headers: dict | None = None) -> str:
        """Signs `claims` with this key. `kid=None` uses this key's kid, `kid=OMIT` leaves
        it out; `alg` overrides the algorithm (for algorithm-confusion tests)."""
        hdr = dict(headers or {})
        if kid is not OMIT:
            hdr["kid"] = self.kid if kid is None else kid
        return jwt.encode(claims, self.private_key, algorithm=alg or self.alg, headers=hdr or None)


def _public_jwk(alg: str, public_key: Any) -> dict:
    if alg == "ES256":
        return ECAlgorithm.to_jwk(public_key, as_dict=True)
    if alg == "EdDSA":
        return OKPAlgorithm.to_jwk(public_key, as_dict=True)
    return RSAAlgorithm.to_jwk(public_key, as_dict=True)


def generate(alg: str, kid: str, *, jwk_alg: Any = None) -> SigningKey:
    """A fresh key for `alg` (ES256, EdDSA, RS256 or PS256).

    The JWK gets ``kid`` and ``use: sig``. Its ``alg`` member is `jwk_alg` when given
    (``OMIT`` leaves it out, e.g. to exercise the RSA default of RS256), else `alg`.
    """
    if alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    elif alg in ("RS256", "PS256"):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(f"unsupported algorithm {alg}")
    return from_private_key(private, alg, kid, jwk_alg=jwk_alg)


def from_private_key(private: Any, alg: str, kid: str, *, jwk_alg: Any = None) -> SigningKey:
    """Wraps an existing private key (e.g. one loaded from a committed PEM)."""
    jwk = _public_jwk(alg, private.public_key())
    jwk["kid"] = kid
    jwk["use"] = "sig"
    declared = alg if jwk_alg is None else jwk_alg
    if declared is not OMIT:
        jwk["alg"] = declared
    return SigningKey(kid=kid, alg=alg, private_key=private, jwk=jwk)


def load_pem(path: str, alg: str, kid: str) -> SigningKey:
    with open(path, "rb") as f:
        private = serialization.load_pem_private_key(f.read(), password=None)
    return from_private_key(private, alg, kid)


def jwks(*keys: SigningKey) -> dict:
    """A JWKS document holding the public halves of `keys`."""
    return {"keys": [dict(k.jwk) for k in keys]}


class TokenFactory:
    """Mints agent tokens for one issuer with sensible defaults.

    ``token(sub, tier)`` gives iss, aud, sub, trust_tier, iat = now and exp = now + 600.
    Any claim can be overridden by keyword; ``OMIT`` removes it (``trust_tier=OMIT`` is
    an agent without a tier claim).
    """

    def __init__(self, key: SigningKey, issuer: str = ISSUER, audience: str = AUDIENCE):
        self.key = key
        self.issuer = issuer
        self.audience = audience

    def claims(self, sub: Any = "agent-1", tier: Any = "verified", **overrides: Any) -> dict:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "trust_tier": tier,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not OMIT}

    def token(self, sub: Any = "agent-1", tier: Any = "verified", *, key: SigningKey | None = None,
              alg: str | None = None, kid: Any = None, **overrides: Any) -> str:
        """A signed token; `key`/`alg`/`kid` choose how it is signed (see SigningKey.sign)."""
        return (key or self.key).sign(self.claims(sub, tier, **overrides), alg=alg, kid=kid)

    def sign_claims(self, claims: dict, *, key: SigningKey | None = None) -> str:
        """Signs exactly `claims` (no defaults added)."""
        return (key or self.key).sign(claims)


def delegation(*actors: tuple[str, Any]) -> dict:
    """The RFC 8693 ``act`` claim for a chain of actors, earliest first.

    ``delegation(("b", "verified"), ("c", "trusted"))`` means the token's subject
    delegated to b, which delegated to c: c is the current actor, so it is the OUTERMOST
    ``act`` and b is nested inside it. A tier of ``OMIT`` leaves the actor's tier out.
    """
    act: dict | None = None
    for agent, tier in actors:
        node: dict[str, Any] = {"sub": agent}
        if tier is not OMIT:
            node["trust_tier"] = tier
        if act is not None:
            node["act"] = act
        act = node
    if act is None:
        raise ValueError("a delegation needs at least one actor")
    return act


# --- hand-built attack tokens -------------------------------------------------------

def unsigned_token(claims: dict, header: dict | None = None) -> str:
    """``alg: none`` with an empty signature, as the JWS spec spells an unsecured JWT."""
    return f"{b64url_json(header or {'alg': 'none', 'typ': 'JWT'})}.{b64url_json(claims)}."


def hs256_token(claims: dict, secret: bytes, kid: str) -> str:
    """HS256 keyed with `secret` (PyJWT refuses PEM-looking HMAC secrets, rightly)."""
    signing_input = f"{b64url_json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64url_json(claims)}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def tamper(token: str, **changes: Any) -> str:
    """The same token with claims changed after signing (signature kept)."""
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims.update(changes)
    return f"{header}.{b64url_json(claims)}.{signature}"


def padded_claims(claims: dict, total_bytes: int) -> dict:
    """`claims` plus a filler claim so that the signed token is roughly `total_bytes` long
    (base64url grows 4/3, so the filler is sized for that)."""
    filler = "x" * max(0, int(total_bytes * 3 / 4))
    return {**claims, "filler": filler}
