//! Property tests of the audit hash chain end to end: events sealed by the filter's own
//! `AuditBuffer`, encoded as OTLP, decoded by the collector (`event::decode`) and verified
//! by the same `StreamVerifier` that `meshguard audit verify` runs.
//!
//! - any sequence of events verifies intact;
//! - any single-byte change to what the chain covers (an attribute key or value, the
//!   time, the trace id) makes it fail to verify;
//! - per event (chain v3, what the filter writes): any change to any hashed attribute key
//!   or value (`meshguard.prev_hash`, `.seq`, `.stream` included), the time or the trace
//!   id changes the recomputed hash;
//! - streams mixing v1, v2 and v3 events verify; an unknown version never does.
//!
//! Severity, body and span id are outside the chain by design (`chain_input`), so they are
//! not mutated here.

use super::event::decode;
use super::integrity::{event_hash, ChainEvent, StreamVerifier, Verdict};
use meshguard::audit::{chain_hash, chain_input, chain_input_v2, AuditBuffer, AuditEvent, Chain};
use meshguard::config::AuditConfig;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use proptest::prelude::*;
use prost::Message;
use std::collections::BTreeMap;

/// One event's free fields.
type Fields = (u64, Vec<u8>, String, String, Vec<String>, String, u16, bool);

fn fields() -> impl Strategy<Value = Fields> {
    (
        // The collector stores times as SQLite integers and refuses those past i64::MAX
        // (year 2262).
        0..=i64::MAX as u64,
        prop_oneof![Just(Vec::new()), prop::collection::vec(any::<u8>(), 16)],
        prop::sample::select(vec!["allow", "deny", "require_approval", "would_deny"])
            .prop_map(str::to_string),
        any::<String>(),
        prop::collection::vec(any::<String>(), 0..3),
        any::<String>(),
        any::<u16>(),
        any::<bool>(),
    )
}

/// The filter's Export requests for these events, as bytes on the wire.
fn seal(stream: &str, events: &[Fields]) -> Vec<Vec<u8>> {
    let cfg = AuditConfig {
        max_batch: 3,
        ..AuditConfig::default()
    };
    let mut buffer = AuditBuffer::new(&cfg, Chain::new(stream));
    for (time, trace, decision, agent, chain, action, status, enforced) in events {
        buffer.push(AuditEvent {
            time_unix_nano: *time,
            trace_id: trace.clone(),
            decision: decision.clone(),
            effect: decision.clone(),
            enforced: *enforced,
            agent_id: agent.clone(),
            delegation_chain: chain.clone(),
            action: action.clone(),
            status: *status,
            mode: "enforce".into(),
            ..AuditEvent::default()
        });
    }
    let resource = [(
        "envoy.node.id",
        meshguard::audit::otlp::AnyValue::Str("node-1"),
    )];
    let mut out = Vec::new();
    while let Some((id, bytes)) = buffer.take_batch(0, 1, &resource) {
        buffer.finish_batch(id, true, 0);
        out.push(bytes);
    }
    out
}

/// Whether the collector, given these requests, stores exactly `n` chained events in one
/// intact stream (what `meshguard audit verify` reports as intact).
fn verifies(requests: &[ExportLogsServiceRequest], n: usize) -> bool {
    let mut streams: BTreeMap<String, Vec<ChainEvent>> = BTreeMap::new();
    let mut total = 0;
    for r in requests {
        let batch = decode(r);
        if !batch.rejected.is_empty() || batch.unchained > 0 {
            return false;
        }
        for e in batch.events {
            let Some(c) = e.chain else {
                return false;
            };
            total += 1;
            streams.entry(c.stream).or_default().push(ChainEvent {
                seq: c.seq,
                time_unix_nano: e.time_unix_nano,
                trace_id: e.trace_id,
                prev_hash: c.prev_hash,
                hash: c.hash,
                attributes: e.attributes,
            });
        }
    }
    if total != n || streams.len() != 1 {
        return false;
    }
    streams.into_iter().all(|(stream, mut events)| {
        // The store keeps one event per seq, in seq order.
        events.sort_by_key(|e| e.seq);
        let before = events.len();
        events.dedup_by_key(|e| e.seq);
        if events.len() != before {
            return false;
        }
        let mut v = StreamVerifier::new("node-1", &stream, Vec::new());
        for e in &events {
            v.push(e);
        }
        v.finish(Vec::new()).verdict == Verdict::Intact
    })
}

