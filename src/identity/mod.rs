//! Agent identity: JWT verification against configured issuers and keys, claim mapping
//! (agent id, trust tier, RFC 8693 delegation chain), and the verified-token cache.
//!
//! The algorithm a key accepts comes from the key (its JWK `kty`/`crv`/`alg`), never from
//! the token header: a token whose header names another algorithm is rejected before any
//! cryptography runs, which closes HS/RS confusion and `alg: none` by construction.

mod ed25519;
mod es256;
mod jws;

use crate::config::{ClaimNames, ConfigError, IdentityConfig};
use crate::shared::SharedData;
use crate::tier::TrustTier;
use ct_codecs::{Base64UrlSafeNoPadding, Decoder};
use jwt_simple::prelude::*;
use jwt_simple::JWTError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::rc::Rc;

/// Signature algorithms MeshGuard verifies. HMAC is absent on purpose: a shared secret in
/// a mesh-wide config would let anyone who reads the config mint tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA P-256 / SHA-256.
    Es256,
    /// ECDSA P-384 / SHA-384.
    Es384,
    /// ECDSA secp256k1 / SHA-256.
    Es256k,
    /// Ed25519.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256/384/512.
    Rs256,
    /// See [`Algorithm::Rs256`].
    Rs384,
    /// See [`Algorithm::Rs256`].
    Rs512,
    /// RSASSA-PSS with SHA-256/384/512.
    Ps256,
    /// See [`Algorithm::Ps256`].
    Ps384,
    /// See [`Algorithm::Ps256`].
    Ps512,
}

impl Algorithm {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::Es256k => "ES256K",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
        }
    }

    fn accepts_header(self, alg: &str) -> bool {
        alg == self.as_str() || (self == Algorithm::EdDsa && alg == "Ed25519")
    }
}

#[derive(Clone)]
enum KeyMaterial {
    Es256(es256::Es256Key),
    Es384(ES384PublicKey),
    Es256k(ES256kPublicKey),
    EdDsa(ed25519::Ed25519Key),
    Rs256(RS256PublicKey),
    Rs384(RS384PublicKey),
    Rs512(RS512PublicKey),
    Ps256(PS256PublicKey),
    Ps384(PS384PublicKey),
    Ps512(PS512PublicKey),
}

/// A key that verifies tokens, with the one algorithm it accepts.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    material: KeyMaterial,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

impl VerifyingKey {
    fn verify(
        &self,
        token: &str,
        options: VerificationOptions,
    ) -> Result<JWTClaims<NoCustomClaims>, jwt_simple::Error> {
        let o = Some(options);
        match &self.material {
            KeyMaterial::Es256(k) => k.verify_token(token, o),
            KeyMaterial::Es384(k) => k.verify_token(token, o),
            KeyMaterial::Es256k(k) => k.verify_token(token, o),
            KeyMaterial::EdDsa(k) => k.verify_token(token, o),
            KeyMaterial::Rs256(k) => k.verify_token(token, o),
            KeyMaterial::Rs384(k) => k.verify_token(token, o),
            KeyMaterial::Rs512(k) => k.verify_token(token, o),
            KeyMaterial::Ps256(k) => k.verify_token(token, o),
            KeyMaterial::Ps384(k) => k.verify_token(token, o),
            KeyMaterial::Ps512(k) => k.verify_token(token, o),
        }
    }
}

/// Parses a JWKS document into verifying keys. `field` names the config field in errors.
fn parse_jwks(jwks: &Value, field: &str) -> Result<Vec<VerifyingKey>, ConfigError> {
    let doc: Value = match jwks {
        Value::String(s) => serde_json::from_str(s).map_err(|e| {
            ConfigError::invalid(field, format!("JWKS string is not valid JSON: {e}"))
        })?,
        other => other.clone(),
    };
    let keys = doc.get("keys").and_then(Value::as_array).ok_or_else(|| {
        ConfigError::invalid(field, "a JWKS must be an object with a \"keys\" array")
    })?;
    if keys.is_empty() {
        return Err(ConfigError::invalid(field, "the JWKS has no keys"));
    }
    let mut out: Vec<VerifyingKey> = Vec::with_capacity(keys.len());
    for (i, jwk) in keys.iter().enumerate() {
        let kfield = format!("{field}.keys[{i}]");
        let key = parse_jwk(jwk).map_err(|m| ConfigError::invalid(&kfield, m))?;
        if let Some(kid) = &key.kid {
            if out.iter().any(|k| k.kid.as_deref() == Some(kid.as_str())) {
                return Err(ConfigError::invalid(
                    kfield,
                    format!("duplicate kid {kid:?}: key ids must be unique within an issuer"),
                ));
            }
        }
        out.push(key);
    }
    if out.len() > 1 && out.iter().any(|k| k.kid.is_none()) {
        return Err(ConfigError::invalid(
            field,
            "with more than one key every key needs a \"kid\", so tokens can name theirs",
        ));
    }
    Ok(out)
}

/// Parses a fetched JWKS document. Unusable keys (encryption keys, unsupported types) are
/// skipped and reported, as identity providers often publish them alongside signing keys;
/// a document with no usable key at all is rejected so the last good keys stay in force.
pub fn parse_remote_jwks(doc: &Value) -> Result<(Vec<VerifyingKey>, Vec<String>), String> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWKS: expected a JSON object with a \"keys\" array")?;
    let mut usable: Vec<VerifyingKey> = Vec::new();
    let mut skipped = Vec::new();
    for (i, jwk) in keys.iter().enumerate() {
        match parse_jwk(jwk) {
            Ok(k) if k.kid.is_none() && keys.len() > 1 => {
                skipped.push(format!("keys[{i}]: no kid"));
            }
            Ok(k) if usable.iter().any(|u| u.kid == k.kid) => {
                skipped.push(format!("keys[{i}]: duplicate kid"));
            }
            Ok(k) => usable.push(k),
            Err(e) => skipped.push(format!("keys[{i}]: {e}")),
        }
    }
    if usable.is_empty() {
        return Err(if keys.is_empty() {
            "the key set is empty".to_string()
        } else {
            format!("no usable signing key ({})", skipped.join("; "))
        });
    }
    Ok((usable, skipped))
}

/// A fetched JWKS, parsed once: its usable keys, what was skipped, and a digest of the
/// document (part of the verifier fingerprint, so every worker that holds the same
/// document shares verified tokens).
#[derive(Clone)]
pub struct RemoteKeys {
    keys: Vec<VerifyingKey>,
    skipped: Vec<String>,
    digest: String,
}

