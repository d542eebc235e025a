//! JSON-RPC 2.0 messages as MCP and A2A carry them: one message or a batch, parsed with a
//! nesting cap, ids kept verbatim (a huge number or a string echoes back byte for byte).

use serde::de::{Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a valid JSON-RPC request object (or a body too large to read).
pub const INVALID_REQUEST: i64 = -32600;
/// Malformed parameters (e.g. `tools/call` without a tool name).
pub const INVALID_PARAMS: i64 = -32602;
/// The MCP `HeaderMismatch` error of the 2026-07-28 revision: an `Mcp-Method`/`Mcp-Name`
/// header disagrees with the body (answered with HTTP 400).
pub const HEADER_MISMATCH: i64 = -32020;
/// A policy denial (deny or require_approval). Outside the reserved -32768..-32000
/// range, so it can never collide with a protocol-defined code; mirrors HTTP 403.
pub const POLICY_DENIED: i64 = 403;

/// Deepest array/object nesting accepted; deeper bodies are refused before parsing so
/// hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// Why a body is not JSON-RPC at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON (or not UTF-8): `-32700`.
    Syntax(String),
    /// Nested deeper than [`MAX_DEPTH`]: `-32700`.
    TooDeep,
    /// An empty batch `[]`: `-32600`.
    EmptyBatch,
}

impl ParseError {
    /// The JSON-RPC error code for this failure.
    pub fn code(&self) -> i64 {
        match self {
            ParseError::Syntax(_) | ParseError::TooDeep => PARSE_ERROR,
            ParseError::EmptyBatch => INVALID_REQUEST,
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Syntax(e) => write!(f, "parse error: the body is not valid JSON ({e})"),
            ParseError::TooDeep => write!(
                f,
                "parse error: the body nests arrays/objects deeper than {MAX_DEPTH} levels"
            ),
            ParseError::EmptyBatch => write!(f, "invalid request: empty JSON-RPC batch"),
        }
    }
}

/// What one element of the body is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A request (with an id) or a notification (without).
    Call {
        /// `method`.
        method: String,
        /// `params`, if any.
        params: Option<Value>,
    },
    /// A client's answer to a server request (`result` or `error`, no `method`).
    Reply,
    /// Not a JSON-RPC message; answered with `-32600`.
    Invalid(String),
}

/// One message of the body.
#[derive(Debug, Clone)]
pub struct Message {
    /// The element exactly as received, for forwarding a reduced batch.
    pub raw: String,
    /// The id verbatim; `None` for a notification (or an invalid element without id).
    pub id: Option<Box<RawValue>>,
    /// Request, reply or invalid.
    pub kind: Kind,
}

impl Message {
    /// Whether the sender expects an answer (a request, or an invalid element).
    pub fn expects_response(&self) -> bool {
        match self.kind {
            Kind::Call { .. } => self.id.is_some(),
            Kind::Reply => false,
            Kind::Invalid(_) => true,
        }
    }

    /// The method, for calls.
    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            Kind::Call { method, .. } => Some(method),
            _ => None,
        }
    }

    /// The id as audit records it: a string's value, a number's digits, `null`.
    pub fn id_text(&self) -> String {
        match &self.id {
            None => String::new(),
            Some(raw) => match serde_json::from_str::<String>(raw.get()) {
                Ok(s) => s,
                Err(_) => raw.get().to_string(),
            },
        }
    }
}

/// A parsed body.
#[derive(Debug, Clone)]
pub struct Body {
    /// Whether the body was a batch (array).
    pub batch: bool,
    /// Its messages, in order.
    pub messages: Vec<Message>,
}