/// Replaces one byte of `s` at `at` (modulo its length) with another ASCII byte, keeping
/// UTF-8 valid: only ASCII positions are changed. Returns false when there is none.
fn change_ascii_byte(s: &mut String, at: usize, to: u8) -> bool {
    let ascii: Vec<usize> = s
        .bytes()
        .enumerate()
        .filter(|(_, b)| b.is_ascii())
        .map(|(i, _)| i)
        .collect();
    let Some(&i) = ascii.get(at % ascii.len().max(1)) else {
        return false;
    };
    let mut bytes = std::mem::take(s).into_bytes();
    let Some(b) = bytes.get_mut(i) else {
        return false;
    };
    let new = to % 128;
    *b = if new == *b { (new + 1) % 128 } else { new };
    match String::from_utf8(bytes) {
        Ok(t) => {
            *s = t;
            true
        }
        Err(_) => false,
    }
}

/// One single-byte change somewhere the chain covers: `which` picks the record, `what`
/// the field, `at` the byte and `to` its new value. Returns false when the chosen field
/// has no byte to change (the caller then skips the case).
fn mutate(
    requests: &mut [ExportLogsServiceRequest],
    which: usize,
    what: usize,
    at: usize,
    to: u8,
) -> bool {
    let mut records: Vec<_> = requests
        .iter_mut()
        .flat_map(|r| r.resource_logs.iter_mut())
        .flat_map(|rl| rl.scope_logs.iter_mut())
        .flat_map(|sl| sl.log_records.iter_mut())
        .collect();
    let n = records.len();
    let Some(record) = records.get_mut(which % n.max(1)) else {
        return false;
    };
    match what % 4 {
        0 => {
            let mut t = record.time_unix_nano.to_le_bytes();
            let i = at % 8;
            let Some(b) = t.get_mut(i) else { return false };
            *b = if *b == to { to.wrapping_add(1) } else { to };
            record.time_unix_nano = u64::from_le_bytes(t);
            true
        }
        1 => {
            let i = at % record.trace_id.len().max(1);
            match record.trace_id.get_mut(i) {
                Some(b) => {
                    *b = if *b == to { to.wrapping_add(1) } else { to };
                    true
                }
                None => false,
            }
        }
        2 => {
            let k = at % record.attributes.len().max(1);
            match record.attributes.get_mut(k) {
                Some(kv) => change_ascii_byte(&mut kv.key, at / 7, to),
                None => false,
            }
        }
        _ => {
            let k = at % record.attributes.len().max(1);
            let Some(value) = record
                .attributes
                .get_mut(k)
                .and_then(|kv| kv.value.as_mut())
                .and_then(|v| v.value.as_mut())
            else {
                return false;
            };
            match value {
                any_value::Value::StringValue(s) => change_ascii_byte(s, at / 7, to),
                any_value::Value::IntValue(i) => {
                    let mut b = i.to_le_bytes();
                    let Some(x) = b.get_mut(at % 8) else {
                        return false;
                    };
                    *x = if *x == to { to.wrapping_add(1) } else { to };
                    *i = i64::from_le_bytes(b);
                    true
                }
                any_value::Value::BoolValue(b) => {
                    *b = !*b;
                    true
                }
                any_value::Value::ArrayValue(a) => {
                    let len = a.values.len();
                    match a
                        .values
                        .get_mut(at % len.max(1))
                        .and_then(|v| v.value.as_mut())
                    {
                        Some(any_value::Value::StringValue(s)) => change_ascii_byte(s, at / 7, to),
                        _ => false,
                    }
                }
                _ => false,
            }
        }
    }
}

