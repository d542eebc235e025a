//! One request decided offline exactly as the filter decides it. `check`, `test` and
//! `explain` all describe a request the same way ([`Spec`]) and run it here, through
//! the filter's own `Engine` entry points; nothing in this module decides.

use meshguard::controls::{Counters, MemoryStore};
use meshguard::engine::body::Step;
use meshguard::engine::request::Request;
use meshguard::engine::{Engine, Outcome};
use meshguard::identity::{Identity, IdentityError};
use serde_json::{Map, Value};
use std::path::Path;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A request as an operator describes it.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// A JWT, verified as the filter verifies it.
    pub token: Option<String>,
    /// Unsigned claims (policy authoring).
    pub claims: Option<Value>,
    /// Sent in `actions.header`.
    pub action: Option<String>,
    /// Sent in `actions.resource_header`.
    pub resource: Option<String>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// `:method`.
    pub method: String,
    /// `:path`.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// Seconds since the epoch to decide at.
    pub at: u64,
    /// mTLS peer URI SANs.
    pub peer_uri_sans: Vec<String>,
    /// Decide the Nth identical call (rate limits, loop detection).
    pub repeat: u32,
    /// An MCP `tools/call` to send as the JSON-RPC body: tool name and arguments
    /// (`context.*`). Goes to `path`, which must be one of `actions.mcp.paths`.
    pub tool_call: Option<(String, Value)>,
}

/// Loads a plugin configuration: a plugin configuration file (JSON or YAML), or an Envoy
/// bootstrap whose Wasm filter carries it (`configuration.value`), as in `envoy/*.yaml`.
pub fn load_config(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let Ok(doc) = meshguard::config::from_text::<Value>(&text) else {
        return Ok(text);
    };
    if doc.get("static_resources").is_none() {
        return Ok(text);
    }
    find_wasm_configuration(&doc)
        .map(|s| s.as_bytes().to_vec())
        .ok_or_else(|| {
            format!(
                "{}: an Envoy bootstrap without a Wasm filter configuration (configuration.value)",
                path.display()
            )
        })
}

fn find_wasm_configuration(v: &Value) -> Option<&str> {
    match v {
        Value::Object(m) => {
            let is_string_value = m
                .get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("google.protobuf.StringValue"));
            if is_string_value {
                if let Some(s) = m.get("value").and_then(Value::as_str) {
                    return Some(s);
                }
            }
            m.values().find_map(find_wasm_configuration)
        }
        Value::Array(items) => items.iter().find_map(find_wasm_configuration),
        _ => None,
    }
}

/// Compiles a configuration file for offline use.
pub fn engine(path: &Path) -> Result<Engine, String> {
    let text = load_config(path)?;
    Engine::from_text(&text).map_err(|e| format!("{}: configuration rejected: {e}", path.display()))
}

/// Now, in seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `--at` / `at:`: RFC 3339, or whole seconds since the epoch.
pub fn parse_at(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| format!("at {s:?}: too large"));
    }
    meshguard::time::parse(s).ok_or_else(|| {
        format!("at {s:?}: expected RFC 3339 (2026-11-29T18:00:00Z) or seconds since the epoch")
    })
}

/// `agent[:tier]` hops to a nested RFC 8693 `act` claim: the last is outermost.
pub fn act_claim(hops: &[String]) -> Result<Option<Value>, String> {
    let mut act: Option<Value> = None;
    for hop in hops {
        let (sub, tier) = match hop.split_once(':') {
            Some((s, t)) => (s.trim(), Some(t.trim())),
            None => (hop.trim(), None),
        };
        if sub.is_empty() || tier.is_some_and(str::is_empty) {
            return Err(format!("act {hop:?}: expected agent or agent:tier"));
        }
        let mut m = Map::new();
        m.insert("sub".into(), Value::String(sub.into()));
        if let Some(t) = tier {
            m.insert("trust_tier".into(), Value::String(t.into()));
        }
        if let Some(inner) = act.take() {
            m.insert("act".into(), inner);
        }
        act = Some(Value::Object(m));
    }
    Ok(act)
}

/// Sets a header, replacing any value given with `headers`, so the fields made for it win.
fn set_header(req: &mut Request, name: &str, value: String) {
    req.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    req.headers.push((name.to_ascii_lowercase(), value));
}

fn flag_header<'a>(header: Option<&'a str>, flag: &str, field: &str) -> Result<&'a str, String> {
    header.ok_or_else(|| {
        format!(
            "{flag} travels in the {field} header, which this configuration disables; \
             give the method and path for the route table instead"
        )
    })
}

