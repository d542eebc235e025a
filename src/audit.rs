//! Audit events (DESIGN §6): one per decision, encoded as an OTLP `LogRecord` at request
//! time, buffered per worker VM and exported in batches by the root context.
//!
//! The buffer is bounded in events and bytes. When it is full the oldest unsent events are
//! dropped and counted; a failed export puts its batch back at the front, so an outage
//! delays events instead of losing them while there is room.

use crate::config::{de_lenient, ConfigError};
use crate::otlp::{self, AnyValue};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

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

impl AuditConfig {
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
        if self.cluster.as_deref() == Some("") {
            return Err(ConfigError::invalid(
                "audit.cluster",
                "must not be empty (omit it to log events instead)",
            ));
        }
        Ok(())
    }
}

/// One decision, as recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditEvent {
    /// When the decision was made, ns since the epoch.
    pub time_unix_nano: u64,
    /// W3C trace id (16 bytes) or empty.
    #[serde(skip)]
    pub trace_id: Vec<u8>,
    /// Parent span id from `traceparent` (8 bytes) or empty.
    #[serde(skip)]
    pub span_id: Vec<u8>,
    /// `allow`, `deny`, `require_approval`, or `would_deny` in audit mode.
    pub decision: String,
    /// The policy effect before the mode was applied.
    pub effect: String,
    /// Whether the decision was enforced (false in audit mode).
    pub enforced: bool,
    /// Calling agent (empty when identity failed).
    pub agent_id: String,
    /// Effective trust tier (empty when identity failed).
    pub trust_tier: String,
    /// Agents from the original delegator to the caller.
    pub delegation_chain: Vec<String>,
    /// The action decided on.
    pub action: String,
    /// The resource, or empty.
    pub resource: String,
    /// Deciding policy, or empty.
    pub policy: String,
    /// Deciding rule, or empty.
    pub rule: String,
    /// Why.
    pub reason: String,
    /// `enforce` or `audit`.
    pub mode: String,
    /// Version of the policy in force.
    pub bundle_version: String,
    /// HTTP method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// Time spent deciding, in microseconds.
    pub latency_us: u64,
    /// Identity failure code, or empty.
    pub identity_error: String,
    /// HTTP status MeshGuard answered with (0 when forwarded).
    pub status: u16,
    /// `x-request-id`, or empty.
    pub request_id: String,
}

impl AuditEvent {
    /// Encodes the event as an OTLP `LogRecord`.
    pub fn encode(&self) -> Vec<u8> {
        let deny = self.decision != "allow";
        let body = format!(
            "{} {} {} by {}",
            self.decision,
            if self.action.is_empty() {
                "-"
            } else {
                &self.action
            },
            if self.resource.is_empty() {
                ""
            } else {
                &self.resource
            },
            if self.agent_id.is_empty() {
                "unidentified agent"
            } else {
                &self.agent_id
            },
        );
        let attributes = [
            ("meshguard.decision", AnyValue::Str(&self.decision)),
            ("meshguard.effect", AnyValue::Str(&self.effect)),
            ("meshguard.enforced", AnyValue::Bool(self.enforced)),
            ("meshguard.agent.id", AnyValue::Str(&self.agent_id)),
            ("meshguard.trust_tier", AnyValue::Str(&self.trust_tier)),
            (
                "meshguard.delegation.chain",
                AnyValue::StrArray(&self.delegation_chain),
            ),
            (
                "meshguard.delegation.depth",
                AnyValue::Int(self.delegation_chain.len().saturating_sub(1) as i64),
            ),
            ("meshguard.action", AnyValue::Str(&self.action)),
            ("meshguard.resource", AnyValue::Str(&self.resource)),
            ("meshguard.policy", AnyValue::Str(&self.policy)),
            ("meshguard.rule", AnyValue::Str(&self.rule)),
            ("meshguard.reason", AnyValue::Str(&self.reason)),
            ("meshguard.mode", AnyValue::Str(&self.mode)),
            (
                "meshguard.bundle.version",
                AnyValue::Str(&self.bundle_version),
            ),
            (
                "meshguard.identity.error",
                AnyValue::Str(&self.identity_error),
            ),
            ("http.request.method", AnyValue::Str(&self.method)),
            ("url.path", AnyValue::Str(&self.path)),
            ("server.address", AnyValue::Str(&self.authority)),
            (
                "http.response.status_code",
                AnyValue::Int(i64::from(self.status)),
            ),
            ("meshguard.request_id", AnyValue::Str(&self.request_id)),
            (
                "meshguard.latency_us",
                AnyValue::Int(i64::try_from(self.latency_us).unwrap_or(i64::MAX)),
            ),
        ];
        otlp::encode_log_record(&otlp::LogRecord {
            time_unix_nano: self.time_unix_nano,
            severity_number: if deny { 13 } else { 9 },
            severity_text: if deny { "WARN" } else { "INFO" },
            body: body.trim_end(),
            event_name: "meshguard.decision",
            trace_id: &self.trace_id,
            span_id: &self.span_id,
            attributes: &attributes,
        })
    }

