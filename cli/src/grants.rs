//! The signed grants document (`meshguard-grants/v1`) that `meshguard collector` publishes
//! for filters to poll, and `meshguard grants sign|verify|inspect` for hand-made ones.
//!
//! Format and signing follow the policy bundle (README "Signed policy bundles"): the
//! signed bytes are `meshguard-grants/v1\n` followed by the canonical JSON of the document
//! without `signatures`; the canonical form is the bundle's own
//! (`meshguard::sources::bundle::canonical_json`). cli/COLLECTOR.md "Grants document"
//! describes it byte for byte.

use ct_codecs::{Base64, Base64UrlSafeNoPadding, Decoder, Encoder};
use meshguard::sources::bundle::canonical_json;
use meshguard::time;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The format tag, also the first line of the signed bytes.
pub const GRANTS_FORMAT: &str = "meshguard-grants/v1";

/// One temporal grant: `agent` may perform `action` (on `resource`) until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The approval id the grant came from (`apr_...`), or any unique name for hand-made ones.
    pub id: String,
    /// The agent allowed.
    pub agent: String,
    /// The action (policy glob semantics).
    pub action: String,
    /// The resource (policy glob semantics); absent means any resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// RFC 3339 UTC, whole seconds.
    pub expires_at: String,
    /// Why it was granted.
    pub reason: String,
    /// Who approved it.
    pub approved_by: String,
}

/// The document as transported.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsDocument {
    /// Must be [`GRANTS_FORMAT`].
    pub format: String,
    /// Grows with every change of the grants.
    pub version: u64,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// The grants in force when the document was made.
    pub grants: Vec<Grant>,
    /// Ed25519 signatures over the canonical bytes.
    #[serde(default)]
    pub signatures: Vec<Value>,
}

/// Why a grants document or key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantsError {
    /// Not JSON, or not the document's shape.
    Malformed(String),
    /// No signatures at all.
    Unsigned,
    /// No signature verifies with the given keys.
    BadSignature,
    /// A key that cannot be used.
    Key(String),
    /// A file that cannot be read or written.
    Io(String),
}

impl fmt::Display for GrantsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantsError::Malformed(m) => write!(f, "not a {GRANTS_FORMAT} document: {m}"),
            GrantsError::Unsigned => f.write_str("the grants document has no signatures"),
            GrantsError::BadSignature => f.write_str(
                "no signature verifies with the given public keys (wrong key, or the document was altered)",
            ),
            GrantsError::Key(m) | GrantsError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for GrantsError {}

/// An Ed25519 signing key with its key id.
#[derive(Clone)]
pub struct SigningKey {
    /// The secret key.
    pub secret: ed25519_compact::SecretKey,
    /// `kid` of the JWK, copied into each signature.
    pub kid: Option<String>,
}

impl SigningKey {
    /// Reads the private JWK written by `meshguard keygen --alg EdDSA`.
    pub fn load(path: &Path) -> Result<SigningKey, GrantsError> {
        let bytes = std::fs::read(path)
            .map_err(|e| GrantsError::Io(format!("cannot read {}: {e}", path.display())))?;
        let jwk: Value = serde_json::from_slice(&bytes)
            .map_err(|e| GrantsError::Key(format!("{}: not a JWK: {e}", path.display())))?;
        let okp = jwk.get("kty").and_then(Value::as_str) == Some("OKP")
            && jwk.get("crv").and_then(Value::as_str) == Some("Ed25519");
        let seed = jwk
            .get("d")
            .and_then(Value::as_str)
            .filter(|_| okp)
            .and_then(|d| Base64UrlSafeNoPadding::decode_to_vec(d, None).ok())
            .and_then(|s| ed25519_compact::Seed::from_slice(&s).ok())
            .ok_or_else(|| {
                GrantsError::Key(format!(
                    "{}: grants are signed with an Ed25519 private JWK holding a 32-byte \"d\" \
                     (make one with `meshguard keygen --alg EdDSA`)",
                    path.display()
                ))
            })?;
        Ok(SigningKey {
            secret: ed25519_compact::KeyPair::from_seed(seed).sk,
            kid: jwk.get("kid").and_then(Value::as_str).map(str::to_string),
        })
    }

    /// The public key as base64 (what a filter's `grants.public_keys` takes).
    pub fn public_base64(&self) -> String {
        Base64::encode_to_string(self.secret.public_key().as_ref()).unwrap_or_default()
    }
}

