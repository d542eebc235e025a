//! `audit:`: where audit events go and the buffer's limits (used by `crate::audit`).

use super::error::ConfigError;
use super::lenient::de_lenient;
use serde::{Deserialize, Serialize};

/// `audit:` in the plugin configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Envoy cluster of the OTLP/gRPC collector (HTTP/2). Without it, events go to the
    /// Envoy log at info level.
    #[serde(default)]
    pub cluster: Option<String>,
    /// How often the root context flushes, in milliseconds.
    #[serde(default = "default_flush", deserialize_with = "de_lenient")]
    pub flush_interval_ms: u64,
    /// Most events in one Export call.
    #[serde(default = "default_batch", deserialize_with = "de_lenient")]
    pub max_batch: usize,
    /// Most bytes of encoded events in one Export call.
    #[serde(default = "default_batch_bytes", deserialize_with = "de_lenient")]
    pub max_batch_bytes: usize,
    /// Most events waiting per worker before the oldest are dropped.
    #[serde(default = "default_buffer", deserialize_with = "de_lenient")]
    pub buffer_events: usize,
    /// Most bytes waiting per worker before the oldest are dropped.
    #[serde(default = "default_buffer_bytes", deserialize_with = "de_lenient")]
    pub buffer_bytes: usize,
    /// Export call timeout in milliseconds.
    #[serde(default = "default_timeout", deserialize_with = "de_lenient")]
    pub timeout_ms: u64,
    /// Most Export calls in flight per worker.
    #[serde(default = "default_in_flight", deserialize_with = "de_lenient")]
    pub max_in_flight: usize,
    /// Longest wait between retries after failed exports, in milliseconds (the wait
    /// doubles from `flush_interval_ms` up to this).
    #[serde(default = "default_backoff", deserialize_with = "de_lenient")]
    pub retry_max_backoff_ms: u64,
    /// Condition names whose values `meshguard.inputs` records as `{"$redacted":true}`:
    /// exact names (`request.headers.authorization`) or prefixes ending in `*`
    /// (`context.*`, `agent.claims.*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
    /// This workload's Ed25519 private key for signing audit checkpoints (README, "Audit
    /// integrity"): the base64 32-byte seed, i.e. the `d` of an Ed25519 JWK from
    /// `meshguard keygen --alg EdDSA`. The collector and its store never hold it; `meshguard
    /// audit verify --keys` checks the signatures with the public key. Without it, streams
    /// carry no checkpoints and verify reports them unauthenticated when given keys.
    #[serde(default, skip_serializing)]
    pub signing_key: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            cluster: None,
            flush_interval_ms: default_flush(),
            max_batch: default_batch(),
            max_batch_bytes: default_batch_bytes(),
            buffer_events: default_buffer(),
            buffer_bytes: default_buffer_bytes(),
            timeout_ms: default_timeout(),
            max_in_flight: default_in_flight(),
            retry_max_backoff_ms: default_backoff(),
            redact: Vec::new(),
            signing_key: None,
        }
    }
}

fn default_flush() -> u64 {
    200
}
fn default_batch() -> usize {
    500
}
fn default_batch_bytes() -> usize {
    1024 * 1024
}
fn default_buffer() -> usize {
    10_000
}
fn default_buffer_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_timeout() -> u64 {
    5_000
}
fn default_in_flight() -> usize {
    2
}
fn default_backoff() -> u64 {
    5_000
}

impl AuditConfig {
    /// Whether `audit.redact` covers this condition name.
    pub fn redacts(&self, name: &str) -> bool {
        self.redact.iter().any(|r| match r.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => r == name,
        })
    }

    /// Checks limits that would make the pipeline useless.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |v: u64, f: &str| {
            if v == 0 {
                Err(ConfigError::invalid(
                    format!("audit.{f}"),
                    "must be greater than 0",
                ))
            } else {
                Ok(())
            }
        };
        positive(self.flush_interval_ms, "flush_interval_ms")?;
        positive(self.max_batch as u64, "max_batch")?;
        positive(self.max_batch_bytes as u64, "max_batch_bytes")?;
        positive(self.buffer_events as u64, "buffer_events")?;
        positive(self.buffer_bytes as u64, "buffer_bytes")?;
        positive(self.timeout_ms, "timeout_ms")?;
        positive(self.max_in_flight as u64, "max_in_flight")?;
        positive(self.retry_max_backoff_ms, "retry_max_backoff_ms")?;
        if self.cluster.as_deref() == Some("") {
            return Err(ConfigError::invalid(
                "audit.cluster",
                "must not be empty (omit it to log events instead)",
            ));
        }
        Ok(())
    }
}
