//! The compact-JWS checks jwt-simple 0.15 makes around a signature (`Token::verify`,
//! `JWTClaims::validate`, its `JWTHeader`: all crate-private there), replicated step for
//! step for the keys that check their signatures themselves for speed in V8 (`es256.rs`,
//! `ed25519.rs`), so the first failing check raises the same error as before and the
//! `IdentityError` reasons do not change. Their tests compare both on the same tokens.

use ct_codecs::{Base64UrlSafeNoPadding, Decoder};
use jwt_simple::prelude::*;
use jwt_simple::token::MAX_HEADER_LENGTH;
use jwt_simple::{Error, JWTError};

/// Verifies a compact JWT and validates its registered claims, as jwt-simple's
/// `verify_token` does: `algorithms` are the `alg` values the key accepts, and
/// `verify_signature(signed bytes, signature bytes)` is the key's own check.
pub(super) fn verify_token(
    token: &str,
    options: Option<VerificationOptions>,
    algorithms: &[&str],
    verify_signature: impl FnOnce(&[u8], &[u8]) -> Result<(), Error>,
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
    let header: JWTHeader =
        serde_json::from_slice(&Base64UrlSafeNoPadding::decode_to_vec(header_b64, None)?)?;
    if header.critical.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(JWTError::UnknownCriticalExtension.into());
    }
    check_types(&header, &options)?;
    if !algorithms.contains(&header.algorithm.as_str()) {
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
    verify_signature(signed.as_bytes(), &signature)?;
    let claims: JWTClaims<NoCustomClaims> =
        serde_json::from_slice(&Base64UrlSafeNoPadding::decode_to_vec(claims_b64, None)?)?;
    validate(&claims, &options)?;
    Ok(claims)
}

/// The `typ`/`cty` checks of jwt-simple's `Token::verify`.
fn check_types(header: &JWTHeader, options: &VerificationOptions) -> Result<(), Error> {
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
/// Named as there: serde's derive writes the type's name into the errors a malformed
/// header raises.
#[derive(serde::Deserialize)]
struct JWTHeader {
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