/// Refuses bodies nested deeper than `max`, scanning bytes outside strings.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), ParseError> {
    let mut depth = 0usize;
    let mut rest = bytes;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'"' => rest = after_string(rest),
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(ParseError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The bytes after the string whose opening quote came just before `rest` (none when it
/// is unterminated). Most of a JSON body is string content: jumping to the next quote or
/// backslash eight bytes at a time instead of a byte-by-byte state machine took
/// `check_depth` from ~205 k to ~79 k instructions for a 13 KB, 100-tool `tools/list`
/// answer (callgrind, bench `mcp/tools_list_100`, 2026-11-30; a plain per-byte loop here
/// cost ~140 k more per answer). Not `memchr2`: the wasm build has no SIMD for it, and
/// its per-call setup is paid on every short string (keys, names).
fn after_string(mut rest: &[u8]) -> &[u8] {
    loop {
        let Some(i) = quote_or_backslash(rest) else {
            return &[];
        };
        match rest.get(i) {
            // an escape: the next byte is never the closing quote
            Some(b'\\') => rest = rest.get(i + 2..).unwrap_or_default(),
            _ => return rest.get(i + 1..).unwrap_or_default(),
        }
    }
}

/// The index of the first `"` or `\\` in `bytes`, eight bytes per step (SWAR).
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // High bit set in each byte of `w` equal to `b`; exact for the lowest such byte,
    // which is the only one read.
    let equal = |w: u64, b: u8| {
        let x = w ^ (ONES * u64::from(b));
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let hits = equal(w, b'"') | equal(w, b'\\');
        if hits != 0 {
            return Some(offset + hits.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|i| offset + i)
}

/// The raw value of `key` in a JSON object that a parse has already validated (a
/// `RawValue`'s text), reading past the other members without parsing them: `None` when
/// the text is not an object, lacks `key`, or names it more than once (clients differ on
/// which of two copies they read, so neither counts). Keys are compared unescaped.
///
/// `tools/list` filtering reads each tool's `name` with it: a second `serde` pass over
/// every tool (descriptions, schemas) and its reassembly cost ~3.5 k instructions per tool
/// natively; with this scan ~1.7 k
/// (callgrind, bench `mcp/tools_list_100`, 2026-11-30).
pub fn sole_member<'a>(object: &'a str, key: &str) -> Option<&'a str> {
    let offset = |rest: &[u8]| object.len() - rest.len();
    let mut rest = skip_ws(object.as_bytes()).strip_prefix(b"{")?;
    let mut found = None;
    loop {
        rest = skip_ws(rest);
        match rest.first()? {
            b'}' => return found,
            b',' => rest = skip_ws(rest.get(1..)?),
            _ => {}
        }
        let key_start = offset(rest);
        rest = after_string(rest.strip_prefix(b"\"")?);
        let raw_key = object.get(key_start..offset(rest))?;
        rest = skip_ws(skip_ws(rest).strip_prefix(b":")?);
        let value_start = offset(rest);
        rest = after_value(rest)?;
        // Compared as written unless escaped: unescaping every key of every tool cost
        // ~80 k instructions per 100-tool answer.
        let same = match raw_key.get(1..raw_key.len().saturating_sub(1)) {
            Some(k) if !k.contains('\\') => k == key,
            // a key serde could not unescape (a lone surrogate) fails its parse too
            _ => raw_str(raw_key)? == key,
        };
        if same {
            if found.is_some() {
                return None;
            }
            found = Some(object.get(value_start..offset(rest))?);
        }
    }
}

/// A raw JSON string's value: borrowed when it has no escapes; `None` when `raw` is not
/// a JSON string.
pub fn raw_str(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if !inner.bytes().any(|b| b == b'\\' || b == b'"' || b < 0x20) => {
            Some(std::borrow::Cow::Borrowed(inner))
        }
        _ => serde_json::from_str::<String>(raw)
            .ok()
            .map(std::borrow::Cow::Owned),
    }
}

fn skip_ws(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    bytes.get(n..).unwrap_or_default()
}

/// The bytes after the valid JSON value `rest` starts with; `None` when it ends first.
fn after_value(rest: &[u8]) -> Option<&[u8]> {
    let (&first, mut tail) = rest.split_first()?;
    match first {
        b'"' => Some(after_string(tail)),
        b'{' | b'[' => {
            let mut depth = 1usize;
            while let Some((&b, t)) = tail.split_first() {
                tail = t;
                match b {
                    b'"' => tail = after_string(tail),
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(tail);
                        }
                    }
                    _ => {}
                }
            }
            None
        }
        // a number, true, false or null
        _ => {
            let n = rest
                .iter()
                .take_while(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .count();
            rest.get(n..)
        }
    }
}

fn some_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    jsonrpc: Option<Value>,
    #[serde(default, deserialize_with = "some_raw")]
    id: Option<Box<RawValue>>,
    #[serde(default)]
    method: Option<Value>,
    // MeshGuard must decide on the call the server will run: two `name`s could be read
    // either way by the server's parser, so a member named twice in `params` makes the
    // message invalid (and serde refuses a repeated `method` or `params` itself).
    #[serde(default, deserialize_with = "crate::unique_json::optional_value")]
    params: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    result: bool,
    #[serde(default, deserialize_with = "present")]
    error: bool,
}

fn valid_id(raw: &RawValue) -> bool {
    matches!(
        raw.get().trim_start().as_bytes().first(),
        Some(b'"' | b'-' | b'0'..=b'9' | b'n')
    )
}

