//! Agent controls as written: `revoked`, `rate_limits`, `loop`, `grants` (compiled by
//! `crate::controls`; see the README section "Agent controls").

use super::lenient::de_lenient;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `revoked:`: tokens and agents refused even when their verification is cached.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedConfig {
    /// Revoked token ids (the `jti` claim), exact.
    #[serde(default)]
    pub jti: Vec<String>,
    /// Revoked agent ids, exact; a revoked agent anywhere in a delegation chain revokes
    /// the whole request.
    #[serde(default)]
    pub agents: Vec<String>,
}

/// One entry of a bundle's `revocations`: exactly one of `jti` or `agent`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationEntry {
    /// A revoked token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// A revoked agent id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Free text for operators (not used in decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was revoked, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// One entry of `rate_limits:`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Unique name, reported as the rule of a `rate_limited` decision and part of the
    /// counter key (renaming a limit starts its counters afresh).
    pub name: String,
    /// Agent-id glob the limit applies to; omitted means every agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<String>,
    /// Action glob the limit applies to.
    pub action: String,
    /// `N/s`, `N/m` or `N/h`: at most N requests per second, minute or hour per agent.
    pub limit: String,
}

/// `loop:`: repeated identical calls by one agent.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// Identical calls allowed within the window; the next one is denied.
    #[serde(deserialize_with = "de_lenient")]
    pub max_repeats: u32,
    /// Length of the sliding window in seconds.
    #[serde(deserialize_with = "de_lenient")]
    pub window_seconds: u64,
}

/// A temporal grant ("sudo for agents"): allows one agent an action until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// Unique id, reported in decisions and audit events (`meshguard.grant`).
    pub id: String,
    /// Agent-id glob the grant is for.
    pub agent: String,
    /// Action glob.
    pub action: String,
    /// Resource glob; omitted means any resource (or none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// RFC 3339 instant after which the grant no longer applies.
    pub expires_at: String,
    /// Why it was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// The approval this grant answers (`approvalId` of the require_approval decision),
    /// informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
}

/// `grants:`: inline grants and the signed grants document source.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// Grants written in the configuration.
    #[serde(default)]
    pub inline: Vec<GrantConfig>,
    /// Envoy cluster serving the signed grants document (`meshguard-grants/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Request path of the grants document on `cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `:authority` of the request; defaults as for `bundle.authority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Ed25519 public keys (base64 of 32 bytes, or OKP JWKs) that may sign the document.
    #[serde(default)]
    pub public_keys: Vec<Value>,
    /// Seconds between polls of the document.
    #[serde(default = "default_grants_interval", deserialize_with = "de_lenient")]
    pub interval_seconds: u64,
    /// Largest grants document accepted, in bytes.
    #[serde(default = "default_grants_bytes", deserialize_with = "de_lenient")]
    pub max_bytes: usize,
}

fn default_grants_interval() -> u64 {
    5
}
fn default_grants_bytes() -> usize {
    256 * 1024
}

/// `identity.workload_binding:`: tokens must be presented by the workload they belong to,
/// identified by the SPIFFE id (URI SAN) of the mTLS peer certificate.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadBindingConfig {
    /// Token claim holding the SPIFFE id (a string, or a list of strings) of the workload
    /// allowed to present the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// Agent id -> the SPIFFE id of the workload that runs it.
    #[serde(default)]
    pub agents: std::collections::BTreeMap<String, String>,
    /// When true, a token with no binding (no claim, agent not in `agents`) is refused,
    /// and so is every request over a connection without a peer certificate.
    #[serde(default)]
    pub required: bool,
}
