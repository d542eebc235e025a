//! EdDSA (Ed25519) token verification on `curve25519-dalek` instead of jwt-simple's
//! `ed25519-compact`, for speed in V8 (bench/README.md, "EdDSA in V8").
//!
//! Why: `ed25519-compact` multiplies 51-bit limbs into `u128`, which wasm32 emulates in
//! software (`__multi3`); `curve25519-dalek` picks its 32-bit backend on wasm32 (25.5-bit
//! limbs, one native `i64.mul` per product). Measured under node 20 (V8) on 2026-11-30:
//! 558 → 213 µs per verification (median of 5 interleaved rounds of 300), 2.6× faster.
//!
//! Acceptance is that of `ed25519-compact` 2.6, which jwt-simple used, exactly:
//! - `S` must be canonical (`S < L`);
//! - `A` and `R` must be canonical encodings (`y < p`) of points that are not of small
//!   order;
//! - the equation is the cofactored one, `[8]([S]B − [k]A − R) = 0`.
//!
//! The token checks around the signature (header size and type, `typ`, `salt`, claim
//! types, time and audience validation) follow jwt-simple 0.15's `Token::verify` and
//! `JWTClaims::validate` step for step and raise the same error values, so the
//! `IdentityError` reasons are unchanged.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use jwt_simple::prelude::*;
use jwt_simple::{Error, JWTError};
use sha2::{Digest, Sha512};

/// The `alg` values jwt-simple accepts for an Ed25519 key.
const ALGORITHMS: [&str; 2] = ["EdDSA", "Ed25519"];

/// An Ed25519 public key ready to verify: its encoding (hashed into every challenge) and
/// the negated point, decompressed once when the key is parsed.
#[derive(Clone)]
pub(crate) struct Ed25519Key {
    encoded: [u8; 32],
    minus_a: EdwardsPoint,
}

impl Ed25519Key {
    /// Verifies a compact JWT and validates its registered claims, as jwt-simple's
    /// `verify_token` does for an Ed25519 key.
    pub(crate) fn verify_token(
        &self,
        token: &str,
        options: Option<VerificationOptions>,
    ) -> Result<JWTClaims<NoCustomClaims>, Error> {
        super::jws::verify_token(token, options, &ALGORITHMS, |signed, signature| {
            self.verify_signature(signed, signature)
        })
    }

    /// Parses an OKP/Ed25519 JWK. jwt-simple parses it, so that the keys accepted and the
    /// configuration errors are the same as before.
    pub(crate) fn from_jwk(jwk: &str) -> Result<Self, Error> {
        let pk = Ed25519PublicKey::from_jwk(jwk)?;
        Self::from_bytes(&pk.to_bytes())
    }

    /// A key from its 32-byte encoding: canonical, on the curve, not of small order.
    pub(crate) fn from_bytes(raw: &[u8]) -> Result<Self, Error> {
        let encoded: [u8; 32] = raw.try_into().map_err(|_| JWTError::InvalidPublicKey)?;
        let a = decode_point(&encoded).ok_or(JWTError::InvalidPublicKey)?;
        Ok(Ed25519Key {
            encoded,
            minus_a: -a,
        })
    }

    /// Verifies a compact JWS signature over `message`.
    pub(crate) fn verify_signature(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        // The same error as jwt-simple for a signature that is not 64 bytes.
        let signature = ed25519_compact::Signature::from_slice(signature)?;
        let (r_bytes, s_bytes) = signature.split_at(32);
        let bad = || Error::from(JWTError::InvalidSignature);
        let s_bytes: [u8; 32] = s_bytes.try_into().map_err(|_| bad())?;
        let r_bytes: [u8; 32] = r_bytes.try_into().map_err(|_| bad())?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)).ok_or_else(bad)?;
        let r = decode_point(&r_bytes).ok_or_else(bad)?;
        let mut hasher = Sha512::new();
        hasher.update(r_bytes);
        hasher.update(self.encoded);
        hasher.update(message);
        let digest: [u8; 64] = hasher.finalize().into();
        let k = Scalar::from_bytes_mod_order_wide(&digest);
        let r_check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &self.minus_a, &s);
        if (r_check - r).is_small_order() {
            Ok(())
        } else {
            Err(bad())
        }
    }
}

/// Decodes a point as `ed25519-compact` does: the `y` encoding must be canonical (below
/// p), and a point of small order is refused. curve25519-dalek alone would reduce a
/// non-canonical `y` modulo p.
fn decode_point(encoded: &[u8; 32]) -> Option<EdwardsPoint> {
    if !is_canonical_y(encoded) {
        return None;
    }
    let point = CompressedEdwardsY(*encoded).decompress()?;
    (!point.is_small_order()).then_some(point)
}

/// Whether the 255-bit `y` of an encoding (sign bit masked) is below p = 2^255 − 19: the
/// only values at or above p are p..2^255−1, i.e. bytes 1..=30 all 0xff, the top byte
/// 0x7f (masked) and the low byte ≥ 0xed.
fn is_canonical_y(encoded: &[u8; 32]) -> bool {
    let top = encoded.last().map_or(0, |b| b & 0x7f);
    let low = encoded.first().copied().unwrap_or(0);
    let middle_all_ff = encoded.iter().skip(1).take(30).all(|&b| b == 0xff);
    !(top == 0x7f && middle_all_ff && low >= 0xed)
}

#[cfg(test)]
#[path = "ed25519_tests.rs"]
mod tests;
