//! Signed, versioned policy bundles (the Guardian sidecar's bundle, inside the filter).
//!
//! # Format (`meshguard-bundle/v1`)
//!
//! A bundle is one JSON object:
//!
//! ```json
//! {
//!   "format": "meshguard-bundle/v1",
//!   "version": 7,
//!   "created_at": "2026-11-22T10:00:00Z",
//!   "policies": [ { "name": "...", "rules": [ ... ] } ],
//!   "trust_tiers": {},
//!   "agents": [ { "id": "agent-a", "trust_tier": "verified" } ],
//!   "grants": [],
//!   "revocations": [],
//!   "signatures": [ { "alg": "Ed25519", "kid": "bundle-2026", "sig": "<base64url, 64 bytes>" } ]
//! }
//! ```
//!
//! `version` is a whole number that must grow with every bundle; `policies` uses the
//! policy language of the plugin configuration. `trust_tiers`, `agents`, `grants` and
//! `revocations` are carried and counted now and give later features their place;
//! unknown top-level members are rejected so that a typo cannot silently drop data.
//!
//! **What is signed:** the bytes `meshguard-bundle/v1\n` followed by the canonical JSON
//! of the bundle without its `signatures` member: object members sorted by key (byte
//! order of the UTF-8 key), no insignificant whitespace, strings escaped only where JSON
//! requires (`"`, `\`, control characters as `\n`, `\t`, ... or `\u00XX`), numbers as
//! integers (bundles must not contain fractional numbers). Each signature is Ed25519 over
//! those bytes; a bundle is accepted when any signature verifies with any configured key.

use super::document::{Accepted, Change, Kind};
use crate::config::{BundleConfig, Policy};
use crate::policy::PolicySet;
use ct_codecs::{Base64, Base64UrlSafeNoPadding, Decoder, Encoder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::rc::Rc;

/// The format tag, also the first line of the signed bytes.
pub const FORMAT: &str = "meshguard-bundle/v1";

/// Why a bundle was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// Larger than the configured cap.
    TooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// Not JSON, or not the bundle shape.
    Malformed(String),
    /// Signed with no configured key, or altered after signing.
    BadSignature,
    /// No signature at all.
    Unsigned,
    /// Not newer than the active bundle.
    Rollback {
        /// Offered version.
        offered: u64,
        /// Active version.
        active: u64,
    },
    /// The policies do not compile.
    Policy(String),
}

impl BundleError {
    /// Short code for logs and stats.
    pub fn code(&self) -> &'static str {
        match self {
            BundleError::TooLarge { .. } => "too_large",
            BundleError::Malformed(_) => "malformed",
            BundleError::BadSignature => "bad_signature",
            BundleError::Unsigned => "unsigned",
            BundleError::Rollback { .. } => "rollback",
            BundleError::Policy(_) => "bad_policy",
        }
    }
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::TooLarge { size, max } => {
                write!(f, "bundle is {size} bytes, over the {max}-byte cap (bundle.max_bytes)")
            }
            BundleError::Malformed(m) => write!(f, "not a {FORMAT} bundle: {m}"),
            BundleError::BadSignature => f.write_str(
                "no signature verifies with the configured public keys (wrong key, or the bundle was altered)",
            ),
            BundleError::Unsigned => f.write_str("bundle has no signatures"),
            BundleError::Rollback { offered, active } => write!(
                f,
                "bundle version {offered} is not newer than the active version {active} (rollback refused)"
            ),
            BundleError::Policy(m) => write!(f, "bundle policies do not compile: {m}"),
        }
    }
}

impl std::error::Error for BundleError {}

/// One signature of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Always `Ed25519`.
    pub alg: String,
    /// Which key signed (informational; every configured key is tried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// base64url (no padding) of the 64-byte signature.
    pub sig: String,
}

/// A bundle as transported.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Must be [`FORMAT`].
    pub format: String,
    /// Grows with every bundle.
    pub version: u64,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Policies, as in the plugin configuration.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Trust tier settings (reserved).
    #[serde(default)]
    pub trust_tiers: serde_json::Map<String, Value>,
    /// Agent records (reserved: identity data).
    #[serde(default)]
    pub agents: Vec<Value>,
    /// Temporary grants (reserved).
    #[serde(default)]
    pub grants: Vec<Value>,
    /// Revoked agents or tokens (reserved).
    #[serde(default)]
    pub revocations: Vec<Value>,
    /// Signatures over the canonical bytes.
    #[serde(default)]
    pub signatures: Vec<Signature>,
}

/// Ed25519 public keys that may sign bundles.
#[derive(Debug, Clone, Default)]
pub struct BundleKeys {
    keys: Vec<ed25519_compact::PublicKey>,
}