/// The request the filter would see for `spec`, and its body.
pub fn request(engine: &Engine, spec: &Spec) -> Result<(Request, Option<Vec<u8>>), String> {
    let mut req = Request {
        method: spec.method.to_ascii_uppercase(),
        path: spec.path.clone(),
        authority: spec.authority.clone(),
        headers: spec
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        peer_uri_sans: spec.peer_uri_sans.clone(),
    };
    let mapper = engine.action_mapper();
    if let Some(action) = &spec.action {
        let header = flag_header(mapper.action_header(), "action", "actions.header")?;
        set_header(&mut req, header, action.clone());
    }
    if let Some(resource) = &spec.resource {
        let header = flag_header(
            mapper.resource_header(),
            "resource",
            "actions.resource_header",
        )?;
        set_header(&mut req, header, resource.clone());
    }
    if let Some(t) = &spec.token {
        let header = engine.verifier().token_header().to_string();
        set_header(&mut req, &header, format!("Bearer {}", t.trim()));
    }
    let body = spec.tool_call.as_ref().map(|(tool, args)| {
        let msg = serde_json::json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": { "name": tool, "arguments": args },
        });
        msg.to_string().into_bytes()
    });
    if body.is_some() {
        set_header(&mut req, "content-type", "application/json".into());
        set_header(
            &mut req,
            "accept",
            "application/json, text/event-stream".into(),
        );
    }
    Ok((req, body))
}

/// The identity `claims` describe (trusted without a signature), as the filter would
/// build it from a verified token with these claims.
pub fn identity_from_claims(
    engine: &Engine,
    claims: &Value,
) -> Result<Rc<Identity>, IdentityError> {
    Identity::from_claims(claims.clone(), engine.verifier().claim_names()).map(Rc::new)
}

/// Runs `spec` through the filter's request path (`Engine::handle*`, or `start` +
/// `handle_body` for a JSON-RPC body); returns the last of `repeat` identical calls.
pub fn run(engine: &Engine, spec: &Spec) -> Result<Outcome, String> {
    let (req, body) = request(engine, spec)?;
    let now_nanos = spec.at.saturating_mul(1_000_000_000);
    let counters = MemoryStore::new();
    let mut cache = engine.verifier().new_cache();
    let identity = spec
        .claims
        .as_ref()
        .map(|c| identity_from_claims(engine, c));
    let mut last = None;
    for _ in 0..spec.repeat.max(1) {
        let counters = Counters {
            store: &counters,
            writer: 1,
        };
        // Without a body the request takes the plain HTTP path, as `check` always has;
        // with one (a `tools/call` case) the filter's headers phase decides where it goes.
        let step = match (&identity, body.is_some()) {
            (Some(id), true) => engine.start_authenticated(&req, now_nanos, id.clone(), counters),
            (Some(id), false) => Step::Decided(Box::new(engine.handle_authenticated(
                &req,
                now_nanos,
                id.clone(),
                counters,
            ))),
            (None, true) => engine.start(&req, now_nanos, &mut cache),
            (None, false) => Step::Decided(Box::new(engine.handle_with(
                &req,
                now_nanos,
                meshguard::engine::State {
                    cache: &mut cache,
                    counters,
                },
            ))),
        };
        last = Some(match step {
            Step::Decided(o) => *o,
            Step::ReadBody(pending) => {
                let bytes = body.as_deref().unwrap_or_default();
                engine.handle_body(pending, &req, Ok(bytes), now_nanos, &mut cache)
            }
        });
    }
    last.ok_or_else(|| "repeat must be at least 1".to_string())
}

/// The audit attribute `check` leaves out: the filter measures it, offline runs have
/// nothing to measure.
pub const LATENCY_ATTRIBUTE: &str = "meshguard.latency_us";

/// The name of the log record's trace id (an OTLP field, not an attribute) in JSON output.
pub const TRACE_ID_FIELD: &str = "trace_id";

/// The outcome's audit event as JSON attributes (what `check` prints).
pub fn event_json(outcome: &Outcome) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in outcome.event.attributes() {
        if name != LATENCY_ATTRIBUTE {
            out.insert(name.to_string(), value.to_json());
        }
    }
    out.insert(
        TRACE_ID_FIELD.into(),
        Value::String(outcome.event.trace_id_hex()),
    );
    out
}