/// The chained events of these requests, as the store keeps them, in seq order.
fn chain_events(requests: &[ExportLogsServiceRequest]) -> Vec<ChainEvent> {
    let mut events: Vec<ChainEvent> = requests
        .iter()
        .flat_map(|r| decode(r).events)
        .filter_map(|e| {
            let c = e.chain?;
            Some(ChainEvent {
                seq: c.seq,
                time_unix_nano: e.time_unix_nano,
                trace_id: e.trace_id,
                prev_hash: c.prev_hash,
                hash: c.hash,
                attributes: e.attributes,
            })
        })
        .collect();
    events.sort_by_key(|e| e.seq);
    events
}

fn verdict(stream: &str, events: &[ChainEvent]) -> Verdict {
    let mut v = StreamVerifier::new("node-1", stream, Vec::new());
    for e in events {
        v.push(e);
    }
    v.finish(Vec::new()).verdict
}

/// Re-seals `e` (linked to `prev`) in chain version `version` (1: no version attribute),
/// as a filter of that version would have; version 9 stands for an unknown one.
fn reseal(e: &mut ChainEvent, prev: &str, version: u8) {
    let a = &mut e.attributes;
    a.insert("meshguard.prev_hash".into(), prev.into());
    a.remove("meshguard.hash");
    if version == 1 {
        a.remove("meshguard.chain.version");
    } else {
        a.insert("meshguard.chain.version".into(), version.into());
    }
    let attrs: Vec<(&str, serde_json::Value)> =
        a.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let hash = match version {
        1 => chain_hash(&chain_input(prev, e.time_unix_nano, &e.trace_id, &attrs)),
        2 => chain_hash(&chain_input_v2(e.time_unix_nano, &e.trace_id, &attrs)),
        3 => event_hash(prev, e.time_unix_nano, &e.trace_id, a),
        // what a v3 filter would hash, under a version no verifier knows
        _ => {
            a.insert("meshguard.chain.version".into(), 3.into());
            let h = event_hash(prev, e.time_unix_nano, &e.trace_id, a);
            a.insert("meshguard.chain.version".into(), version.into());
            h
        }
    };
    a.insert("meshguard.hash".into(), hash.clone().into());
    e.prev_hash = prev.to_string();
    e.hash = hash;
}

/// One change to what an event's hash covers: `what` picks time, trace id, a key or a
/// value, `at` where. Returns false when there is nothing to change there.
fn change_event(e: &mut ChainEvent, what: usize, at: usize, to: u8) -> bool {
    use serde_json::Value;
    let keys: Vec<String> = e
        .attributes
        .keys()
        .filter(|k| k.as_str() != "meshguard.hash")
        .cloned()
        .collect();
    let Some(key) = keys.get(at % keys.len().max(1)).cloned() else {
        return false;
    };
    match what % 4 {
        0 => {
            e.time_unix_nano ^= 1 << (at % 64);
            true
        }
        1 => {
            // a trace id added, removed or changed
            e.trace_id = if e.trace_id.is_empty() {
                format!("{:032x}", at | 1)
            } else if at.is_multiple_of(3) {
                String::new()
            } else {
                let mut t = e.trace_id.clone().into_bytes();
                if let Some(b) = t.get_mut(at % 32) {
                    *b = if *b == b'0' { b'1' } else { b'0' };
                }
                String::from_utf8(t).unwrap_or_default()
            };
            true
        }
        2 => {
            let mut new = key.clone();
            if !change_ascii_byte(&mut new, at / 7, to) || e.attributes.contains_key(&new) {
                return false;
            }
            let Some(v) = e.attributes.remove(&key) else {
                return false;
            };
            e.attributes.insert(new, v);
            true
        }
        _ => {
            let Some(v) = e.attributes.get_mut(&key) else {
                return false;
            };
            *v = match v.take() {
                Value::String(mut s) => {
                    if !change_ascii_byte(&mut s, at / 7, to) {
                        s.push(char::from(b'a' + to % 26));
                    }
                    Value::String(s)
                }
                Value::Bool(b) => Value::Bool(!b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => Value::from(i ^ (1 << (at % 63))),
                    None => Value::from(0),
                },
                Value::Array(mut items) => {
                    if items.is_empty() || at.is_multiple_of(2) {
                        items.push(Value::String(String::new()));
                    } else {
                        items.pop();
                    }
                    Value::Array(items)
                }
                // a value of another type: the same text as a string
                other => Value::String(other.to_string()),
            };
            true
        }
    }
}