fn message(raw: &RawValue) -> Message {
    let text = raw.get().to_string();
    let env = match serde_json::from_str::<Envelope>(&text) {
        Ok(e) => e,
        Err(e) => {
            let why = if text.trim_start().starts_with('{') {
                format!("not a JSON-RPC message: {e}")
            } else {
                "a JSON-RPC message must be an object".into()
            };
            return Message {
                raw: text,
                id: None,
                kind: Kind::Invalid(why),
            };
        }
    };
    let bad_id = env.id.as_deref().is_some_and(|id| !valid_id(id));
    let id = env.id.filter(|id| valid_id(id));
    let kind = if env.jsonrpc.as_ref().and_then(Value::as_str) != Some("2.0") {
        Kind::Invalid("\"jsonrpc\" must be \"2.0\"".into())
    } else if bad_id {
        Kind::Invalid("\"id\" must be a string, a number or null".into())
    } else {
        match env.method {
            // The method becomes part of the action, which travels in a request header.
            Some(Value::String(method)) if method.chars().any(char::is_control) => {
                Kind::Invalid("\"method\" must not contain control characters".into())
            }
            Some(Value::String(method)) => match env.params {
                Some(p) if !(p.is_object() || p.is_array()) => {
                    Kind::Invalid("\"params\" must be an object or an array".into())
                }
                params => Kind::Call { method, params },
            },
            Some(_) => Kind::Invalid("\"method\" must be a string".into()),
            None if env.result || env.error => Kind::Reply,
            None => Kind::Invalid("missing \"method\"".into()),
        }
    };
    Message {
        raw: text,
        id,
        kind,
    }
}

/// Parses a body: one message or a batch.
pub fn parse(bytes: &[u8]) -> Result<Body, ParseError> {
    check_depth(bytes, MAX_DEPTH)?;
    let text =
        std::str::from_utf8(bytes).map_err(|e| ParseError::Syntax(format!("not UTF-8: {e}")))?;
    let batch = text.trim_start().starts_with('[');
    if batch {
        let items: Vec<&RawValue> =
            serde_json::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
        if items.is_empty() {
            return Err(ParseError::EmptyBatch);
        }
        Ok(Body {
            batch,
            messages: items.into_iter().map(message).collect(),
        })
    } else {
        let one: &RawValue =
            serde_json::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
        Ok(Body {
            batch,
            messages: vec![message(one)],
        })
    }
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: i64,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
}

/// A JSON-RPC error response; `id` verbatim, `null` when unknown.
pub fn error_response(
    id: Option<&RawValue>,
    code: i64,
    message: &str,
    data: Option<&Value>,
) -> String {
    let err = serde_json::to_string(&ErrorObject {
        code,
        message,
        data,
    })
    .unwrap_or_default();
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{},\"error\":{err}}}",
        id.map_or("null", RawValue::get)
    )
}

/// Joins serialized messages into a batch.
pub fn batch<S: AsRef<str>>(parts: &[S]) -> String {
    let mut out = String::from("[");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(p.as_ref());
    }
    out.push(']');
    out
}