impl fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("keys", &self.keys)
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl RemoteKeys {
    /// Parses a fetched JWKS document (see [`parse_remote_jwks`]).
    pub fn parse(bytes: &[u8]) -> Result<RemoteKeys, String> {
        let (doc, digest) = Self::read(bytes)?;
        Self::from_document(&doc, digest)
    }

    /// Reads a fetched document as JSON and gives the digest it is compared by: of the
    /// parsed value, not the bytes, so whitespace and member order do not matter. Comparing
    /// before [`RemoteKeys::from_document`] matters since ES256 keys build their tables
    /// when parsed (2.6–11 ms per key in V8): an unchanged refresh must not pay that.
    pub fn read(bytes: &[u8]) -> Result<(Value, String), String> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let digest = {
            use sha2::Digest;
            crate::hex::hex(&sha2::Sha256::digest(
                serde_json::to_vec(&doc).unwrap_or_default(),
            ))
        };
        Ok((doc, digest))
    }

    /// The keys of a document [`RemoteKeys::read`] returned, with its digest.
    pub fn from_document(doc: &Value, digest: String) -> Result<RemoteKeys, String> {
        let (keys, skipped) = parse_remote_jwks(doc)?;
        Ok(RemoteKeys {
            keys,
            skipped,
            digest,
        })
    }

    /// The digest of the document these keys came from (see [`RemoteKeys::read`]).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The usable keys' ids (`None` for a key without one).
    pub fn kids(&self) -> Vec<Option<&str>> {
        self.keys.iter().map(|k| k.kid.as_deref()).collect()
    }

    /// Keys that were skipped, with the reason (`keys[2]: key use "enc" ...`).
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
}

/// Where an issuer's JWKS is fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// The issuer (`iss`).
    pub issuer: String,
    /// Envoy cluster.
    pub cluster: String,
    /// Request path.
    pub path: String,
    /// `:authority` of the request.
    pub authority: String,
    /// Seconds between scheduled refreshes.
    pub refresh_seconds: u64,
}

/// The remote JWKS sources of an identity configuration.
pub fn remote_sources(cfg: &IdentityConfig) -> Vec<RemoteJwks> {
    cfg.issuers
        .iter()
        .filter_map(|i| match (&i.jwks_cluster, &i.jwks_path) {
            (Some(c), Some(p)) => Some(RemoteJwks {
                issuer: i.issuer.clone(),
                cluster: c.clone(),
                path: p.clone(),
                authority: i
                    .jwks_authority
                    .clone()
                    .unwrap_or_else(|| crate::sources::authority_for(c)),
                refresh_seconds: i.jwks_refresh_seconds.unwrap_or(300).max(1),
            }),
            _ => None,
        })
        .collect()
}

fn parse_jwk(jwk: &Value) -> Result<VerifyingKey, String> {
    let s = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kty = s("kty").ok_or("the key has no \"kty\"")?;
    let kid = s("kid").map(str::to_string);
    if let Some(u) = s("use") {
        if u != "sig" {
            return Err(format!(
                "key use {u:?} cannot verify signatures (need \"sig\")"
            ));
        }
    }
    let declared = s("alg");
    let alg = match (kty, s("crv")) {
        ("EC", Some("P-256")) => Algorithm::Es256,
        ("EC", Some("P-384")) => Algorithm::Es384,
        ("EC", Some("secp256k1")) => Algorithm::Es256k,
        ("OKP", Some("Ed25519")) => Algorithm::EdDsa,
        ("RSA", _) => match declared.unwrap_or("RS256") {
            "RS256" => Algorithm::Rs256,
            "RS384" => Algorithm::Rs384,
            "RS512" => Algorithm::Rs512,
            "PS256" => Algorithm::Ps256,
            "PS384" => Algorithm::Ps384,
            "PS512" => Algorithm::Ps512,
            other => return Err(format!("RSA key with unsupported alg {other:?}")),
        },
        ("oct", _) => {
            return Err(
                "symmetric keys (kty \"oct\") are not accepted: a shared secret in \
                        the mesh config would let its readers mint tokens"
                    .into(),
            )
        }
        (kty, crv) => {
            return Err(format!(
                "unsupported key type {kty:?}{}",
                crv.map(|c| format!(" with curve {c:?}"))
                    .unwrap_or_default()
            ))
        }
    };
    if let Some(d) = declared {
        if !alg.accepts_header(d) {
            return Err(format!(
                "\"alg\" {d:?} does not fit a {kty} key (it verifies {})",
                alg.as_str()
            ));
        }
    }
    let text = jwk.to_string();
    let e = |err: jwt_simple::Error| format!("not a valid {kty} public key: {err}");
    let material = match alg {
        Algorithm::Es256 => KeyMaterial::Es256(es256::Es256Key::new(
            &ES256PublicKey::from_jwk(&text).map_err(e)?,
        )?),
        Algorithm::Es384 => KeyMaterial::Es384(ES384PublicKey::from_jwk(&text).map_err(e)?),
        Algorithm::Es256k => KeyMaterial::Es256k(ES256kPublicKey::from_jwk(&text).map_err(e)?),
        Algorithm::EdDsa => KeyMaterial::EdDsa(ed25519::Ed25519Key::from_jwk(&text).map_err(e)?),
        Algorithm::Rs256 => KeyMaterial::Rs256(RS256PublicKey::from_jwk(&text).map_err(e)?),
        Algorithm::Rs384 => KeyMaterial::Rs384(RS384PublicKey::from_jwk(&text).map_err(e)?),
        Algorithm::Rs512 => KeyMaterial::Rs512(RS512PublicKey::from_jwk(&text).map_err(e)?),
        Algorithm::Ps256 => KeyMaterial::Ps256(PS256PublicKey::from_jwk(&text).map_err(e)?),
        Algorithm::Ps384 => KeyMaterial::Ps384(PS384PublicKey::from_jwk(&text).map_err(e)?),
        Algorithm::Ps512 => KeyMaterial::Ps512(PS512PublicKey::from_jwk(&text).map_err(e)?),
    };
    Ok(VerifyingKey { kid, alg, material })
}

/// Why a request has no verified identity. Every variant is a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// No token header.
    MissingToken {
        /// The header that was expected.
        header: String,
    },
    /// `authorization` without the `Bearer` scheme.
    NotBearer,
    /// Larger than `max_token_bytes`.
    TooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// Not a compact JWS, or undecodable parts.
    Malformed(String),
    /// `alg: none`.
    AlgNone,
    /// No `iss` claim.
    MissingIssuer,
    /// An `iss` that is not configured.
    UnknownIssuer(String),
    /// No `kid` while the issuer has several keys.
    MissingKid,
    /// A `kid` the issuer does not have.
    UnknownKid(String),
    /// The header's `alg` is not the one the key verifies.
    AlgNotAllowed {
        /// From the header.
        alg: String,
        /// The key's id.
        kid: String,
        /// What the key verifies.
        allowed: &'static str,
    },
    /// The signature does not verify with the key.
    BadSignature,
    /// Past `exp` + skew.
    Expired,
    /// No `exp` claim.
    MissingExpiry,
    /// Before `nbf` - skew.
    NotYetValid,
    /// `iat` in the future beyond skew.
    IssuedInFuture,
    /// `aud` lacks every configured audience.
    WrongAudience,
    /// A required claim is absent.
    MissingClaim(String),
    /// A claim has the wrong JSON type.
    ClaimType {
        /// Claim name.
        claim: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A tier value that is not one of the four tiers.
    UnknownTier(String),
    /// An `act` claim that is not a well-formed chain.
    Delegation(String),
    /// A remote JWKS that has not been fetched successfully yet.
    KeysUnavailable(String),
    /// The token, or an agent of its delegation chain, is revoked.
    Revoked(RevokedSubject),
    /// The token is bound to a workload other than the mTLS peer presenting it.
    WrongWorkload {
        /// SPIFFE ids the token may be presented by (empty: the token has no binding
        /// and `identity.workload_binding.required` is set).
        expected: Vec<String>,
        /// URI SANs of the peer certificate (empty: no mTLS peer).
        presented: Vec<String>,
    },
}

