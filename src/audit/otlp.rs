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
    /// `bytes_value` (field 7). The filter never sends it; the v2 chain input uses it for
    /// stored values of any other JSON type, so they can never hash like a string.
    Bytes(&'a [u8]),
}

impl AnyValue<'_> {
    /// Appends the compact JSON of the value, byte-identical to `serde_json::to_string`
    /// of [`AnyValue::to_json`] (the audit chain's canonical form), without building it.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            AnyValue::Str(s) => {
                let _ = serde_json::to_writer(&mut *out, s);
            }
            AnyValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            AnyValue::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
            AnyValue::StrArray(items) => {
                out.push(b'[');
                for (n, s) in items.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    let _ = serde_json::to_writer(&mut *out, s);
                }
                out.push(b']');
            }
            AnyValue::Bytes(b) => {
                out.extend_from_slice(&serde_json::to_vec(&base64(b)).unwrap_or_default())
            }
        }
    }

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
            AnyValue::Bytes(b) => serde_json::Value::String(base64(b)),
        }
    }
}

fn base64(b: &[u8]) -> String {
    use ct_codecs::Encoder;
    ct_codecs::Base64::encode_to_string(b).unwrap_or_default()
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

fn varint_len(v: u64) -> usize {
    // 7 payload bits per byte, at least one byte
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn len_field_len(field: u32, len: usize) -> usize {
    varint_len(u64::from(field) << 3) + varint_len(len as u64) + len
}

/// Encoded size of an `AnyValue` message: nested messages are written with their length
/// computed up front instead of through temporary buffers (this is per request).
fn any_value_len(v: &AnyValue<'_>) -> usize {
    match v {
        AnyValue::Str(s) => len_field_len(1, s.len()),
        AnyValue::Bool(_) => 2,
        AnyValue::Int(i) => 1 + varint_len(*i as u64),
        AnyValue::StrArray(items) => {
            let arr: usize = items
                .iter()
                .map(|s| len_field_len(1, len_field_len(1, s.len())))
                .sum();
            len_field_len(5, arr)
        }
        AnyValue::Bytes(b) => len_field_len(7, b.len()),
    }
}

fn write_any_value(out: &mut Vec<u8>, v: &AnyValue<'_>) {
    match v {
        AnyValue::Str(s) => string_field(out, 1, s),
        AnyValue::Bool(b) => varint_field(out, 2, u64::from(*b)),
        AnyValue::Int(i) => varint_field(out, 3, *i as u64),
        AnyValue::StrArray(items) => {
            let arr: usize = items
                .iter()
                .map(|s| len_field_len(1, len_field_len(1, s.len())))
                .sum();
            tag(out, 5, 2);
            varint(out, arr as u64);
            for s in items.iter() {
                tag(out, 1, 2);
                varint(out, len_field_len(1, s.len()) as u64);
                string_field(out, 1, s);
            }
        }
        AnyValue::Bytes(b) => bytes_field(out, 7, b),
    }
}

/// Encoded size of a `KeyValue` written by [`key_value`] as field 6.
fn key_value_len(key: &str, value: &AnyValue<'_>) -> usize {
    len_field_len(
        6,
        len_field_len(1, key.len()) + len_field_len(2, any_value_len(value)),
    )
}

/// Writes a `KeyValue` as field `field` of the enclosing message.
pub fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &AnyValue<'_>) {
    let value_len = any_value_len(value);
    tag(out, field, 2);
    varint(
        out,
        (len_field_len(1, key.len()) + len_field_len(2, value_len)) as u64,
    );
    string_field(out, 1, key);
    tag(out, 2, 2);
    varint(out, value_len as u64);
    write_any_value(out, value);
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
    tag(&mut out, 5, 2);
    varint(&mut out, any_value_len(&AnyValue::Str(r.body)) as u64);
    write_any_value(&mut out, &AnyValue::Str(r.body));
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

/// A decision `LogRecord` with its chain hash (README, "Hash chain"): the attributes as
/// given, then `meshguard.hash`. `body` is written from its parts, unjoined, and the
/// record's size is reserved up front so the buffer never grows while it is written.
pub fn encode_chained_record(r: &LogRecord<'_>, body: &[&str], hash: &str) -> Vec<u8> {
    let body_len: usize = body.iter().map(|p| p.len()).sum();
    let attributes_len: usize = r
        .attributes
        .iter()
        .map(|(k, v)| key_value_len(k, v))
        .sum::<usize>()
        + key_value_len("meshguard.hash", &AnyValue::Str(hash));
    let mut out = Vec::with_capacity(
        9 + 2
            + len_field_len(3, r.severity_text.len())
            + len_field_len(5, len_field_len(1, body_len))
            + attributes_len
            + 18
            + 10
            + 9
            + len_field_len(12, r.event_name.len()),
    );
    fixed64_field(&mut out, 1, r.time_unix_nano);
    varint_field(&mut out, 2, u64::from(r.severity_number));
    string_field(&mut out, 3, r.severity_text);
    tag(&mut out, 5, 2);
    varint(&mut out, len_field_len(1, body_len) as u64);
    tag(&mut out, 1, 2);
    varint(&mut out, body_len as u64);
    for p in body {
        out.extend_from_slice(p.as_bytes());
    }
    for (k, v) in r.attributes {
        key_value(&mut out, 6, k, v);
    }
    key_value(&mut out, 6, "meshguard.hash", &AnyValue::Str(hash));
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
    records: impl IntoIterator<Item = &'r [u8]> + Clone,
) -> Vec<u8> {
    let mut resource = Vec::new();
    for (k, v) in resource_attributes {
        key_value(&mut resource, 1, k, v);
    }
    let scope_len = len_field_len(1, scope_name.len()) + len_field_len(2, scope_version.len());
    // Lengths first, then one write into one buffer: a batch is up to a megabyte and
    // copying it through nested temporaries showed up in the flush cost.
    let scope_logs_len = len_field_len(1, scope_len)
        + records
            .clone()
            .into_iter()
            .map(|r| len_field_len(2, r.len()))
            .sum::<usize>();
    let resource_logs_len = len_field_len(1, resource.len()) + len_field_len(2, scope_logs_len);
    let mut req = Vec::with_capacity(len_field_len(1, resource_logs_len));
    tag(&mut req, 1, 2);
    varint(&mut req, resource_logs_len as u64);
    bytes_field(&mut req, 1, &resource);
    tag(&mut req, 2, 2);
    varint(&mut req, scope_logs_len as u64);
    tag(&mut req, 1, 2);
    varint(&mut req, scope_len as u64);
    string_field(&mut req, 1, scope_name);
    string_field(&mut req, 2, scope_version);
    for r in records {
        bytes_field(&mut req, 2, r);
    }
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
    fn write_json_matches_serde_json() {
        let arr = vec!["a\"b".to_string(), "é\n\u{1}".to_string()];
        for v in [
            AnyValue::Str("x\"y\\z\t\u{7f}\u{2028}é"),
            AnyValue::Bool(false),
            AnyValue::Int(-42),
            AnyValue::StrArray(&arr),
            AnyValue::StrArray(&[]),
        ] {
            let mut out = Vec::new();
            v.write_json(&mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&v.to_json()).unwrap()
            );
        }
    }

    #[test]
    fn computed_lengths_match_written_lengths() {
        let arr = vec!["a".repeat(200), String::new(), "é".into()];
        for v in [
            AnyValue::Str(&"x".repeat(300)),
            AnyValue::Bool(true),
            AnyValue::Int(-1),
            AnyValue::Int(5),
            AnyValue::StrArray(&arr),
        ] {
            let mut out = Vec::new();
            write_any_value(&mut out, &v);
            assert_eq!(out.len(), any_value_len(&v));
        }
        for n in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut out = Vec::new();
            varint(&mut out, n);
            assert_eq!(out.len(), varint_len(n), "{n}");
        }
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