impl BundleKeys {
    /// Parses keys given as base64 or base64url of the 32 raw bytes, or as an Ed25519
    /// JWK object (`{"kty":"OKP","crv":"Ed25519","x":...}`).
    pub fn parse(values: &[Value]) -> Result<BundleKeys, String> {
        let mut keys = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let text = match v {
                Value::String(s) => s.as_str(),
                Value::Object(o) => {
                    if o.get("kty").and_then(Value::as_str) != Some("OKP")
                        || o.get("crv").and_then(Value::as_str) != Some("Ed25519")
                    {
                        return Err(format!(
                            "public_keys[{i}]: a JWK must be kty OKP, crv Ed25519"
                        ));
                    }
                    o.get("x").and_then(Value::as_str).unwrap_or_default()
                }
                _ => {
                    return Err(format!(
                        "public_keys[{i}]: expected a base64 string or an Ed25519 JWK"
                    ))
                }
            };
            let raw = decode_base64_any(text.trim())
                .ok_or_else(|| format!("public_keys[{i}]: not base64"))?;
            let key = ed25519_compact::PublicKey::from_slice(&raw).map_err(|_| {
                format!(
                    "public_keys[{i}]: an Ed25519 public key is 32 bytes, got {}",
                    raw.len()
                )
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("public_keys: at least one key is needed to verify bundles".into());
        }
        Ok(BundleKeys { keys })
    }
}

impl BundleKeys {
    /// Whether any Ed25519 signature of `signatures` verifies `input` with any key. The
    /// signed grants document (`crate::controls::grants`) uses the same keys and scheme.
    pub fn verifies(&self, input: &[u8], signatures: &[Signature]) -> bool {
        signatures.iter().any(|s| {
            s.alg == "Ed25519"
                && Base64UrlSafeNoPadding::decode_to_vec(s.sig.trim_end_matches('='), None)
                    .ok()
                    .and_then(|raw| ed25519_compact::Signature::from_slice(&raw).ok())
                    .is_some_and(|sig| self.keys.iter().any(|k| k.verify(input, &sig).is_ok()))
        })
    }
}

fn decode_base64_any(s: &str) -> Option<Vec<u8>> {
    let url = s.trim_end_matches('=');
    Base64UrlSafeNoPadding::decode_to_vec(url, None)
        .ok()
        .or_else(|| Base64::decode_to_vec(s, None).ok())
}

/// Writes the canonical JSON form (sorted keys, compact, integers only).
fn canonical(v: &Value, out: &mut String) -> Result<(), String> {
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            out.push_str(&serde_json::to_string(v).map_err(|e| e.to_string())?);
        }
        Value::Number(n) => {
            if n.is_f64() {
                return Err(format!(
                    "fractional number {n} (bundles carry whole numbers only)"
                ));
            }
            out.push_str(&n.to_string());
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).map_err(|e| e.to_string())?);
                out.push(':');
                canonical(val, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// The canonical JSON form described above, for other documents signed the same way
/// under their own first line (the grants document of `meshguard collector`, README
/// "Temporal grants").
pub fn canonical_json(v: &Value) -> Result<String, BundleError> {
    let mut out = String::new();
    canonical(v, &mut out).map_err(BundleError::Malformed)?;
    Ok(out)
}

/// The bytes a bundle's signatures cover.
pub fn signing_input(bundle_json: &Value) -> Result<Vec<u8>, BundleError> {
    let mut unsigned = bundle_json.clone();
    if let Value::Object(m) = &mut unsigned {
        m.remove("signatures");
    } else {
        return Err(BundleError::Malformed(
            "the bundle must be a JSON object".into(),
        ));
    }
    let mut out = format!("{FORMAT}\n");
    canonical(&unsigned, &mut out).map_err(BundleError::Malformed)?;
    Ok(out.into_bytes())
}

/// Parses a bundle and checks its signature; `max_bytes` caps the input.
pub fn verify(bytes: &[u8], keys: &BundleKeys, max_bytes: usize) -> Result<Bundle, BundleError> {
    if bytes.len() > max_bytes {
        return Err(BundleError::TooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    let json: Value =
        serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
    // Through the configuration reader, so `Policy` is compiled into the module once.
    let bundle: Bundle =
        crate::config::from_value(&json).map_err(|e| BundleError::Malformed(e.to_string()))?;
    if bundle.format != FORMAT {
        return Err(BundleError::Malformed(format!(
            "format is {:?}, expected {FORMAT:?}",
            bundle.format
        )));
    }
    if bundle.signatures.is_empty() {
        return Err(BundleError::Unsigned);
    }
    let input = signing_input(&json)?;
    let verified = bundle.signatures.iter().any(|s| {
        s.alg == "Ed25519"
            && Base64UrlSafeNoPadding::decode_to_vec(s.sig.trim_end_matches('='), None)
                .ok()
                .and_then(|raw| ed25519_compact::Signature::from_slice(&raw).ok())
                .is_some_and(|sig| keys.keys.iter().any(|k| k.verify(&input, &sig).is_ok()))
    });
    if verified {
        Ok(bundle)
    } else {
        Err(BundleError::BadSignature)
    }
}

/// Refuses bundles that are not newer than the active one.
pub fn check_newer(bundle: &Bundle, active: Option<u64>) -> Result<(), BundleError> {
    match active {
        Some(a) if bundle.version <= a => Err(BundleError::Rollback {
            offered: bundle.version,
            active: a,
        }),
        _ => Ok(()),
    }
}

/// A bundle that verified, is newer than the one it replaced and whose policies compiled:
/// what the engine is built from.
#[derive(Debug)]
pub struct VerifiedBundle {
    bundle: Bundle,
    policies: Rc<PolicySet>,
    /// As signed and transported: re-verified when the configuration changes.
    bytes: Vec<u8>,
}

impl VerifiedBundle {
    /// The bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        self.bundle.version
    }

    /// Its policies, compiled.
    pub fn policies(&self) -> &Rc<PolicySet> {
        &self.policies
    }

    /// Its `created_at`, in seconds since the epoch (for `bundleAge`).
    pub fn created_secs(&self) -> Option<u64> {
        crate::time::parse(&self.bundle.created_at)
    }

    /// A bundle taken as verified, for engine tests that need one without signing it.
    #[cfg(test)]
    pub(crate) fn unsigned_for_tests(bundle: Bundle) -> VerifiedBundle {
        let policies = PolicySet::compile(&bundle.policies, "bundle.policies")
            .unwrap_or_else(|e| panic!("test bundle policies: {e}"));
        VerifiedBundle {
            bundle,
            policies: Rc::new(policies),
            bytes: Vec::new(),
        }
    }
}

/// Whether a bundle may be put in force: it verifies with a configured key (and fits
/// `max_bytes`), it is newer than the bundle in force (same version: nothing new;
/// older: rollback refused), and its policies compile.
pub fn accept(
    bytes: &[u8],
    keys: &BundleKeys,
    max_bytes: usize,
    active: Option<&VerifiedBundle>,
) -> Result<Accepted<VerifiedBundle>, BundleError> {
    let bundle = verify(bytes, keys, max_bytes)?;
    if active.is_some_and(|a| a.version() == bundle.version) {
        return Ok(Accepted::Same);
    }
    check_newer(&bundle, active.map(VerifiedBundle::version))?;
    let policies = PolicySet::compile(&bundle.policies, "bundle.policies")
        .map_err(|e| BundleError::Policy(e.to_string()))?;
    Ok(Accepted::New(VerifiedBundle {
        bundle,
        policies: Rc::new(policies),
        bytes: bytes.to_vec(),
    }))
}

/// The bundle as a fetched document: [`accept`] with the configured keys.
#[derive(Debug)]
pub struct BundleKind {
    keys: BundleKeys,
    max_bytes: usize,
}

impl BundleKind {
    /// From the `bundle:` section; `None` when its keys do not parse (the configuration
    /// is then refused with the precise error when the engine is built).
    pub fn from_config(cfg: &BundleConfig) -> Option<BundleKind> {
        Some(BundleKind {
            keys: BundleKeys::parse(&cfg.public_keys).ok()?,
            max_bytes: cfg.max_bytes,
        })
    }
}

impl Kind for BundleKind {
    type Doc = VerifiedBundle;

    fn accept(
        &self,
        bytes: &[u8],
        current: Option<&VerifiedBundle>,
    ) -> Result<Accepted<VerifiedBundle>, String> {
        accept(bytes, &self.keys, self.max_bytes, current).map_err(|e| e.to_string())
    }

    fn still_valid(&self, doc: &VerifiedBundle) -> bool {
        verify(&doc.bytes, &self.keys, self.max_bytes).is_ok()
    }

    fn installed(doc: &VerifiedBundle, adopted: bool) -> Change {
        Change::NewBundle {
            version: doc.version(),
            adopted,
        }
    }
}

/// Signs a bundle (given as JSON) with an Ed25519 secret key, replacing its signatures.
/// Used by `meshguard bundle sign`; the filter only verifies.
pub fn sign(
    bundle_json: &mut Value,
    secret: &ed25519_compact::SecretKey,
    kid: Option<&str>,
) -> Result<(), BundleError> {
    let input = signing_input(bundle_json)?;
    let sig = secret.sign(&input, None);
    let sig_b64 = Base64UrlSafeNoPadding::encode_to_string(sig.as_ref())
        .map_err(|e| BundleError::Malformed(e.to_string()))?;
    let entry = serde_json::to_value(Signature {
        alg: "Ed25519".into(),
        kid: kid.map(str::to_string),
        sig: sig_b64,
    })
    .map_err(|e| BundleError::Malformed(e.to_string()))?;
    if let Value::Object(m) = bundle_json {
        m.insert("signatures".into(), Value::Array(vec![entry]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keypair(seed: u8) -> ed25519_compact::KeyPair {
        ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]))
    }

    fn keys(kp: &ed25519_compact::KeyPair) -> BundleKeys {
        let b64 = Base64::encode_to_string(kp.pk.as_ref()).unwrap();
        BundleKeys::parse(&[Value::String(b64)]).unwrap()
    }

    fn signed(version: u64, kp: &ed25519_compact::KeyPair) -> Value {
        let mut b = json!({
            "format": FORMAT, "version": version, "created_at": "2026-11-22T10:00:00Z",
            "policies": [{"name": "p", "version": 1, "rules": [{"action": "read:*", "effect": "allow", "reason": "é \"q\"\n"}]}],
            "agents": [{"id": "a", "trust_tier": "verified"}]
        });
        sign(&mut b, &kp.sk, Some("k1")).unwrap();
        b
    }

    #[test]
    fn signed_bundles_verify_and_tampering_is_caught() {
        let kp = keypair(1);
        let b = signed(3, &kp);
        let bytes = serde_json::to_vec_pretty(&b).unwrap();
        let ok = verify(&bytes, &keys(&kp), 1 << 20).unwrap();
        assert_eq!((ok.version, ok.policies.len(), ok.agents.len()), (3, 1, 1));
        let mut tampered = b.clone();
        tampered["policies"][0]["rules"][0]["effect"] = json!("deny");
        let e = verify(&serde_json::to_vec(&tampered).unwrap(), &keys(&kp), 1 << 20).unwrap_err();
        assert_eq!(e, BundleError::BadSignature);
        let e = verify(&bytes, &keys(&keypair(2)), 1 << 20).unwrap_err();
        assert_eq!(e, BundleError::BadSignature, "wrong key");
        let mut unsigned = b.clone();
        unsigned.as_object_mut().unwrap().remove("signatures");
        assert_eq!(
            verify(&serde_json::to_vec(&unsigned).unwrap(), &keys(&kp), 1 << 20).unwrap_err(),
            BundleError::Unsigned
        );
        assert_eq!(
            verify(&bytes, &keys(&kp), 10).unwrap_err().code(),
            "too_large"
        );
        assert_eq!(
            verify(b"<html>", &keys(&kp), 1 << 20).unwrap_err().code(),
            "malformed"
        );
        assert_eq!(
            verify(&bytes[..bytes.len() / 2], &keys(&kp), 1 << 20)
                .unwrap_err()
                .code(),
            "malformed"
        );
    }

    #[test]
    fn canonical_form_is_key_order_and_whitespace_independent() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, "x"], "x": null}}"#).unwrap();
        let mut out = String::new();
        canonical(&a, &mut out).unwrap();
        assert_eq!(out, r#"{"a":{"x":null,"y":[1,"x"]},"b":1}"#);
        assert!(canonical(&json!({"a": 1.5}), &mut String::new()).is_err());
    }

    #[test]
    fn rollback_is_refused_and_keys_rotate() {
        let old = keypair(1);
        let new = keypair(2);
        let both = BundleKeys::parse(&[
            Value::String(Base64::encode_to_string(old.pk.as_ref()).unwrap()),
            json!({"kty": "OKP", "crv": "Ed25519", "x": Base64UrlSafeNoPadding::encode_to_string(new.pk.as_ref()).unwrap()}),
        ])
        .unwrap();
        let b = verify(
            &serde_json::to_vec(&signed(5, &new)).unwrap(),
            &both,
            1 << 20,
        )
        .unwrap();
        assert!(check_newer(&b, Some(4)).is_ok());
        assert_eq!(check_newer(&b, Some(5)).unwrap_err().code(), "rollback");
        assert!(BundleKeys::parse(&[json!("AAAA")])
            .unwrap_err()
            .contains("32 bytes"));
        assert!(BundleKeys::parse(&[]).is_err());
    }
}