/// What a revocation matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokedSubject {
    /// The token's `jti`.
    Token(String),
    /// An agent of the delegation chain.
    Agent(String),
}

impl IdentityError {
    /// A short stable code for audit records and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::MissingToken { .. } => "missing_token",
            IdentityError::NotBearer => "not_bearer",
            IdentityError::TooLarge { .. } => "token_too_large",
            IdentityError::Malformed(_) => "malformed",
            IdentityError::AlgNone => "alg_none",
            IdentityError::MissingIssuer => "missing_issuer",
            IdentityError::UnknownIssuer(_) => "unknown_issuer",
            IdentityError::MissingKid => "missing_kid",
            IdentityError::UnknownKid(_) => "unknown_kid",
            IdentityError::AlgNotAllowed { .. } => "alg_not_allowed",
            IdentityError::BadSignature => "bad_signature",
            IdentityError::Expired => "expired",
            IdentityError::MissingExpiry => "missing_exp",
            IdentityError::NotYetValid => "not_yet_valid",
            IdentityError::IssuedInFuture => "issued_in_future",
            IdentityError::WrongAudience => "wrong_audience",
            IdentityError::MissingClaim(_) => "missing_claim",
            IdentityError::ClaimType { .. } => "claim_type",
            IdentityError::UnknownTier(_) => "unknown_tier",
            IdentityError::Delegation(_) => "bad_delegation",
            IdentityError::KeysUnavailable(_) => "keys_unavailable",
            IdentityError::Revoked(_) => "revoked",
            IdentityError::WrongWorkload { .. } => "wrong_workload",
        }
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::MissingToken { header } => {
                write!(f, "no token: send the agent's JWT in the {header} header")
            }
            IdentityError::NotBearer => {
                f.write_str("the authorization header must use the Bearer scheme")
            }
            IdentityError::TooLarge { size, max } => {
                write!(f, "token is {size} bytes, larger than the {max}-byte limit")
            }
            IdentityError::Malformed(m) => write!(f, "malformed token: {m}"),
            IdentityError::AlgNone => {
                f.write_str("unsigned tokens (alg \"none\") are never accepted")
            }
            IdentityError::MissingIssuer => f.write_str("token has no \"iss\" claim"),
            IdentityError::UnknownIssuer(i) => write!(f, "issuer {i:?} is not trusted"),
            IdentityError::MissingKid => {
                f.write_str("token header has no \"kid\" and the issuer has several keys")
            }
            IdentityError::UnknownKid(k) => write!(f, "no key with kid {k:?} for this issuer"),
            IdentityError::AlgNotAllowed { alg, kid, allowed } => write!(
                f,
                "algorithm {alg:?} is not allowed for key {kid:?} (it verifies {allowed} only)"
            ),
            IdentityError::BadSignature => f.write_str("signature does not verify"),
            IdentityError::Expired => f.write_str("token has expired"),
            IdentityError::MissingExpiry => f.write_str("token has no \"exp\" claim"),
            IdentityError::NotYetValid => f.write_str("token is not valid yet (nbf)"),
            IdentityError::IssuedInFuture => f.write_str("token is issued in the future (iat)"),
            IdentityError::WrongAudience => f.write_str("token audience is not accepted"),
            IdentityError::MissingClaim(c) => write!(f, "token has no {c:?} claim"),
            IdentityError::ClaimType { claim, expected } => {
                write!(f, "claim {claim:?} must be {expected}")
            }
            IdentityError::UnknownTier(t) => write!(
                f,
                "unknown trust tier {t:?} (expected untrusted, verified, trusted or privileged)"
            ),
            IdentityError::Delegation(m) => write!(f, "bad delegation (act) claim: {m}"),
            IdentityError::KeysUnavailable(i) => {
                write!(f, "the keys of issuer {i:?} have not been fetched yet")
            }
            IdentityError::Revoked(RevokedSubject::Token(jti)) => {
                write!(f, "token {jti:?} is revoked")
            }
            IdentityError::Revoked(RevokedSubject::Agent(a)) => {
                write!(f, "agent {a:?} of the delegation chain is revoked")
            }
            IdentityError::WrongWorkload { expected, presented } => {
                match (expected.is_empty(), presented.is_empty()) {
                    (true, _) => f.write_str(
                        "the token is bound to no workload and identity.workload_binding.required is set",
                    ),
                    (false, true) => write!(
                        f,
                        "the token is bound to workload {} but the connection has no mTLS peer identity",
                        expected.join(" or ")
                    ),
                    (false, false) => write!(
                        f,
                        "the token is bound to workload {} but is presented by {}",
                        expected.join(" or "),
                        presented.join(", ")
                    ),
                }
            }
        }
    }
}

impl std::error::Error for IdentityError {}

/// One agent along a delegation chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The agent's id.
    pub agent_id: String,
    /// Its own tier.
    pub tier: TrustTier,
}

/// A verified agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The calling agent: the outermost `act.sub` for delegated tokens, else the agent-id claim.
    pub agent_id: String,
    /// Effective tier: the lowest along the chain.
    pub tier: TrustTier,
    /// The verified issuer.
    pub issuer: String,
    /// The chain from the original delegator to the caller (one hop when not delegated).
    pub chain: Vec<Hop>,
    /// All claims, for `agent.claims.*` conditions.
    pub claims: Value,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

impl Identity {
    /// Delegation depth: 0 for a direct call.
    pub fn depth(&self) -> usize {
        self.chain.len().saturating_sub(1)
    }

    /// Builds an identity from claims without a signature check (the CLI's `--claims`).
    pub fn from_claims(claims: Value, names: &ClaimNames) -> Result<Identity, IdentityError> {
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        identity_from(claims, names, issuer, expires_at)
    }
}

struct Issuer {
    name: String,
    audiences: HashSet<String>,
    keys: Vec<VerifyingKey>,
}

