//! Audit events (README, "Audit events"): one per decision, encoded as an OTLP `LogRecord` at request
//! time, buffered per worker VM and exported in batches by the root context.
//!
//! The buffer is bounded in events and bytes. When it is full the oldest unsent events are
//! dropped and counted; a failed export puts its batch back at the front, so an outage
//! delays events instead of losing them while there is room.

pub mod otlp;

use crate::config::AuditConfig;
use crate::hex::{hex, unhex};
use otlp::AnyValue;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};

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
    /// The temporal grant that allowed the request, or empty.
    pub grant: String,
    /// The approval id of a `require_approval` decision, or empty.
    pub approval_id: String,
    /// MCP / A2A JSON-RPC details; empty for plain HTTP requests.
    #[serde(rename = "jsonrpc")]
    pub rpc: RpcDetails,
    /// The shadow policy (`mode: audit`) whose denial was recorded but not enforced.
    pub shadow_policy: String,
}

/// The JSON-RPC part of an audit event (OpenTelemetry MCP semantic-convention names in
/// the OTLP attributes); empty fields are not exported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RpcDetails {
    /// `mcp.method.name`.
    pub mcp_method: String,
    /// `gen_ai.tool.name` (`tools/call`) or the prompt name.
    pub tool_name: String,
    /// `mcp.session.id`, from `Mcp-Session-Id`.
    pub session_id: String,
    /// `mcp.protocol.version`, from `MCP-Protocol-Version`.
    pub protocol_version: String,
    /// `mcp.resource.uri`.
    pub resource_uri: String,
    /// `jsonrpc.request.id` (a string id's value, a number's digits).
    pub request_id: String,
    /// `meshguard.mcp.argument_keys`: the argument names, always recorded.
    pub argument_keys: Vec<String>,
    /// `meshguard.mcp.arguments`: the arguments as JSON, only with
    /// `actions.mcp.record_arguments`.
    pub arguments: String,
    /// `meshguard.a2a.method`: the A2A method as received.
    pub a2a_method: String,
}