    /// The trace id as 32 lowercase hex digits, or empty.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| match p {
            [h, l] => Some(digit(*h)? << 4 | digit(*l)?),
            _ => None,
        })
        .collect()
}

/// Trace and span ids for a request: from a valid W3C `traceparent`, else from an
/// `x-request-id` that is a UUID or 32 hex digits (what Envoy generates).
pub fn trace_ids(traceparent: Option<&str>, request_id: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    if let Some(tp) = traceparent {
        let mut parts = tp.trim().split('-');
        if let (Some(ver), Some(t), Some(s), Some(_flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            if ver.len() == 2 && ver != "ff" && t.len() == 32 && s.len() == 16 {
                if let (Some(t), Some(s)) = (unhex(t), unhex(s)) {
                    if t.iter().any(|b| *b != 0) && s.iter().any(|b| *b != 0) {
                        return (t, s);
                    }
                }
            }
        }
    }
    if let Some(id) = request_id {
        let compact: String = id.trim().chars().filter(|c| *c != '-').collect();
        if compact.len() == 32 {
            if let Some(t) = unhex(&compact) {
                return (t, Vec::new());
            }
        }
    }
    (Vec::new(), Vec::new())
}

/// Counters of the audit pipeline, per worker VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AuditCounters {
    /// Events produced by decisions.
    pub emitted: u64,
    /// Events handed to an Export call (retries count again).
    pub sent: u64,
    /// Events whose Export succeeded.
    pub acknowledged: u64,
    /// Events dropped because the buffer was full.
    pub dropped: u64,
    /// Export calls that succeeded.
    pub exports_ok: u64,
    /// Export calls that failed (status, timeout or dispatch failure).
    pub exports_failed: u64,
}

/// Pending audit events of one worker VM, plus the batch in flight.
#[derive(Debug)]
pub struct AuditBuffer {
    queue: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    in_flight: Vec<Vec<u8>>,
    max_events: usize,
    max_bytes: usize,
    max_batch: usize,
    max_batch_bytes: usize,
    /// What happened so far.
    pub counters: AuditCounters,
}

impl AuditBuffer {
    /// A buffer with the configured limits.
    pub fn new(cfg: &AuditConfig) -> AuditBuffer {
        AuditBuffer {
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: Vec::new(),
            max_events: cfg.buffer_events,
            max_bytes: cfg.buffer_bytes,
            max_batch: cfg.max_batch,
            max_batch_bytes: cfg.max_batch_bytes,
            counters: AuditCounters::default(),
        }
    }

    /// Adopts new limits (on reconfiguration) without losing what is queued.
    pub fn set_limits(&mut self, cfg: &AuditConfig) {
        self.max_events = cfg.buffer_events;
        self.max_bytes = cfg.buffer_bytes;
        self.max_batch = cfg.max_batch;
        self.max_batch_bytes = cfg.max_batch_bytes;
        self.enforce_limits();
    }

    /// Events waiting (not counting the batch in flight).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether a batch is in flight.
    pub fn in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Whether a full batch is waiting (flush early instead of waiting for the tick).
    pub fn batch_ready(&self) -> bool {
        self.queue.len() >= self.max_batch
    }

    /// Queues an encoded `LogRecord`.
    pub fn push(&mut self, record: Vec<u8>) {
        self.counters.emitted += 1;
        self.queued_bytes += record.len();
        self.queue.push_back(record);
        self.enforce_limits();
    }

