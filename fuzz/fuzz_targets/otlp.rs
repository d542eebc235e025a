//! OTLP encoding round trip: arbitrary log records and audit events encoded by the
//! filter's hand-written protobuf writer, decoded with the maintained generated types
//! (opentelemetry-proto + prost), compared field by field. Audit events also go through
//! the hash-chain sealing, and the decoded attributes must re-hash (`event_chain_hash`, what the
//! collector verifies) to the `meshguard.hash` the filter wrote.
#![no_main]
// A target reports a finding by panicking: that is its whole job.
#![allow(clippy::panic)]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use meshguard::audit::otlp::{self, AnyValue, LogRecord};
use meshguard::audit::{event_chain_hash, AuditBuffer, AuditEvent, Chain};
use meshguard::config::AuditConfig;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue as PbValue};
use prost::Message;

enum Owned {
    Str(String),
    Bool(bool),
    Int(i64),
    StrArray(Vec<String>),
}

impl Owned {
    fn view(&self) -> AnyValue<'_> {
        match self {
            Owned::Str(s) => AnyValue::Str(s),
            Owned::Bool(b) => AnyValue::Bool(*b),
            Owned::Int(i) => AnyValue::Int(*i),
            Owned::StrArray(a) => AnyValue::StrArray(a),
        }
    }
}

fn owned(u: &mut Unstructured<'_>) -> Result<Owned> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => Owned::Str(u.arbitrary()?),
        1 => Owned::Bool(u.arbitrary()?),
        2 => Owned::Int(u.arbitrary()?),
        _ => Owned::StrArray(u.arbitrary()?),
    })
}

/// The decoded value as the filter meant it.
fn same(pb: Option<&PbValue>, v: &AnyValue<'_>) -> bool {
    let Some(inner) = pb.and_then(|p| p.value.as_ref()) else {
        // proto3 drops default scalars only inside oneofs when unset; the filter always
        // sets the oneof, so an empty value is a mismatch.
        return false;
    };
    match (inner, v) {
        (any_value::Value::StringValue(a), AnyValue::Str(b)) => a == b,
        (any_value::Value::BoolValue(a), AnyValue::Bool(b)) => a == b,
        (any_value::Value::IntValue(a), AnyValue::Int(b)) => a == b,
        (any_value::Value::ArrayValue(a), AnyValue::StrArray(b)) => {
            a.values.len() == b.len()
                && a.values.iter().zip(b.iter()).all(
                    |(x, y)| matches!(&x.value, Some(any_value::Value::StringValue(s)) if s == y),
                )
        }
        _ => false,
    }
}

fn to_json(pb: Option<&PbValue>) -> serde_json::Value {
    match pb.and_then(|p| p.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => serde_json::Value::from(*i),
        Some(any_value::Value::ArrayValue(a)) => {
            serde_json::Value::Array(a.values.iter().map(|v| to_json(Some(v))).collect())
        }
        _ => serde_json::Value::Null,
    }
}