impl AuditEvent {
    /// The event's OTLP attributes (README, "Audit events"), without the chain fields.
    pub fn attributes(&self) -> Vec<(&'static str, AnyValue<'_>)> {
        let depth = self.delegation_chain.len().saturating_sub(1);
        let mut attributes = vec![
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
                AnyValue::Int(i64::try_from(depth).unwrap_or(i64::MAX)),
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
        // Only decisions that involve them carry these, to keep every other event small.
        let r = &self.rpc;
        for (k, v) in [
            ("mcp.method.name", &r.mcp_method),
            ("gen_ai.tool.name", &r.tool_name),
            ("mcp.session.id", &r.session_id),
            ("mcp.protocol.version", &r.protocol_version),
            ("mcp.resource.uri", &r.resource_uri),
            ("jsonrpc.request.id", &r.request_id),
            ("meshguard.mcp.arguments", &r.arguments),
            ("meshguard.a2a.method", &r.a2a_method),
            ("meshguard.shadow.policy", &self.shadow_policy),
            ("meshguard.approval_id", &self.approval_id),
            ("meshguard.grant", &self.grant),
        ] {
            if !v.is_empty() {
                attributes.push((k, AnyValue::Str(v)));
            }
        }
        if !r.mcp_method.is_empty() {
            attributes.push((
                "meshguard.mcp.argument_keys",
                AnyValue::StrArray(&r.argument_keys),
            ));
        }
        attributes
    }

    fn body(&self) -> String {
        let mut body = format!(
            "{} {}",
            self.decision,
            if self.action.is_empty() {
                "-"
            } else {
                &self.action
            }
        );
        if !self.resource.is_empty() {
            body.push(' ');
            body.push_str(&self.resource);
        }
        body.push_str(" by ");
        body.push_str(if self.agent_id.is_empty() {
            "unidentified agent"
        } else {
            &self.agent_id
        });
        body
    }

    /// The trace id as 32 lowercase hex digits, or empty.
    pub fn trace_id_hex(&self) -> String {
        // The OTLP record carries only a 16-byte trace id (`otlp::encode_log_record`), and
        // the chain hashes what the record carries: any other length hashes as none, or the
        // collector could never re-hash the event (found by the `otlp` fuzz target).
        if self.trace_id.len() == 16 {
            hex(&self.trace_id)
        } else {
            String::new()
        }
    }
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

/// One worker VM's audit stream: sequence numbers and the hash chain.
#[derive(Debug, Clone)]
pub struct Chain {
    stream: String,
    seq: u64,
    last_hash: String,
}

/// An event sealed into the chain: its encoded `LogRecord` and its place in the stream.
#[derive(Debug, Clone)]
struct Sealed {
    seq: u64,
    hash: String,
    bytes: Vec<u8>,
}

impl Chain {
    /// A new stream. The id must be unique per VM lifetime (it keys deduplication and
    /// chain verification at the collector).
    pub fn new(stream: impl Into<String>) -> Chain {
        Chain {
            stream: stream.into(),
            seq: 0,
            last_hash: CHAIN_GENESIS.to_string(),
        }
    }

    /// The stream id.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The last sequence number handed out.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn seal(&mut self, event: &AuditEvent) -> Sealed {
        self.seq += 1;
        let seq = i64::try_from(self.seq).unwrap_or(i64::MAX);
        let mut attributes = event.attributes();
        attributes.push(("meshguard.stream", AnyValue::Str(&self.stream)));
        attributes.push(("meshguard.seq", AnyValue::Int(seq)));
        attributes.push(("meshguard.prev_hash", AnyValue::Str(&self.last_hash)));
        // The canonical text of `chain_input`, written straight from the values: building
        // JSON trees per event was most of the filter's per-request cost.
        attributes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut text = Vec::with_capacity(1024);
        text.extend_from_slice(b"meshguard-audit-v1\n");
        text.extend_from_slice(self.last_hash.as_bytes());
        text.push(b'\n');
        text.extend_from_slice(event.time_unix_nano.to_string().as_bytes());
        text.push(b'\n');
        text.extend_from_slice(event.trace_id_hex().as_bytes());
        text.push(b'\n');
        for (k, v) in &attributes {
            text.extend_from_slice(k.as_bytes());
            text.push(b'=');
            v.write_json(&mut text);
            text.push(b'\n');
        }
        let hash = chain_hash(&text);
        attributes.push(("meshguard.hash", AnyValue::Str(&hash)));
        let deny = event.decision != "allow";
        let bytes = otlp::encode_log_record(&otlp::LogRecord {
            time_unix_nano: event.time_unix_nano,
            severity_number: if deny { 13 } else { 9 },
            severity_text: if deny { "WARN" } else { "INFO" },
            body: &event.body(),
            event_name: "meshguard.decision",
            trace_id: &event.trace_id,
            span_id: &event.span_id,
            attributes: &attributes,
        });
        let sealed = Sealed {
            seq: self.seq,
            hash: hash.clone(),
            bytes,
        };
        self.last_hash = hash;
        sealed
    }
}

/// A range of dropped events, announced to the collector so that a gap in the chain is
/// a declared loss rather than evidence of tampering.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Gap {
    from_seq: u64,
    to_seq: u64,
    count: u64,
    last_hash: String,
}

impl Gap {
    fn encode(&self, stream: &str, now_unix_nano: u64) -> Vec<u8> {
        let as_int = |v: u64| AnyValue::Int(i64::try_from(v).unwrap_or(i64::MAX));
        let attributes = [
            ("meshguard.stream", AnyValue::Str(stream)),
            ("meshguard.gap.from_seq", as_int(self.from_seq)),
            ("meshguard.gap.to_seq", as_int(self.to_seq)),
            ("meshguard.gap.count", as_int(self.count)),
            ("meshguard.gap.last_hash", AnyValue::Str(&self.last_hash)),
        ];
        let body = format!(
            "{} audit events dropped (seq {}..{}): the buffer was full",
            self.count, self.from_seq, self.to_seq
        );
        otlp::encode_log_record(&otlp::LogRecord {
            time_unix_nano: now_unix_nano,
            severity_number: 17,
            severity_text: "ERROR",
            body: &body,
            event_name: "meshguard.audit.gap",
            trace_id: &[],
            span_id: &[],
            attributes: &attributes,
        })
    }
}