/// Whether two ids are the same JSON value (servers may reformat, e.g. spacing).
pub fn same_id(a: &RawValue, b: &Value) -> bool {
    a.get().trim() == serde_json::to_string(b).unwrap_or_default()
        || serde_json::from_str::<Value>(a.get()).is_ok_and(|v| &v == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Message {
        let b = parse(s.as_bytes()).unwrap();
        assert!(!b.batch);
        b.messages.into_iter().next().unwrap()
    }

    #[test]
    fn request_notification_and_reply() {
        let m = one(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#);
        assert_eq!(m.method(), Some("tools/call"));
        assert_eq!(m.id.as_deref().map(RawValue::get), Some("7"));
        assert!(m.expects_response());
        let n = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert!(n.id.is_none());
        assert!(!n.expects_response());
        let r = one(r#"{"jsonrpc":"2.0","id":"s1","result":{}}"#);
        assert_eq!(r.kind, Kind::Reply);
        assert!(!r.expects_response());
    }

    #[test]
    fn ids_of_every_type_are_kept_verbatim() {
        for id in [
            "\"abc\"",
            "123456789012345678901234567890",
            "-1.5e3",
            "null",
            "0",
        ] {
            let m = one(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
            assert_eq!(m.id.as_deref().map(RawValue::get), Some(id), "{id}");
            let e = error_response(m.id.as_deref(), -1, "x", None);
            assert!(e.contains(&format!("\"id\":{id}")), "{e}");
        }
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":"a\"b","method":"ping"}"#).id_text(),
            "a\"b"
        );
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":99999999999999999999,"method":"ping"}"#).id_text(),
            "99999999999999999999"
        );
    }

    #[test]
    fn invalid_messages() {
        let bad = |s: &str| match one(s).kind {
            Kind::Invalid(r) => r,
            k => panic!("{s}: {k:?}"),
        };
        assert!(bad(r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#).contains("2.0"));
        assert!(bad(r#"{"id":1,"method":"x"}"#).contains("2.0"));
        assert!(bad(r#"{"jsonrpc":"2.0","id":1}"#).contains("method"));
        assert!(bad(r#"{"jsonrpc":"2.0","id":1,"method":7}"#).contains("string"));
        assert!(bad(r#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#).contains("id"));
        assert!(bad(r#"{"jsonrpc":"2.0","id":true,"method":"x"}"#).contains("id"));
        assert!(bad(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#).contains("params"));
        assert!(bad("42").contains("object"));
        // an invalid id is never echoed
        assert!(one(r#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#)
            .id
            .is_none());
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(parse(b"{"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b""), Err(ParseError::Syntax(_))));
        assert!(matches!(
            parse(b"{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}"),
            Err(ParseError::Syntax(_))
        ));
        assert_eq!(parse(b" [ ] ").unwrap_err(), ParseError::EmptyBatch);
        assert_eq!(parse(b"[]").unwrap_err().code(), INVALID_REQUEST);
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(parse(deep.as_bytes()).unwrap_err(), ParseError::TooDeep);
        assert_eq!(ParseError::TooDeep.code(), PARSE_ERROR);
        // brackets inside strings do not count
        let s = format!(
            r#"{{"jsonrpc":"2.0","method":"x","params":{{"a":"{}\"["}}}}"#,
            "[".repeat(100)
        );
        assert!(parse(s.as_bytes()).is_ok());
        // a member named twice, at any depth, has no single meaning: the message is invalid
        let dup = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_orders","name":"delete_everything"}}"#,
        );
        assert!(
            matches!(&dup.kind, Kind::Invalid(m) if m.contains("appears twice")),
            "{dup:?}"
        );
        let dup = one(r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#);
        assert!(
            matches!(&dup.kind, Kind::Invalid(m) if m.contains("duplicate field")),
            "{dup:?}"
        );
        let dup = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"a":{"x":1,"x":2}}}}"#,
        );
        assert!(matches!(dup.kind, Kind::Invalid(_)));
        let batch = parse(
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping","method":"tools/call"}]"#,
        )
        .unwrap();
        assert!(matches!(batch.messages[0].kind, Kind::Call { .. }));
        assert!(matches!(batch.messages[1].kind, Kind::Invalid(_)));
        let crlf = one(r#"{"jsonrpc":"2.0","id":1,"method":"message/send\r\nx: y"}"#);
        assert!(matches!(crlf.kind, Kind::Invalid(m) if m.contains("control")));
    }

    #[test]
    fn batches_keep_elements_verbatim() {
        let b =
            parse(br#"[{"jsonrpc":"2.0","id":1,"method":"a"}, {"jsonrpc":"2.0","method":"b"} ,5]"#)
                .unwrap();
        assert!(b.batch);
        assert_eq!(b.messages.len(), 3);
        assert_eq!(b.messages[1].raw, r#"{"jsonrpc":"2.0","method":"b"}"#);
        assert!(matches!(b.messages[2].kind, Kind::Invalid(_)));
        let joined = batch(&[b.messages[0].raw.as_str(), b.messages[1].raw.as_str()]);
        let v: Value = serde_json::from_str(&joined).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
    }

    #[test]
    fn error_responses_and_id_matching() {
        let data = serde_json::json!({"decision": "deny"});
        let e = error_response(None, POLICY_DENIED, "no \"way\"", Some(&data));
        let v: Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["error"]["code"], 403);
        assert_eq!(v["error"]["message"], "no \"way\"");
        assert_eq!(v["error"]["data"]["decision"], "deny");
        let raw = RawValue::from_string("\"x\"".into()).unwrap();
        assert!(same_id(&raw, &Value::String("x".into())));
        assert!(!same_id(&raw, &Value::from(1)));
    }

    /// The byte-by-byte state machine `check_depth` replaced: the oracle it must agree with.
    fn depth_by_bytes(bytes: &[u8], max: usize) -> Result<(), ParseError> {
        let (mut depth, mut in_str, mut esc) = (0usize, false, false);
        for &b in bytes {
            if in_str {
                match (esc, b) {
                    (true, _) => esc = false,
                    (false, b'\\') => esc = true,
                    (false, b'"') => in_str = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_str = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return Err(ParseError::TooDeep);
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn quote_or_backslash_finds_the_first(s in proptest::collection::vec(proptest::sample::select(b"\"\\a\x80\x00\xff!#[".to_vec()), 0..40)) {
            proptest::prop_assert_eq!(
                quote_or_backslash(&s),
                s.iter().position(|&b| b == b'"' || b == b'\\')
            );
        }

        #[test]
        fn check_depth_agrees_with_the_byte_scan(
            s in proptest::collection::vec(proptest::sample::select(b"\"\\[]{}a ".to_vec()), 0..80),
            max in 0usize..6,
        ) {
            proptest::prop_assert_eq!(check_depth(&s, max), depth_by_bytes(&s, max));
        }
    }

    /// How `tools/list` filtering read a tool's name before [`sole_member`]: the oracle.
    fn name_by_serde(tool: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Named {
            #[serde(default)]
            name: Option<String>,
        }
        serde_json::from_str::<Named>(tool)
            .ok()
            .and_then(|n| n.name)
    }

    fn name_by_scan(tool: &str) -> Option<String> {
        sole_member(tool, "name")
            .and_then(raw_str)
            .map(std::borrow::Cow::into_owned)
    }

    #[test]
    fn sole_member_reads_names_as_serde_does() {
        for tool in [
            r#"{"name":"a"}"#,
            r#" { "description" : "x \"name\": \"b\"" , "name" : "a" } "#,
            r#"{"inputSchema":{"name":"inner","p":[{"name":"z"}]},"name":"a"}"#,
            r#"{"n\u0061me":"escaped key"}"#,
            r#"{"name":"t\u00e9st \\ \" \n"}"#,
            r#"{"name":"a","name":"b"}"#,
            r#"{"name":"a","n\u0061me":"b"}"#,
            r#"{"name":null}"#,
            r#"{"name":7}"#,
            r#"{"name":["a"]}"#,
            r#"{"names":"a","nam":"b"}"#,
            r#"{}"#,
            r#"{"x":-1.5e3,"y":true,"z":null,"name":"after scalars"}"#,
            "{\n\t\"name\"\r\n:\t\"ws\"\n}",
            r#"{"a":"\\","name":"after escaped backslash"}"#,
            r#"{"\ud800":1,"name":"after a key serde cannot read"}"#,
        ] {
            assert_eq!(name_by_scan(tool), name_by_serde(tool), "{tool}");
        }
        // not an object: never a name (serde would read a one-element array as a struct)
        assert_eq!(name_by_scan(r#"["a"]"#), None);
        assert_eq!(name_by_scan(r#""name""#), None);
    }

    fn member_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec![
            r#""name""#,
            r#""n\u0061me""#,
            r#""nam""#,
            r#""names""#,
            r#""description""#,
            r#""na\"me""#,
        ]);
        let value = prop::sample::select(vec![
            r#""a""#,
            r#""t_1""#,
            r#""with \"quote\" and \\ and name""#,
            r#""\u0074_2""#,
            "null",
            "12",
            "-0.5e-3",
            "true",
            r#"{"name":"inner","x":[1,{"name":"deeper"}]}"#,
            r#"["name","}","]"]"#,
            r#"{}"#,
            r#"[]"#,
        ]);
        let ws = prop::sample::select(vec!["", " ", "\n\t", "\r\n  "]);
        (ws.clone(), key, ws.clone(), ws, value)
            .prop_map(|(a, k, b, c, v)| format!("{a}{k}{b}:{c}{v}"))
    }

    proptest::proptest! {
        #[test]
        fn sole_member_agrees_with_serde(members in proptest::collection::vec(member_text(), 0..6)) {
            let tool = format!("{{{}}}", members.join(","));
            proptest::prop_assert_eq!(name_by_scan(&tool), name_by_serde(&tool), "{}", tool);
        }
    }

    #[test]
    fn depth_boundary_and_helpers() {
        let at = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(check_depth(at.as_bytes(), MAX_DEPTH).is_ok());
        let over = format!("[{at}]");
        assert_eq!(
            check_depth(over.as_bytes(), MAX_DEPTH),
            Err(ParseError::TooDeep)
        );
        // escaped quotes inside strings do not end them
        assert!(check_depth(br#"["\"[[[[", 1]"#, 1).is_ok());
        assert_eq!(batch::<&str>(&[]), "[]");
        let bad = one(r#"{"jsonrpc":"2.0","id":1}"#);
        assert!(bad.expects_response());
        assert_eq!(bad.method(), None);
        let n = one(r#"{"jsonrpc":"2.0","method":"x"}"#);
        assert_eq!(n.id_text(), "");
        assert!(ParseError::TooDeep.to_string().contains("64"));
    }
}
