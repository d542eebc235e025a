//! Fixed fixtures shared by the fuzz targets: keys from constant seeds (so every run and
//! every committed corpus entry means the same thing), the engine configuration the body
//! targets run against, and signing helpers that let a target put fuzzer bytes *behind* a
//! valid signature, where most of the parsing happens.

use ct_codecs::{Base64UrlSafeNoPadding, Encoder};
use ed25519_compact::{KeyPair, Seed};
use meshguard::engine::request::Request;
use meshguard::Engine;
use serde_json::{json, Value};

/// The fixed "now" of every target, in seconds (tokens are valid around it).
pub const NOW: u64 = 1_800_000_000;

/// [`NOW`] in nanoseconds, as the engine takes it.
pub const NOW_NANOS: u64 = NOW * 1_000_000_000;

/// The issuer of fuzz tokens.
pub const ISSUER: &str = "https://issuer.example";

/// The key id of the token key in the JWKS.
pub const KID: &str = "fuzz-ed";

/// The Ed25519 key that signs tokens.
pub fn token_key() -> KeyPair {
    KeyPair::from_seed(Seed::new([7; 32]))
}

/// The Ed25519 key that signs bundles and grants documents.
pub fn document_key() -> KeyPair {
    KeyPair::from_seed(Seed::new([9; 32]))
}

fn b64url(bytes: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap_or_default()
}

/// The JWKS holding the public half of [`token_key`].
pub fn jwks() -> Value {
    let pk = token_key().pk;
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": KID, "use": "sig",
                     "x": b64url(pk.as_ref())}]})
}

/// The public half of [`document_key`] as `public_keys` entries.
pub fn document_public_keys() -> Vec<Value> {
    vec![Value::String(b64url(document_key().pk.as_ref()))]
}

/// A compact JWS over `payload` with `header`, signed by [`token_key`]: whatever the
/// payload bytes are, the signature verifies, so the claims parser sees them.
pub fn sign_token(header: &[u8], payload: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64url(header), b64url(payload));
    let sig = token_key().sk.sign(signing_input.as_bytes(), None);
    format!("{signing_input}.{}", b64url(sig.as_ref()))
}

/// The header of a well-formed token.
pub const TOKEN_HEADER: &[u8] = br#"{"alg":"EdDSA","typ":"JWT","kid":"fuzz-ed"}"#;

/// A valid token for agent `agent-a`, tier verified, around [`NOW`].
pub fn valid_token() -> String {
    let claims = json!({"iss": ISSUER, "aud": "agents", "sub": "agent-a", "iat": NOW,
                        "exp": NOW + 600, "trust_tier": "verified", "team": "research"});
    sign_token(TOKEN_HEADER, claims.to_string().as_bytes())
}

/// The plugin configuration the request-path targets run: MCP and A2A endpoints, the
/// decision API, routes, conditions on body facts and claims, shadow policy, controls.
pub fn engine_config() -> Value {
    json!({
        "mode": "enforce",
        "identity": {"issuers": [{"issuer": ISSUER, "audiences": ["agents"], "jwks": jwks()}]},
        "actions": {
            "routes": [
                {"method": "GET", "path": "/v1/email/**", "action": "read:email", "resource": "email"},
                {"method": "POST", "path": "/v1/email/send", "action": "write:email"}
            ],
            "mcp": {"tools": {"send_email": "write:email", "pay": "tool:pay"}, "record_arguments": true},
            "a2a": {}
        },
        "decision_api": {},
        "policy_yaml": concat!(
            "name: fuzz\nrules:\n",
            "  - {action: 'tool:*', effect: allow}\n",
            "  - {action: 'tool:rm*', effect: deny, reason: no deletes}\n",
            "  - {name: pay, action: 'tool:pay', effect: allow, conditions: ['context.amount <= 100 AND context.currency == \"EUR\"']}\n",
            "  - {action: 'write:email', effect: require_approval}\n",
            "  - {action: 'read:**', effect: allow, conditions: ['agent.claims.team in [\"research\", \"ops\"]']}\n",
            "  - {action: 'a2a:*', effect: allow}\n",
            "  - {action: 'mcp:*', effect: allow}\n"
        ),
    })
}

/// The engine of [`engine_config`].
pub fn engine() -> Result<Engine, String> {
    Engine::from_text(engine_config().to_string().as_bytes()).map_err(|e| e.to_string())
}

/// A POST to `path` carrying [`valid_token`], as an MCP client sends it.
pub fn post(path: &str) -> Request {
    Request {
        method: "POST".into(),
        path: path.into(),
        authority: "tools.internal".into(),
        headers: vec![
            ("authorization".into(), format!("Bearer {}", valid_token())),
            ("content-type".into(), "application/json".into()),
            (
                "accept".into(),
                "application/json, text/event-stream".into(),
            ),
            ("mcp-session-id".into(), "s-1".into()),
            ("mcp-protocol-version".into(), "2025-06-18".into()),
        ],
        peer_uri_sans: Vec::new(),
    }
}

/// Splits `data` at its first NUL byte: two inputs in one corpus entry (a request body
/// and a response body, a condition and its context). No NUL: all of it is the first.
pub fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (
            data.get(..i).unwrap_or_default(),
            data.get(i + 1..).unwrap_or_default(),
        ),
        None => (data, &[]),
    }
}