fn records(u: &mut Unstructured<'_>) -> Result<()> {
    let resource: Vec<(String, Owned)> = (0..u.int_in_range(0..=3u8)?)
        .map(|_| Ok((u.arbitrary()?, owned(u)?)))
        .collect::<Result<_>>()?;
    let attrs: Vec<(String, Owned)> = (0..u.int_in_range(0..=12u8)?)
        .map(|_| Ok((u.arbitrary()?, owned(u)?)))
        .collect::<Result<_>>()?;
    let severity_text: String = u.arbitrary()?;
    let body: String = u.arbitrary()?;
    let event_name: String = u.arbitrary()?;
    let trace_id: Vec<u8> = u.arbitrary()?;
    let span_id: Vec<u8> = u.arbitrary()?;
    let time: u64 = u.arbitrary()?;
    let severity: u32 = u.arbitrary()?;
    let scope: (String, String) = u.arbitrary()?;
    let attr_views: Vec<(&str, AnyValue<'_>)> =
        attrs.iter().map(|(k, v)| (k.as_str(), v.view())).collect();
    let resource_views: Vec<(&str, AnyValue<'_>)> = resource
        .iter()
        .map(|(k, v)| (k.as_str(), v.view()))
        .collect();
    for (_, v) in &attr_views {
        // The chain's canonical JSON, written without building it, is serde_json's.
        let mut written = Vec::new();
        v.write_json(&mut written);
        let expected = serde_json::to_vec(&v.to_json()).unwrap_or_default();
        assert_eq!(
            written, expected,
            "write_json differs from serde_json for {v:?}"
        );
    }
    let record = otlp::encode_log_record(&LogRecord {
        time_unix_nano: time,
        severity_number: severity,
        severity_text: &severity_text,
        body: &body,
        event_name: &event_name,
        trace_id: &trace_id,
        span_id: &span_id,
        attributes: &attr_views,
    });
    let n = u.int_in_range(1..=3u8)?;
    let message = otlp::export_request(
        &resource_views,
        &scope.0,
        &scope.1,
        (0..n).map(|_| record.as_slice()),
    );
    let decoded = match ExportLogsServiceRequest::decode(message.as_slice()) {
        Ok(d) => d,
        Err(e) => panic!("the filter's OTLP does not decode: {e}"),
    };
    assert_eq!(decoded.resource_logs.len(), 1);
    for rl in &decoded.resource_logs {
        let res = rl
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        assert_eq!(res.len(), resource_views.len());
        for (kv, (k, v)) in res.iter().zip(&resource_views) {
            assert_eq!(&kv.key, k);
            assert!(same(kv.value.as_ref(), v), "resource attribute {k:?}");
        }
        assert_eq!(rl.scope_logs.len(), 1);
        for sl in &rl.scope_logs {
            let s = sl.scope.as_ref();
            assert_eq!(s.map(|s| s.name.as_str()), Some(scope.0.as_str()));
            assert_eq!(s.map(|s| s.version.as_str()), Some(scope.1.as_str()));
            assert_eq!(sl.log_records.len(), usize::from(n));
            for r in &sl.log_records {
                assert_eq!(r.time_unix_nano, time);
                assert_eq!(r.observed_time_unix_nano, time);
                assert_eq!(
                    r.severity_number,
                    i32::from_ne_bytes(severity.to_ne_bytes())
                );
                assert_eq!(r.severity_text, severity_text);
                assert!(same(r.body.as_ref(), &AnyValue::Str(&body)), "body");
                assert_eq!(r.event_name, event_name);
                let want_trace: &[u8] = if trace_id.len() == 16 { &trace_id } else { &[] };
                let want_span: &[u8] = if span_id.len() == 8 { &span_id } else { &[] };
                assert_eq!(r.trace_id, want_trace);
                assert_eq!(r.span_id, want_span);
                assert_eq!(r.attributes.len(), attr_views.len());
                for (kv, (k, v)) in r.attributes.iter().zip(&attr_views) {
                    assert_eq!(&kv.key, k);
                    assert!(same(kv.value.as_ref(), v), "attribute {k:?}");
                }
            }
        }
    }
    Ok(())
}

fn sealed_events(u: &mut Unstructured<'_>) -> Result<()> {
    let cfg = AuditConfig::default();
    let mut buffer = AuditBuffer::new(&cfg, Chain::new(u.arbitrary::<String>()?));
    let n = u.int_in_range(1..=4u8)?;
    for _ in 0..n {
        let event = AuditEvent {
            time_unix_nano: u.arbitrary()?,
            trace_id: u.arbitrary()?,
            span_id: u.arbitrary()?,
            decision: u.arbitrary()?,
            effect: u.arbitrary()?,
            enforced: u.arbitrary()?,
            agent_id: u.arbitrary()?,
            trust_tier: u.arbitrary()?,
            delegation_chain: u.arbitrary()?,
            action: u.arbitrary()?,
            resource: u.arbitrary()?,
            reason: u.arbitrary()?,
            path: u.arbitrary()?,
            latency_us: u.arbitrary()?,
            status: u.arbitrary()?,
            ..AuditEvent::default()
        };
        buffer.push(event);
    }
    let Some((_, message)) = buffer.take_batch(u64::MAX / 2, 1, &[]) else {
        return Ok(());
    };
    let decoded = match ExportLogsServiceRequest::decode(message.as_slice()) {
        Ok(d) => d,
        Err(e) => panic!("a sealed batch does not decode: {e}"),
    };
    let mut prev = meshguard::audit::CHAIN_GENESIS.to_string();
    for r in decoded
        .resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .filter(|r| r.event_name == "meshguard.decision")
    {
        let attrs: Vec<(&str, serde_json::Value)> = r
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), to_json(kv.value.as_ref())))
            .collect();
        let get = |k: &str| attrs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        let hash = get("meshguard.hash").and_then(|v| v.as_str().map(str::to_string));
        let prev_hash = get("meshguard.prev_hash").and_then(|v| v.as_str().map(str::to_string));
        assert_eq!(prev_hash.as_deref(), Some(prev.as_str()), "chain link");
        let computed = event_chain_hash(
            &prev,
            r.time_unix_nano,
            &meshguard::hex::hex(&r.trace_id),
            &attrs,
        );
        assert_eq!(
            hash.as_deref(),
            Some(computed.as_str()),
            "sealed hash does not re-hash"
        );
        prev = computed;
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = match u.arbitrary::<bool>() {
        Ok(true) => sealed_events(&mut u),
        _ => records(&mut u),
    };
});
