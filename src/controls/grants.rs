//! Temporal grants ("sudo for agents") and the signed grants document.
//!
//! A grant allows one agent (glob) an action (glob) on a resource (glob, optional) until
//! `expires_at`: it turns a `require_approval` decision or a default deny into allow,
//! never an explicit `deny` rule. It is valid while `now < expires_at` (at the instant
//! itself it has expired).
//!
//! # The grants document (`meshguard-grants/v1`)
//!
//! What an approval service publishes and filters poll from `grants.cluster` +
//! `grants.path`:
//!
//! ```json
//! {
//!   "format": "meshguard-grants/v1",
//!   "version": 12,
//!   "created_at": "2026-11-29T10:00:00Z",
//!   "grants": [
//!     { "id": "g-42", "agent": "agent-a", "action": "write:refund", "resource": "orders",
//!       "expires_at": "2026-11-29T11:00:00Z", "reason": "INC-7", "approved_by": "alice" }
//!   ],
//!   "signatures": [ { "alg": "Ed25519", "kid": "grants-2026", "sig": "<base64url, 64 bytes>" } ]
//! }
//! ```
//!
//! `version` must grow with every document (an older or equal one is refused as a
//! rollback). **What is signed:** the bytes `meshguard-grants/v1\n` followed by the
//! canonical JSON of the document without its `signatures` member, exactly as for
//! bundles (sorted keys, compact, whole numbers only; see `crate::sources::bundle`). A
//! document is accepted when any signature verifies with any key of `grants.public_keys`.

use crate::config::{ConfigError, GrantConfig};
use crate::glob::Pattern;
use crate::sources::bundle::{self, BundleKeys, Signature};
use ct_codecs::{Base64UrlSafeNoPadding, Encoder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// The format tag of a grants document, also the first line of its signed bytes.
pub const FORMAT: &str = "meshguard-grants/v1";

/// A compiled grant.
#[derive(Debug, Clone)]
pub struct Grant {
    /// As written.
    pub spec: GrantConfig,
    agent: Pattern,
    action: Pattern,
    resource: Option<Pattern>,
    /// `expires_at` in seconds since the epoch.
    pub expires_at: u64,
}

impl Grant {
    /// Compiles one grant; `field` prefixes error paths (`grants.inline[0]`).
    pub fn compile(spec: &GrantConfig, field: &str) -> Result<Grant, ConfigError> {
        if spec.id.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{field}.id"),
                "must not be empty: decisions and audit events name the grant",
            ));
        }
        let glob = |name: &str, pattern: &str| {
            Pattern::new(pattern).map_err(|e| ConfigError::Glob {
                field: format!("{field}.{name}"),
                error: e,
            })
        };
        if spec.agent.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{field}.agent"),
                "must name the agent (an agent id or glob)",
            ));
        }
        let expires_at = crate::time::parse(&spec.expires_at).ok_or_else(|| {
            ConfigError::invalid(
                format!("{field}.expires_at"),
                format!(
                    "{:?} is not an RFC 3339 instant such as 2026-11-29T18:00:00Z",
                    spec.expires_at
                ),
            )
        })?;
        Ok(Grant {
            agent: glob("agent", &spec.agent)?,
            action: glob("action", &spec.action)?,
            resource: match &spec.resource {
                Some(r) => Some(glob("resource", r)?),
                None => None,
            },
            expires_at,
            spec: spec.clone(),
        })
    }

    /// Whether the grant allows this agent's action at `now_secs`.
    pub fn allows(&self, agent: &str, action: &str, resource: Option<&str>, now_secs: u64) -> bool {
        now_secs < self.expires_at
            && self.agent.matches(agent)
            && self.action.matches(action)
            && match (&self.resource, resource) {
                (None, _) => true,
                (Some(p), Some(r)) => p.matches(r),
                (Some(_), None) => false,
            }
    }

    /// The reason a granted decision reports.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "allowed by temporal grant {} until {}",
            self.spec.id, self.spec.expires_at
        );
        if let Some(who) = &self.spec.approved_by {
            s.push_str(&format!(", approved by {who}"));
        }
        if let Some(why) = &self.spec.reason {
            s.push_str(&format!(": {why}"));
        }
        s
    }
}

