//! The audit event format on the wire (README "Audit events"): OTLP log records from the
//! filter, turned into what the store keeps.
//!
//! Decoding never fails as a whole: a record that cannot be used is counted as rejected
//! with a reason, and everything else in the request is kept, so one bad record does not
//! cost the batch it came in.

use super::integrity;
use ct_codecs::{Base64, Encoder};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use serde_json::{Map, Value};

/// `event_name` of a decision record.
pub const DECISION_EVENT: &str = "meshguard.decision";
/// `event_name` of a declared gap (events the filter had to drop).
pub const GAP_EVENT: &str = "meshguard.audit.gap";
/// `event_name` of a signed checkpoint of a stream's head (README, "Audit integrity").
pub const CHECKPOINT_EVENT: &str = meshguard::audit::CHECKPOINT_EVENT;

/// A signed checkpoint: the filter's Ed25519 signature over (workload, stream, seq, hash)
/// of the last event of a batch. Stored as received; `meshguard audit verify --keys`
/// checks it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// `envoy.node.id` of the resource, or empty.
    pub workload: String,
    /// `meshguard.stream`.
    pub stream: String,
    /// `meshguard.checkpoint.seq`.
    pub seq: i64,
    /// `meshguard.checkpoint.hash`: the chain hash of event `seq`.
    pub hash: String,
    /// `meshguard.checkpoint.signature`: base64 Ed25519 signature of
    /// `meshguard::audit::checkpoint_message`.
    pub signature: String,
}

/// Where an event sits in its stream's hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainPosition {
    /// `meshguard.stream`: one worker VM's lifetime.
    pub stream: String,
    /// `meshguard.seq`, from 1.
    pub seq: i64,
    /// `meshguard.prev_hash` as sent (empty when missing: verification then reports it).
    pub prev_hash: String,
    /// `meshguard.hash` as sent (empty when missing: verification then reports it).
    pub hash: String,
}

/// One decision record, as received.
#[derive(Debug, Clone)]
pub struct DecisionEvent {
    /// `time_unix_nano` of the record (hashed as sent).
    pub time_unix_nano: u64,
    /// `envoy.node.id` of the resource, or empty.
    pub workload: String,
    /// The chain fields, or `None` for an event without a usable stream and seq.
    pub chain: Option<ChainPosition>,
    /// Trace id as lowercase hex, or empty.
    pub trace_id: String,
    /// Span id as lowercase hex, or empty.
    pub span_id: String,
    /// `severity_text`.
    pub severity: String,
    /// The body as text (a string body verbatim, anything else as JSON), if any.
    pub body: Option<String>,
    /// Every attribute, including unknown ones and the chain fields.
    pub attributes: Map<String, Value>,
    /// The resource attributes.
    pub resource: Map<String, Value>,
    /// The chain hash recomputed from the content (with the claimed `prev_hash`, or empty
    /// for an unchained event): equals `chain.hash` unless the event was altered.
    pub content_hash: String,
}

impl DecisionEvent {
    /// A string attribute, or the JSON of a non-string one, or empty.
    pub fn text(&self, key: &str) -> String {
        match self.attributes.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }

    /// An integer attribute.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(Value::as_i64)
    }

    /// A boolean attribute.
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.attributes.get(key).and_then(Value::as_bool)
    }

    /// Whether the decision was a denial of some kind (what denial alerts count).
    pub fn is_denial(&self) -> bool {
        matches!(
            self.attributes
                .get("meshguard.decision")
                .and_then(Value::as_str),
            Some("deny" | "require_approval" | "would_deny")
        )
    }
}

/// A declared gap: events `from_seq..=to_seq` of a stream were dropped by the filter.
#[derive(Debug, Clone, PartialEq)]
pub struct GapDeclaration {
    /// `envoy.node.id` of the resource, or empty.
    pub workload: String,
    /// `meshguard.stream`.
    pub stream: String,
    /// First dropped seq.
    pub from_seq: i64,
    /// Last dropped seq.
    pub to_seq: i64,
    /// `meshguard.gap.count` as sent.
    pub count: i64,
    /// Hash of the last dropped event: the next event's `prev_hash`.
    pub last_hash: String,
    /// When the gap was declared.
    pub time_unix_nano: u64,
    /// `meshguard.gap.signature` (base64 Ed25519 of `meshguard::audit::gap_message`), when
    /// the filter signs.
    pub signature: Option<String>,
}