/// Compiled `identity:` section.
pub struct Verifier {
    token_header: String,
    issuers: Vec<Issuer>,
    skew: u64,
    max_token_bytes: usize,
    claims: ClaimNames,
    cache_entries: usize,
    max_depth: usize,
    /// Identifies what a verified token was checked against, for the shared cache.
    fingerprint: String,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("token_header", &self.token_header)
            .field(
                "issuers",
                &self.issuers.iter().map(|i| &i.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Verifier {
    /// Compiles issuers and inline keys; errors name `identity.issuers[i]...`.
    pub fn compile(cfg: &IdentityConfig) -> Result<Verifier, ConfigError> {
        Verifier::compile_with(cfg, &HashMap::new())
    }

    /// Compiles issuers with the remote JWKS fetched so far (by issuer); remote issuers
    /// without keys yet fail their tokens with `keys_unavailable`.
    pub fn compile_with(
        cfg: &IdentityConfig,
        remote: &HashMap<String, Rc<RemoteKeys>>,
    ) -> Result<Verifier, ConfigError> {
        if cfg.issuers.is_empty() {
            return Err(ConfigError::invalid(
                "identity.issuers",
                "at least one trusted issuer is required (MeshGuard fails closed)",
            ));
        }
        let mut issuers = Vec::with_capacity(cfg.issuers.len());
        for (i, ic) in cfg.issuers.iter().enumerate() {
            let field = format!("identity.issuers[{i}]");
            if ic.issuer.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{field}.issuer"),
                    "must not be empty",
                ));
            }
            if ic.audiences.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{field}.audiences"),
                    "list at least one audience: tokens minted for other services must not pass",
                ));
            }
            let remote_source =
                match (&ic.jwks_cluster, &ic.jwks_path) {
                    (Some(c), Some(p)) if !c.is_empty() && p.starts_with('/') => true,
                    (None, None) => false,
                    (Some(_), Some(_)) => return Err(ConfigError::invalid(
                        format!("{field}.jwks_path"),
                        "jwks_cluster must be a cluster name and jwks_path a path starting with /",
                    )),
                    (Some(_), None) | (None, Some(_)) => {
                        return Err(ConfigError::invalid(
                            format!("{field}.jwks_cluster"),
                            "remote JWKS needs both jwks_cluster and jwks_path",
                        ))
                    }
                };
            let mut keys = match &ic.jwks {
                Some(jwks) => parse_jwks(jwks, &format!("{field}.jwks"))?,
                None if remote_source => Vec::new(),
                None => {
                    return Err(ConfigError::invalid(
                        format!("{field}.jwks"),
                        "the issuer needs its keys: inline jwks, or jwks_cluster + jwks_path",
                    ))
                }
            };
            if remote_source {
                if let Some(fetched) = remote.get(&ic.issuer) {
                    // Inline keys stay; fetched keys with the same kid replace them.
                    keys.retain(|k| !fetched.keys.iter().any(|f| f.kid == k.kid));
                    keys.extend(fetched.keys.iter().cloned());
                }
            }
            if issuers.iter().any(|x: &Issuer| x.name == ic.issuer) {
                return Err(ConfigError::invalid(
                    format!("{field}.issuer"),
                    format!("issuer {:?} is listed twice", ic.issuer),
                ));
            }
            issuers.push(Issuer {
                name: ic.issuer.clone(),
                audiences: ic.audiences.iter().cloned().collect(),
                keys,
            });
        }
        if cfg.claims.agent_id.is_empty() || cfg.claims.trust_tier.is_empty() {
            return Err(ConfigError::invalid(
                "identity.claims",
                "claim names must not be empty",
            ));
        }
        Ok(Verifier {
            token_header: cfg.token_header.to_ascii_lowercase(),
            issuers,
            skew: cfg.clock_skew_seconds,
            max_token_bytes: cfg.max_token_bytes,
            claims: cfg.claims.clone(),
            cache_entries: cfg.token_cache_entries,
            max_depth: cfg.max_delegation_depth,
            fingerprint: {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                h.update(serde_json::to_vec(cfg).unwrap_or_default());
                let mut remote: Vec<(&String, &str)> = remote
                    .iter()
                    .map(|(issuer, keys)| (issuer, keys.digest.as_str()))
                    .collect();
                remote.sort_unstable();
                h.update(serde_json::to_vec(&remote).unwrap_or_default());
                crate::hex::hex(&h.finalize())
            },
        })
    }

    /// The header the token is read from (lowercase).
    pub fn token_header(&self) -> &str {
        &self.token_header
    }

    /// Claim names, shared with the CLI's `--claims`.
    pub fn claim_names(&self) -> &ClaimNames {
        &self.claims
    }

    /// The mesh-wide delegation depth limit.
    pub fn max_delegation_depth(&self) -> usize {
        self.max_depth
    }

    /// A cache sized as configured.
    pub fn new_cache(&self) -> TokenCache {
        TokenCache::new(self.cache_entries)
    }

    /// Extracts the token from the header value.
    pub fn token_from_header<'a>(&self, value: Option<&'a str>) -> Result<&'a str, IdentityError> {
        let value = value
            .map(str::trim)
            .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("bearer"))
            .ok_or_else(|| IdentityError::MissingToken {
                header: self.token_header.clone(),
            })?;
        let bearer = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        match bearer {
            Some(t) if !t.is_empty() => Ok(t),
            Some(_) => Err(IdentityError::MissingToken {
                header: self.token_header.clone(),
            }),
            None if self.token_header == "authorization" => Err(IdentityError::NotBearer),
            None => Ok(value),
        }
    }

    /// Authenticates a header value, using and filling the cache.
    pub fn authenticate(
        &self,
        header: Option<&str>,
        now_secs: u64,
        cache: &mut TokenCache,
    ) -> Result<Rc<Identity>, IdentityError> {
        let token = self.token_from_header(header)?;
        if token.len() > self.max_token_bytes {
            return Err(IdentityError::TooLarge {
                size: token.len(),
                max: self.max_token_bytes,
            });
        }
        if let Some(id) = cache.get(token, now_secs, self.skew) {
            return Ok(id);
        }
        let token_hash = cache.shared.as_ref().map(|_| {
            use sha2::Digest;
            sha2::Sha256::digest(token.as_bytes())
        });
        if let (Some(shared), Some(hash)) = (&cache.shared, &token_hash) {
            let hex_hash = crate::hex::hex(hash);
            let entry = shared
                .get(&cache.slot(hash))
                .0
                .and_then(|b| serde_json::from_slice::<SharedEntry>(&b).ok())
                .filter(|e| e.h == hex_hash && e.g == self.fingerprint)
                .filter(|e| now_secs.saturating_sub(self.skew) <= e.exp);
            if let Some(e) = entry {
                if let Ok(id) = identity_from(e.claims, &self.claims, e.iss, e.exp) {
                    let id = Rc::new(id);
                    cache.insert(token, Rc::clone(&id), now_secs, self.skew);
                    return Ok(id);
                }
            }
        }
        let id = Rc::new(self.verify(token, now_secs)?);
        if let (Some(shared), Some(hash)) = (&cache.shared, &token_hash) {
            let entry = SharedEntry {
                h: crate::hex::hex(hash),
                g: self.fingerprint.clone(),
                iss: id.issuer.clone(),
                exp: id.expires_at,
                claims: id.claims.clone(),
            };
            if let Ok(bytes) = serde_json::to_vec(&entry) {
                shared.set(&cache.slot(hash), &bytes, None);
            }
        }
        cache.insert(token, Rc::clone(&id), now_secs, self.skew);
        Ok(id)
    }

    /// Verifies a token without the cache.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Identity, IdentityError> {
        if token.len() > self.max_token_bytes {
            return Err(IdentityError::TooLarge {
                size: token.len(),
                max: self.max_token_bytes,
            });
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdentityError::Malformed(
                "expected three base64url parts: header.payload.signature".into(),
            ));
        };
        let header = decode_json(h, "header")?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| IdentityError::Malformed("header has no \"alg\"".into()))?;
        if alg.eq_ignore_ascii_case("none") {
            return Err(IdentityError::AlgNone);
        }
        if header.get("crit").is_some() {
            // RFC 7515 §4.1.11: a listed extension must be understood, and none is.
            return Err(IdentityError::Malformed(
                "the header's \"crit\" lists extensions MeshGuard does not implement".into(),
            ));
        }
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(IdentityError::Malformed("\"kid\" must be a string".into())),
        };
        let payload = decode_json(p, "payload")?;
        let iss = match payload.get("iss") {
            None => return Err(IdentityError::MissingIssuer),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                return Err(IdentityError::ClaimType {
                    claim: "iss".into(),
                    expected: "a string",
                })
            }
        };
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.name == iss)
            .ok_or_else(|| IdentityError::UnknownIssuer(iss.to_string()))?;
        if issuer.keys.is_empty() {
            return Err(IdentityError::KeysUnavailable(issuer.name.clone()));
        }
        let key = match kid {
            Some(k) => issuer
                .keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(k))
                .ok_or_else(|| IdentityError::UnknownKid(k.to_string()))?,
            None => match issuer.keys.as_slice() {
                [only] => only,
                _ => return Err(IdentityError::MissingKid),
            },
        };
        if !key.alg.accepts_header(alg) {
            return Err(IdentityError::AlgNotAllowed {
                alg: alg.to_string(),
                kid: key.kid.clone().unwrap_or_default(),
                allowed: key.alg.as_str(),
            });
        }
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from([issuer.name.clone()])),
            allowed_audiences: Some(issuer.audiences.clone()),
            time_tolerance: Some(Duration::from_secs(self.skew)),
            max_token_length: Some(self.max_token_bytes),
            artificial_time: Some(UnixTimeStamp::from_secs(now_secs)),
            ..VerificationOptions::default()
        };
        let claims = key
            .verify(token, options)
            .map_err(|e| map_jwt_error(e, &payload))?;
        let exp = claims
            .expires_at
            .ok_or(IdentityError::MissingExpiry)?
            .as_secs();
        identity_from(payload, &self.claims, issuer.name.clone(), exp)
    }
}

