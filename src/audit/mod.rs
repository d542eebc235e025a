//! Audit events (README, "Audit events"): one per decision, encoded as an OTLP `LogRecord` at request
//! time, buffered per worker VM and exported in batches by the root context.
//!
//! The buffer is bounded in events and bytes. When it is full the oldest unsent events are
//! dropped and counted; a failed export puts its batch back at the front, so an outage
//! delays events instead of losing them while there is room.

pub mod chain_v3;
pub mod otlp;

use crate::config::{AuditConfig, ConfigError};
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
    /// `meshguard.inputs`: the values of the names the configuration's conditions refer
    /// to, as a JSON object (for `meshguard replay`); empty when there are none.
    pub inputs: String,
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
        // In chain v3 key-table order (`chain_v3::KEYS`), so sealing needs no sort; sized
        // for every attribute and the four chain fields, so it is one allocation.
        let mut attributes = Vec::with_capacity(chain_v3::KEYS.len() + 1);
        attributes.extend([
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
        ]);
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
            ("meshguard.inputs", &self.inputs),
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

    /// Roughly what the event occupies while it waits, for `audit.buffer_bytes`: its text
    /// plus a fixed allowance for the record's framing and fixed fields.
    pub fn approx_size(&self) -> usize {
        let r = &self.rpc;
        let text = [
            &self.decision,
            &self.effect,
            &self.agent_id,
            &self.trust_tier,
            &self.action,
            &self.resource,
            &self.policy,
            &self.rule,
            &self.reason,
            &self.mode,
            &self.bundle_version,
            &self.method,
            &self.path,
            &self.authority,
            &self.identity_error,
            &self.request_id,
            &self.grant,
            &self.approval_id,
            &self.shadow_policy,
            &r.mcp_method,
            &r.tool_name,
            &r.session_id,
            &r.protocol_version,
            &r.resource_uri,
            &r.request_id,
            &r.arguments,
            &r.a2a_method,
        ]
        .iter()
        .map(|s| s.len())
        .sum::<usize>();
        let lists: usize = self
            .delegation_chain
            .iter()
            .chain(&r.argument_keys)
            .map(|s| s.len() + 4)
            .sum();
        text + lists + 640
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
    /// The chain input being hashed, kept between events so sealing does not allocate it.
    input: Vec<u8>,
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
            input: Vec::new(),
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

    /// Gives a dropped, never-sealed event its seq. It is not hashed: the next sealed
    /// event links to the last sealed one, and the gap declaration names that hash.
    fn skip(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Seals an event (chain v3, see [`chain_v3`]) and encodes its `LogRecord`.
    fn seal(&mut self, event: &AuditEvent) -> Sealed {
        self.seq += 1;
        let seq = i64::try_from(self.seq).unwrap_or(i64::MAX);
        let mut attributes = event.attributes();
        attributes.push(("meshguard.stream", AnyValue::Str(&self.stream)));
        attributes.push(("meshguard.seq", AnyValue::Int(seq)));
        attributes.push(("meshguard.prev_hash", AnyValue::Str(&self.last_hash)));
        attributes.push(("meshguard.chain.version", AnyValue::Int(CHAIN_VERSION)));
        // Already in v3 key order: no sort (`chain_v3::write_attributes` checks it).
        self.input.clear();
        chain_v3::write_header(&mut self.input, event.time_unix_nano, &event.trace_id);
        chain_v3::write_attributes(&mut self.input, &attributes);
        let hash = hex(chain_v3::hash(&self.input).as_bytes());
        let deny = event.decision != "allow";
        let action = if event.action.is_empty() {
            "-"
        } else {
            &event.action
        };
        let agent = if event.agent_id.is_empty() {
            "unidentified agent"
        } else {
            &event.agent_id
        };
        let resource_sep = if event.resource.is_empty() { "" } else { " " };
        let body = [
            event.decision.as_str(),
            " ",
            action,
            resource_sep,
            &event.resource,
            " by ",
            agent,
        ];
        let bytes = otlp::encode_chained_record(
            &otlp::LogRecord {
                time_unix_nano: event.time_unix_nano,
                severity_number: if deny { 13 } else { 9 },
                severity_text: if deny { "WARN" } else { "INFO" },
                body: "",
                event_name: "meshguard.decision",
                trace_id: &event.trace_id,
                span_id: &event.span_id,
                attributes: &attributes,
            },
            &body,
            &hash,
        );
        self.last_hash.clone_from(&hash);
        Sealed {
            seq: self.seq,
            hash,
            bytes,
        }
    }
}

/// Signs checkpoints of the stream's head and gap declarations with the workload's
/// Ed25519 key (`audit.signing_key`), once per exported batch.
#[derive(Clone)]
pub struct CheckpointSigner {
    key: ed25519_compact::SecretKey,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointSigner(..)")
    }
}