fn decoded(wire: &[Vec<u8>]) -> Vec<ExportLogsServiceRequest> {
    wire.iter()
        .map(|b| ExportLogsServiceRequest::decode(b.as_slice()))
        .collect::<Result<_, _>>()
        .unwrap_or_default()
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the events, the sealed stream verifies intact at the collector.
    #[test]
    fn any_event_sequence_verifies(stream in "[a-z0-9-]{1,12}", events in prop::collection::vec(fields(), 1..8)) {
        let wire = seal(&stream, &events);
        let requests = decoded(&wire);
        prop_assert_eq!(requests.len(), wire.len(), "the filter's Export does not decode");
        prop_assert!(verifies(&requests, events.len()));
    }

    /// Any single-byte change to a chained field of any event breaks verification.
    #[test]
    fn any_single_byte_change_breaks_the_chain(
        stream in "[a-z0-9-]{1,12}",
        events in prop::collection::vec(fields(), 1..6),
        which in any::<usize>(),
        what in any::<usize>(),
        at in any::<usize>(),
        to in any::<u8>(),
    ) {
        let mut requests = decoded(&seal(&stream, &events));
        prop_assume!(mutate(&mut requests, which, what, at, to));
        prop_assert!(!verifies(&requests, events.len()), "a changed byte went unnoticed");
    }

    /// Per event: any change to what chain v3 covers changes the recomputed hash.
    #[test]
    fn any_change_to_an_event_changes_its_v3_hash(
        events in prop::collection::vec(fields(), 1..4),
        which in any::<usize>(),
        what in any::<usize>(),
        at in any::<usize>(),
        to in any::<u8>(),
    ) {
        let mut stored = chain_events(&decoded(&seal("s", &events)));
        let n = stored.len();
        prop_assert_eq!(n, events.len());
        let Some(e) = stored.get_mut(which % n) else { return Ok(()) };
        prop_assert_eq!(e.attributes.get("meshguard.chain.version"), Some(&3.into()));
        prop_assert_eq!(&event_hash(&e.prev_hash, e.time_unix_nano, &e.trace_id, &e.attributes), &e.hash);
        let before = e.hash.clone();
        prop_assume!(change_event(e, what, at, to));
        prop_assert_ne!(event_hash(&e.prev_hash, e.time_unix_nano, &e.trace_id, &e.attributes), before);
    }

    /// A stream whose events are of versions 1, 2 and 3 in any order verifies intact
    /// (each event by its own version); one event of an unknown version makes it fail.
    #[test]
    fn mixed_version_streams_verify_and_unknown_versions_do_not(
        events in prop::collection::vec(fields(), 1..6),
        versions in prop::collection::vec(1u8..=3, 6),
        unknown in any::<usize>(),
    ) {
        let mut stored = chain_events(&decoded(&seal("s", &events)));
        let mut prev = meshguard::audit::CHAIN_GENESIS.to_string();
        for (e, v) in stored.iter_mut().zip(&versions) {
            reseal(e, &prev, *v);
            prev = e.hash.clone();
        }
        prop_assert_eq!(verdict("s", &stored), Verdict::Intact);
        let n = stored.len();
        let mut prev = meshguard::audit::CHAIN_GENESIS.to_string();
        for (i, (e, v)) in stored.iter_mut().zip(&versions).enumerate() {
            reseal(e, &prev, if i == unknown % n { 9 } else { *v });
            prev = e.hash.clone();
        }
        prop_assert_ne!(verdict("s", &stored), Verdict::Intact);
    }
}