fn decode_json(part: &str, what: &str) -> Result<Value, IdentityError> {
    let bytes = Base64UrlSafeNoPadding::decode_to_vec(part, None)
        .map_err(|_| IdentityError::Malformed(format!("{what} is not base64url")))?;
    // A member named twice is refused: jwt-simple and this module could otherwise each
    // pick their own of two `sub`s.
    let v = crate::unique_json::from_slice(&bytes).map_err(|e| {
        IdentityError::Malformed(format!("{what} is not JSON with unique member names: {e}"))
    })?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(IdentityError::Malformed(format!(
            "{what} is not a JSON object"
        )))
    }
}

/// The registered claim whose JSON type jwt-simple refused, for a precise reason. Only
/// reached after the signature verified (jwt-simple parses claims last).
fn registered_claim_type_error(payload: &Value) -> Option<IdentityError> {
    /// A registered claim, the type it must have, and the check.
    type ClaimCheck = (&'static str, &'static str, fn(&Value) -> bool);
    let checks: [ClaimCheck; 7] = [
        ("iss", "a string", Value::is_string),
        ("sub", "a string", Value::is_string),
        ("jti", "a string", Value::is_string),
        ("aud", "a string or a list of strings", |v| {
            v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
        }),
        ("exp", "a number of seconds", Value::is_number),
        ("nbf", "a number of seconds", Value::is_number),
        ("iat", "a number of seconds", Value::is_number),
    ];
    checks
        .iter()
        .find_map(|(name, expected, ok)| match payload.get(*name) {
            Some(v) if !v.is_null() && !ok(v) => Some(IdentityError::ClaimType {
                claim: (*name).to_string(),
                expected,
            }),
            _ => None,
        })
}

fn map_jwt_error(e: jwt_simple::Error, payload: &Value) -> IdentityError {
    match e.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidSignature) => IdentityError::BadSignature,
        Some(JWTError::TokenHasExpired) => IdentityError::Expired,
        Some(JWTError::TokenNotValidYet) => IdentityError::NotYetValid,
        Some(JWTError::ClockDrift) => IdentityError::IssuedInFuture,
        Some(JWTError::RequiredAudienceMismatch | JWTError::RequiredAudienceMissing) => {
            IdentityError::WrongAudience
        }
        Some(JWTError::RequiredIssuerMismatch | JWTError::RequiredIssuerMissing) => {
            IdentityError::MissingIssuer
        }
        Some(JWTError::TokenTooLong) => IdentityError::Malformed("token is too long".into()),
        _ => {
            if let Some(precise) = registered_claim_type_error(payload) {
                return precise;
            }
            let msg = e.to_string();
            if msg.contains("invalid type") || msg.contains("expected") {
                IdentityError::Malformed(format!("a registered claim has the wrong type: {msg}"))
            } else {
                IdentityError::Malformed(msg)
            }
        }
    }
}

/// Finds a claim by name; a dotted name that is not a top-level claim walks nested objects.
fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    if !name.contains('.') {
        return None;
    }
    name.split('.').try_fold(claims, |v, seg| v.get(seg))
}

fn tier_of(obj: &Value, claim_name: &str) -> Result<TrustTier, IdentityError> {
    match claim(obj, claim_name) {
        None | Some(Value::Null) => Ok(TrustTier::Untrusted),
        Some(Value::String(s)) => {
            TrustTier::parse(s).ok_or_else(|| IdentityError::UnknownTier(s.clone()))
        }
        Some(_) => Err(IdentityError::ClaimType {
            claim: claim_name.to_string(),
            expected: "a string",
        }),
    }
}

/// An agent id as it will travel: the caller's id becomes the upstream's
/// `x-meshguard-agent` header and every id of the chain an audit attribute, so a control
/// character (CR, LF, NUL, ...) is refused here, at verification, as a 401 with a reason.
/// Accepting it would let the claim split or truncate a header (Envoy then answers 503
/// without a decision) or forge a line in a log that prints it.
fn header_safe_id(id: &str, claim_name: &str) -> Result<String, IdentityError> {
    if id.chars().any(char::is_control) {
        return Err(IdentityError::ClaimType {
            claim: claim_name.to_string(),
            expected: "a string without control characters (CR, LF, NUL, ...)",
        });
    }
    Ok(id.to_string())
}

/// A structural cap on `act` nesting, far above any sane chain; the policy limit
/// (`max_delegation_depth`) is enforced by the engine as a 403, not here.
const MAX_ACT_NESTING: usize = 32;

