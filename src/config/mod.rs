//! The plugin configuration (README, "Configuration reference"): parsing from JSON or YAML, and the errors a user
//! sees when it is wrong.
//!
//! Istio hands the filter `WasmPlugin.spec.pluginConfig` as compact JSON whose numbers are
//! Go float64 values, so every integer field also accepts an integral float (`60.0`,
//! `1e+06`). Errors name the field path (`identity.issuers[0].audiences`) and, for YAML or
//! JSON syntax, the line and column.

mod actions;
mod audit;
mod controls;
mod de;
mod error;
mod identity;
mod lenient;
mod policy;
mod text;
mod tree;

pub use actions::{A2aConfig, ActionsConfig, DecisionApiConfig, McpConfig, RouteConfig};
pub use audit::AuditConfig;
pub use controls::{
    GrantConfig, GrantsConfig, LoopConfig, RateLimitConfig, RevocationEntry, RevokedConfig,
    WorkloadBindingConfig,
};
pub use error::ConfigError;
pub use identity::{ClaimNames, IdentityConfig, IssuerConfig};
pub use lenient::{de_lenient, de_lenient_opt};
pub use policy::{parse_policy_yaml, AppliesTo, Effect, Policy, Rule};
pub use text::{from_text, from_value};

use serde::{Deserialize, Serialize};

/// Whether denials are enforced or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Denials answer 401/403; allowed requests are forwarded.
    #[default]
    Enforce,
    /// Everything is forwarded; would-be denials are recorded as `would_deny`.
    Audit,
}

impl Mode {
    /// The name used in responses and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// The whole plugin configuration as the user writes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// `enforce` (default) or `audit`.
    #[serde(default)]
    pub mode: Mode,
    /// How agents are identified.
    pub identity: IdentityConfig,
    /// How requests map to actions.
    #[serde(default)]
    pub actions: ActionsConfig,
    /// Inline policies.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Policies as YAML text (one or more documents, each a policy or a list of policies);
    /// what a ConfigMap-driven setup pastes in.
    #[serde(default)]
    pub policy_yaml: Option<String>,
    /// Signed policy bundles polled from a cluster; they replace the inline policies.
    #[serde(default)]
    pub bundle: Option<BundleConfig>,
    /// The optional local status endpoint.
    #[serde(default)]
    pub status: Option<StatusConfig>,
    /// The optional Guardian-compatible decision API (`/enforce`, `/enforce/batch`,
    /// `/health`).
    #[serde(default)]
    pub decision_api: Option<DecisionApiConfig>,
    /// Where audit events go.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Revoked tokens and agents (bundles add theirs).
    #[serde(default)]
    pub revoked: RevokedConfig,
    /// Per-agent rate limits, counted across all worker VMs.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitConfig>,
    /// Loop detection; omitted disables it.
    #[serde(default, rename = "loop")]
    pub loop_detection: Option<LoopConfig>,
    /// Temporal grants: inline, and the signed grants document source.
    #[serde(default)]
    pub grants: GrantsConfig,
}

/// `bundle:`: where signed policy bundles come from.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    /// Envoy cluster serving bundles (Istio: `outbound|8080||host`).
    pub cluster: String,
    /// Request path of the bundle.
    pub path: String,
    /// `:authority` of the request; defaults to HOST of an Istio cluster name
    /// (`outbound|PORT||HOST`), else the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    /// Ed25519 public keys (base64 of 32 bytes, or OKP JWKs); any may sign.
    pub public_keys: Vec<serde_json::Value>,
    /// Seconds between polls (with ±10% jitter).
    #[serde(default = "default_interval", deserialize_with = "de_lenient")]
    pub interval_seconds: u64,
    /// Largest bundle accepted, in bytes.
    #[serde(default = "default_bundle_bytes", deserialize_with = "de_lenient")]
    pub max_bytes: usize,
    /// Fetch timeout in milliseconds.
    #[serde(default = "default_fetch_timeout", deserialize_with = "de_lenient")]
    pub timeout_ms: u64,
}

fn default_interval() -> u64 {
    60
}
fn default_bundle_bytes() -> usize {
    1024 * 1024
}
/// Timeout of bundle and JWKS fetches, in milliseconds.
pub fn default_fetch_timeout() -> u64 {
    5_000
}

/// `status:`: a local health endpoint with the Guardian `/health` fields.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// Request path answered by the filter, e.g. `/.meshguard/health`.
    pub path: String,
    /// Listener ports on which it is answered (Envoy does not tell wasm filters listener
    /// names; the port identifies the listener). Empty means every listener the filter runs on.
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// Parses the configuration text (JSON or YAML).
pub fn parse(text: &[u8]) -> Result<PluginConfig, ConfigError> {
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::invalid(
            ".",
            "the plugin configuration is empty; MeshGuard needs at least `identity`",
        ));
    }
    from_text(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct N {
        #[serde(deserialize_with = "de_lenient")]
        n: u32,
    }

    #[test]
    fn lenient_numbers_accept_go_floats() {
        let a: N = from_text(br#"{"n":60}"#).unwrap();
        let b: N = from_text(br#"{"n":60.0}"#).unwrap();
        let c: N = from_text(br#"{"n":1e+06}"#).unwrap();
        let d: N = from_text(b"n: 60").unwrap();
        assert_eq!((a.n, b.n, c.n, d.n), (60, 60, 1_000_000, 60));
        assert!(from_text::<N>(br#"{"n":1.5}"#).is_err());
        assert!(from_text::<N>(br#"{"n":-1}"#).is_err());
        assert!(from_text::<N>(br#"{"n":1e12}"#).is_err());
    }

    #[test]
    fn errors_name_field_and_line() {
        let e = parse(b"mode: enforce\nidentity:\n  issuers: 7\n").unwrap_err();
        assert_eq!(e.field(), "identity.issuers");
        let s = e.to_string();
        assert!(s.contains("line 3"), "{s}");
        let e = parse(br#"{"mode":"enforce","identity":{"issuers":[]},"bogus":1}"#).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = parse(br#"{"mode":"stealth","identity":{"issuers":[]}}"#).unwrap_err();
        assert_eq!(e.field(), "mode");
        let e = parse(b"{\"mode\": ").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(parse(b"  ").is_err());
    }
}
