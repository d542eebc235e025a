//! Chain v3 (README, "Hash chain"): the bytes hashed for one audit event, compact.
//!
//! Why a v3: in V8, sealing a v2 event cost ~24 µs of the worker's CPU, 69 % of it SHA-256
//! over ~0.9 KB of protobuf attribute bytes, most of them the attribute *keys*. v3 writes a
//! known key as its one-byte id from [`KEYS`] and a value with a one-byte type and a varint
//! length, so the same event hashes ~0.4 KB, and hashes it with BLAKE2b-256 ([`hash`]).
//! Measured in V8 (bench/README.md, "Chain v3", 5 interleaved rounds): flush per event,
//! median, 15.2 µs (v2) → 9.9 µs (this input, SHA-256) → 6.5 µs (this input, BLAKE2b).
//!
//! ```text
//! "meshguard-audit-v3\n"      19 bytes
//! time_unix_nano              8 bytes, little-endian
//! trace_id                    16 bytes, or 16 zero bytes when absent
//! attributes                  every attribute except meshguard.hash, known keys by
//!                             ascending id, then unknown keys sorted by key bytes:
//!   key    id (1 byte, 0x01..=0x7f, from KEYS)  |  0x00 varint(len) key-bytes
//!   value  0x01 varint(len) utf8                 string
//!          0x02 0x00|0x01                        bool
//!          0x03 varint(two's complement u64)     integer
//!          0x05 varint(count) {varint(len) utf8} array of strings
//!          0x07 varint(len) compact-JSON         any other stored JSON (never sent)
//! ```
//!
//! Every part is self-delimiting, so different attribute sets never give the same bytes.

use super::otlp::AnyValue;

/// The domain prefix of a v3 chain input.
pub const DOMAIN: &[u8] = b"meshguard-audit-v3\n";

/// The v3 key table: a key's id is its position here plus one. Part of the v3 contract:
/// a key may only ever be appended to a new version's table, never moved. The order is
/// the order [`super::AuditEvent::attributes`] and the chain fields are written in, so the
/// filter seals without sorting.
pub const KEYS: [&str; 38] = [
    "meshguard.decision",
    "meshguard.effect",
    "meshguard.enforced",
    "meshguard.agent.id",
    "meshguard.trust_tier",
    "meshguard.delegation.chain",
    "meshguard.delegation.depth",
    "meshguard.action",
    "meshguard.resource",
    "meshguard.policy",
    "meshguard.rule",
    "meshguard.reason",
    "meshguard.mode",
    "meshguard.bundle.version",
    "meshguard.identity.error",
    "http.request.method",
    "url.path",
    "server.address",
    "http.response.status_code",
    "meshguard.request_id",
    "meshguard.latency_us",
    "mcp.method.name",
    "gen_ai.tool.name",
    "mcp.session.id",
    "mcp.protocol.version",
    "mcp.resource.uri",
    "jsonrpc.request.id",
    "meshguard.mcp.arguments",
    "meshguard.a2a.method",
    "meshguard.shadow.policy",
    "meshguard.approval_id",
    "meshguard.grant",
    "meshguard.inputs",
    "meshguard.mcp.argument_keys",
    "meshguard.stream",
    "meshguard.seq",
    "meshguard.prev_hash",
    "meshguard.chain.version",
];

/// The escape byte before a key that is not in [`KEYS`].
const UNKNOWN_KEY: u8 = 0x00;

/// BLAKE2b with a 32-byte digest (RFC 7693, digest length parameter 32, no key) of a
/// chain input. Not SHA-256 as in v1/v2: on the v3 input it took the V8 flush from 9.9 to
/// 6.5 µs per event (median of 5 interleaved rounds; 64-bit operations over 128-byte
/// blocks), for 24 KB of module.
pub fn hash(input: &[u8]) -> blake2b_simd::Hash {
    blake2b_simd::Params::new().hash_length(32).hash(input)
}

/// A key's id in [`KEYS`], or `None`.
pub fn key_id(key: &str) -> Option<u8> {
    KEYS.iter()
        .position(|k| *k == key)
        .and_then(|p| u8::try_from(p + 1).ok())
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Writes the domain prefix, the time and the trace id.
pub fn write_header(out: &mut Vec<u8>, time_unix_nano: u64, trace_id: &[u8]) {
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&time_unix_nano.to_le_bytes());
    out.extend_from_slice(if trace_id.len() == 16 {
        trace_id
    } else {
        &[0u8; 16]
    });
}

fn write_key(out: &mut Vec<u8>, id: Option<u8>, key: &str) {
    match id {
        Some(id) => out.push(id),
        None => {
            out.push(UNKNOWN_KEY);
            string(out, key.as_bytes());
        }
    }
}

fn write_value(out: &mut Vec<u8>, value: &AnyValue<'_>) {
    match value {
        AnyValue::Str(s) => {
            out.push(0x01);
            string(out, s.as_bytes());
        }
        AnyValue::Bool(b) => out.extend_from_slice(&[0x02, u8::from(*b)]),
        AnyValue::Int(i) => {
            out.push(0x03);
            varint(out, *i as u64);
        }
        AnyValue::StrArray(items) => {
            out.push(0x05);
            varint(out, items.len() as u64);
            for s in items.iter() {
                string(out, s.as_bytes());
            }
        }
        AnyValue::Bytes(b) => {
            out.push(0x07);
            string(out, b);
        }
    }
}