    fn enforce_limits(&mut self) {
        while self.queue.len() > self.max_events || self.queued_bytes > self.max_bytes {
            match self.queue.pop_front() {
                Some(old) => {
                    self.queued_bytes -= old.len();
                    self.counters.dropped += 1;
                }
                None => break,
            }
        }
    }

    /// Moves the next batch into flight and returns the records to export, unless a batch
    /// is already in flight or nothing waits.
    pub fn take_batch(&mut self) -> Option<&[Vec<u8>]> {
        if !self.in_flight.is_empty() || self.queue.is_empty() {
            return None;
        }
        let mut bytes = 0;
        while let Some(front) = self.queue.front() {
            let fits = self.in_flight.is_empty()
                || (self.in_flight.len() < self.max_batch
                    && bytes + front.len() <= self.max_batch_bytes);
            if !fits {
                break;
            }
            let Some(r) = self.queue.pop_front() else {
                break;
            };
            bytes += r.len();
            self.queued_bytes -= r.len();
            self.in_flight.push(r);
        }
        self.counters.sent += self.in_flight.len() as u64;
        Some(&self.in_flight)
    }

    /// Records the outcome of the batch in flight. A failed batch goes back to the front.
    pub fn finish_batch(&mut self, ok: bool) {
        let batch = std::mem::take(&mut self.in_flight);
        if ok {
            self.counters.exports_ok += 1;
            self.counters.acknowledged += batch.len() as u64;
        } else {
            self.counters.exports_failed += 1;
            for r in batch.into_iter().rev() {
                self.queued_bytes += r.len();
                self.queue.push_front(r);
            }
            self.enforce_limits();
        }
    }
}

/// Builds the Export request for a batch.
pub fn export_request(records: &[Vec<u8>], resource: &[(&str, AnyValue<'_>)]) -> Vec<u8> {
    otlp::export_request(
        resource,
        "meshguard",
        env!("CARGO_PKG_VERSION"),
        records.iter().map(Vec::as_slice),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(events: usize, batch: usize) -> AuditConfig {
        AuditConfig {
            buffer_events: events,
            max_batch: batch,
            ..AuditConfig::default()
        }
    }

    #[test]
    fn batches_respect_limits_and_failures_requeue() {
        let mut b = AuditBuffer::new(&cfg(100, 3));
        for i in 0..5u8 {
            b.push(vec![i]);
        }
        assert!(b.batch_ready());
        assert_eq!(b.take_batch().unwrap(), &[vec![0], vec![1], vec![2]]);
        assert!(b.take_batch().is_none(), "one batch in flight at a time");
        b.finish_batch(false);
        assert_eq!(b.queued(), 5);
        assert_eq!(b.take_batch().unwrap().first(), Some(&vec![0]));
        b.finish_batch(true);
        assert_eq!(b.counters.acknowledged, 3);
        assert_eq!(b.counters.exports_failed, 1);
        assert_eq!(b.queued(), 2);
    }

    #[test]
    fn overflow_drops_oldest_and_counts() {
        let mut b = AuditBuffer::new(&cfg(3, 10));
        for i in 0..5u8 {
            b.push(vec![i]);
        }
        assert_eq!(b.counters.dropped, 2);
        assert_eq!(b.take_batch().unwrap(), &[vec![2], vec![3], vec![4]]);
        // a failed batch that no longer fits loses its oldest, counted
        b.push(vec![5]);
        b.push(vec![6]);
        b.finish_batch(false);
        assert_eq!(b.queued(), 3);
        assert_eq!(b.counters.dropped, 4);
        assert_eq!(b.counters.emitted, b.counters.dropped + b.queued() as u64);
    }

    #[test]
    fn trace_ids_from_traceparent_or_request_id() {
        let (t, s) = trace_ids(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("x"),
        );
        assert_eq!(hex(&t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&s), "00f067aa0ba902b7");
        let (t, s) = trace_ids(
            Some("garbage"),
            Some("6f1c2a9e-3b4d-4c5e-8f70-112233445566"),
        );
        assert_eq!(hex(&t), "6f1c2a9e3b4d4c5e8f70112233445566");
        assert!(s.is_empty());
        let (t, _) = trace_ids(
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None,
        );
        assert!(t.is_empty());
        let (t, _) = trace_ids(Some("00-zz-é-01"), Some("ünïcode"));
        assert!(t.is_empty());
    }
}