/// Compiles a list of grants, checking that ids are unique within it.
pub fn compile_all(specs: &[GrantConfig], field: &str) -> Result<Vec<Grant>, ConfigError> {
    let mut out: Vec<Grant> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if out.iter().any(|g| g.spec.id == spec.id) {
            return Err(ConfigError::invalid(
                format!("{f}.id"),
                format!("grant id {:?} is used twice", spec.id),
            ));
        }
        out.push(Grant::compile(spec, &f)?);
    }
    Ok(out)
}

/// A verified grants document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsDoc {
    /// Must be [`FORMAT`].
    pub format: String,
    /// Grows with every document.
    pub version: u64,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// The grants.
    #[serde(default)]
    pub grants: Vec<GrantConfig>,
    /// Signatures over the canonical bytes.
    #[serde(default)]
    pub signatures: Vec<Signature>,
}

/// Why a grants document was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantsError {
    /// Larger than `grants.max_bytes`.
    TooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// Not JSON, or not the document shape.
    Malformed(String),
    /// No signature at all.
    Unsigned,
    /// Signed with no configured key, or altered after signing.
    BadSignature,
    /// Not newer than the document in force.
    Rollback {
        /// Offered version.
        offered: u64,
        /// Version in force.
        active: u64,
    },
    /// A grant that does not compile (bad timestamp, glob, duplicate id).
    Invalid(ConfigError),
}

impl GrantsError {
    /// Short code for logs and stats.
    pub fn code(&self) -> &'static str {
        match self {
            GrantsError::TooLarge { .. } => "too_large",
            GrantsError::Malformed(_) => "malformed",
            GrantsError::Unsigned => "unsigned",
            GrantsError::BadSignature => "bad_signature",
            GrantsError::Rollback { .. } => "rollback",
            GrantsError::Invalid(_) => "bad_grant",
        }
    }
}

impl fmt::Display for GrantsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantsError::TooLarge { size, max } => write!(
                f,
                "grants document is {size} bytes, over the {max}-byte cap (grants.max_bytes)"
            ),
            GrantsError::Malformed(m) => write!(f, "not a {FORMAT} document: {m}"),
            GrantsError::Unsigned => f.write_str("grants document has no signatures"),
            GrantsError::BadSignature => f.write_str(
                "no signature verifies with grants.public_keys (wrong key, or the document was altered)",
            ),
            GrantsError::Rollback { offered, active } => write!(
                f,
                "grants document version {offered} is not newer than the version in force {active} (rollback refused)"
            ),
            GrantsError::Invalid(e) => write!(f, "grants document: {e}"),
        }
    }
}

impl std::error::Error for GrantsError {}

/// The bytes a grants document's signatures cover: `meshguard-grants/v1\n` + the
/// canonical JSON of the document without `signatures` (the bundles' canonical form).
pub fn signing_input(doc: &Value) -> Result<Vec<u8>, GrantsError> {
    let bundle_input = bundle::signing_input(doc).map_err(|e| match e {
        bundle::BundleError::Malformed(m) => GrantsError::Malformed(m),
        other => GrantsError::Malformed(other.to_string()),
    })?;
    let canonical = bundle_input
        .get(bundle::FORMAT.len() + 1..)
        .unwrap_or_default();
    let mut out = Vec::with_capacity(FORMAT.len() + 1 + canonical.len());
    out.extend_from_slice(FORMAT.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical);
    Ok(out)
}