impl CheckpointSigner {
    /// The signer `audit.signing_key` configures, if any; an error names the field.
    pub fn from_config(cfg: &AuditConfig) -> Result<Option<CheckpointSigner>, ConfigError> {
        let Some(text) = cfg.signing_key.as_deref() else {
            return Ok(None);
        };
        let seed = decode_base64_any(text.trim())
            .and_then(|raw| ed25519_compact::Seed::from_slice(&raw).ok())
            .ok_or_else(|| {
                ConfigError::invalid(
                    "audit.signing_key",
                    "must be a base64 32-byte Ed25519 seed (the \"d\" of the JWK that \
                     `meshguard keygen --alg EdDSA` writes)",
                )
            })?;
        Ok(Some(CheckpointSigner {
            key: ed25519_compact::KeyPair::from_seed(seed).sk,
        }))
    }

    /// The base64 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        use ct_codecs::Encoder;
        let sig = self.key.sign(message, None);
        ct_codecs::Base64::encode_to_string(sig.as_ref()).unwrap_or_default()
    }
}

/// Standard or URL-safe base64, padded or not.
fn decode_base64_any(s: &str) -> Option<Vec<u8>> {
    use ct_codecs::{Base64, Base64NoPadding, Base64UrlSafe, Base64UrlSafeNoPadding, Decoder};
    Base64::decode_to_vec(s, None)
        .or_else(|_| Base64NoPadding::decode_to_vec(s, None))
        .or_else(|_| Base64UrlSafe::decode_to_vec(s, None))
        .or_else(|_| Base64UrlSafeNoPadding::decode_to_vec(s, None))
        .ok()
}

/// What a checkpoint signs (README, "Audit integrity"): the stream's head after a batch.
pub fn checkpoint_message(workload: &str, stream: &str, seq: u64, hash: &str) -> Vec<u8> {
    format!("meshguard-checkpoint-v1\n{workload}\n{stream}\n{seq}\n{hash}\n").into_bytes()
}

/// What a gap declaration's signature signs, so a store writer cannot pass a deletion
/// off as a declared loss.
pub fn gap_message(
    workload: &str,
    stream: &str,
    from_seq: u64,
    to_seq: u64,
    count: u64,
    last_hash: &str,
) -> Vec<u8> {
    format!("meshguard-gap-v1\n{workload}\n{stream}\n{from_seq}\n{to_seq}\n{count}\n{last_hash}\n")
        .into_bytes()
}

/// `event_name` of a checkpoint record.
pub const CHECKPOINT_EVENT: &str = "meshguard.audit.checkpoint";