/// Counters of the audit pipeline, per worker VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AuditCounters {
    /// Events produced by decisions.
    pub emitted: u64,
    /// Events handed to an Export call (a retried event counts again).
    pub sent: u64,
    /// Events whose Export succeeded.
    pub acknowledged: u64,
    /// Events sent again after a failed Export.
    pub retried: u64,
    /// Events dropped because the buffer was full.
    pub dropped: u64,
    /// Export calls that succeeded.
    pub exports_ok: u64,
    /// Export calls that failed (status, timeout or dispatch failure).
    pub exports_failed: u64,
}

#[derive(Debug)]
struct InFlight {
    records: Vec<Sealed>,
    gaps: Vec<Gap>,
}

/// Pending audit events of one worker VM and the batches in flight.
///
/// Events are sealed into the hash chain when pushed. A batch leaves the queue when sent
/// and comes back to the front if its Export fails, so order is kept and nothing is lost
/// while there is room. When the buffer overflows, the oldest unsent events are dropped,
/// counted, and announced to the collector as a gap.
#[derive(Debug)]
pub struct AuditBuffer {
    chain: Chain,
    queue: VecDeque<Sealed>,
    queued_bytes: usize,
    gaps: Vec<Gap>,
    in_flight: HashMap<u64, InFlight>,
    next_batch: u64,
    failures: u32,
    not_before_ms: u64,
    cfg: AuditConfig,
    /// What happened so far.
    pub counters: AuditCounters,
}

impl AuditBuffer {
    /// A buffer for one stream with the configured limits.
    pub fn new(cfg: &AuditConfig, chain: Chain) -> AuditBuffer {
        AuditBuffer {
            chain,
            queue: VecDeque::new(),
            queued_bytes: 0,
            gaps: Vec::new(),
            in_flight: HashMap::new(),
            next_batch: 1,
            failures: 0,
            not_before_ms: 0,
            cfg: cfg.clone(),
            counters: AuditCounters::default(),
        }
    }

    /// Adopts new limits (on reconfiguration) without losing what is queued.
    pub fn set_limits(&mut self, cfg: &AuditConfig) {
        self.cfg = cfg.clone();
        self.enforce_limits();
    }

    /// The stream this buffer seals into.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Events waiting, not counting those in flight.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Export calls in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether a full batch is waiting (send now rather than at the next tick).
    pub fn batch_ready(&self) -> bool {
        self.queue.len() >= self.cfg.max_batch
    }

    /// Seals an event into the chain and queues it.
    pub fn push(&mut self, event: &AuditEvent) {
        let sealed = self.chain.seal(event);
        self.counters.emitted += 1;
        self.queued_bytes += sealed.bytes.len();
        self.queue.push_back(sealed);
        self.enforce_limits();
    }

    fn enforce_limits(&mut self) {
        while self.queue.len() > self.cfg.buffer_events || self.queued_bytes > self.cfg.buffer_bytes
        {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= old.bytes.len();
            self.counters.dropped += 1;
            match self.gaps.last_mut() {
                Some(g) if g.to_seq + 1 == old.seq => {
                    g.to_seq = old.seq;
                    g.count += 1;
                    g.last_hash = old.hash;
                }
                _ => self.gaps.push(Gap {
                    from_seq: old.seq,
                    to_seq: old.seq,
                    count: 1,
                    last_hash: old.hash,
                }),
            }
        }
    }

