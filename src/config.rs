//! The plugin configuration (DESIGN §3): parsing from JSON or YAML, and the errors a user
//! sees when it is wrong.
//!
//! Istio hands the filter `WasmPlugin.spec.pluginConfig` as compact JSON whose numbers are
//! Go float64 values, so every integer field also accepts an integral float (`60.0`,
//! `1e+06`). Errors name the field path (`identity.issuers[0].audiences`) and, for YAML or
//! JSON syntax, the line and column.

use crate::actions::ActionsConfig;
use crate::audit::AuditConfig;
use crate::condition::ConditionError;
use crate::glob::GlobError;
use crate::identity::IdentityConfig;
use crate::policy::Policy;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use std::fmt;

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
    /// Where audit events go.
    #[serde(default)]
    pub audit: AuditConfig,
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

/// Everything that can be wrong with a configuration. Each variant names the field.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// The text is not JSON/YAML, or a field has the wrong type or name.
    Parse {
        /// Dotted path of the field (`.` for the document itself).
        field: String,
        /// 1-based line, when the parser knows it.
        line: Option<usize>,
        /// 1-based column, when the parser knows it.
        column: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A policy condition that does not parse.
    Condition {
        /// e.g. `policies[0].rules[1].conditions[0]`.
        field: String,
        /// Carries the condition text and the column.
        error: ConditionError,
    },
    /// A glob that does not compile.
    Glob {
        /// e.g. `policies[0].rules[2].action`.
        field: String,
        /// Carries the pattern.
        error: GlobError,
    },
    /// A well-formed value that is not acceptable (empty list, bad key, ...).
    Invalid {
        /// The field.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A feature that this build does not provide.
    Unsupported {
        /// The field.
        field: String,
        /// What to use instead.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefixes the field path, so nested parsers (policy_yaml) report full paths.
    pub(crate) fn within(self, prefix: &str) -> ConfigError {
        let join = |f: String| {
            if f == "." || f.is_empty() {
                prefix.to_string()
            } else if f.starts_with('[') {
                format!("{prefix}{f}")
            } else {
                format!("{prefix}.{f}")
            }
        };
        match self {
            ConfigError::Parse {
                field,
                line,
                column,
                message,
            } => ConfigError::Parse {
                field: join(field),
                line,
                column,
                message,
            },
            ConfigError::Condition { field, error } => ConfigError::Condition {
                field: join(field),
                error,
            },
            ConfigError::Glob { field, error } => ConfigError::Glob {
                field: join(field),
                error,
            },
            ConfigError::Invalid { field, message } => ConfigError::Invalid {
                field: join(field),
                message,
            },
            ConfigError::Unsupported { field, message } => ConfigError::Unsupported {
                field: join(field),
                message,
            },
        }
    }

    /// The field the error is about.
    pub fn field(&self) -> &str {
        match self {
            ConfigError::Parse { field, .. }
            | ConfigError::Condition { field, .. }
            | ConfigError::Glob { field, .. }
            | ConfigError::Invalid { field, .. }
            | ConfigError::Unsupported { field, .. } => field,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Parse {
                field,
                line,
                column,
                message,
            } => {
                write!(f, "{field}: {message}")?;
                match (line, column) {
                    (Some(l), Some(c)) => write!(f, " (line {l}, column {c})"),
                    (Some(l), None) => write!(f, " (line {l})"),
                    _ => Ok(()),
                }
            }
            ConfigError::Condition { field, error } => write!(f, "{field}: {error}"),
            ConfigError::Glob { field, error } => write!(f, "{field}: {error}"),
            ConfigError::Invalid { field, message } => write!(f, "{field}: {message}"),
            ConfigError::Unsupported { field, message } => {
                write!(f, "{field}: not supported: {message}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

fn path_string(path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    if s == "." {
        ".".into()
    } else {
        s
    }
}

/// Deserializes `T` from JSON or YAML text, reporting the field path on failure.
/// JSON is tried when the text starts with `{` or `[` (serde_json reports JSON errors
/// more precisely); everything else is YAML.
pub fn from_text<T: for<'de> Deserialize<'de>>(text: &[u8]) -> Result<T, ConfigError> {
    let trimmed = text.iter().position(|b| !b.is_ascii_whitespace());
    let is_json = trimmed
        .and_then(|i| text.get(i))
        .is_some_and(|b| *b == b'{' || *b == b'[');
    if is_json {
        let mut d = serde_json::Deserializer::from_slice(text);
        let value = serde_path_to_error::deserialize(&mut d).map_err(|e| {
            let field = path_string(e.path());
            let inner = e.into_inner();
            ConfigError::Parse {
                field,
                line: Some(inner.line()),
                column: Some(inner.column()),
                message: strip_location(&inner.to_string()),
            }
        })?;
        d.end().map_err(|e| ConfigError::Parse {
            field: ".".into(),
            line: Some(e.line()),
            column: Some(e.column()),
            message: strip_location(&e.to_string()),
        })?;
        Ok(value)
    } else {
        let d = serde_yaml::Deserializer::from_slice(text);
        yaml_document(d)
    }
}

pub(crate) fn yaml_document<T: for<'de> Deserialize<'de>>(
    d: serde_yaml::Deserializer<'_>,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(d).map_err(|e| {
        let field = path_string(e.path());
        let inner = e.into_inner();
        let loc = inner.location();
        let full = strip_location(&inner.to_string());
        // serde_yaml prefixes its message with the path we already report.
        let message = full
            .strip_prefix(&format!("{field}: "))
            .map_or_else(|| full.clone(), str::to_string);
        ConfigError::Parse {
            field,
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            message,
        }
    })
}

/// serde_json and serde_yaml append " at line X column Y"; we print the location ourselves.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg.get(..i).unwrap_or(msg).to_string(),
        None => msg.to_string(),
    }
}

/// Accepts an unsigned integer written as an integer or as an integral float (Istio renders
/// every number as a Go float64).
pub fn de_lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    struct V;
    impl de::Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative whole number")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9.007_199_254_740_992e15 {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(v as u64)
            } else {
                Err(E::custom(format!("{v} is not a non-negative whole number")))
            }
        }
    }
    let v = d.deserialize_any(V)?;
    T::try_from(v).map_err(|_| de::Error::custom(format!("{v} is too large")))
}

/// [`de_lenient`] for optional fields.
pub fn de_lenient_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    de_lenient(d).map(Some)
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