fn identity_from(
    claims: Value,
    names: &ClaimNames,
    issuer: String,
    expires_at: u64,
) -> Result<Identity, IdentityError> {
    let principal = match claim(&claims, &names.agent_id) {
        None | Some(Value::Null) => {
            return Err(IdentityError::MissingClaim(names.agent_id.clone()))
        }
        Some(Value::String(s)) if !s.is_empty() => header_safe_id(s, &names.agent_id)?,
        Some(_) => {
            return Err(IdentityError::ClaimType {
                claim: names.agent_id.clone(),
                expected: "a non-empty string",
            })
        }
    };
    let mut chain = vec![Hop {
        agent_id: principal,
        tier: tier_of(&claims, &names.trust_tier)?,
    }];
    // RFC 8693: the outermost `act` is the current actor, nested ones are earlier actors.
    let mut actors = Vec::new();
    let mut act = claims.get("act");
    while let Some(a) = act {
        if a.is_null() {
            break;
        }
        if !a.is_object() {
            return Err(IdentityError::Delegation(
                "\"act\" must be an object".into(),
            ));
        }
        if actors.len() >= MAX_ACT_NESTING {
            return Err(IdentityError::Delegation(format!(
                "more than {MAX_ACT_NESTING} nested act claims"
            )));
        }
        let id = a
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| IdentityError::Delegation("every act needs a string \"sub\"".into()))?;
        actors.push(Hop {
            agent_id: header_safe_id(id, "act.sub")?,
            tier: tier_of(a, &names.trust_tier)?,
        });
        act = a.get("act");
    }
    chain.extend(actors.into_iter().rev());
    let tier = chain
        .iter()
        .map(|h| h.tier)
        .min()
        .unwrap_or(TrustTier::Untrusted);
    let agent_id = chain.last().map(|h| h.agent_id.clone()).unwrap_or_default();
    Ok(Identity {
        agent_id,
        tier,
        issuer,
        chain,
        claims,
        expires_at,
    })
}