/// Writes the attributes (`meshguard.hash` is skipped) in v3 order. Attributes already in
/// [`KEYS`] order, as the filter writes them, are written in one pass: the id lookup walks
/// the table forward once instead of searching it per key. Anything else (a verifier's
/// stored map, an unknown key) is sorted first.
pub fn write_attributes(out: &mut Vec<u8>, attributes: &[(&str, AnyValue<'_>)]) {
    let mut ids = Vec::with_capacity(attributes.len());
    let mut from = 0;
    let mut in_order = true;
    for (k, _) in attributes {
        if *k == "meshguard.hash" {
            ids.push(None);
            continue;
        }
        let id = KEYS
            .iter()
            .skip(from)
            .position(|t| t == k)
            .map(|p| from + p + 1);
        match id {
            Some(id) => from = id,
            None => in_order = false,
        }
        ids.push(id.and_then(|id| u8::try_from(id).ok()));
    }
    if in_order {
        for ((k, v), id) in attributes.iter().zip(&ids) {
            if *k != "meshguard.hash" {
                write_key(out, *id, k);
                write_value(out, v);
            }
        }
        return;
    }
    let mut sorted: Vec<(Option<u8>, &str, &AnyValue<'_>)> = attributes
        .iter()
        .filter(|(k, _)| *k != "meshguard.hash")
        .map(|(k, v)| (key_id(k), *k, v))
        .collect();
    // Known ids first (ascending), then unknown keys by their bytes.
    sorted.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.as_bytes().cmp(b.1.as_bytes()),
    });
    for (id, k, v) in sorted {
        write_key(out, id, k);
        write_value(out, v);
    }
}

/// The bytes hashed for one event in chain version 3, from the JSON values a store keeps
/// (see the module docs): a string → 0x01, a bool → 0x02, an integer that fits i64 → 0x03,
/// an array of strings → 0x05, anything else → 0x07 with its compact JSON.
pub fn chain_input(
    time_unix_nano: u64,
    trace_id_hex: &str,
    attributes: &[(&str, serde_json::Value)],
) -> Vec<u8> {
    use serde_json::Value;
    let trace = crate::hex::unhex(trace_id_hex).unwrap_or_default();
    let strings: Vec<Option<Vec<String>>> = attributes
        .iter()
        .map(|(_, v)| match v {
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => None,
        })
        .collect();
    let others: Vec<Vec<u8>> = attributes
        .iter()
        .map(|(_, v)| match v {
            Value::String(_) | Value::Bool(_) => Vec::new(),
            _ => serde_json::to_vec(v).unwrap_or_default(),
        })
        .collect();
    let values: Vec<(&str, AnyValue<'_>)> = attributes
        .iter()
        .zip(&strings)
        .zip(&others)
        .map(|(((k, v), strings), other)| {
            let value = match (v, v.as_i64(), strings) {
                (Value::String(s), _, _) => AnyValue::Str(s),
                (Value::Bool(b), _, _) => AnyValue::Bool(*b),
                (Value::Number(_), Some(i), _) => AnyValue::Int(i),
                (Value::Array(_), _, Some(items)) => AnyValue::StrArray(items),
                _ => AnyValue::Bytes(other),
            };
            (*k, value)
        })
        .collect();
    let mut out = Vec::with_capacity(512);
    write_header(&mut out, time_unix_nano, &trace);
    write_attributes(&mut out, &values);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_byte_and_unique() {
        assert!(KEYS.len() < 0x80);
        for (i, k) in KEYS.iter().enumerate() {
            assert_eq!(key_id(k), Some(i as u8 + 1), "{k} listed twice");
        }
        assert_eq!(key_id("meshguard.hash"), None);
    }

    #[test]
    fn layout_byte_for_byte() {
        let chain = vec!["a".to_string(), "bc".to_string()];
        let mut out = Vec::new();
        write_attributes(
            &mut out,
            &[
                ("x.custom", AnyValue::Str("v")),
                ("meshguard.hash", AnyValue::Str("ignored")),
                ("meshguard.seq", AnyValue::Int(300)),
                ("meshguard.enforced", AnyValue::Bool(true)),
                ("meshguard.delegation.chain", AnyValue::StrArray(&chain)),
                ("a.custom", AnyValue::Int(-1)),
            ],
        );
        let mut want = vec![3, 0x02, 1]; // enforced
        want.extend_from_slice(&[6, 0x05, 2, 1, b'a', 2, b'b', b'c']); // delegation.chain
        want.extend_from_slice(&[36, 0x03, 0xac, 0x02]); // seq 300
        want.extend_from_slice(&[0, 8]);
        want.extend_from_slice(b"a.custom");
        want.extend_from_slice(&[
            0x03, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1,
        ]);
        want.extend_from_slice(&[0, 8]);
        want.extend_from_slice(b"x.custom");
        want.extend_from_slice(&[0x01, 1, b'v']);
        assert_eq!(out, want);
    }

    #[test]
    fn in_order_and_sorted_paths_agree() {
        let attrs = [
            ("meshguard.decision", AnyValue::Str("allow")),
            ("url.path", AnyValue::Str("/x")),
            ("meshguard.chain.version", AnyValue::Int(3)),
        ];
        let mut reversed = attrs.clone();
        reversed.reverse();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_attributes(&mut a, &attrs);
        write_attributes(&mut b, &reversed);
        assert_eq!(a, b);
        assert_eq!(a.first(), Some(&1));
    }
}
