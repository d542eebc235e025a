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

use ct_codecs::{Base64UrlSafeNoPadding, Decoder};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use jwt_simple::prelude::*;
use jwt_simple::{Error, JWTError};
use sha2::{Digest, Sha512};

/// The `alg` values jwt-simple accepts for an Ed25519 key.
const ALGORITHMS: [&str; 2] = ["EdDSA", "Ed25519"];

/// jwt-simple's default bound on the encoded header (`MAX_HEADER_LENGTH`).
const MAX_HEADER_LENGTH: usize = 8192;

/// An Ed25519 public key ready to verify: its encoding (hashed into every challenge) and
/// the negated point, decompressed once when the key is parsed.
#[derive(Clone)]
pub(crate) struct Ed25519Key {
    encoded: [u8; 32],
    minus_a: EdwardsPoint,
}

impl Ed25519Key {
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

    /// Verifies a compact JWT and validates its registered claims, as jwt-simple's
    /// `verify_token` does for an Ed25519 key.
    pub(crate) fn verify_token(
        &self,
        token: &str,
        options: Option<VerificationOptions>,
    ) -> Result<JWTClaims<NoCustomClaims>, Error> {
        let options = options.unwrap_or_default();
        if let Some(max) = options.max_token_length {
            if token.len() > max {
                return Err(JWTError::TokenTooLong.into());
            }
        }
        let mut parts = token.split('.');
        let header_b64 = parts.next().ok_or(JWTError::CompactEncodingError)?;
        if header_b64.len() > options.max_header_length.unwrap_or(MAX_HEADER_LENGTH) {
            return Err(JWTError::HeaderTooLarge.into());
        }
        let claims_b64 = parts.next().ok_or(JWTError::CompactEncodingError)?;
        let signature_b64 = parts.next().ok_or(JWTError::CompactEncodingError)?;
        if parts.next().is_some() {
            return Err(JWTError::CompactEncodingError.into());
        }
        let header: JoseHeader =
            serde_json::from_slice(&Base64UrlSafeNoPadding::decode_to_vec(header_b64, None)?)?;
        if header.critical.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(JWTError::UnknownCriticalExtension.into());
        }
        check_types(&header, &options)?;
        if !ALGORITHMS.contains(&header.algorithm.as_str()) {
            return Err(JWTError::AlgorithmMismatch.into());
        }
        if let Some(required) = &options.required_key_id {
            match &header.key_id {
                Some(kid) if kid == required => {}
                Some(_) => return Err(JWTError::KeyIdentifierMismatch.into()),
                None => return Err(JWTError::MissingJWTKeyIdentifier.into()),
            }
        }
        if let Some(salt) = &header.salt {
            // Decoded only for the error an invalid salt raises in jwt-simple.
            Base64UrlSafeNoPadding::decode_to_vec(salt, None)?;
        }
        let signature = Base64UrlSafeNoPadding::decode_to_vec(signature_b64, None)?;
        let signed = token
            .get(..header_b64.len() + 1 + claims_b64.len())
            .ok_or(JWTError::CompactEncodingError)?;
        self.verify_signature(signed.as_bytes(), &signature)?;
        let claims: JWTClaims<NoCustomClaims> =
            serde_json::from_slice(&Base64UrlSafeNoPadding::decode_to_vec(claims_b64, None)?)?;
        validate(&claims, &options)?;
        Ok(claims)
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

/// The `typ`/`cty` checks of jwt-simple's `Token::verify`.
fn check_types(header: &JoseHeader, options: &VerificationOptions) -> Result<(), Error> {
    if let Some(expected) = &options.required_signature_type {
        let typ = header
            .signature_type
            .as_ref()
            .ok_or(JWTError::RequiredSignatureTypeMismatch)?;
        if typ.to_uppercase() != expected.to_uppercase() {
            return Err(JWTError::RequiredSignatureTypeMismatch.into());
        }
    } else if let Some(typ) = &header.signature_type {
        let typ = typ.to_uppercase();
        if typ != "JWT" && !typ.ends_with("+JWT") {
            return Err(JWTError::NotJWT.into());
        }
    }
    if let Some(expected) = &options.required_content_type {
        let cty = header
            .content_type
            .as_ref()
            .ok_or(JWTError::RequiredContentTypeMismatch)?;
        if cty.to_uppercase() != expected.to_uppercase() {
            return Err(JWTError::RequiredContentTypeMismatch.into());
        }
    }
    Ok(())
}

/// jwt-simple 0.15's `JWTClaims::validate` (crate-private there), in the same order so the
/// first failing check raises the same error.
fn validate(
    claims: &JWTClaims<NoCustomClaims>,
    options: &VerificationOptions,
) -> Result<(), Error> {
    let now = options
        .artificial_time
        .unwrap_or_else(Clock::now_since_epoch);
    let tolerance = options.time_tolerance.unwrap_or_default();
    if let Some(reject_before) = options.reject_before {
        let issued_at = claims.issued_at.ok_or(JWTError::OldTokenReused)?;
        if issued_at < reject_before {
            return Err(JWTError::OldTokenReused.into());
        }
    }
    if !options.accept_future {
        if let Some(issued_at) = claims.issued_at {
            if issued_at > now + tolerance {
                return Err(JWTError::ClockDrift.into());
            }
        }
    }
    if let Some(max_validity) = options.max_validity {
        let issued_at = claims.issued_at.ok_or(JWTError::TokenIsTooOld)?;
        if !(now <= issued_at || now - issued_at <= max_validity) {
            return Err(JWTError::TokenIsTooOld.into());
        }
    }
    if !options.accept_future {
        if let Some(invalid_before) = claims.invalid_before {
            if now + tolerance < invalid_before {
                return Err(JWTError::TokenNotValidYet.into());
            }
        }
    }
    if let Some(expires_at) = claims.expires_at {
        if !(now >= tolerance && now - tolerance <= expires_at) {
            return Err(JWTError::TokenHasExpired.into());
        }
    }
    if let Some(allowed) = &options.allowed_issuers {
        let issuer = claims
            .issuer
            .as_ref()
            .ok_or(JWTError::RequiredIssuerMissing)?;
        if !allowed.contains(issuer) {
            return Err(JWTError::RequiredIssuerMismatch.into());
        }
    }
    if let Some(required) = &options.required_subject {
        let subject = claims
            .subject
            .as_ref()
            .ok_or(JWTError::RequiredSubjectMissing)?;
        if subject != required {
            return Err(JWTError::RequiredSubjectMismatch.into());
        }
    }
    if let Some(required) = &options.required_nonce {
        let nonce = claims
            .nonce
            .as_ref()
            .ok_or(JWTError::RequiredNonceMissing)?;
        if nonce != required {
            return Err(JWTError::RequiredNonceMismatch.into());
        }
    }
    if let Some(allowed) = &options.allowed_audiences {
        let audiences = claims
            .audiences
            .as_ref()
            .ok_or(JWTError::RequiredAudienceMissing)?;
        if !audiences.contains(allowed) {
            return Err(JWTError::RequiredAudienceMismatch.into());
        }
    }
    Ok(())
}

/// jwt-simple 0.15's `JWTHeader` (crate-private there), field for field: a header member
/// of the wrong JSON type fails to parse exactly where it failed before. Members only
/// parsed, never read, carry a leading underscore.
#[derive(serde::Deserialize)]
struct JoseHeader {
    #[serde(rename = "alg")]
    algorithm: String,
    #[serde(rename = "cty", default)]
    content_type: Option<String>,
    #[serde(rename = "kid", default)]
    key_id: Option<String>,
    #[serde(rename = "typ", default)]
    signature_type: Option<String>,
    #[serde(rename = "crit", default)]
    critical: Option<Vec<String>>,
    #[serde(rename = "x5c", default)]
    _certificate_chain: Option<Vec<String>>,
    #[serde(rename = "jku", default)]
    _key_set_url: Option<String>,
    #[serde(rename = "jwk", default)]
    _public_key: Option<String>,
    #[serde(rename = "x5u", default)]
    _certificate_url: Option<String>,
    #[serde(rename = "x5t", default)]
    _certificate_sha1_thumbprint: Option<String>,
    #[serde(rename = "x5t#S256", default)]
    _certificate_sha256_thumbprint: Option<String>,
    #[serde(rename = "salt", default)]
    salt: Option<String>,
}

#[cfg(test)]
#[path = "ed25519_tests.rs"]
mod tests;