/// Verified tokens by their full text, so a token's signature is checked once per worker
/// rather than once per request. Entries expire with their token; when full, expired
/// entries go first, then an arbitrary one (a bounded map, not an LRU: eviction is rare
/// and its cost matters less than a lookup's).
#[derive(Default)]
pub struct TokenCache {
    entries: HashMap<String, Rc<Identity>>,
    capacity: usize,
    /// Tokens verified by any worker of this Envoy (see [`TokenCache::with_shared`]).
    shared: Option<Rc<dyn SharedData>>,
    /// The earliest `expires_at` among the entries (a lower bound after removals), so a
    /// full cache scans for expired entries only when one can exist, not on every insert.
    earliest_expiry: u64,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.entries.len())
            .field("capacity", &self.capacity)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct SharedEntry {
    /// SHA-256 of the whole token.
    h: String,
    /// Verifier fingerprint.
    g: String,
    iss: String,
    exp: u64,
    claims: Value,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            entries: HashMap::new(),
            capacity,
            shared: None,
            earliest_expiry: u64::MAX,
        }
    }

    /// Adds the Envoy-wide tier (only when the cache is enabled): tokens verified by any
    /// worker VM of this Envoy, so a signature is checked once per Envoy rather than once
    /// per worker.
    ///
    /// Shared data cannot delete keys, so the tier is a fixed ring of slots
    /// (`meshguard/tok/<n>`): the slot is chosen by the token's SHA-256, and writing a slot
    /// evicts what was there. An entry is used only when its full token hash and the
    /// verifier's fingerprint (issuers, audiences, keys, claim names) match and the token
    /// has not expired.
    pub fn with_shared(mut self, shared: Rc<dyn SharedData>) -> TokenCache {
        if self.capacity > 0 {
            self.shared = Some(shared);
        }
        self
    }

    fn slot(&self, token_hash: &[u8]) -> String {
        let n = token_hash
            .iter()
            .take(8)
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        format!("meshguard/tok/{}", n % self.capacity.max(1) as u64)
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn get(&mut self, token: &str, now: u64, skew: u64) -> Option<Rc<Identity>> {
        let id = self.entries.get(token)?;
        if now.saturating_sub(skew) <= id.expires_at {
            Some(Rc::clone(id))
        } else {
            self.entries.remove(token);
            None
        }
    }

    fn insert(&mut self, token: &str, id: Rc<Identity>, now: u64, skew: u64) {
        if self.capacity == 0 {
            return;
        }
        let horizon = now.saturating_sub(skew);
        if self.entries.len() >= self.capacity && horizon > self.earliest_expiry {
            self.entries.retain(|_, v| horizon <= v.expires_at);
            self.earliest_expiry = self
                .entries
                .values()
                .map(|v| v.expires_at)
                .min()
                .unwrap_or(u64::MAX);
        }
        if self.entries.len() >= self.capacity {
            if let Some(k) = self.entries.keys().next().cloned() {
                self.entries.remove(&k);
            }
        }
        self.earliest_expiry = self.earliest_expiry.min(id.expires_at);
        self.entries.insert(token.to_string(), id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    struct Keys {
        es: ES256KeyPair,
        ed: Ed25519KeyPair,
        other_es: ES256KeyPair,
    }

    fn keys() -> Keys {
        Keys {
            es: ES256KeyPair::generate().with_key_id("es"),
            ed: Ed25519KeyPair::generate().with_key_id("ed"),
            other_es: ES256KeyPair::generate().with_key_id("es"),
        }
    }

    fn verifier(k: &Keys) -> Verifier {
        let jwks = json!({"keys": [
            serde_json::from_str::<Value>(&k.es.public_key().to_jwk()).unwrap(),
            serde_json::from_str::<Value>(&k.ed.public_key().to_jwk()).unwrap(),
        ]});
        let cfg: IdentityConfig = serde_json::from_value(json!({
            "issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": jwks.to_string()}]
        }))
        .unwrap();
        Verifier::compile(&cfg).unwrap()
    }

    fn claims(extra: Value) -> JWTClaims<Value> {
        let mut c = Claims::with_custom_claims(extra, Duration::from_secs(600))
            .with_issuer("https://issuer.example")
            .with_audience("agents")
            .with_subject("agent-a");
        c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
        c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
        c.invalid_before = Some(UnixTimeStamp::from_secs(NOW));
        c
    }

    fn b64(v: &Value) -> String {
        use ct_codecs::Encoder;
        ct_codecs::Base64UrlSafeNoPadding::encode_to_string(v.to_string()).unwrap()
    }

    #[test]
    fn verifies_es256_and_eddsa_and_maps_claims() {
        let k = keys();
        let v = verifier(&k);
        let t =
            k.es.sign(claims(json!({"trust_tier": "verified"})))
                .unwrap();
        let id = v.verify(&t, NOW).unwrap();
        assert_eq!(id.agent_id, "agent-a");
        assert_eq!(id.tier, TrustTier::Verified);
        assert_eq!(id.depth(), 0);
        let t = k.ed.sign(claims(json!({}))).unwrap();
        assert_eq!(v.verify(&t, NOW).unwrap().tier, TrustTier::Untrusted);
    }

    #[test]
    fn rejects_each_failure_with_its_reason() {
        use ct_codecs::Encoder;
        let k = keys();
        let v = verifier(&k);
        let good =
            k.es.sign(claims(json!({"trust_tier": "verified"})))
                .unwrap();
        let code = |t: &str, now: u64| v.verify(t, now).unwrap_err().code();
        assert_eq!(code(&good, NOW + 600 + 61), "expired");
        assert!(v.verify(&good, NOW + 600 + 59).is_ok(), "within skew");
        let mut c = claims(json!({}));
        c.invalid_before = Some(UnixTimeStamp::from_secs(NOW + 300));
        assert_eq!(code(&k.es.sign(c).unwrap(), NOW), "not_yet_valid");
        assert_eq!(code(&good, NOW - 61), "issued_in_future");
        assert_eq!(code("garbage", NOW), "malformed");
        assert_eq!(code("a.b.c.d", NOW), "malformed");
        assert_eq!(code("!!.??.x", NOW), "malformed");
        let parts: Vec<&str> = good.split('.').collect();
        // alg none
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": "es"})),
            parts[1]
        );
        assert_eq!(code(&none, NOW), "alg_none");
        // RS256 header on the EC key: rejected before any crypto
        let rs = format!(
            "{}.{}.{}",
            b64(&json!({"alg": "RS256", "kid": "es"})),
            parts[1],
            parts[2]
        );
        assert_eq!(code(&rs, NOW), "alg_not_allowed");
        let hs = format!(
            "{}.{}.{}",
            b64(&json!({"alg": "HS256", "kid": "es"})),
            parts[1],
            parts[2]
        );
        assert_eq!(code(&hs, NOW), "alg_not_allowed");
        // tampered claims
        let mut payload: Value =
            serde_json::from_slice(&Base64UrlSafeNoPadding::decode_to_vec(parts[1], None).unwrap())
                .unwrap();
        payload["trust_tier"] = json!("privileged");
        let tampered = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
        assert_eq!(code(&tampered, NOW), "bad_signature");
        // right kid, wrong key
        let wrong = k.other_es.sign(claims(json!({}))).unwrap();
        assert_eq!(code(&wrong, NOW), "bad_signature");
        // unknown kid
        let unknown = ES256KeyPair::generate()
            .with_key_id("nope")
            .sign(claims(json!({})))
            .unwrap();
        assert_eq!(code(&unknown, NOW), "unknown_kid");
        // issuer / audience
        let c = claims(json!({})).with_issuer("https://evil.example");
        assert_eq!(code(&k.es.sign(c).unwrap(), NOW), "unknown_issuer");
        let c = claims(json!({})).with_audience("billing");
        assert_eq!(code(&k.es.sign(c).unwrap(), NOW), "wrong_audience");
        // exp is required
        let mut c = claims(json!({}));
        c.expires_at = None;
        assert_eq!(code(&k.es.sign(c).unwrap(), NOW), "missing_exp");
        // tiers and claim types
        let c = claims(json!({"trust_tier": "gold"}));
        assert_eq!(code(&k.es.sign(c).unwrap(), NOW), "unknown_tier");
        let c = claims(json!({"trust_tier": 3}));
        assert_eq!(code(&k.es.sign(c).unwrap(), NOW), "claim_type");
        let mut raw = claims(json!({"sub": 5}));
        raw.subject = None;
        let numeric_sub = k.es.sign(raw).unwrap();
        assert_eq!(
            v.verify(&numeric_sub, NOW).unwrap_err(),
            IdentityError::ClaimType {
                claim: "sub".into(),
                expected: "a string"
            }
        );
        let mut c = claims(json!({}));
        c.subject = None;
        assert_eq!(code(&k.es.sign(c).unwrap(), NOW), "missing_claim");
        // ids travel in x-meshguard-agent: control characters are a 401, not Envoy's 503
        for bad in [
            "agent\r\nx-evil: 1",
            "agent\u{0}",
            "a\nb",
            "tab\there",
            "del\u{7f}",
        ] {
            let c = claims(json!({})).with_subject(bad);
            let e = v.verify(&k.es.sign(c).unwrap(), NOW).unwrap_err();
            assert_eq!(e.code(), "claim_type", "{bad:?}");
            assert!(e.to_string().contains("control characters"), "{e}");
            let c = claims(json!({"act": {"sub": bad}}));
            assert_eq!(
                code(&k.es.sign(c).unwrap(), NOW),
                "claim_type",
                "act {bad:?}"
            );
        }
        let c = claims(json!({})).with_subject("agent-ünïcode ☃");
        assert_eq!(
            v.verify(&k.es.sign(c).unwrap(), NOW).unwrap().agent_id,
            "agent-ünïcode ☃"
        );
        // crit (even empty), and a name twice in the header or the payload
        let crit = format!(
            "{}.{}.{}",
            b64(&json!({"alg": "ES256", "kid": "es", "crit": []})),
            parts[1],
            parts[2]
        );
        assert!(v
            .verify(&crit, NOW)
            .unwrap_err()
            .to_string()
            .contains("crit"));
        let dup_header = format!(
            "{}.{}.{}",
            Base64UrlSafeNoPadding::encode_to_string(br#"{"alg":"ES256","kid":"es","kid":"x"}"#)
                .unwrap(),
            parts[1],
            parts[2]
        );
        assert_eq!(code(&dup_header, NOW), "malformed");
        let body =
            String::from_utf8(Base64UrlSafeNoPadding::decode_to_vec(parts[1], None).unwrap())
                .unwrap();
        let dup = body.replacen('{', r#"{"trust_tier":"privileged","#, 1);
        let dup_payload = format!(
            "{}.{}.{}",
            parts[0],
            Base64UrlSafeNoPadding::encode_to_string(dup.as_bytes()).unwrap(),
            parts[2]
        );
        let e = v.verify(&dup_payload, NOW).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
        // size cap
        let c = claims(json!({"pad": "x".repeat(9000)}));
        assert_eq!(code(&k.es.sign(c).unwrap(), NOW), "token_too_large");
    }

    #[test]
    fn delegation_chain_follows_rfc8693() {
        let k = keys();
        let v = verifier(&k);
        let c = claims(json!({
            "trust_tier": "trusted",
            "act": {"sub": "agent-c", "trust_tier": "trusted",
                    "act": {"sub": "agent-b", "trust_tier": "verified"}}
        }));
        let id = v.verify(&k.es.sign(c).unwrap(), NOW).unwrap();
        let ids: Vec<&str> = id.chain.iter().map(|h| h.agent_id.as_str()).collect();
        assert_eq!(ids, ["agent-a", "agent-b", "agent-c"]);
        assert_eq!(id.agent_id, "agent-c");
        assert_eq!(id.tier, TrustTier::Verified, "lowest along the chain");
        assert_eq!(id.depth(), 2);
        let c = claims(json!({"act": {"trust_tier": "trusted"}}));
        assert_eq!(
            v.verify(&k.es.sign(c).unwrap(), NOW).unwrap_err().code(),
            "bad_delegation"
        );
        let c = claims(json!({"act": "agent-b"}));
        assert_eq!(
            v.verify(&k.es.sign(c).unwrap(), NOW).unwrap_err().code(),
            "bad_delegation"
        );
        // a structural cap on nesting, whatever the policy's depth limit
        let nested = |n: usize| {
            (0..n).fold(Value::Null, |inner, i| {
                let mut hop = json!({"sub": format!("hop-{i}"), "trust_tier": "verified"});
                if !inner.is_null() {
                    hop["act"] = inner;
                }
                hop
            })
        };
        let c = claims(json!({"trust_tier": "verified", "act": nested(MAX_ACT_NESTING)}));
        assert_eq!(
            v.verify(&k.es.sign(c).unwrap(), NOW).unwrap().depth(),
            MAX_ACT_NESTING
        );
        let c = claims(json!({"act": nested(MAX_ACT_NESTING + 1)}));
        assert_eq!(
            v.verify(&k.es.sign(c).unwrap(), NOW).unwrap_err().code(),
            "bad_delegation"
        );
    }

    #[test]
    fn bearer_extraction() {
        let k = keys();
        let v = verifier(&k);
        assert_eq!(v.token_from_header(Some("Bearer abc")), Ok("abc"));
        assert_eq!(v.token_from_header(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(
            v.token_from_header(Some("Basic abc")),
            Err(IdentityError::NotBearer)
        );
        assert_eq!(
            v.token_from_header(Some("abc")),
            Err(IdentityError::NotBearer)
        );
        assert!(matches!(
            v.token_from_header(None),
            Err(IdentityError::MissingToken { .. })
        ));
        assert!(matches!(
            v.token_from_header(Some("Bearer ")),
            Err(IdentityError::MissingToken { .. })
        ));
    }

    #[test]
    fn cache_verifies_once_and_expires_with_the_token() {
        let k = keys();
        let v = verifier(&k);
        let mut cache = TokenCache::new(2);
        let t = k.es.sign(claims(json!({}))).unwrap();
        let h = format!("Bearer {t}");
        let a = v.authenticate(Some(&h), NOW, &mut cache).unwrap();
        let b = v.authenticate(Some(&h), NOW + 1, &mut cache).unwrap();
        assert!(Rc::ptr_eq(&a, &b), "second call served from the cache");
        assert_eq!(
            v.authenticate(Some(&h), NOW + 700, &mut cache)
                .unwrap_err()
                .code(),
            "expired"
        );
        for i in 0..5 {
            let t = k.es.sign(claims(json!({"n": i}))).unwrap();
            v.authenticate(Some(&format!("Bearer {t}")), NOW, &mut cache)
                .unwrap();
        }
        assert!(cache.len() <= 2, "bounded");
    }

    #[test]
    fn shared_tier_verifies_once_per_envoy_and_respects_keys_and_expiry() {
        let k = keys();
        let v = verifier(&k);
        let store = crate::shared::MemoryStore::new();
        let t =
            k.es.sign(claims(json!({"trust_tier": "verified"})))
                .unwrap();
        let h = format!("Bearer {t}");
        let mut worker1 = TokenCache::new(8).with_shared(Rc::new(store.clone()));
        let mut worker2 = TokenCache::new(8).with_shared(Rc::new(store.clone()));
        let a = v.authenticate(Some(&h), NOW, &mut worker1).unwrap();
        assert_eq!(store.len(), 1, "worker 1 verified and shared it");
        // Worker 2 finds it without verifying: tamper with the stored claims to prove the
        // shared entry (not a fresh verification) answered.
        let slot = store.keys().remove(0);
        let mut e: Value = serde_json::from_slice(&store.get(&slot).0.unwrap()).unwrap();
        e["claims"]["marker"] = json!("from-shared");
        store.set(&slot, &serde_json::to_vec(&e).unwrap(), None);
        let b = v.authenticate(Some(&h), NOW, &mut worker2).unwrap();
        assert_eq!(b.claims["marker"], "from-shared");
        assert_eq!(a.agent_id, b.agent_id);
        // Another verifier (other keys) ignores the entry; so does an expired token.
        let other = verifier(&keys());
        let mut worker3 = TokenCache::new(8).with_shared(Rc::new(store.clone()));
        assert_eq!(
            other
                .authenticate(Some(&h), NOW, &mut worker3)
                .unwrap_err()
                .code(),
            "bad_signature"
        );
        let mut worker4 = TokenCache::new(8).with_shared(Rc::new(store.clone()));
        assert_eq!(
            v.authenticate(Some(&h), NOW + 700, &mut worker4)
                .unwrap_err()
                .code(),
            "expired"
        );
    }

    #[test]
    fn jwks_errors_name_the_key() {
        let cfg = |jwks: Value| -> IdentityConfig {
            serde_json::from_value(
                json!({"issuers": [{"issuer": "i", "audiences": ["a"], "jwks": jwks}]}),
            )
            .unwrap()
        };
        let err = |jwks: Value| Verifier::compile(&cfg(jwks)).unwrap_err().to_string();
        assert!(err(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})).contains("keys[0]"));
        assert!(err(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})).contains("symmetric"));
        assert!(err(json!({"keys": []})).contains("no keys"));
        assert!(err(json!("{not json")).contains("not valid JSON"));
        let es = ES256KeyPair::generate().with_key_id("k");
        let mut jwk: Value = serde_json::from_str(&es.public_key().to_jwk()).unwrap();
        jwk["alg"] = json!("RS256");
        let e = err(json!({"keys": [jwk.clone()]}));
        assert!(e.contains("keys[0]") && e.contains("does not fit"), "{e}");
        jwk["alg"] = json!("ES256");
        assert!(err(json!({"keys": [jwk.clone(), jwk.clone()]})).contains("duplicate kid"));
        let no_aud: IdentityConfig = serde_json::from_value(
            json!({"issuers": [{"issuer": "i", "audiences": [], "jwks": {"keys": [jwk]}}]}),
        )
        .unwrap();
        assert_eq!(
            Verifier::compile(&no_aud).unwrap_err().field(),
            "identity.issuers[0].audiences"
        );
    }

    #[test]
    fn rsa_keys_take_their_algorithm_from_the_jwk() {
        let kp = RS256KeyPair::generate(2048).unwrap().with_key_id("rs");
        let mut jwk: Value = serde_json::from_str(&kp.public_key().to_jwk()).unwrap();
        let cfg = |jwk: &Value| -> IdentityConfig {
            serde_json::from_value(json!({"issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": {"keys": [jwk]}}]})).unwrap()
        };
        let v = Verifier::compile(&cfg(&jwk)).unwrap();
        let t = kp.sign(claims(json!({}))).unwrap();
        assert!(v.verify(&t, NOW).is_ok());
        // The same modulus declared as PS256 no longer accepts RS256 tokens.
        jwk["alg"] = json!("PS256");
        if let Ok(v) = Verifier::compile(&cfg(&jwk)) {
            assert_eq!(v.verify(&t, NOW).unwrap_err().code(), "alg_not_allowed");
        }
    }
}
