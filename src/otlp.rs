//! Just enough protobuf to write OTLP `ExportLogsServiceRequest` messages
//! (opentelemetry/proto/collector/logs/v1). Hand-written because the filter needs only a
//! handful of fields and a protobuf runtime would double the module size.

/// An OTLP `AnyValue`.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyValue<'a> {
    /// `string_value` (field 1).
    Str(&'a str),
    /// `bool_value` (field 2).
    Bool(bool),
    /// `int_value` (field 3).
    Int(i64),
    /// `array_value` of strings (field 5).
    StrArray(&'a [String]),
}

impl AnyValue<'_> {
    /// The JSON form used by the audit hash chain.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            AnyValue::Str(s) => serde_json::Value::String((*s).to_string()),
            AnyValue::Bool(b) => serde_json::Value::Bool(*b),
            AnyValue::Int(i) => serde_json::Value::from(*i),
            AnyValue::StrArray(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|s| serde_json::Value::String(s.clone()))
                    .collect(),
            ),
        }
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// Writes a length-delimited field.
pub fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn string_field(out: &mut Vec<u8>, field: u32, s: &str) {
    bytes_field(out, field, s.as_bytes());
}

fn fixed64_field(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, 0);
    varint(out, v);
}

fn any_value(v: &AnyValue<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        AnyValue::Str(s) => string_field(&mut out, 1, s),
        AnyValue::Bool(b) => varint_field(&mut out, 2, u64::from(*b)),
        AnyValue::Int(i) => varint_field(&mut out, 3, *i as u64),
        AnyValue::StrArray(items) => {
            let mut arr = Vec::new();
            for s in items.iter() {
                bytes_field(&mut arr, 1, &any_value(&AnyValue::Str(s)));
            }
            bytes_field(&mut out, 5, &arr);
        }
    }
    out
}

/// Writes a `KeyValue` as field `field` of the enclosing message.
pub fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &AnyValue<'_>) {
    let mut kv = Vec::with_capacity(key.len() + 16);
    string_field(&mut kv, 1, key);
    bytes_field(&mut kv, 2, &any_value(value));
    bytes_field(out, field, &kv);
}

/// The parts of a `LogRecord` MeshGuard writes.
#[derive(Debug, Clone)]
pub struct LogRecord<'a> {
    /// `time_unix_nano` and `observed_time_unix_nano`.
    pub time_unix_nano: u64,
    /// OTLP severity number (9 = INFO, 13 = WARN).
    pub severity_number: u32,
    /// `severity_text`.
    pub severity_text: &'a str,
    /// `body` (a string).
    pub body: &'a str,
    /// `event_name`.
    pub event_name: &'a str,
    /// 16 bytes, or empty.
    pub trace_id: &'a [u8],
    /// 8 bytes, or empty.
    pub span_id: &'a [u8],
    /// Attributes.
    pub attributes: &'a [(&'a str, AnyValue<'a>)],
}

/// Encodes one `LogRecord` message (without its enclosing tag), so records can be encoded
/// at request time and concatenated into a batch later.
pub fn encode_log_record(r: &LogRecord<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    fixed64_field(&mut out, 1, r.time_unix_nano);
    varint_field(&mut out, 2, u64::from(r.severity_number));
    string_field(&mut out, 3, r.severity_text);
    bytes_field(&mut out, 5, &any_value(&AnyValue::Str(r.body)));
    for (k, v) in r.attributes {
        key_value(&mut out, 6, k, v);
    }
    if r.trace_id.len() == 16 {
        bytes_field(&mut out, 9, r.trace_id);
    }
    if r.span_id.len() == 8 {
        bytes_field(&mut out, 10, r.span_id);
    }
    fixed64_field(&mut out, 11, r.time_unix_nano);
    if !r.event_name.is_empty() {
        string_field(&mut out, 12, r.event_name);
    }
    out
}

/// Wraps encoded `LogRecord`s into one `ExportLogsServiceRequest` with one resource and
/// one instrumentation scope.
pub fn export_request<'r>(
    resource_attributes: &[(&str, AnyValue<'_>)],
    scope_name: &str,
    scope_version: &str,
    records: impl IntoIterator<Item = &'r [u8]>,
) -> Vec<u8> {
    let mut resource = Vec::new();
    for (k, v) in resource_attributes {
        key_value(&mut resource, 1, k, v);
    }
    let mut scope = Vec::new();
    string_field(&mut scope, 1, scope_name);
    string_field(&mut scope, 2, scope_version);
    let mut scope_logs = Vec::new();
    bytes_field(&mut scope_logs, 1, &scope);
    for r in records {
        bytes_field(&mut scope_logs, 2, r);
    }
    let mut resource_logs = Vec::with_capacity(scope_logs.len() + resource.len() + 16);
    bytes_field(&mut resource_logs, 1, &resource);
    bytes_field(&mut resource_logs, 2, &scope_logs);
    let mut req = Vec::with_capacity(resource_logs.len() + 8);
    bytes_field(&mut req, 1, &resource_logs);
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_encode_like_protobuf() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, vec![0xac, 0x02]);
        let mut v = Vec::new();
        varint(&mut v, u64::MAX);
        assert_eq!(v.len(), 10);
    }

    #[test]
    fn key_value_layout() {
        let mut out = Vec::new();
        key_value(&mut out, 6, "a", &AnyValue::Bool(true));
        // field 6 LEN, KeyValue{ key(1)="a", value(2)=AnyValue{bool(2)=1} }
        assert_eq!(
            out,
            vec![0x32, 0x07, 0x0a, 0x01, b'a', 0x12, 0x02, 0x10, 0x01]
        );
    }
}