fn checkpoint_record(
    signer: &CheckpointSigner,
    workload: &str,
    stream: &str,
    head: &Sealed,
    now_unix_nano: u64,
) -> Vec<u8> {
    let signature = signer.sign(&checkpoint_message(workload, stream, head.seq, &head.hash));
    let attributes = [
        ("meshguard.stream", AnyValue::Str(stream)),
        (
            "meshguard.checkpoint.seq",
            AnyValue::Int(i64::try_from(head.seq).unwrap_or(i64::MAX)),
        ),
        ("meshguard.checkpoint.hash", AnyValue::Str(&head.hash)),
        ("meshguard.checkpoint.signature", AnyValue::Str(&signature)),
        ("meshguard.chain.version", AnyValue::Int(CHAIN_VERSION)),
    ];
    otlp::encode_log_record(&otlp::LogRecord {
        time_unix_nano: now_unix_nano,
        severity_number: 9,
        severity_text: "INFO",
        body: "audit checkpoint",
        event_name: CHECKPOINT_EVENT,
        trace_id: &[],
        span_id: &[],
        attributes: &attributes,
    })
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
    fn encode(
        &self,
        stream: &str,
        now_unix_nano: u64,
        signer: Option<(&CheckpointSigner, &str)>,
    ) -> Vec<u8> {
        let as_int = |v: u64| AnyValue::Int(i64::try_from(v).unwrap_or(i64::MAX));
        let signature = signer.map(|(s, workload)| {
            s.sign(&gap_message(
                workload,
                stream,
                self.from_seq,
                self.to_seq,
                self.count,
                &self.last_hash,
            ))
        });
        let mut attributes = vec![
            ("meshguard.stream", AnyValue::Str(stream)),
            ("meshguard.gap.from_seq", as_int(self.from_seq)),
            ("meshguard.gap.to_seq", as_int(self.to_seq)),
            ("meshguard.gap.count", as_int(self.count)),
            ("meshguard.gap.last_hash", AnyValue::Str(&self.last_hash)),
        ];
        if let Some(sig) = &signature {
            attributes.push(("meshguard.gap.signature", AnyValue::Str(sig)));
        }
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
/// An event is only moved into the queue at request time; it is sealed into the hash
/// chain and encoded when its batch is taken at flush (README, "Audit events": the cost
/// leaves the request path). A batch leaves the queue when sent and comes back to the
/// front if its Export fails, so order is kept and nothing is lost while there is room.
/// When the buffer overflows, the oldest unsent events are dropped, counted, and
/// announced to the collector as a gap.
#[derive(Debug)]
pub struct AuditBuffer {
    chain: Chain,
    /// Sealed events back from a failed Export, in seq order; all older than `pending`.
    sealed: VecDeque<Sealed>,
    /// Events not sealed yet, in arrival order.
    pending: VecDeque<AuditEvent>,
    queued_bytes: usize,
    gaps: Vec<Gap>,
    in_flight: HashMap<u64, InFlight>,
    next_batch: u64,
    failures: u32,
    not_before_ms: u64,
    cfg: AuditConfig,
    signer: Option<CheckpointSigner>,
    /// What happened so far.
    pub counters: AuditCounters,
}

impl AuditBuffer {
    /// A buffer for one stream with the configured limits.
    pub fn new(cfg: &AuditConfig, chain: Chain) -> AuditBuffer {
        AuditBuffer {
            chain,
            sealed: VecDeque::new(),
            pending: VecDeque::new(),
            queued_bytes: 0,
            gaps: Vec::new(),
            in_flight: HashMap::new(),
            next_batch: 1,
            failures: 0,
            not_before_ms: 0,
            // The engine refused an invalid key when it was built (`Engine::build`).
            signer: CheckpointSigner::from_config(cfg).ok().flatten(),
            cfg: cfg.clone(),
            counters: AuditCounters::default(),
        }
    }

    /// Adopts new limits and signing key (on reconfiguration) without losing what is
    /// queued.
    pub fn set_limits(&mut self, cfg: &AuditConfig) {
        if cfg.signing_key != self.cfg.signing_key {
            self.signer = CheckpointSigner::from_config(cfg).ok().flatten();
        }
        self.cfg = cfg.clone();
        self.enforce_limits();
    }

    /// The stream this buffer seals into.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Events waiting, not counting those in flight.
    pub fn queued(&self) -> usize {
        self.sealed.len() + self.pending.len()
    }

    /// Export calls in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether a full batch is waiting (send now rather than at the next tick).
    pub fn batch_ready(&self) -> bool {
        self.queued() >= self.cfg.max_batch
    }

    /// Queues an event; sealing and encoding wait for its batch.
    pub fn push(&mut self, event: AuditEvent) {
        self.counters.emitted += 1;
        self.queued_bytes += event.approx_size();
        self.pending.push_back(event);
        self.enforce_limits();
    }

    fn enforce_limits(&mut self) {
        while self.queued() > self.cfg.buffer_events || self.queued_bytes > self.cfg.buffer_bytes {
            let (seq, last_hash) = if let Some(old) = self.sealed.pop_front() {
                self.queued_bytes -= old.bytes.len();
                (old.seq, old.hash)
            } else if let Some(old) = self.pending.pop_front() {
                self.queued_bytes -= old.approx_size();
                (self.chain.skip(), self.chain.last_hash.clone())
            } else {
                break;
            };
            self.counters.dropped += 1;
            match self.gaps.last_mut() {
                Some(g) if g.to_seq + 1 == seq => {
                    g.to_seq = seq;
                    g.count += 1;
                    g.last_hash = last_hash;
                }
                _ => self.gaps.push(Gap {
                    from_seq: seq,
                    to_seq: seq,
                    count: 1,
                    last_hash,
                }),
            }
        }
    }

    /// Whether an export may start now: something waits, a call slot is free and no
    /// backoff is running.
    pub fn can_send(&self, now_ms: u64) -> bool {
        (self.queued() > 0 || !self.gaps.is_empty())
            && self.in_flight.len() < self.cfg.max_in_flight
            && now_ms >= self.not_before_ms
    }

    /// Takes the next batch (sealing its events) and returns its id and the encoded
    /// ExportLogsServiceRequest, or `None` when [`AuditBuffer::can_send`] is false. With a
    /// signing key the batch ends with a signed checkpoint of its last event and its gap
    /// declarations are signed; `resource` must then carry `envoy.node.id`.
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
        while records.len() < self.cfg.max_batch {
            let next = if let Some(r) = self.sealed.pop_front() {
                self.queued_bytes -= r.bytes.len();
                r
            } else if let Some(e) = self.pending.pop_front() {
                self.queued_bytes -= e.approx_size();
                self.chain.seal(&e)
            } else {
                break;
            };
            let fits = records.is_empty() || bytes + next.bytes.len() <= self.cfg.max_batch_bytes;
            if !fits {
                // Sealed now, so it waits with the sealed ones (it is older than `pending`).
                self.queued_bytes += next.bytes.len();
                self.sealed.push_front(next);
                break;
            }
            bytes += next.bytes.len();
            records.push(next);
        }
        let workload = resource
            .iter()
            .find_map(|(k, v)| match v {
                AnyValue::Str(s) if *k == "envoy.node.id" => Some(*s),
                _ => None,
            })
            .unwrap_or_default();
        let signer = self.signer.as_ref().map(|s| (s, workload));
        let gaps = std::mem::take(&mut self.gaps);
        let mut extra: Vec<Vec<u8>> = gaps
            .iter()
            .map(|g| g.encode(self.chain.stream(), now_unix_nano, signer))
            .collect();
        if let (Some(signer), Some(head)) = (&self.signer, records.last()) {
            extra.push(checkpoint_record(
                signer,
                workload,
                self.chain.stream(),
                head,
                now_unix_nano,
            ));
        }
        let message = otlp::export_request(
            resource,
            "meshguard",
            env!("CARGO_PKG_VERSION"),
            records
                .iter()
                .map(|r| r.bytes.as_slice())
                .chain(extra.iter().map(Vec::as_slice)),
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
            self.sealed.push_front(r);
        }
        if self
            .sealed
            .iter()
            .zip(self.sealed.iter().skip(1))
            .any(|(a, b)| a.seq > b.seq)
        {
            self.sealed.make_contiguous().sort_by_key(|r| r.seq);
        }
        let mut gaps = batch.gaps;
        gaps.append(&mut self.gaps);
        self.gaps = gaps;
        self.enforce_limits();
    }
}

/// The `meshguard.prev_hash` of the first event of a stream.
pub const CHAIN_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The version of the hash-chain construction this filter writes, sent as
/// `meshguard.chain.version` (an event without it is version 1).
pub const CHAIN_VERSION: i64 = 3;

/// The domain prefix of a v2 chain input.
pub const CHAIN_V2_DOMAIN: &[u8] = b"meshguard-audit-v2\n";

/// The bytes hashed for one event in chain version 2 (README, "Hash chain"; written by
/// filters before chain v3, still verified):
///
/// ```text
/// "meshguard-audit-v2\n"                  19 bytes
/// time_unix_nano                          8 bytes, little-endian (the record's fixed64)
/// trace_id                                16 bytes, or 16 zero bytes when absent
/// attributes                              every attribute except meshguard.hash, sorted by
///                                         key (byte order), each encoded exactly as the
///                                         OTLP LogRecord field 6 (tag 0x32, length,
///                                         KeyValue{1: key, 2: AnyValue}) in the filter's
///                                         record
/// ```
///
/// AnyValue: string → field 1, bool → field 2, integer → field 3 (varint, two's
/// complement), array of strings → field 5 (ArrayValue of string AnyValues). A stored value
/// of any other JSON type (never sent by the filter) is encoded as field 7 (bytes) holding
/// its compact JSON, so it can never hash like one of the four.
pub fn chain_input_v2(
    time_unix_nano: u64,
    trace_id_hex: &str,
    attributes: &[(&str, serde_json::Value)],
) -> Vec<u8> {
    use serde_json::Value;
    let trace = unhex(trace_id_hex).unwrap_or_default();
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(CHAIN_V2_DOMAIN);
    out.extend_from_slice(&time_unix_nano.to_le_bytes());
    out.extend_from_slice(if trace.len() == 16 {
        &trace
    } else {
        &[0u8; 16]
    });
    let mut sorted: Vec<&(&str, Value)> = attributes
        .iter()
        .filter(|(k, _)| *k != "meshguard.hash")
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in sorted {
        let strings: Option<Vec<String>> = match v {
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => None,
        };
        let other = serde_json::to_vec(v).unwrap_or_default();
        let value = match (v, v.as_i64(), &strings) {
            (Value::String(s), _, _) => AnyValue::Str(s),
            (Value::Bool(b), _, _) => AnyValue::Bool(*b),
            (Value::Number(_), Some(i), _) => AnyValue::Int(i),
            (Value::Array(_), _, Some(items)) => AnyValue::StrArray(items),
            _ => AnyValue::Bytes(&other),
        };
        otlp::key_value(&mut out, 6, k, &value);
    }
    out
}

/// The chain hash an event should carry, by its `meshguard.chain.version` (absent: 1).
pub fn event_chain_hash(
    prev_hash: &str,
    time_unix_nano: u64,
    trace_id_hex: &str,
    attributes: &[(&str, serde_json::Value)],
) -> String {
    let version = attributes
        .iter()
        .find(|(k, _)| *k == "meshguard.chain.version")
        .map(|(_, v)| v.as_i64());
    match version {
        None => chain_hash(&chain_input(
            prev_hash,
            time_unix_nano,
            trace_id_hex,
            attributes,
        )),
        Some(Some(2)) => chain_hash(&chain_input_v2(time_unix_nano, trace_id_hex, attributes)),
        Some(Some(3)) => hex(chain_v3::hash(&chain_v3::chain_input(
            time_unix_nano,
            trace_id_hex,
            attributes,
        ))
        .as_bytes()),
        // An unknown version cannot be recomputed: no hash matches, so verify reports it.
        Some(_) => String::new(),
    }
}

/// The canonical text hashed for one event in chain version 1 (format
/// `meshguard-audit-v1`, written by filters before `meshguard.chain.version`; still
/// verified), so that anyone can recompute the chain from the OTLP record alone:
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
            b.push(event(i));
        }
    }

    /// Seqs of the sealed events waiting, then how many wait unsealed.
    fn seqs(b: &AuditBuffer) -> (Vec<u64>, usize) {
        (b.sealed.iter().map(|r| r.seq).collect(), b.pending.len())
    }

    #[test]
    fn chain_links_each_event_to_the_previous_one() {
        let mut c = Chain::new("s1");
        let mut e1 = event(1);
        e1.trace_id = vec![7; 16];
        let s1 = c.seal(&e1);
        let s2 = c.seal(&event(2));
        assert_eq!((s1.seq, s2.seq), (1, 2));
        // recompute the first hash independently of `seal`, from the JSON a store keeps
        let mut attrs: Vec<(&str, serde_json::Value)> = e1
            .attributes()
            .iter()
            .map(|(k, v)| (*k, v.to_json()))
            .collect();
        attrs.push(("meshguard.stream", "s1".into()));
        attrs.push(("meshguard.seq", 1.into()));
        attrs.push(("meshguard.prev_hash", CHAIN_GENESIS.into()));
        attrs.push(("meshguard.chain.version", 3.into()));
        let trace = "07".repeat(16);
        assert_eq!(
            s1.hash,
            hex(chain_v3::hash(&chain_v3::chain_input(1_001, &trace, &attrs)).as_bytes())
        );
        assert_eq!(s1.hash, event_chain_hash("", 1_001, &trace, &attrs));
        assert_ne!(s1.hash, s2.hash);
        assert_eq!(c.last_hash, s2.hash);
        // keys are one byte each: the input is far smaller than the record
        let input = chain_v3::chain_input(1_001, &trace, &attrs);
        assert!(input.starts_with(chain_v3::DOMAIN));
        assert!(
            input.len() * 2 < s1.bytes.len(),
            "{} vs {}",
            input.len(),
            s1.bytes.len()
        );
        // the same event as chain v2 still hashes (and differently)
        let mut v2 = attrs.clone();
        v2.pop();
        v2.push(("meshguard.chain.version", 2.into()));
        let h2 = event_chain_hash("", 1_001, &trace, &v2);
        assert_eq!(h2, chain_hash(&chain_input_v2(1_001, &trace, &v2)));
        assert_ne!(h2, s1.hash);
        // a changed value or type breaks it
        let mut changed = attrs.clone();
        changed.push(("meshguard.agent.id", "agent-2".into()));
        changed.swap_remove(
            changed
                .iter()
                .position(|(k, _)| *k == "meshguard.agent.id")
                .unwrap(),
        );
        assert_ne!(s1.hash, event_chain_hash("", 1_001, &trace, &changed));
        let mut typed = attrs.clone();
        for (k, v) in typed.iter_mut() {
            if *k == "meshguard.latency_us" {
                *v = serde_json::Value::String("0".into());
            }
        }
        assert_ne!(s1.hash, event_chain_hash("", 1_001, &trace, &typed));
        assert_ne!(s1.hash, event_chain_hash("", 1_002, &trace, &attrs));
    }

    #[test]
    fn version_1_events_still_hash_as_before() {
        let attrs: Vec<(&str, serde_json::Value)> = vec![
            ("meshguard.agent.id", "a".into()),
            ("meshguard.seq", 1.into()),
        ];
        let text = String::from_utf8(chain_input(CHAIN_GENESIS, 5, "", &attrs)).unwrap();
        assert_eq!(
            text,
            format!("meshguard-audit-v1\n{CHAIN_GENESIS}\n5\n\nmeshguard.agent.id=\"a\"\nmeshguard.seq=1\n")
        );
        assert_eq!(
            event_chain_hash(CHAIN_GENESIS, 5, "", &attrs),
            chain_hash(text.as_bytes())
        );
        let mut unknown = attrs.clone();
        unknown.push(("meshguard.chain.version", 4.into()));
        assert_eq!(event_chain_hash(CHAIN_GENESIS, 5, "", &unknown), "");
        unknown.pop();
        unknown.push(("meshguard.chain.version", "3".into()));
        assert_eq!(event_chain_hash(CHAIN_GENESIS, 5, "", &unknown), "");
    }

    #[test]
    fn push_defers_sealing_to_the_batch() {
        let mut b = AuditBuffer::new(&cfg(100, 10, 1), Chain::new("s"));
        fill(&mut b, 3);
        assert_eq!(b.chain.seq(), 0, "nothing sealed at request time");
        assert_eq!(seqs(&b), (vec![], 3));
        let (_, msg) = b.take_batch(0, 0, &[]).unwrap();
        assert_eq!(b.chain.seq(), 3);
        assert!(msg
            .windows(b"meshguard.chain.version".len())
            .any(|w| w == b"meshguard.chain.version"));
    }

    #[test]
    fn signed_batches_end_with_a_checkpoint_of_their_last_event() {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([3; 32]));
        let seed = {
            use ct_codecs::Encoder;
            ct_codecs::Base64::encode_to_string(kp.sk.seed().as_ref()).unwrap()
        };
        let mut c = cfg(100, 2, 1);
        c.signing_key = Some(seed);
        let mut b = AuditBuffer::new(&c, Chain::new("s"));
        fill(&mut b, 3);
        let resource = [("envoy.node.id", AnyValue::Str("node-1"))];
        let (_, msg) = b.take_batch(0, 0, &resource).unwrap();
        let head = b.chain.last_hash.clone();
        assert_eq!(b.chain.seq(), 2, "max_batch 2: the third waits unsealed");
        let find = |needle: &[u8]| msg.windows(needle.len()).any(|w| w == needle);
        assert!(find(CHECKPOINT_EVENT.as_bytes()));
        assert!(find(head.as_bytes()));
        let sig = b
            .signer
            .as_ref()
            .unwrap()
            .sign(&checkpoint_message("node-1", "s", 2, &head));
        assert!(
            find(sig.as_bytes()),
            "signature over (workload, stream, seq, hash)"
        );
        let raw = {
            use ct_codecs::Decoder;
            ct_codecs::Base64::decode_to_vec(&sig, None).unwrap()
        };
        let sig = ed25519_compact::Signature::from_slice(&raw).unwrap();
        assert!(kp
            .pk
            .verify(checkpoint_message("node-1", "s", 2, &head), &sig)
            .is_ok());
        // a bad key is a configuration error naming the field
        c.signing_key = Some("not a key".into());
        let err = CheckpointSigner::from_config(&c).unwrap_err().to_string();
        assert!(err.contains("audit.signing_key"), "{err}");
    }

    #[test]
    fn batches_respect_limits_and_failed_batches_come_back_in_order() {
        let mut b = AuditBuffer::new(&cfg(100, 3, 2), Chain::new("s"));
        fill(&mut b, 7);
        assert!(b.batch_ready());
        let (first, _) = b.take_batch(0, 0, &[]).unwrap();
        let (second, _) = b.take_batch(0, 0, &[]).unwrap();
        assert!(b.take_batch(0, 0, &[]).is_none(), "max_in_flight = 2");
        assert_eq!(seqs(&b), (vec![], 1), "the seventh waits unsealed");
        b.finish_batch(second, false, 0);
        b.finish_batch(first, false, 0);
        assert_eq!(
            seqs(&b),
            (vec![1, 2, 3, 4, 5, 6], 1),
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
        assert_eq!(seqs(&b), (vec![], 3));
        assert_eq!(b.gaps.len(), 1);
        let gap = b.gaps.first().unwrap();
        assert_eq!((gap.from_seq, gap.to_seq, gap.count), (1, 2, 2));
        // never sealed: the next event links to the genesis, which the gap names
        assert_eq!(gap.last_hash, CHAIN_GENESIS);
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
        assert_eq!(seqs(&b), (vec![5], 2));
        // the event after the gap links to what the declaration names
        let (id, _) = b.take_batch(10_000, 0, &[]).unwrap();
        let sent = &b.in_flight.get(&id).unwrap().records;
        assert_eq!(sent.first().unwrap().seq, 5);
        assert_eq!(sent.len(), 3);
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