/// The bytes a grants document's signatures cover.
pub fn signing_input(doc: &Value) -> Result<Vec<u8>, GrantsError> {
    let mut unsigned = doc.clone();
    match &mut unsigned {
        Value::Object(m) => {
            m.remove("signatures");
        }
        _ => return Err(GrantsError::Malformed("it must be a JSON object".into())),
    }
    let body = canonical_json(&unsigned).map_err(|e| GrantsError::Malformed(e.to_string()))?;
    Ok(format!("{GRANTS_FORMAT}\n{body}").into_bytes())
}

/// Builds and signs a document; returns its bytes (compact JSON plus a newline).
pub fn build(
    version: u64,
    created_unix: u64,
    grants: &[Grant],
    key: &SigningKey,
) -> Result<Vec<u8>, GrantsError> {
    let mut doc = json!({
        "format": GRANTS_FORMAT,
        "version": version,
        "created_at": time::format(created_unix),
        "grants": grants,
    });
    sign(&mut doc, key)?;
    let mut bytes = serde_json::to_vec(&doc).map_err(|e| GrantsError::Malformed(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Signs `doc` in place, replacing its signatures.
pub fn sign(doc: &mut Value, key: &SigningKey) -> Result<(), GrantsError> {
    let input = signing_input(doc)?;
    let sig = key.secret.sign(&input, None);
    let sig = Base64UrlSafeNoPadding::encode_to_string(sig.as_ref())
        .map_err(|e| GrantsError::Malformed(e.to_string()))?;
    let mut entry = json!({ "alg": "Ed25519", "sig": sig });
    if let (Some(kid), Value::Object(m)) = (&key.kid, &mut entry) {
        m.insert("kid".into(), Value::String(kid.clone()));
    }
    if let Value::Object(m) = doc {
        m.insert("signatures".into(), Value::Array(vec![entry]));
    }
    Ok(())
}

fn decode_base64_any(s: &str) -> Option<Vec<u8>> {
    Base64UrlSafeNoPadding::decode_to_vec(s.trim_end_matches('='), None)
        .ok()
        .or_else(|| Base64::decode_to_vec(s, None).ok())
}

/// Parses public keys: base64 or base64url of the 32 raw bytes, or Ed25519 JWK objects
/// (a private JWK's `d` is ignored).
pub fn public_keys(values: &[Value]) -> Result<Vec<ed25519_compact::PublicKey>, GrantsError> {
    let mut keys = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let text = match v {
            Value::String(s) => s.as_str(),
            Value::Object(o)
                if o.get("kty").and_then(Value::as_str) == Some("OKP")
                    && o.get("crv").and_then(Value::as_str) == Some("Ed25519") =>
            {
                o.get("x").and_then(Value::as_str).unwrap_or_default()
            }
            _ => {
                return Err(GrantsError::Key(format!(
                    "--pubkey #{}: expected base64 of an Ed25519 key or an Ed25519 JWK",
                    i + 1
                )))
            }
        };
        let key = decode_base64_any(text.trim())
            .and_then(|raw| ed25519_compact::PublicKey::from_slice(&raw).ok())
            .ok_or_else(|| {
                GrantsError::Key(format!(
                    "--pubkey #{}: not base64 of a 32-byte Ed25519 public key",
                    i + 1
                ))
            })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(GrantsError::Key(
            "at least one public key is needed to verify a grants document".into(),
        ));
    }
    Ok(keys)
}

/// Parses a document and checks its signature against `keys`.
pub fn verify(
    bytes: &[u8],
    keys: &[ed25519_compact::PublicKey],
) -> Result<GrantsDocument, GrantsError> {
    let json: Value =
        serde_json::from_slice(bytes).map_err(|e| GrantsError::Malformed(e.to_string()))?;
    let doc: GrantsDocument =
        serde_json::from_value(json.clone()).map_err(|e| GrantsError::Malformed(e.to_string()))?;
    if doc.format != GRANTS_FORMAT {
        return Err(GrantsError::Malformed(format!(
            "format is {:?}, expected {GRANTS_FORMAT:?}",
            doc.format
        )));
    }
    if doc.signatures.is_empty() {
        return Err(GrantsError::Unsigned);
    }
    let input = signing_input(&json)?;
    let verified = doc.signatures.iter().any(|s| {
        s.get("alg").and_then(Value::as_str) == Some("Ed25519")
            && s.get("sig")
                .and_then(Value::as_str)
                .and_then(decode_base64_any)
                .and_then(|raw| ed25519_compact::Signature::from_slice(&raw).ok())
                .is_some_and(|sig| keys.iter().any(|k| k.verify(&input, &sig).is_ok()))
    });
    if verified {
        Ok(doc)
    } else {
        Err(GrantsError::BadSignature)
    }
}

// ------------------------------------------------------------------ `meshguard grants`

/// `meshguard grants ...`
#[derive(clap::Args)]
pub struct GrantsArgs {
    #[command(subcommand)]
    command: GrantsCommand,
}

#[derive(clap::Subcommand)]
enum GrantsCommand {
    /// Sign a hand-made list of grants (JSON or YAML) as a grants document.
    Sign(SignArgs),
    /// Check a grants document's signature; exit 0 when it verifies, 1 when not.
    Verify(VerifyArgs),
    /// Show what a grants document holds (no key needed).
    Inspect(InspectArgs),
}

#[derive(clap::Args)]
struct SignArgs {
    /// Ed25519 private key: the `.key.json` JWK written by `meshguard keygen --alg EdDSA`.
    #[arg(long)]
    key: PathBuf,
    /// JSON or YAML list of grants `{id, agent, action, resource?, expires_at, reason, approved_by}`.
    grants: PathBuf,
    /// Output file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Document version; must grow with every document (default: the current Unix time).
    #[arg(long)]
    version: Option<u64>,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Public key(s): base64 of the 32 raw bytes, or a JWK / JWKS file (repeatable).
    #[arg(long = "pubkey", required = true)]
    pubkeys: Vec<String>,
    /// The grants document.
    document: PathBuf,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// The grants document.
    document: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, GrantsError> {
    std::fs::read(path).map_err(|e| GrantsError::Io(format!("cannot read {}: {e}", path.display())))
}

/// Runs a grants subcommand.
pub fn run(args: GrantsArgs) -> Result<ExitCode, GrantsError> {
    match args.command {
        GrantsCommand::Sign(a) => sign_cmd(a),
        GrantsCommand::Verify(a) => verify_cmd(a),
        GrantsCommand::Inspect(a) => inspect_cmd(a),
    }
}

fn sign_cmd(a: SignArgs) -> Result<ExitCode, GrantsError> {
    let key = SigningKey::load(&a.key)?;
    let grants: Vec<Grant> = meshguard::config::from_text(&read(&a.grants)?).map_err(|e| {
        GrantsError::Malformed(format!(
            "{}: expected a list of grants {{id, agent, action, resource?, expires_at, \
             reason, approved_by}}: {e}",
            a.grants.display()
        ))
    })?;
    for (i, g) in grants.iter().enumerate() {
        if time::parse(&g.expires_at).is_none() {
            return Err(GrantsError::Malformed(format!(
                "{}: grants[{i}].expires_at {:?} is not RFC 3339 (e.g. 2026-12-01T10:00:00Z)",
                a.grants.display(),
                g.expires_at
            )));
        }
    }
    let now = crate::timestamp::now_nanos().max(0).unsigned_abs() / 1_000_000_000;
    let version = a.version.unwrap_or(now);
    let bytes = build(version, now, &grants, &key)?;
    std::fs::write(&a.output, &bytes)
        .map_err(|e| GrantsError::Io(format!("cannot write {}: {e}", a.output.display())))?;
    eprintln!(
        "wrote {} (version {version}, {} grants); public key: {}",
        a.output.display(),
        grants.len(),
        key.public_base64()
    );
    Ok(ExitCode::SUCCESS)
}

/// A `--pubkey` argument: base64 text, or a file holding a JWK or a JWKS.
fn key_values(args: &[String]) -> Result<Vec<Value>, GrantsError> {
    let mut values = Vec::new();
    for arg in args {
        let path = Path::new(arg);
        if path.is_file() {
            let doc: Value = serde_json::from_slice(&read(path)?)
                .map_err(|e| GrantsError::Key(format!("{arg}: not JSON: {e}")))?;
            match doc.get("keys").and_then(Value::as_array) {
                Some(keys) => values.extend(keys.iter().cloned()),
                None => values.push(doc),
            }
        } else {
            values.push(Value::String(arg.clone()));
        }
    }
    Ok(values)
}

fn verify_cmd(a: VerifyArgs) -> Result<ExitCode, GrantsError> {
    let keys = public_keys(&key_values(&a.pubkeys)?)?;
    let bytes = read(&a.document)?;
    match verify(&bytes, &keys) {
        Ok(d) => {
            println!(
                "{}: ok: {GRANTS_FORMAT} version {}, created {}, {} grants",
                a.document.display(),
                d.version,
                d.created_at,
                d.grants.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{}: rejected: {e}", a.document.display());
            Ok(ExitCode::from(1))
        }
    }
}

fn inspect_cmd(a: InspectArgs) -> Result<ExitCode, GrantsError> {
    let bytes = read(&a.document)?;
    let doc: GrantsDocument = serde_json::from_slice(&bytes)
        .map_err(|e| GrantsError::Malformed(format!("{}: {e}", a.document.display())))?;
    let out = json!({
        "file": a.document.display().to_string(),
        "bytes": bytes.len(),
        "format": doc.format,
        "version": doc.version,
        "created_at": doc.created_at,
        "grants": doc.grants,
        "signatures": doc.signatures.iter().map(|s| json!({"alg": s.get("alg"), "kid": s.get("kid")})).collect::<Vec<_>>(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| GrantsError::Malformed(e.to_string()))?
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey {
            secret: ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32])).sk,
            kid: Some("grants-1".into()),
        }
    }

    fn grant() -> Grant {
        Grant {
            id: "apr_0123".into(),
            agent: "agent-a".into(),
            action: "delete:db".into(),
            resource: None,
            expires_at: "2026-11-29T23:00:00Z".into(),
            reason: "incident 42".into(),
            approved_by: "alice".into(),
        }
    }

    #[test]
    fn documents_verify_and_tampering_is_caught() {
        let k = key(1);
        let bytes = build(7, 1_700_000_000, &[grant()], &k).unwrap();
        let pk = vec![k.secret.public_key()];
        let doc = verify(&bytes, &pk).unwrap();
        assert_eq!((doc.version, doc.grants.len()), (7, 1));
        assert_eq!(doc.grants[0], grant());
        assert_eq!(doc.created_at, "2023-11-14T22:13:20Z");

        let text = String::from_utf8(bytes.clone()).unwrap();
        let tampered = text.replace("agent-a", "agent-b");
        assert_eq!(
            verify(tampered.as_bytes(), &pk).unwrap_err(),
            GrantsError::BadSignature
        );
        assert_eq!(
            verify(&bytes, &[key(2).secret.public_key()]).unwrap_err(),
            GrantsError::BadSignature
        );
        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
        v.as_object_mut().unwrap().remove("signatures");
        assert_eq!(
            verify(&serde_json::to_vec(&v).unwrap(), &pk).unwrap_err(),
            GrantsError::Unsigned
        );
    }

    #[test]
    fn signed_bytes_are_the_prefix_and_canonical_json_without_signatures() {
        let k = key(1);
        let bytes = build(3, 0, &[grant()], &k).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let input = String::from_utf8(signing_input(&v).unwrap()).unwrap();
        assert_eq!(
            input,
            "meshguard-grants/v1\n{\"created_at\":\"1970-01-01T00:00:00Z\",\"format\":\"meshguard-grants/v1\",\
             \"grants\":[{\"action\":\"delete:db\",\"agent\":\"agent-a\",\"approved_by\":\"alice\",\
             \"expires_at\":\"2026-11-29T23:00:00Z\",\"id\":\"apr_0123\",\"reason\":\"incident 42\"}],\
             \"version\":3}"
        );
        // The bundle prefix must not verify: a bundle signature cannot pass as grants.
        let sig = v["signatures"][0]["sig"].as_str().unwrap();
        let raw = Base64UrlSafeNoPadding::decode_to_vec(sig, None).unwrap();
        let sig = ed25519_compact::Signature::from_slice(&raw).unwrap();
        let pk = k.secret.public_key();
        assert!(pk.verify(input.as_bytes(), &sig).is_ok());
        let as_bundle = input.replace("meshguard-grants/v1\n{", "meshguard-bundle/v1\n{");
        assert!(pk.verify(as_bundle.as_bytes(), &sig).is_err());
        assert_eq!(v["signatures"][0]["kid"], "grants-1");
    }

    #[test]
    fn keys_parse_from_base64_and_jwk() {
        let k = key(3);
        let b64 = k.public_base64();
        let x = Base64UrlSafeNoPadding::encode_to_string(k.secret.public_key().as_ref()).unwrap();
        let keys = public_keys(&[
            Value::String(b64),
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "d": "ignored"}),
        ])
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert!(public_keys(&[json!("AAAA")]).is_err());
        assert!(public_keys(&[json!({"kty": "EC"})]).is_err());
        assert!(public_keys(&[]).is_err());
    }
}