/// A decoded Export request.
#[derive(Debug, Default)]
pub struct Batch {
    /// Decision events, in request order.
    pub events: Vec<DecisionEvent>,
    /// Declared gaps.
    pub gaps: Vec<GapDeclaration>,
    /// Signed checkpoints.
    pub checkpoints: Vec<Checkpoint>,
    /// Why each unusable record was rejected.
    pub rejected: Vec<String>,
    /// How many decision events had no usable chain fields (stored, but unverifiable).
    pub unchained: usize,
    /// The authenticated ingest peer that sent it (see `peer.rs`), when ingest is
    /// authenticated.
    pub peer: Option<String>,
}

impl Batch {
    /// The `error_message` for OTLP partial success: rejections first, then warnings.
    /// Empty when every record was stored as a chained event.
    pub fn status_message(&self) -> String {
        let mut parts = Vec::new();
        if !self.rejected.is_empty() {
            let shown: Vec<&str> = self.rejected.iter().take(3).map(String::as_str).collect();
            let more = self.rejected.len().saturating_sub(shown.len());
            let mut s = format!(
                "{} log record(s) rejected: {}",
                self.rejected.len(),
                shown.join("; ")
            );
            if more > 0 {
                s.push_str(&format!("; and {more} more"));
            }
            parts.push(s);
        }
        if self.unchained > 0 {
            parts.push(format!(
                "{} decision event(s) had no usable meshguard.stream/meshguard.seq: stored \
                 unchained, they cannot be verified",
                self.unchained
            ));
        }
        parts.join(". ")
    }
}

/// Converts an OTLP value to JSON exactly as the filter does when it hashes the chain:
/// string, bool, int (i64), double (f64), array, kvlist (object), bytes (standard base64).
pub fn any_value_to_json(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        // NaN and infinities have no JSON form; null is what serde_json makes of them too.
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
        }
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(any_value_to_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes_to_json(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => {
            Value::String(Base64::encode_to_string(b).unwrap_or_default())
        }
        // Profiles' string-table index: keep the number, it is all there is.
        Some(any_value::Value::StringValueStrindex(i)) => Value::from(*i),
    }
}

/// Key/values as a JSON object. Keys are unique by the OTLP spec; if a sender repeats one,
/// the last wins (protobuf map semantics), and the hash is computed over the same object
/// that is stored, so the stored row and its verification always agree.
pub fn attributes_to_json(kvs: &[KeyValue]) -> Map<String, Value> {
    let mut map = Map::new();
    for kv in kvs {
        let v = kv.value.as_ref().map_or(Value::Null, any_value_to_json);
        map.insert(kv.key.clone(), v);
    }
    map
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    meshguard::hex::hex(bytes)
}

/// Decodes an Export request. Records are sorted into decision events, gap declarations
/// and rejections; nothing is dropped silently.
pub fn decode(request: &ExportLogsServiceRequest) -> Batch {
    let mut batch = Batch::default();
    let mut index = 0usize;
    for rl in &request.resource_logs {
        let resource = rl
            .resource
            .as_ref()
            .map(|r| attributes_to_json(&r.attributes))
            .unwrap_or_default();
        let workload = match resource.get("envoy.node.id") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        for sl in &rl.scope_logs {
            for record in &sl.log_records {
                index += 1;
                let attributes = attributes_to_json(&record.attributes);
                let name = record.event_name.as_str();
                // Older filters left event_name empty; the decision attribute identifies them.
                let is_decision = name == DECISION_EVENT
                    || (name.is_empty() && attributes.contains_key("meshguard.decision"));
                if is_decision {
                    match decision(record, attributes, &workload, &resource) {
                        Ok(e) => {
                            if e.chain.is_none() {
                                batch.unchained += 1;
                            }
                            batch.events.push(e);
                        }
                        Err(why) => batch.rejected.push(format!("record {index}: {why}")),
                    }
                } else if name == CHECKPOINT_EVENT {
                    match checkpoint(&attributes, &workload) {
                        Ok(c) => batch.checkpoints.push(c),
                        Err(why) => batch.rejected.push(format!("record {index}: {why}")),
                    }
                } else if name == GAP_EVENT {
                    match gap(record.time_unix_nano, &attributes, &workload) {
                        Ok(g) => batch.gaps.push(g),
                        Err(why) => batch.rejected.push(format!("record {index}: {why}")),
                    }
                } else {
                    batch.rejected.push(format!(
                        "record {index}: event_name {name:?} is not a MeshGuard audit event \
                         (expected {DECISION_EVENT:?}, {GAP_EVENT:?} or {CHECKPOINT_EVENT:?})"
                    ));
                }
            }
        }
    }
    batch
}