/// Parses and verifies a grants document: size cap, shape, signature, version newer than
/// `previous_version`, and every grant well-formed.
pub fn verify_grants_document(
    bytes: &[u8],
    keys: &BundleKeys,
    max_bytes: usize,
    previous_version: Option<u64>,
) -> Result<GrantsDoc, GrantsError> {
    if bytes.len() > max_bytes {
        return Err(GrantsError::TooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    let json: Value =
        serde_json::from_slice(bytes).map_err(|e| GrantsError::Malformed(e.to_string()))?;
    // Through the configuration reader, so the grant types are compiled into the module once.
    let doc: GrantsDoc =
        crate::config::from_value(&json).map_err(|e| GrantsError::Malformed(e.to_string()))?;
    if doc.format != FORMAT {
        return Err(GrantsError::Malformed(format!(
            "format is {:?}, expected {FORMAT:?}",
            doc.format
        )));
    }
    if doc.signatures.is_empty() {
        return Err(GrantsError::Unsigned);
    }
    if !keys.verifies(&signing_input(&json)?, &doc.signatures) {
        return Err(GrantsError::BadSignature);
    }
    if let Some(active) = previous_version {
        if doc.version <= active {
            return Err(GrantsError::Rollback {
                offered: doc.version,
                active,
            });
        }
    }
    compile_all(&doc.grants, "grants").map_err(GrantsError::Invalid)?;
    Ok(doc)
}

/// Signs a grants document (as JSON) with an Ed25519 secret key, replacing its
/// signatures: what an approval service or `meshguard` tooling calls.
pub fn sign_grants_document(
    doc: &mut Value,
    secret: &ed25519_compact::SecretKey,
    kid: Option<&str>,
) -> Result<(), GrantsError> {
    let input = signing_input(doc)?;
    let sig = secret.sign(&input, None);
    let sig = Base64UrlSafeNoPadding::encode_to_string(sig.as_ref())
        .map_err(|e| GrantsError::Malformed(e.to_string()))?;
    let entry = serde_json::to_value(Signature {
        alg: "Ed25519".into(),
        kid: kid.map(str::to_string),
        sig,
    })
    .map_err(|e| GrantsError::Malformed(e.to_string()))?;
    match doc {
        Value::Object(m) => {
            m.insert("signatures".into(), Value::Array(vec![entry]));
            Ok(())
        }
        _ => Err(GrantsError::Malformed(
            "the document must be a JSON object".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ct_codecs::Base64;
    use serde_json::json;

    fn kp(seed: u8) -> ed25519_compact::KeyPair {
        ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]))
    }

    fn keys(k: &ed25519_compact::KeyPair) -> BundleKeys {
        BundleKeys::parse(&[Value::String(
            Base64::encode_to_string(k.pk.as_ref()).unwrap(),
        )])
        .unwrap()
    }

    fn doc(version: u64, k: &ed25519_compact::KeyPair) -> Value {
        let mut d = json!({
            "format": FORMAT, "version": version, "created_at": "2026-11-29T10:00:00Z",
            "grants": [{"id": "g-1", "agent": "agent-a", "action": "write:refund",
                        "expires_at": "2027-01-15T09:00:00Z", "approved_by": "alice"}]
        });
        sign_grants_document(&mut d, &k.sk, Some("g")).unwrap();
        d
    }

    fn spec(expires_at: &str) -> GrantConfig {
        GrantConfig {
            id: "g".into(),
            agent: "agent-*".into(),
            action: "write:*".into(),
            resource: Some("orders".into()),
            expires_at: expires_at.into(),
            reason: Some("INC-7".into()),
            approved_by: Some("bob".into()),
            approval_id: None,
        }
    }

    #[test]
    fn grants_expire_exactly_at_expires_at() {
        let g = Grant::compile(&spec("2027-01-15T09:00:00Z"), "grants.inline[0]").unwrap();
        let exp = 1_800_003_600;
        assert_eq!(g.expires_at, exp);
        assert!(g.allows("agent-a", "write:refund", Some("orders"), exp - 1));
        assert!(!g.allows("agent-a", "write:refund", Some("orders"), exp));
        assert!(!g.allows("agent-a", "write:refund", Some("users"), exp - 1));
        assert!(!g.allows("agent-a", "write:refund", None, exp - 1));
        assert!(!g.allows("bot-a", "write:refund", Some("orders"), exp - 1));
        assert!(!g.allows("agent-a", "read:refund", Some("orders"), exp - 1));
        assert!(
            g.describe().contains("approved by bob: INC-7"),
            "{}",
            g.describe()
        );
        // offsets are honoured
        let g = Grant::compile(&spec("2027-01-15T10:00:00+01:00"), "x").unwrap();
        assert_eq!(g.expires_at, exp);
    }

    #[test]
    fn bad_grants_name_the_field() {
        let e = Grant::compile(&spec("tomorrow"), "grants.inline[2]").unwrap_err();
        assert_eq!(e.field(), "grants.inline[2].expires_at");
        let mut s = spec("2027-01-15T09:00:00Z");
        s.action = "write:[".into();
        assert_eq!(
            Grant::compile(&s, "grants.inline[0]").unwrap_err().field(),
            "grants.inline[0].action"
        );
        let mut s = spec("2027-01-15T09:00:00Z");
        s.id = " ".into();
        assert_eq!(Grant::compile(&s, "g").unwrap_err().field(), "g.id");
        let e = compile_all(
            &[spec("2027-01-15T09:00:00Z"), spec("2027-01-15T09:00:00Z")],
            "grants.inline",
        )
        .unwrap_err();
        assert_eq!(e.field(), "grants.inline[1].id");
    }

    #[test]
    fn signed_documents_verify_and_tampering_is_caught() {
        let k = kp(3);
        let d = doc(4, &k);
        let bytes = serde_json::to_vec_pretty(&d).unwrap();
        let ok = verify_grants_document(&bytes, &keys(&k), 1 << 16, Some(3)).unwrap();
        assert_eq!((ok.version, ok.grants.len()), (4, 1));
        let mut t = d.clone();
        t["grants"][0]["expires_at"] = json!("2099-01-01T00:00:00Z");
        assert_eq!(
            verify_grants_document(&serde_json::to_vec(&t).unwrap(), &keys(&k), 1 << 16, None)
                .unwrap_err(),
            GrantsError::BadSignature
        );
        assert_eq!(
            verify_grants_document(&bytes, &keys(&kp(4)), 1 << 16, None).unwrap_err(),
            GrantsError::BadSignature
        );
        assert_eq!(
            verify_grants_document(&bytes, &keys(&k), 1 << 16, Some(4)).unwrap_err(),
            GrantsError::Rollback {
                offered: 4,
                active: 4
            }
        );
        assert_eq!(
            verify_grants_document(&bytes, &keys(&k), 10, None)
                .unwrap_err()
                .code(),
            "too_large"
        );
        let mut u = d.clone();
        u.as_object_mut().unwrap().remove("signatures");
        assert_eq!(
            verify_grants_document(&serde_json::to_vec(&u).unwrap(), &keys(&k), 1 << 16, None)
                .unwrap_err(),
            GrantsError::Unsigned
        );
        for junk in [
            &b"[]"[..],
            b"{",
            b"\"x\"",
            b"{\"format\":\"meshguard-grants/v1\"}",
        ] {
            assert_eq!(
                verify_grants_document(junk, &keys(&k), 1 << 16, None)
                    .unwrap_err()
                    .code(),
                "malformed"
            );
        }
    }

    #[test]
    fn a_bundle_signature_cannot_be_replayed_as_grants() {
        let k = kp(5);
        let mut d = json!({"format": FORMAT, "version": 1, "created_at": "x", "grants": []});
        // signed with the bundle scheme (bundle prefix): refused
        bundle::sign(&mut d, &k.sk, None).unwrap();
        assert_eq!(
            verify_grants_document(&serde_json::to_vec(&d).unwrap(), &keys(&k), 1 << 16, None)
                .unwrap_err(),
            GrantsError::BadSignature
        );
        let input = signing_input(&d).unwrap();
        assert!(input.starts_with(b"meshguard-grants/v1\n{\"created_at\""));
    }

    #[test]
    fn signed_bytes_match_the_documented_python_recipe() {
        // b"meshguard-grants/v1\n" + json.dumps(doc, sort_keys=True, separators=(",", ":"),
        // ensure_ascii=False).encode(), computed with Python 3
        let d = json!({"format": FORMAT, "version": 2, "created_at": "2026-11-29T10:00:00Z",
            "grants": [{"id": "g-\u{e9}", "agent": "agent-a", "action": "write:refund",
                        "expires_at": "2027-01-01T00:00:00Z", "reason": "tab\there \"q\""}],
            "signatures": [{"alg": "Ed25519", "sig": "ignored"}]});
        let expected = "meshguard-grants/v1\n{\"created_at\":\"2026-11-29T10:00:00Z\",\"format\":\"meshguard-grants/v1\",\"grants\":[{\"action\":\"write:refund\",\"agent\":\"agent-a\",\"expires_at\":\"2027-01-01T00:00:00Z\",\"id\":\"g-\u{e9}\",\"reason\":\"tab\\there \\\"q\\\"\"}],\"version\":2}";
        assert_eq!(
            String::from_utf8(signing_input(&d).unwrap()).unwrap(),
            expected
        );
    }

    #[test]
    fn documents_with_bad_grants_are_refused_with_the_field() {
        let k = kp(6);
        let mut d = json!({"format": FORMAT, "version": 1, "created_at": "x",
            "grants": [{"id": "g", "agent": "a", "action": "x", "expires_at": "2027-13-01T00:00:00Z"}]});
        sign_grants_document(&mut d, &k.sk, None).unwrap();
        let e = verify_grants_document(&serde_json::to_vec(&d).unwrap(), &keys(&k), 1 << 16, None)
            .unwrap_err();
        assert!(e.to_string().contains("grants[0].expires_at"), "{e}");
        assert_eq!(e.code(), "bad_grant");
    }
}