    /// Whether an export may start now: something waits, a call slot is free and no
    /// backoff is running.
    pub fn can_send(&self, now_ms: u64) -> bool {
        (!self.queue.is_empty() || !self.gaps.is_empty())
            && self.in_flight.len() < self.cfg.max_in_flight
            && now_ms >= self.not_before_ms
    }

    /// Takes the next batch and returns its id and the encoded ExportLogsServiceRequest,
    /// or `None` when [`AuditBuffer::can_send`] is false.
    pub fn take_batch(
        &mut self,
        now_ms: u64,
        now_unix_nano: u64,
        resource: &[(&str, AnyValue<'_>)],
    ) -> Option<(u64, Vec<u8>)> {
        if !self.can_send(now_ms) {
            return None;
        }
        let mut records: Vec<Sealed> = Vec::new();
        let mut bytes = 0;
        while let Some(front) = self.queue.front() {
            let fits = records.is_empty()
                || (records.len() < self.cfg.max_batch
                    && bytes + front.bytes.len() <= self.cfg.max_batch_bytes);
            if !fits {
                break;
            }
            let Some(r) = self.queue.pop_front() else {
                break;
            };
            bytes += r.bytes.len();
            self.queued_bytes -= r.bytes.len();
            records.push(r);
        }
        let gaps = std::mem::take(&mut self.gaps);
        let gap_records: Vec<Vec<u8>> = gaps
            .iter()
            .map(|g| g.encode(self.chain.stream(), now_unix_nano))
            .collect();
        let message = otlp::export_request(
            resource,
            "meshguard",
            env!("CARGO_PKG_VERSION"),
            records
                .iter()
                .map(|r| r.bytes.as_slice())
                .chain(gap_records.iter().map(Vec::as_slice)),
        );
        self.counters.sent += records.len() as u64;
        let id = self.next_batch;
        self.next_batch += 1;
        self.in_flight.insert(id, InFlight { records, gaps });
        Some((id, message))
    }

    /// Records the outcome of a batch. A failed batch goes back to the front of the queue
    /// and the next attempt waits: the wait doubles from `flush_interval_ms` up to
    /// `retry_max_backoff_ms`.
    pub fn finish_batch(&mut self, id: u64, ok: bool, now_ms: u64) {
        let Some(batch) = self.in_flight.remove(&id) else {
            return;
        };
        if ok {
            self.counters.exports_ok += 1;
            self.counters.acknowledged += batch.records.len() as u64;
            self.failures = 0;
            self.not_before_ms = 0;
            return;
        }
        self.counters.exports_failed += 1;
        self.counters.retried += batch.records.len() as u64;
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(16);
        let wait = self
            .cfg
            .flush_interval_ms
            .saturating_mul(1u64 << exp)
            .min(self.cfg.retry_max_backoff_ms);
        self.not_before_ms = now_ms.saturating_add(wait);
        // Put the batch back in sequence order, merging with anything already requeued.
        for r in batch.records.into_iter().rev() {
            self.queued_bytes += r.bytes.len();
            self.queue.push_front(r);
        }
        if self
            .queue
            .iter()
            .zip(self.queue.iter().skip(1))
            .any(|(a, b)| a.seq > b.seq)
        {
            self.queue.make_contiguous().sort_by_key(|r| r.seq);
        }
        let mut gaps = batch.gaps;
        gaps.append(&mut self.gaps);
        self.gaps = gaps;
        self.enforce_limits();
    }
}

/// The `meshguard.prev_hash` of the first event of a stream.
pub const CHAIN_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The canonical text hashed for one event (format `meshguard-audit-v1`), so that anyone
/// can recompute the chain from the OTLP record alone:
///
/// ```text
/// meshguard-audit-v1\n
/// <meshguard.prev_hash>\n
/// <time_unix_nano as decimal>\n
/// <trace_id as lowercase hex, or empty>\n
/// <key>=<compact JSON of the value>\n      one line per attribute except meshguard.hash,
///                                          sorted by key (byte order)
/// ```
///
/// Attribute values map to JSON as: string → JSON string (non-ASCII unescaped), bool →
/// `true`/`false`, int → integer, array → array.
pub fn chain_input(
    prev_hash: &str,
    time_unix_nano: u64,
    trace_id_hex: &str,
    attributes: &[(&str, serde_json::Value)],
) -> Vec<u8> {
    let mut sorted: Vec<&(&str, serde_json::Value)> = attributes
        .iter()
        .filter(|(k, _)| *k != "meshguard.hash")
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = format!("meshguard-audit-v1\n{prev_hash}\n{time_unix_nano}\n{trace_id_hex}\n");
    for (k, v) in sorted {
        out.push_str(k);
        out.push('=');
        out.push_str(&serde_json::to_string(v).unwrap_or_default());
        out.push('\n');
    }
    out.into_bytes()
}

/// SHA-256, lowercase hex (of [`chain_input`] for the audit chain).
pub fn chain_hash(input: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(events: usize, batch: usize, in_flight: usize) -> AuditConfig {
        AuditConfig {
            buffer_events: events,
            max_batch: batch,
            max_in_flight: in_flight,
            flush_interval_ms: 100,
            retry_max_backoff_ms: 1_000,
            ..AuditConfig::default()
        }
    }

    fn event(i: u64) -> AuditEvent {
        AuditEvent {
            time_unix_nano: 1_000 + i,
            decision: "allow".into(),
            agent_id: format!("agent-{i}"),
            delegation_chain: vec![format!("agent-{i}")],
            ..AuditEvent::default()
        }
    }

    fn fill(b: &mut AuditBuffer, n: u64) {
        for i in 0..n {
            b.push(&event(i));
        }
    }

    fn seqs(b: &AuditBuffer) -> Vec<u64> {
        b.queue.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn chain_links_each_event_to_the_previous_one() {
        let mut c = Chain::new("s1");
        let e1 = event(1);
        let s1 = c.seal(&e1);
        let s2 = c.seal(&event(2));
        assert_eq!((s1.seq, s2.seq), (1, 2));
        // recompute the first hash independently of `seal`
        let mut attrs: Vec<(&str, serde_json::Value)> = e1
            .attributes()
            .iter()
            .map(|(k, v)| (*k, v.to_json()))
            .collect();
        attrs.push(("meshguard.stream", "s1".into()));
        attrs.push(("meshguard.seq", 1.into()));
        attrs.push(("meshguard.prev_hash", CHAIN_GENESIS.into()));
        assert_eq!(
            s1.hash,
            chain_hash(&chain_input(CHAIN_GENESIS, 1_001, "", &attrs))
        );
        assert_ne!(s1.hash, s2.hash);
        assert_eq!(c.last_hash, s2.hash);
        let text = String::from_utf8(chain_input(CHAIN_GENESIS, 1_001, "", &attrs)).unwrap();
        assert!(text.starts_with("meshguard-audit-v1\n0000"));
        assert!(text.contains("\nmeshguard.agent.id=\"agent-1\"\n"));
    }

    #[test]
    fn batches_respect_limits_and_failed_batches_come_back_in_order() {
        let mut b = AuditBuffer::new(&cfg(100, 3, 2), Chain::new("s"));
        fill(&mut b, 7);
        assert!(b.batch_ready());
        let (first, _) = b.take_batch(0, 0, &[]).unwrap();
        let (second, _) = b.take_batch(0, 0, &[]).unwrap();
        assert!(b.take_batch(0, 0, &[]).is_none(), "max_in_flight = 2");
        assert_eq!(seqs(&b), [7]);
        b.finish_batch(second, false, 0);
        b.finish_batch(first, false, 0);
        assert_eq!(
            seqs(&b),
            [1, 2, 3, 4, 5, 6, 7],
            "requeued in sequence order"
        );
        assert_eq!(b.counters.retried, 6);
        // backoff: 100 ms after the first failure, doubling
        assert!(
            !b.can_send(100),
            "second failure doubles the wait to 200 ms"
        );
        assert!(b.can_send(200));
        let (id, _) = b.take_batch(200, 0, &[]).unwrap();
        b.finish_batch(id, true, 300);
        assert!(b.can_send(300), "success resets the backoff");
        assert_eq!(b.counters.acknowledged, 3);
        assert_eq!(b.counters.exports_failed, 2);
        assert_eq!(b.counters.sent, 9);
    }

    #[test]
    fn backoff_is_capped() {
        let mut b = AuditBuffer::new(&cfg(100, 10, 1), Chain::new("s"));
        fill(&mut b, 1);
        let mut now = 0;
        for _ in 0..20 {
            let (id, _) = b.take_batch(now, 0, &[]).unwrap();
            b.finish_batch(id, false, now);
            now += 1_000;
        }
        assert!(
            b.can_send(now),
            "never waits longer than retry_max_backoff_ms"
        );
    }

    #[test]
    fn overflow_drops_oldest_counts_and_announces_a_gap() {
        let mut b = AuditBuffer::new(&cfg(3, 10, 1), Chain::new("s"));
        fill(&mut b, 5);
        assert_eq!(b.counters.dropped, 2);
        assert_eq!(seqs(&b), [3, 4, 5]);
        assert_eq!(b.gaps.len(), 1);
        let gap = b.gaps.first().unwrap();
        assert_eq!((gap.from_seq, gap.to_seq, gap.count), (1, 2, 2));
        let (id, msg) = b.take_batch(0, 0, &[]).unwrap();
        assert!(msg
            .windows(b"meshguard.audit.gap".len())
            .any(|w| w == b"meshguard.audit.gap"));
        // the batch (with its gap notice) fails while more events overflow
        fill(&mut b, 2);
        b.finish_batch(id, false, 0);
        assert_eq!(b.counters.emitted, b.counters.dropped + b.queued() as u64);
        // the unacknowledged notice is kept and, the new drops being contiguous, extended
        let merged = b.gaps.first().unwrap();
        assert_eq!((merged.from_seq, merged.to_seq, merged.count), (1, 4, 4));
        assert_eq!(
            b.gaps.iter().map(|g| g.count).sum::<u64>(),
            b.counters.dropped
        );
        assert_eq!(seqs(&b), [5, 6, 7]);
    }

    #[test]
    fn rpc_attributes_only_when_present() {
        let plain = AuditEvent::default();
        let names: Vec<_> = plain.attributes().iter().map(|(k, _)| *k).collect();
        assert!(!names.contains(&"mcp.method.name"));
        assert!(!names.contains(&"meshguard.mcp.argument_keys"));
        let mut e = AuditEvent::default();
        e.rpc.mcp_method = "tools/call".into();
        e.rpc.tool_name = "send".into();
        e.rpc.request_id = "7".into();
        e.rpc.argument_keys = vec!["to".into()];
        e.shadow_policy = "candidate".into();
        let attrs = e.attributes();
        let get = |n: &str| attrs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(get("mcp.method.name"), Some(AnyValue::Str("tools/call")));
        assert_eq!(get("gen_ai.tool.name"), Some(AnyValue::Str("send")));
        assert_eq!(get("jsonrpc.request.id"), Some(AnyValue::Str("7")));
        assert_eq!(
            get("meshguard.shadow.policy"),
            Some(AnyValue::Str("candidate"))
        );
        assert!(
            matches!(get("meshguard.mcp.argument_keys"), Some(AnyValue::StrArray(k)) if k == ["to"])
        );
        assert_eq!(get("mcp.session.id"), None);
        // the chain covers them: a different tool changes the hash
        let mut c1 = Chain::new("s");
        let mut c2 = Chain::new("s");
        let h1 = c1.seal(&e).hash;
        e.rpc.tool_name = "other".into();
        assert_ne!(h1, c2.seal(&e).hash);
    }
}