fn decision(
    record: &opentelemetry_proto::tonic::logs::v1::LogRecord,
    attributes: Map<String, Value>,
    workload: &str,
    resource: &Map<String, Value>,
) -> Result<DecisionEvent, String> {
    // Times are stored as SQLite integers (i64); later than the year 2262 is not a time a
    // filter sends.
    if i64::try_from(record.time_unix_nano).is_err() {
        return Err(format!(
            "time_unix_nano {} is out of range",
            record.time_unix_nano
        ));
    }
    let str_attr = |k: &str| {
        attributes
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let chain = match (
        str_attr("meshguard.stream"),
        attributes.get("meshguard.seq").and_then(Value::as_i64),
    ) {
        (Some(stream), Some(seq)) if !stream.is_empty() && seq >= 1 => Some(ChainPosition {
            stream,
            seq,
            prev_hash: str_attr("meshguard.prev_hash").unwrap_or_default(),
            hash: str_attr("meshguard.hash").unwrap_or_default(),
        }),
        _ => None,
    };
    let trace_id = hex(&record.trace_id);
    let prev = chain.as_ref().map_or("", |c| c.prev_hash.as_str());
    let content_hash = integrity::event_hash(prev, record.time_unix_nano, &trace_id, &attributes);
    let body = record.body.as_ref().map(|b| match any_value_to_json(b) {
        Value::String(s) => s,
        other => other.to_string(),
    });
    Ok(DecisionEvent {
        time_unix_nano: record.time_unix_nano,
        workload: workload.to_string(),
        chain,
        trace_id,
        span_id: hex(&record.span_id),
        severity: record.severity_text.clone(),
        body,
        attributes,
        resource: resource.clone(),
        content_hash,
    })
}

fn gap(
    time_unix_nano: u64,
    attributes: &Map<String, Value>,
    workload: &str,
) -> Result<GapDeclaration, String> {
    let need_int = |k: &str| {
        attributes
            .get(k)
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("gap declaration without an integer {k}"))
    };
    let stream = attributes
        .get("meshguard.stream")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("gap declaration without meshguard.stream")?
        .to_string();
    let from_seq = need_int("meshguard.gap.from_seq")?;
    let to_seq = need_int("meshguard.gap.to_seq")?;
    if from_seq < 1 || to_seq < from_seq {
        return Err(format!(
            "gap declaration with an empty or invalid range {from_seq}..{to_seq}"
        ));
    }
    let last_hash = attributes
        .get("meshguard.gap.last_hash")
        .and_then(Value::as_str)
        .ok_or("gap declaration without meshguard.gap.last_hash")?
        .to_string();
    let count = attributes
        .get("meshguard.gap.count")
        .and_then(Value::as_i64)
        .unwrap_or(to_seq - from_seq + 1);
    if i64::try_from(time_unix_nano).is_err() {
        return Err(format!("time_unix_nano {time_unix_nano} is out of range"));
    }
    Ok(GapDeclaration {
        workload: workload.to_string(),
        stream,
        from_seq,
        to_seq,
        count,
        last_hash,
        time_unix_nano,
        signature: attributes
            .get("meshguard.gap.signature")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

fn checkpoint(attributes: &Map<String, Value>, workload: &str) -> Result<Checkpoint, String> {
    let text = |k: &str| {
        attributes
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("checkpoint without {k}"))
    };
    let seq = attributes
        .get("meshguard.checkpoint.seq")
        .and_then(Value::as_i64)
        .filter(|s| *s >= 1)
        .ok_or("checkpoint without a positive integer meshguard.checkpoint.seq")?;
    Ok(Checkpoint {
        workload: workload.to_string(),
        stream: text("meshguard.stream")?,
        seq,
        hash: text("meshguard.checkpoint.hash")?,
        signature: text("meshguard.checkpoint.signature")?,
    })
}

/// Builders of well-formed (and deliberately broken) filter output, for tests.
#[cfg(test)]
pub mod testing {
    use meshguard::audit::{chain_hash, chain_input, CHAIN_GENESIS};
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use serde_json::{json, Value};

    /// JSON (as the tests write attributes) to OTLP.
    pub fn any(v: &Value) -> AnyValue {
        let value = match v {
            Value::String(s) => any_value::Value::StringValue(s.clone()),
            Value::Bool(b) => any_value::Value::BoolValue(*b),
            Value::Number(n) if n.is_i64() => {
                any_value::Value::IntValue(n.as_i64().unwrap_or_default())
            }
            Value::Number(n) => any_value::Value::DoubleValue(n.as_f64().unwrap_or_default()),
            Value::Array(a) => any_value::Value::ArrayValue(ArrayValue {
                values: a.iter().map(any).collect(),
            }),
            _ => return AnyValue { value: None },
        };
        AnyValue { value: Some(value) }
    }

    /// One stream's chain of decision events, correctly hashed.
    pub struct Chain {
        /// Stream id.
        pub stream: String,
        /// Hash of the last event produced.
        pub last_hash: String,
        /// Next seq.
        pub next_seq: i64,
    }

    impl Chain {
        /// A new stream.
        pub fn new(stream: &str) -> Chain {
            Chain {
                stream: stream.into(),
                last_hash: CHAIN_GENESIS.into(),
                next_seq: 1,
            }
        }

        /// The next decision event of this stream.
        pub fn event(&mut self, agent: &str, action: &str, decision: &str) -> LogRecord {
            let seq = self.next_seq;
            let time = 1_700_000_000_000_000_000u64 + seq as u64 * 1_000_000;
            let trace = [seq as u8; 16];
            let attrs = vec![
                ("meshguard.decision", json!(decision)),
                ("meshguard.agent.id", json!(agent)),
                ("meshguard.action", json!(action)),
                ("meshguard.delegation.chain", json!(["root", agent])),
                ("meshguard.latency_us", json!(17)),
                ("meshguard.stream", json!(self.stream)),
                ("meshguard.seq", json!(seq)),
                ("meshguard.prev_hash", json!(self.last_hash)),
            ];
            let hash = chain_hash(&chain_input(
                &self.last_hash,
                time,
                &meshguard::hex::hex(&trace),
                &attrs,
            ));
            self.last_hash = hash.clone();
            self.next_seq += 1;
            let mut attributes: Vec<KeyValue> = attrs
                .iter()
                .map(|(k, v)| KeyValue {
                    key: (*k).into(),
                    value: Some(any(v)),
                    ..Default::default()
                })
                .collect();
            attributes.push(KeyValue {
                key: "meshguard.hash".into(),
                value: Some(any(&json!(hash))),
                ..Default::default()
            });
            LogRecord {
                time_unix_nano: time,
                event_name: super::DECISION_EVENT.into(),
                trace_id: trace.to_vec(),
                attributes,
                ..Default::default()
            }
        }

        /// Drops the next `n` events, returning their gap declaration.
        pub fn drop_events(&mut self, n: i64) -> LogRecord {
            let from = self.next_seq;
            for _ in 0..n {
                let _ = self.event("dropped", "x", "allow");
            }
            let attrs = [
                ("meshguard.stream", json!(self.stream)),
                ("meshguard.gap.from_seq", json!(from)),
                ("meshguard.gap.to_seq", json!(from + n - 1)),
                ("meshguard.gap.count", json!(n)),
                ("meshguard.gap.last_hash", json!(self.last_hash)),
            ];
            LogRecord {
                time_unix_nano: 1_700_000_000_000_000_000,
                event_name: super::GAP_EVENT.into(),
                attributes: attrs
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: (*k).into(),
                        value: Some(any(v)),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        }
    }

    /// An Export request from one workload.
    pub fn request(workload: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "envoy.node.id".into(),
                        value: Some(any(&json!(workload))),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// Sets an attribute of a record (tampering, for tests).
    pub fn set_attr(record: &mut LogRecord, key: &str, value: Value) {
        record.attributes.retain(|kv| kv.key != key);
        record.attributes.push(KeyValue {
            key: key.into(),
            value: Some(any(&value)),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use serde_json::json;

    #[test]
    fn values_convert_faithfully() {
        let v = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![
                    any(&json!("é")),
                    any(&json!(true)),
                    any(&json!(-3)),
                    any(&json!(1.5)),
                    AnyValue {
                        value: Some(any_value::Value::BytesValue(vec![0xff, 0, 1])),
                    },
                    AnyValue {
                        value: Some(any_value::Value::KvlistValue(KeyValueList {
                            values: vec![KeyValue {
                                key: "k".into(),
                                value: Some(any(&json!(1))),
                                ..Default::default()
                            }],
                        })),
                    },
                    AnyValue { value: None },
                ],
            })),
        };
        assert_eq!(
            any_value_to_json(&v),
            json!(["é", true, -3, 1.5, "/wAB", {"k": 1}, null])
        );
    }

    #[test]
    fn decodes_events_gaps_and_rejections() {
        let mut c = Chain::new("s1");
        let e1 = c.event("agent-a", "read:orders", "allow");
        let gap = c.drop_events(2);
        let mut unchained = c.event("agent-a", "x", "deny");
        unchained.attributes.retain(|kv| kv.key != "meshguard.seq");
        let other = opentelemetry_proto::tonic::logs::v1::LogRecord {
            event_name: "app.log".into(),
            ..Default::default()
        };
        let batch = decode(&request("node-1", vec![e1, gap, unchained, other]));
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.unchained, 1);
        assert_eq!(batch.gaps.len(), 1);
        assert_eq!(batch.rejected.len(), 1);
        assert!(
            batch.rejected[0].contains("app.log"),
            "{:?}",
            batch.rejected
        );
        let e = &batch.events[0];
        assert_eq!(e.workload, "node-1");
        let chain = e.chain.as_ref().unwrap();
        assert_eq!((chain.stream.as_str(), chain.seq), ("s1", 1));
        assert_eq!(e.content_hash, chain.hash, "an untouched event verifies");
        assert_eq!(e.text("meshguard.agent.id"), "agent-a");
        assert_eq!(e.int("meshguard.latency_us"), Some(17));
        assert_eq!(batch.gaps[0].from_seq, 2);
        assert_eq!(batch.gaps[0].to_seq, 3);
        assert!(batch.status_message().contains("1 log record(s) rejected"));
        assert!(batch.status_message().contains("stored unchained"));
    }

    #[test]
    fn tampering_changes_the_content_hash() {
        let mut c = Chain::new("s1");
        let mut e = c.event("agent-a", "delete:db", "deny");
        set_attr(&mut e, "meshguard.decision", json!("allow"));
        let batch = decode(&request("n", vec![e]));
        let ev = &batch.events[0];
        assert_ne!(ev.content_hash, ev.chain.as_ref().unwrap().hash);
    }

    #[test]
    fn bad_gap_declarations_are_rejected() {
        let mut c = Chain::new("s1");
        let mut g = c.drop_events(2);
        set_attr(&mut g, "meshguard.gap.to_seq", json!(0));
        let mut g2 = c.drop_events(1);
        g2.attributes
            .retain(|kv| kv.key != "meshguard.gap.last_hash");
        let batch = decode(&request("n", vec![g, g2]));
        assert_eq!(batch.gaps.len(), 0);
        assert_eq!(batch.rejected.len(), 2);
    }
}
