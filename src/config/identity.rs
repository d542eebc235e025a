//! `identity:`: issuers, keys and claim names (compiled by `crate::identity`).

use super::lenient::{de_lenient, de_lenient_opt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `identity:` in the plugin configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Header carrying the token. For `authorization` the value must be `Bearer <jwt>`;
    /// for any other header a bare token is accepted too.
    #[serde(default = "default_token_header")]
    pub token_header: String,
    /// Trusted issuers and their keys.
    pub issuers: Vec<IssuerConfig>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_skew", deserialize_with = "de_lenient")]
    pub clock_skew_seconds: u64,
    /// Largest token accepted, in bytes.
    #[serde(default = "default_max_token", deserialize_with = "de_lenient")]
    pub max_token_bytes: usize,
    /// Which claims carry the agent id and the trust tier.
    #[serde(default)]
    pub claims: ClaimNames,
    /// Verified tokens remembered per worker (0 disables the cache).
    #[serde(default = "default_cache", deserialize_with = "de_lenient")]
    pub token_cache_entries: usize,
    /// Longest delegation chain (`act` nesting) accepted.
    #[serde(default = "default_depth", deserialize_with = "de_lenient")]
    pub max_delegation_depth: usize,
    /// Optional binding of tokens to the mTLS peer's SPIFFE id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_binding: Option<super::WorkloadBindingConfig>,
}

fn default_token_header() -> String {
    "authorization".into()
}
fn default_skew() -> u64 {
    60
}
fn default_max_token() -> usize {
    8 * 1024
}
fn default_cache() -> usize {
    1024
}
fn default_depth() -> usize {
    4
}

/// `identity.claims`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimNames {
    /// Claim holding the agent id (default `sub`).
    #[serde(default = "default_agent_claim")]
    pub agent_id: String,
    /// Claim holding the trust tier (default `trust_tier`); absent means `untrusted`.
    #[serde(default = "default_tier_claim")]
    pub trust_tier: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            agent_id: default_agent_claim(),
            trust_tier: default_tier_claim(),
        }
    }
}

fn default_agent_claim() -> String {
    "sub".into()
}
fn default_tier_claim() -> String {
    "trust_tier".into()
}

/// One trusted issuer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted audiences; the token's `aud` must contain one of them.
    pub audiences: Vec<String>,
    /// Inline JWKS, as a JSON string or an object.
    #[serde(default)]
    pub jwks: Option<Value>,
    /// Envoy cluster serving the issuer's JWKS (instead of, or besides, inline `jwks`).
    #[serde(default)]
    pub jwks_cluster: Option<String>,
    /// Path of the JWKS on `jwks_cluster`.
    #[serde(default)]
    pub jwks_path: Option<String>,
    /// `:authority` of the JWKS request; defaults to HOST of an Istio cluster name
    /// (`outbound|PORT||HOST`), else the cluster name.
    #[serde(default)]
    pub jwks_authority: Option<String>,
    /// Seconds between JWKS refreshes (default 300); an unknown `kid` also triggers one,
    /// at most every 30 s.
    #[serde(default, deserialize_with = "de_lenient_opt")]
    pub jwks_refresh_seconds: Option<u64>,
}
