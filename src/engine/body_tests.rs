//! The body phase, natively: MCP, A2A and the decision API through `start` +
//! `handle_body`, and response rewriting.

use super::*;
use crate::engine::decision_api;
use jwt_simple::prelude::*;
use serde_json::{json, Value as Json};

const NOW: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z
const NANOS: u64 = NOW * 1_000_000_000;

fn key() -> ES256KeyPair {
    ES256KeyPair::generate().with_key_id("k1")
}

fn engine_with(k: &ES256KeyPair, mode: &str, extra: Json) -> Engine {
    let jwk: Json = serde_json::from_str(&k.public_key().to_jwk()).unwrap();
    let mut cfg = json!({
        "mode": mode,
        "identity": {"issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": {"keys": [jwk]}}]},
        "actions": {
            "mcp": {
                "tools": {"send_email": "write:email"},
                "resources": {"send_email": "$to", "pay": "ledger"},
                "resource_metadata": "https://tools.local/.well-known/oauth-protected-resource"
            },
            "a2a": {"paths": ["/a2a"], "agent": "billing-agent"}
        },
        "decision_api": {},
        "policy_yaml": r#"
name: agents
rules:
  - { name: read-any, action: "read:*", effect: allow }
  - { name: email-small, action: "write:email", effect: allow, conditions: ["context.amount <= 100"] }
  - { name: by-name, action: "tool:by_name", effect: allow, conditions: ["mcp.tool == \"by_name\" AND mcp.method == \"tools/call\""] }
  - { name: lookup, action: "tool:lookup", effect: allow }
  - { name: pay, action: "tool:pay", resource: ledger, effect: allow }
  - { name: no-delete, action: "tool:delete_all", effect: deny, reason: "deleting everything is not allowed" }
  - { name: refunds, action: "tool:refund", effect: require_approval }
  - { name: nested, action: "tool:nested", effect: allow, conditions: ["context.a.b == 1"] }
  - { name: files, action: "resource:read", resource: "file:///public/**", effect: allow }
  - { name: prompts, action: "prompt:greet", effect: allow }
  - { name: a2a-send, action: "a2a:SendMessage", resource: billing-agent, effect: allow, conditions: ["a2a.method == \"message/send\" OR context.message.role == \"user\""] }
  - { name: a2a-get, action: "a2a:GetTask", effect: allow }
---
name: candidate
mode: audit
rules:
  - { name: no-lookup, action: "tool:lookup", effect: deny }
"#
    });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    Engine::from_text(cfg.to_string().as_bytes()).unwrap()
}

fn engine(k: &ES256KeyPair) -> Engine {
    engine_with(k, "enforce", json!({}))
}

fn token(k: &ES256KeyPair, sub: &str) -> String {
    let mut c =
        Claims::with_custom_claims(json!({"trust_tier": "verified"}), Duration::from_secs(600))
            .with_issuer("https://issuer.example")
            .with_audience("agents")
            .with_subject(sub);
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
    k.sign(c).unwrap()
}

fn req(method: &str, path: &str, tok: Option<&str>, headers: &[(&str, &str)]) -> Request {
    let mut h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(t) = tok {
        h.push(("authorization".into(), format!("Bearer {t}")));
    }
    Request {
        method: method.into(),
        path: path.into(),
        authority: "tools.local".into(),
        headers: h,
        peer_uri_sans: Vec::new(),
    }
}

/// `start` + `handle_body` for a POST with `body`.
fn post_with(
    e: &Engine,
    path: &str,
    tok: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Outcome {
    let r = req("POST", path, tok, headers);
    let mut cache = e.verifier().new_cache();
    match e.start(&r, NANOS, &mut cache) {
        Step::Decided(o) => *o,
        Step::ReadBody(p) => {
            let b = body.as_bytes();
            let b = if b.len() > p.max_bytes() {
                Err(TooLarge)
            } else {
                Ok(b)
            };
            e.handle_body(p, &r, b, NANOS, &mut cache)
        }
    }
}

fn post(e: &Engine, k: &ES256KeyPair, body: &str) -> Outcome {
    post_with(e, "/mcp", Some(&token(k, "agent-a")), &[], body)
}

fn call(id: Json, tool: &str, args: Json) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}}).to_string()
}

fn local(o: &Outcome) -> (u16, Json) {
    match &o.verdict {
        Verdict::Respond(r) => (
            r.status,
            serde_json::from_str(&r.body).unwrap_or(Json::Null),
        ),
        Verdict::Forward { .. } => panic!("forwarded: {:?}", o.event),
    }
}

fn forwarded(o: &Outcome) -> (&[(&'static str, String)], Option<Json>) {
    match &o.verdict {
        Verdict::Forward { set_headers, body } => (
            set_headers,
            body.as_ref().map(|b| serde_json::from_slice(b).unwrap()),
        ),
        Verdict::Respond(r) => panic!("answered {}: {}", r.status, r.body),
    }
}

fn hdr<'a, K: AsRef<str>>(h: &'a [(K, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.as_ref() == name)
        .map(|(_, v)| v.as_str())
}

fn all_events(o: &Outcome) -> Vec<&AuditEvent> {
    std::iter::once(&o.event).chain(&o.more_events).collect()
}

#[test]
fn plain_http_requests_are_decided_on_the_headers_as_before() {
    let k = key();
    let e = engine(&k);
    let t = token(&k, "agent-a");
    let r = req(
        "GET",
        "/v1/orders",
        Some(&t),
        &[("x-meshguard-action", "read:orders")],
    );
    let mut cache = e.verifier().new_cache();
    let Step::Decided(o) = e.start(&r, NANOS, &mut cache) else {
        panic!("plain HTTP must not read the body")
    };
    let direct = e.handle(&r, NANOS, &mut cache);
    assert_eq!(o.verdict, direct.verdict);
    assert_eq!(o.decision, direct.decision);
    assert!(o.response.is_none());
}

#[test]
fn allowed_tools_call_is_forwarded_with_mcp_audit_attributes() {
    let k = key();
    let e = engine(&k);
    let o = post_with(
        &e,
        "/mcp",
        Some(&token(&k, "agent-a")),
        &[
            ("mcp-session-id", "sess-1"),
            ("mcp-protocol-version", "2025-06-18"),
        ],
        &call(
            json!(7),
            "send_email",
            json!({"to": "bob@example.com", "amount": 50}),
        ),
    );
    let (h, body) = forwarded(&o);
    assert_eq!(
        body, None,
        "a single allowed message is forwarded as received"
    );
    assert_eq!(hdr(h, "x-meshguard-action"), Some("write:email"));
    assert_eq!(hdr(h, "x-meshguard-decision"), Some("allow"));
    assert_eq!(o.decision.rule.as_deref(), Some("email-small"));
    let ev = &o.event;
    assert_eq!(ev.resource, "bob@example.com");
    assert_eq!(ev.rpc.mcp_method, "tools/call");
    assert_eq!(ev.rpc.tool_name, "send_email");
    assert_eq!(ev.rpc.session_id, "sess-1");
    assert_eq!(ev.rpc.protocol_version, "2025-06-18");
    assert_eq!(ev.rpc.request_id, "7");
    assert_eq!(ev.rpc.argument_keys, ["amount", "to"]);
    assert_eq!(ev.rpc.arguments, "", "values only with record_arguments");
    assert!(o.more_events.is_empty());
    assert!(o.response.is_none());
}

#[test]
fn argument_conditions_decide_and_denials_are_jsonrpc_errors_with_the_id() {
    let k = key();
    let e = engine(&k);
    let o = post(
        &e,
        &k,
        &call(
            json!("req-9"),
            "send_email",
            json!({"to": "x", "amount": 500}),
        ),
    );
    let (status, b) = local(&o);
    assert_eq!(status, 200, "JSON-RPC errors travel in a 200");
    assert_eq!(b["jsonrpc"], "2.0");
    assert_eq!(b["id"], "req-9");
    assert_eq!(b["error"]["code"], jsonrpc::POLICY_DENIED);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("write:email"),
        "{b}"
    );
    assert_eq!(b["error"]["data"]["decision"], "deny");
    assert_eq!(b["error"]["data"]["policy"], Json::Null);
    assert_eq!(o.event.decision, "deny");
    assert!(o.event.enforced);
    // a missing argument makes the condition false: default deny
    let o = post(&e, &k, &call(json!(1), "send_email", json!({"to": "x"})));
    assert_eq!(local(&o).1["error"]["data"]["decision"], "deny");
    // an explicit deny rule names policy, rule and reason
    let o = post(&e, &k, &call(json!(2), "delete_all", json!({})));
    let b = local(&o).1;
    assert_eq!(b["error"]["data"]["policy"], "agents");
    assert_eq!(b["error"]["data"]["rule"], "no-delete");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("deleting everything"));
}

#[test]
fn mcp_method_and_tool_are_condition_names() {
    let k = key();
    let e = engine(&k);
    let o = post(&e, &k, &call(json!(1), "by_name", json!({})));
    assert_eq!(o.decision.rule.as_deref(), Some("by-name"));
    // the decision API has no MCP method: the same action is denied there
    let t = token(&k, "agent-a");
    let o = post_with(
        &e,
        "/enforce",
        Some(&t),
        &[],
        r#"{"action":"tool:by_name"}"#,
    );
    assert_eq!(local(&o).1["decision"], "deny");
}

#[test]
fn nested_context_and_numeric_ids() {
    let k = key();
    let e = engine(&k);
    let o = post(
        &e,
        &k,
        &call(
            json!(12345678901234567890u64),
            "nested",
            json!({"a": {"b": 1}}),
        ),
    );
    assert!(matches!(o.verdict, Verdict::Forward { .. }));
    let body = r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"tools/call","params":{"name":"nested","arguments":{"a":{"b":2}}}}"#;
    let o = post(&e, &k, body);
    let r = match &o.verdict {
        Verdict::Respond(r) => r.body.clone(),
        Verdict::Forward { .. } => panic!("must deny"),
    };
    assert!(r.contains("\"id\":123456789012345678901234567890"), "{r}");
    assert_eq!(o.event.rpc.request_id, "123456789012345678901234567890");
}

#[test]
fn require_approval_carries_a_stable_approval_id() {
    let k = key();
    let e = engine(&k);
    let a = local(&post(
        &e,
        &k,
        &call(json!(1), "refund", json!({"amount": 5})),
    ))
    .1;
    let b = local(&post(
        &e,
        &k,
        &call(json!(2), "refund", json!({"amount": 9})),
    ))
    .1;
    let id = a["error"]["data"]["approvalId"].as_str().unwrap();
    assert!(id.starts_with("apr_") && id.len() == 36, "{id}");
    assert_eq!(
        a["error"]["data"]["approvalId"],
        b["error"]["data"]["approvalId"]
    );
    assert_eq!(a["error"]["data"]["decision"], "require_approval");
    let other = local(&post_with(
        &e,
        "/mcp",
        Some(&token(&k, "agent-b")),
        &[],
        &call(json!(1), "refund", json!({})),
    ))
    .1;
    assert_ne!(
        other["error"]["data"]["approvalId"],
        a["error"]["data"]["approvalId"]
    );
    assert_eq!(
        crate::controls::approval_id("a", "b", Some("c")),
        crate::controls::approval_id("a", "b", Some("c"))
    );
    assert_ne!(
        crate::controls::approval_id("a", "bc", None),
        crate::controls::approval_id("a", "b", Some("c"))
    );
}

#[test]
fn unauthenticated_mcp_requests_never_reach_the_server() {
    let k = key();
    let e = engine(&k);
    let o = post_with(&e, "/mcp", None, &[], &call(json!(1), "lookup", json!({})));
    let Verdict::Respond(r) = &o.verdict else {
        panic!("must answer 401")
    };
    assert_eq!(r.status, 401);
    let www = hdr(&r.headers, "www-authenticate").unwrap();
    assert!(www.contains("error=\"invalid_token\""), "{www}");
    assert!(
        www.contains(
            "resource_metadata=\"https://tools.local/.well-known/oauth-protected-resource\""
        ),
        "{www}"
    );
    assert_eq!(o.event.identity_error, "missing_token");
    // GET (the SSE stream) of an authenticated agent is forwarded without a body
    let t = token(&k, "agent-a");
    let mut cache = e.verifier().new_cache();
    let Step::Decided(o) = e.start(&req("GET", "/mcp", Some(&t), &[]), NANOS, &mut cache) else {
        panic!("GET has no body to read")
    };
    assert!(matches!(o.verdict, Verdict::Forward { .. }));
    let Step::Decided(o) = e.start(&req("GET", "/mcp", None, &[]), NANOS, &mut cache) else {
        panic!("decided on headers")
    };
    assert_eq!(local(&o).0, 401);
}

#[test]
fn protected_resource_metadata_is_served_when_configured() {
    let k = key();
    let e = engine_with(
        &k,
        "enforce",
        json!({"actions": {"mcp": {"protected_resource": {"resource": "https://tools.local/mcp", "authorization_servers": ["https://issuer.example"]}}}}),
    );
    let mut cache = e.verifier().new_cache();
    let Step::Decided(o) = e.start(
        &req(
            "GET",
            "/.well-known/oauth-protected-resource/mcp",
            None,
            &[],
        ),
        NANOS,
        &mut cache,
    ) else {
        panic!("answered on headers")
    };
    let (s, b) = local(&o);
    assert_eq!(s, 200);
    assert_eq!(b["authorization_servers"][0], "https://issuer.example");
}

#[test]
fn the_body_decides_not_the_action_header() {
    let k = key();
    let e = engine(&k);
    let o = post_with(
        &e,
        "/mcp",
        Some(&token(&k, "agent-a")),
        &[("x-meshguard-action", "read:anything")],
        &call(json!(1), "delete_all", json!({})),
    );
    assert_eq!(o.event.action, "tool:delete_all");
    assert_eq!(local(&o).1["error"]["data"]["rule"], "no-delete");
}

#[test]
fn mcp_method_and_name_headers_must_match_the_body() {
    let k = key();
    let e = engine(&k);
    let t = token(&k, "agent-a");
    let body = call(json!(5), "lookup", json!({}));
    let ok = post_with(
        &e,
        "/mcp",
        Some(&t),
        &[("mcp-method", "tools/call"), ("mcp-name", "lookup")],
        &body,
    );
    assert!(matches!(ok.verdict, Verdict::Forward { .. }));
    for h in [("mcp-method", "tools/list"), ("mcp-name", "delete_all")] {
        let o = post_with(&e, "/mcp", Some(&t), &[h], &body);
        let (s, b) = local(&o);
        assert_eq!(s, 400, "{h:?}");
        assert_eq!(b["error"]["code"], jsonrpc::HEADER_MISMATCH);
        assert_eq!(b["id"], 5);
        assert!(b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("header mismatch"));
    }
    let read = json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "file:///public/a"}}).to_string();
    let o = post_with(
        &e,
        "/mcp",
        Some(&t),
        &[("mcp-name", "file:///public/a")],
        &read,
    );
    assert!(matches!(o.verdict, Verdict::Forward { .. }));
}

#[test]
fn malformed_bodies_get_jsonrpc_errors() {
    let k = key();
    let e = engine(&k);
    let (s, b) = local(&post(&e, &k, "{not json"));
    assert_eq!(
        (s, b["error"]["code"].as_i64()),
        (400, Some(jsonrpc::PARSE_ERROR))
    );
    assert_eq!(b["id"], Json::Null);
    let (s, b) = local(&post(&e, &k, r#"{"jsonrpc":"1.0","id":3,"method":"ping"}"#));
    assert_eq!(
        (s, b["error"]["code"].as_i64()),
        (400, Some(jsonrpc::INVALID_REQUEST))
    );
    assert_eq!(b["id"], 3);
    let (s, b) = local(&post(
        &e,
        &k,
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{}}"#,
    ));
    assert_eq!(
        (s, b["error"]["code"].as_i64()),
        (400, Some(jsonrpc::INVALID_PARAMS))
    );
    let (s, _) = local(&post(&e, &k, "[]"));
    assert_eq!(s, 400);
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(
        local(&post(&e, &k, &deep)).1["error"]["code"],
        jsonrpc::PARSE_ERROR
    );
    let o = post_with(
        &e,
        "/mcp",
        Some(&token(&k, "a")),
        &[],
        "\u{0}\u{1}garbage\u{ff}",
    );
    assert_eq!(local(&o).0, 400);
    let mut nonutf8 = br#"{"jsonrpc":"2.0","id":1,"method":""#.to_vec();
    nonutf8.extend_from_slice(&[0xff, 0xfe, b'"', b'}']);
    let r = req("POST", "/mcp", Some(&token(&k, "a")), &[]);
    let mut cache = e.verifier().new_cache();
    let Step::ReadBody(p) = e.start(&r, NANOS, &mut cache) else {
        panic!()
    };
    let o = e.handle_body(p, &r, Ok(&nonutf8), NANOS, &mut cache);
    assert_eq!(local(&o).1["error"]["code"], jsonrpc::PARSE_ERROR);
}

#[test]
fn oversized_bodies_are_413_with_a_jsonrpc_error() {
    let k = key();
    let e = engine_with(
        &k,
        "enforce",
        json!({"actions": {"mcp": {"max_body_bytes": 64}}}),
    );
    let o = post(
        &e,
        &k,
        &call(json!(1), "lookup", json!({"pad": "x".repeat(100)})),
    );
    let (s, b) = local(&o);
    assert_eq!(s, 413);
    assert_eq!(b["error"]["code"], jsonrpc::INVALID_REQUEST);
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("actions.mcp.max_body_bytes"));
    assert_eq!(o.event.status, 413);
}

#[test]
fn ungoverned_methods_are_allowed_and_governed_ones_need_a_rule() {
    let k = key();
    let e = engine(&k);
    for m in ["initialize", "ping", "prompts/list", "resources/list"] {
        let o = post(
            &e,
            &k,
            &json!({"jsonrpc": "2.0", "id": 1, "method": m}).to_string(),
        );
        assert!(matches!(o.verdict, Verdict::Forward { .. }), "{m}");
        assert_eq!(o.event.action, format!("mcp:{m}"));
        assert_eq!(o.event.rpc.mcp_method, m);
    }
    let n = post(
        &e,
        &k,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert!(matches!(n.verdict, Verdict::Forward { .. }));
    let g = engine_with(
        &k,
        "enforce",
        json!({"actions": {"mcp": {"governed_methods": ["initialize"]}}}),
    );
    let o = post(
        &g,
        &k,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
    );
    assert_eq!(local(&o).1["error"]["data"]["decision"], "deny");
    assert_eq!(o.event.action, "mcp:initialize");
    // client replies to server requests pass
    let o = post(&e, &k, r#"{"jsonrpc":"2.0","id":"srv-1","result":{}}"#);
    assert!(matches!(o.verdict, Verdict::Forward { .. }));
}

#[test]
fn resources_read_and_prompts_get_map_to_actions() {
    let k = key();
    let e = engine(&k);
    let read = |uri: &str| {
        post(
            &e,
            &k,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}})
                .to_string(),
        )
    };
    let o = read("file:///public/a.txt");
    assert!(matches!(o.verdict, Verdict::Forward { .. }));
    assert_eq!(o.event.action, "resource:read");
    assert_eq!(o.event.rpc.resource_uri, "file:///public/a.txt");
    assert_eq!(o.event.resource, "file:///public/a.txt");
    assert_eq!(local(&read("file:///etc/passwd")).0, 200);
    let o = post(
        &e,
        &k,
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"greet"}}"#,
    );
    assert_eq!(o.event.action, "prompt:greet");
    assert!(matches!(o.verdict, Verdict::Forward { .. }));
}

#[test]
fn trace_id_from_params_meta_traceparent() {
    let k = key();
    let e = engine(&k);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "lookup", "_meta": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}).to_string();
    let o = post(&e, &k, &body);
    assert_eq!(o.event.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn batch_with_denied_elements_forwards_the_rest_and_merges_errors() {
    let k = key();
    let e = engine(&k);
    let body = format!(
        "[{},{},{},{}]",
        call(json!(1), "lookup", json!({})),
        call(json!(2), "delete_all", json!({})),
        r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_all"}}"#
    );
    let o = post(&e, &k, &body);
    let (_, fwd) = forwarded(&o);
    let fwd = fwd.expect("a reduced batch");
    let ids: Vec<&Json> = fwd.as_array().unwrap().iter().map(|m| &m["id"]).collect();
    assert_eq!(
        ids,
        [&json!(1), &Json::Null],
        "lookup and the progress notification"
    );
    assert_eq!(fwd[1]["method"], "notifications/progress");
    // one event per element, the denied notification included
    let evs = all_events(&o);
    assert_eq!(evs.len(), 4);
    assert_eq!(evs.iter().filter(|e| e.decision == "deny").count(), 2);
    let plan = o.response.expect("errors to merge");
    assert_eq!(
        plan.max_body_bytes(200, Some("application/json; charset=utf-8")),
        Some(1024 * 1024)
    );
    assert_eq!(plan.max_body_bytes(500, Some("application/json")), None);
    assert_eq!(plan.max_body_bytes(200, Some("text/html")), None);
    let upstream = r#"[{"jsonrpc":"2.0","id":1,"result":{"content":[]}}]"#;
    let merged: Json = serde_json::from_slice(
        &e.rewrite_response(&plan, Some("application/json"), Ok(upstream.as_bytes()))
            .unwrap(),
    )
    .unwrap();
    let merged = merged.as_array().unwrap();
    assert_eq!(merged.len(), 2, "the denied notification gets no entry");
    assert_eq!(merged[0]["id"], 1);
    assert_eq!(merged[1]["id"], 2);
    assert_eq!(merged[1]["error"]["data"]["rule"], "no-delete");
    // an SSE answer gets the error as one more event
    let sse_up = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
    let out = String::from_utf8(
        e.rewrite_response(&plan, Some("text/event-stream"), Ok(sse_up.as_bytes()))
            .unwrap(),
    )
    .unwrap();
    assert!(out.starts_with(sse_up), "{out}");
    let evs = sse::parse(&out);
    assert_eq!(evs.len(), 2);
    let last: Json = serde_json::from_str(evs[1].data.as_deref().unwrap()).unwrap();
    assert_eq!(last["id"], 2);
    // a single-object answer becomes an array with the error
    let single = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
    let m: Json = serde_json::from_slice(
        &e.rewrite_response(&plan, Some("application/json"), Ok(single.as_bytes()))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(m.as_array().unwrap().len(), 2);
}

#[test]
fn batch_with_every_element_denied_is_answered_locally() {
    let k = key();
    let e = engine(&k);
    let body = format!(
        "[{},{},{}]",
        call(json!("a"), "delete_all", json!({})),
        call(json!("b"), "refund", json!({})),
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_all"}}"#
    );
    let o = post(&e, &k, &body);
    let (s, b) = local(&o);
    assert_eq!(s, 200);
    let arr = b.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["id"], "a");
    assert_eq!(arr[1]["error"]["data"]["decision"], "require_approval");
    assert_eq!(o.more_events.len(), 2);
    // only denied notifications: an HTTP error with a JSON-RPC error without id
    let o = post(
        &e,
        &k,
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_all"}}"#,
    );
    let (s, b) = local(&o);
    assert_eq!(s, 403);
    assert_eq!(b["id"], Json::Null);
    // an invalid element of a batch fails alone
    let o = post(
        &e,
        &k,
        &format!("[{},5]", call(json!(1), "lookup", json!({}))),
    );
    let (_, fwd) = forwarded(&o);
    assert_eq!(fwd.unwrap().as_array().unwrap().len(), 1);
    let plan = o.response.unwrap();
    assert_eq!(plan.inject.len(), 1);
    assert!(plan.inject[0].contains("-32600"));
}

fn tools_list_body(names: &[&str]) -> String {
    let tools: Vec<Json> = names
        .iter()
        .map(|n| json!({"name": n, "description": "d", "inputSchema": {"type": "object"}}))
        .collect();
    json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": tools, "nextCursor": "page-2"}})
        .to_string()
}

fn list_plan(e: &Engine, k: &ES256KeyPair, headers: &[(&str, &str)]) -> ResponsePlan {
    let o = post_with(
        e,
        "/mcp",
        Some(&token(k, "agent-a")),
        headers,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
    );
    assert!(matches!(o.verdict, Verdict::Forward { body: None, .. }));
    o.response.expect("tools/list is filtered")
}

const ALL_TOOLS: [&str; 8] = [
    "lookup",
    "send_email",
    "delete_all",
    "refund",
    "nested",
    "pay",
    "unknown_tool",
    "pay_other",
];

#[test]
fn tools_list_json_is_filtered_to_what_the_agent_may_call() {
    let k = key();
    let e = engine(&k);
    let plan = list_plan(&e, &k, &[]);
    let out = e
        .rewrite_response(
            &plan,
            Some("application/json"),
            Ok(tools_list_body(&ALL_TOOLS).as_bytes()),
        )
        .unwrap();
    let v: Json = serde_json::from_slice(&out).unwrap();
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // send_email and nested depend on arguments: kept, decided at call time;
    // refund needs approval: callable; delete_all, unknown_tool denied; pay has a fixed
    // resource that its rule allows.
    assert_eq!(names, ["lookup", "send_email", "refund", "nested", "pay"]);
    assert_eq!(v["result"]["nextCursor"], "page-2");
    assert_eq!(v["id"], 3);
    assert!(
        v["result"].get("cacheScope").is_none(),
        "2025 revisions have no cacheScope"
    );
    // the stateless revision marks the filtered list private
    let plan = list_plan(&e, &k, &[("mcp-protocol-version", "2026-07-28")]);
    let out = e
        .rewrite_response(
            &plan,
            Some("application/json"),
            Ok(tools_list_body(&["lookup"]).as_bytes()),
        )
        .unwrap();
    let v: Json = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["result"]["cacheScope"], "private");
}

#[test]
fn tools_list_keeps_every_other_member_byte_for_byte() {
    let k = key();
    let e = engine(&k);
    let plan = list_plan(&e, &k, &[]);
    // spacing, member order inside a tool, escapes and unknown members survive verbatim;
    // top-level and result members come out in name order (as a JSON map writes them)
    let body = r#"{"result": {"tools": [ {"inputSchema": { "type" : "object" }, "name": "lookup"},
        {"name": "delete_all"}, {"name": "refund", "x": [1, 2.50]} ], "n\u00e9xt": "p\"2"},
        "jsonrpc": "2.0", "id": 3, "_meta": {"a": null}}"#;
    let out = e
        .rewrite_response(&plan, Some("application/json"), Ok(body.as_bytes()))
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"_meta":{"a": null},"id":3,"jsonrpc":"2.0","result":{"néxt":"p\"2","tools":[{"inputSchema": { "type" : "object" }, "name": "lookup"},{"name": "refund", "x": [1, 2.50]}]}}"#
    );
    // a result without a tool list, or an answer to another id, passes unchanged
    for other in [
        r#"{"jsonrpc":"2.0","id":3,"result":{"items":[]}}"#,
        r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"delete_all"}]}}"#,
    ] {
        assert_eq!(
            e.rewrite_response(&plan, Some("application/json"), Ok(other.as_bytes())),
            None
        );
    }
}

#[test]
fn tools_list_with_every_tool_callable_passes_unchanged() {
    let k = key();
    let e = engine(&k);
    let plan = list_plan(&e, &k, &[]);
    let rw = |s: &str| e.rewrite_response(&plan, Some("application/json"), Ok(s.as_bytes()));
    // nothing hidden: the upstream's bytes stand (nothing is written back)
    assert_eq!(rw(&tools_list_body(&["lookup", "refund", "pay"])), None);
    // ... unless a member comes twice: a client may read the other copy, so the answer
    // is rewritten from what this parse read (the last copy), with the hidden tool gone
    for twice in [
        r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"delete_all"}]},"result":{"tools":[{"name":"lookup"}]}}"#,
        r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"delete_all"}],"tools":[{"name":"lookup"}]}}"#,
        r#"{"jsonrpc":"2.0","id":3,"id":3,"result":{"tools":[{"name":"lookup"}]}}"#,
    ] {
        let out = rw(twice).expect("rewritten");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"id":3,"jsonrpc":"2.0","result":{"tools":[{"name":"lookup"}]}}"#,
            "{twice}"
        );
    }
    // the stateless revision still gets its cacheScope
    let plan = list_plan(&e, &k, &[("mcp-protocol-version", "2026-07-28")]);
    let out = e
        .rewrite_response(
            &plan,
            Some("application/json"),
            Ok(tools_list_body(&["lookup"]).as_bytes()),
        )
        .expect("cacheScope added");
    let v: Json = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["result"]["cacheScope"], "private");
}

#[test]
fn tools_list_sse_is_filtered_event_by_event() {
    let k = key();
    let e = engine(&k);
    let plan = list_plan(&e, &k, &[]);
    let data = tools_list_body(&["lookup", "delete_all"]);
    let stream = format!(
        ": ping\r\n\r\nid: 9\r\nevent: message\r\ndata: {data}\r\n\r\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}}\n\n"
    );
    let out = String::from_utf8(
        e.rewrite_response(&plan, Some("text/event-stream"), Ok(stream.as_bytes()))
            .unwrap(),
    )
    .unwrap();
    let evs = sse::parse(&out);
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[0].raw, ": ping\r\n\r\n");
    assert_eq!(evs[1].other_lines, ["id: 9", "event: message"]);
    let v: Json = serde_json::from_str(evs[1].data.as_deref().unwrap()).unwrap();
    assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 1);
    assert!(evs[2].raw.contains("notifications/message"));
    // multi-line data and a partial trailing event
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Json>(&data).unwrap()).unwrap();
    let multi: String = pretty
        .lines()
        .map(|l| format!("data: {l}\n"))
        .collect::<String>()
        + "\ndata: {\"partial\"";
    let out = String::from_utf8(
        e.rewrite_response(&plan, Some("text/event-stream"), Ok(multi.as_bytes()))
            .unwrap(),
    )
    .unwrap();
    let evs = sse::parse(&out);
    let v: Json = serde_json::from_str(evs[0].data.as_deref().unwrap()).unwrap();
    assert_eq!(v["result"]["tools"][0]["name"], "lookup");
    assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 1);
    assert!(out.ends_with("data: {\"partial\""));
}

#[test]
fn tools_list_over_the_cap_or_unparsable_is_an_error_never_the_full_list() {
    let k = key();
    let e = engine(&k);
    let plan = list_plan(&e, &k, &[]);
    let out = e
        .rewrite_response(&plan, Some("application/json"), Err(TooLarge))
        .unwrap();
    let v: Json = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["id"], 3);
    assert_eq!(v["error"]["code"], -32603);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_response_bytes"));
    let out = String::from_utf8(
        e.rewrite_response(&plan, Some("text/event-stream"), Err(TooLarge))
            .unwrap(),
    )
    .unwrap();
    assert!(out.starts_with("data: ") && out.ends_with("\n\n"), "{out}");
    let out = e
        .rewrite_response(&plan, Some("application/json"), Ok(&[0xff, 0xfe]))
        .unwrap();
    assert!(String::from_utf8(out).unwrap().contains("not UTF-8"));
    // other responses of the same plan are untouched
    assert_eq!(
        e.rewrite_response(
            &plan,
            Some("application/json"),
            Ok(br#"{"jsonrpc":"2.0","id":99,"result":{"tools":[]}}"#)
        ),
        None
    );
}

#[test]
fn tools_list_in_a_batch_is_filtered_by_id() {
    let k = key();
    let e = engine(&k);
    let body = format!(
        r#"[{{"jsonrpc":"2.0","id":"L","method":"tools/list"}},{}]"#,
        call(json!(2), "lookup", json!({}))
    );
    let o = post(&e, &k, &body);
    let plan = o.response.unwrap();
    let up = format!(
        r#"[{{"jsonrpc":"2.0","id":2,"result":{{"tools":[{{"name":"delete_all"}}]}}}},{}]"#,
        tools_list_body(&["lookup", "delete_all"]).replace("\"id\":3", "\"id\":\"L\"")
    );
    let v: Json = serde_json::from_slice(
        &e.rewrite_response(&plan, Some("application/json"), Ok(up.as_bytes()))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        v[0]["result"]["tools"].as_array().unwrap().len(),
        1,
        "id 2 is not a tools/list answer"
    );
    assert_eq!(v[1]["result"]["tools"].as_array().unwrap().len(), 1);
}

#[test]
fn audit_mode_forwards_everything_and_does_not_filter() {
    let k = key();
    let e = engine_with(&k, "audit", json!({}));
    let o = post(&e, &k, &call(json!(1), "delete_all", json!({})));
    let (h, _) = forwarded(&o);
    assert_eq!(hdr(h, "x-meshguard-decision"), Some("would_deny"));
    assert_eq!(
        (o.event.decision.as_str(), o.event.enforced),
        ("would_deny", false)
    );
    let o = post(&e, &k, r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#);
    assert!(o.response.is_none());
    let o = post(&e, &k, "{bad");
    assert!(matches!(o.verdict, Verdict::Forward { .. }));
    assert_eq!(o.event.decision, "would_deny");
}

#[test]
fn shadow_policy_denials_are_recorded_and_forwarded() {
    let k = key();
    let e = engine(&k);
    let o = post(&e, &k, &call(json!(1), "lookup", json!({})));
    let (h, _) = forwarded(&o);
    assert_eq!(hdr(h, "x-meshguard-decision"), Some("would_deny"));
    assert_eq!(hdr(h, "x-meshguard-shadow-policy"), Some("candidate"));
    assert_eq!(o.event.decision, "would_deny");
    assert_eq!(o.event.shadow_policy, "candidate");
    assert_eq!(o.event.rule, "no-lookup");
    assert!(!o.event.enforced);
    assert_eq!(o.decision.effect, Effect::Allow, "the enforced decision");
    // plain HTTP too
    let t = token(&k, "agent-a");
    let r = req(
        "POST",
        "/x",
        Some(&t),
        &[("x-meshguard-action", "tool:lookup")],
    );
    let o = e.handle(&r, NANOS, &mut e.verifier().new_cache());
    assert_eq!(o.event.shadow_policy, "candidate");
    assert_eq!(
        hdr(forwarded(&o).0, "x-meshguard-shadow-policy"),
        Some("candidate")
    );
}

#[test]
fn a2a_methods_map_to_v1_actions_with_params_as_context() {
    let k = key();
    let e = engine(&k);
    let t = token(&k, "agent-a");
    let send = |method: &str, role: &str| {
        let body = json!({"jsonrpc": "2.0", "id": "t1", "method": method, "params": {"message": {"role": role, "parts": []}}}).to_string();
        post_with(&e, "/a2a", Some(&t), &[], &body)
    };
    let o = send("message/send", "agent");
    assert!(matches!(o.verdict, Verdict::Forward { .. }));
    assert_eq!(o.event.action, "a2a:SendMessage");
    assert_eq!(o.event.resource, "billing-agent");
    assert_eq!(o.event.rpc.a2a_method, "message/send");
    assert_eq!(o.decision.rule.as_deref(), Some("a2a-send"));
    // the v1.0 spelling: same action, allowed through the context condition
    assert!(matches!(
        send("SendMessage", "user").verdict,
        Verdict::Forward { .. }
    ));
    let (s, b) = local(&send("SendMessage", "agent"));
    assert_eq!(s, 200);
    assert_eq!(b["id"], "t1");
    assert_eq!(b["error"]["code"], jsonrpc::POLICY_DENIED);
    assert!(matches!(
        send("tasks/get", "x").verdict,
        Verdict::Forward { .. }
    ));
    let o = send("tasks/frobnicate", "x");
    assert_eq!(o.event.action, "a2a:tasks/frobnicate");
    assert_eq!(local(&o).0, 200);
    // A2A answers stream through untouched
    assert!(send("message/stream", "user").response.is_none());
}

#[test]
fn decision_api_enforce_answers_with_the_guardian_shape() {
    let k = key();
    let e = engine(&k);
    let t = token(&k, "agent-a");
    let enforce = |body: Json| post_with(&e, "/enforce", Some(&t), &[], &body.to_string());
    let o = enforce(
        json!({"agentId": "agent-a", "action": "write:email", "resource": "r", "context": {"amount": 45.0}}),
    );
    let (s, b) = local(&o);
    assert_eq!(s, 200);
    assert_eq!(b["decision"], "allow");
    assert_eq!(b["policy"], "agents");
    assert_eq!(b["rule"], "email-small");
    assert!(b["latencyMs"].is_number());
    assert_eq!(b["bundleVersion"], e.policy_version());
    assert_eq!(b["mode"], "enforce");
    assert!(b.get("reason").is_none(), "the seed's allow has no reason");
    assert_eq!(o.event.action, "write:email");
    assert_eq!(o.event.decision, "allow");
    let (_, b) = local(&enforce(
        json!({"action": "write:email", "context": {"amount": 450}}),
    ));
    assert_eq!(b["decision"], "deny");
    assert!(b["reason"].is_string());
    let (_, b) = local(&enforce(json!({"action": "tool:refund"})));
    assert_eq!(b["decision"], "require_approval");
    assert!(b["approvalId"].as_str().unwrap().starts_with("apr_"));
    // another agent's id is refused
    let o = enforce(json!({"agentId": "agent-z", "action": "read:x"}));
    let (s, b) = local(&o);
    assert_eq!(s, 403);
    assert!(b["reason"].as_str().unwrap().contains("agent-z"));
    assert_eq!(o.event.decision, "deny");
    // malformed, no token, wrong method
    assert_eq!(local(&enforce(json!({"resource": "x"}))).0, 400);
    assert_eq!(local(&post_with(&e, "/enforce", None, &[], "{}")).0, 401);
    let mut cache = e.verifier().new_cache();
    let Step::Decided(o) = e.start(&req("GET", "/enforce", Some(&t), &[]), NANOS, &mut cache)
    else {
        panic!()
    };
    assert_eq!(local(&o).0, 405);
}

#[test]
fn decision_api_batch_and_health() {
    let k = key();
    let e = engine(&k);
    let t = token(&k, "agent-a");
    let body = json!({"agentId": "agent-a", "actions": [
        {"action": "read:customer", "resource": "customer-db"},
        {"action": "write:email", "resource": "notifications", "context": {"amount": 25.0}},
        {"action": "delete:everything"}
    ]});
    let o = post_with(&e, "/enforce/batch", Some(&t), &[], &body.to_string());
    let (s, b) = local(&o);
    assert_eq!(s, 200);
    let r = b["results"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["action"], "read:customer");
    assert_eq!(r[0]["decision"], "allow");
    assert!(r[0]["latencyMs"].is_number());
    assert_eq!(r[2]["decision"], "deny");
    assert!(r[2]["reason"].is_string());
    assert_eq!(b["allAllowed"], false);
    assert_eq!(b["mode"], "enforce");
    assert_eq!(b["bundleVersion"], e.policy_version());
    assert_eq!(all_events(&o).len(), 3, "every decision audited");
    assert_eq!(o.more_events[1].action, "delete:everything");
    let too_many = json!({"actions": vec![json!({"action": "read:x"}); 101]});
    assert_eq!(
        local(&post_with(
            &e,
            "/enforce/batch",
            Some(&t),
            &[],
            &too_many.to_string()
        ))
        .0,
        400
    );
    let mut cache = e.verifier().new_cache();
    let Step::Decided(o) = e.start(&req("GET", "/health", None, &[]), NANOS, &mut cache) else {
        panic!()
    };
    let (s, b) = local(&o);
    assert_eq!(s, 200);
    assert_eq!(b["status"], "healthy");
    assert_eq!(b["cachedPolicies"], 2);
    assert_eq!(b["mode"], "enforce");
}

#[test]
fn decision_api_in_audit_mode_lets_the_action_proceed() {
    let k = key();
    let e = engine_with(&k, "audit", json!({}));
    let t = token(&k, "agent-a");
    let o = post_with(&e, "/enforce", Some(&t), &[], r#"{"action":"delete:x"}"#);
    let (_, b) = local(&o);
    assert_eq!(b["decision"], "allow");
    assert_eq!(b["wouldDeny"], true);
    assert_eq!(b["mode"], "audit");
    assert_eq!(o.event.decision, "would_deny");
}

#[test]
fn bad_input_never_panics() {
    let k = key();
    let e = engine(&k);
    let t = token(&k, "agent-a");
    let inputs = [
        "",
        " ",
        "null",
        "[null]",
        "[[]]",
        "{}",
        "[{}]",
        "\"x\"",
        "1e999",
        "[1,2,3]",
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":{}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"send_email","arguments":[1]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"send_email","arguments":{"amount":"lots"}}}"#,
    ];
    for path in ["/mcp", "/a2a", "/enforce", "/enforce/batch"] {
        for i in inputs {
            let o = post_with(
                &e,
                path,
                Some(&t),
                &[("mcp-method", "x"), ("mcp-name", "y")],
                i,
            );
            assert!(!o.event.decision.is_empty(), "{path} {i}");
        }
    }
    let plan = list_plan(&e, &k, &[]);
    for i in inputs.iter().chain(&["data:\n\n", ":\r", "data: [1"]) {
        for ct in ["application/json", "text/event-stream"] {
            let _ = e.rewrite_response(&plan, Some(ct), Ok(i.as_bytes()));
        }
    }
}

#[test]
fn configuration_errors_name_the_mcp_a2a_and_decision_api_fields() {
    let k = key();
    let jwk: Json = serde_json::from_str(&k.public_key().to_jwk()).unwrap();
    let err = |extra: Json| {
        let mut cfg = json!({"identity": {"issuers": [{"issuer": "i", "audiences": ["a"], "jwks": {"keys": [jwk]}}]}});
        for (key, v) in extra.as_object().unwrap() {
            cfg[key] = v.clone();
        }
        Engine::from_text(cfg.to_string().as_bytes())
            .unwrap_err()
            .to_string()
    };
    assert!(err(json!({"actions": {"mcp": {"bogus": 1}}})).contains("bogus"));
    assert!(
        err(json!({"actions": {"mcp": {"paths": ["mcp"]}}})).starts_with("actions.mcp.paths[0]")
    );
    assert!(err(json!({"actions": {"a2a": {"agent": "x", "nope": true}}})).contains("nope"));
    assert!(
        err(json!({"decision_api": {"paths": ["enforce"]}})).starts_with("decision_api.paths[0]")
    );
    assert!(err(json!({"decision_api": {"max_batch_actions": 0}}))
        .starts_with("decision_api.max_batch_actions"));
    assert!(
        err(json!({"policies": [{"name": "p", "mode": "shadow", "rules": []}]})).contains("mode")
    );
    // Istio's float numbers are accepted
    let mut ok = json!({"identity": {"issuers": [{"issuer": "i", "audiences": ["a"], "jwks": {"keys": [jwk]}}]}});
    ok["actions"] = json!({"mcp": {"max_body_bytes": 2048.0, "max_response_bytes": 1e+06}});
    assert!(Engine::from_text(ok.to_string().as_bytes()).is_ok());
}

#[test]
fn response_plan_buffers_only_2xx_json_and_event_streams() {
    let plan = ResponsePlan {
        max_bytes: 10,
        tools_list: Vec::new(),
        inject: Vec::new(),
        lister: None,
    };
    assert_eq!(plan.max_body_bytes(200, Some("Application/JSON")), Some(10));
    assert_eq!(
        plan.max_body_bytes(202, Some("text/event-stream")),
        Some(10)
    );
    assert_eq!(plan.max_body_bytes(200, None), None);
    assert_eq!(plan.max_body_bytes(204, Some("text/plain")), None);
    assert_eq!(plan.max_body_bytes(302, Some("application/json")), None);
    let none = ResponsePlan {
        max_bytes: 0,
        ..plan
    };
    assert_eq!(none.max_body_bytes(200, Some("application/json")), None);
}

#[test]
fn mcp_name_header_values_decode() {
    assert_eq!(decode_header_value("plain").as_deref(), Some("plain"));
    assert_eq!(decode_header_value("=?base64?w6k=?=").as_deref(), Some("é"));
    assert_eq!(decode_header_value("=?base64?%%?="), None);
    assert_eq!(decode_header_value("=?base64?//8=?="), None, "not UTF-8");
    assert_eq!(name_field("tools/call"), Some("name"));
    assert_eq!(name_field("resources/read"), Some("uri"));
    assert_eq!(name_field("tools/list"), None);
}

#[test]
fn record_arguments_puts_values_in_the_event() {
    let k = key();
    let e = engine_with(
        &k,
        "enforce",
        json!({"actions": {"mcp": {"record_arguments": true}}}),
    );
    let o = post(
        &e,
        &k,
        &call(json!(1), "lookup", json!({"q": "secret", "n": 2})),
    );
    let args: Json = serde_json::from_str(&o.event.rpc.arguments).unwrap();
    assert_eq!(args, json!({"q": "secret", "n": 2}));
    assert_eq!(o.event.rpc.argument_keys, ["n", "q"]);
}

#[test]
fn delegation_ceiling_applies_to_mcp_calls() {
    let k = key();
    let jwk: Json = serde_json::from_str(&k.public_key().to_jwk()).unwrap();
    let cfg = json!({
        "identity": {"issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": {"keys": [jwk]}}]},
        "actions": {"mcp": {}},
        "policy_yaml": "name: p\nrules:\n  - {action: 'tool:lookup', effect: allow, conditions: ['agent.id != \"intern\"']}\n"
    });
    let e = Engine::from_text(cfg.to_string().as_bytes()).unwrap();
    let mut c = Claims::with_custom_claims(
        json!({"trust_tier": "verified", "act": {"sub": "agent-b", "trust_tier": "verified"}}),
        Duration::from_secs(600),
    )
    .with_issuer("https://issuer.example")
    .with_audience("agents")
    .with_subject("intern");
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
    let t = k.sign(c).unwrap();
    let o = post_with(
        &e,
        "/mcp",
        Some(&t),
        &[],
        &call(json!(1), "lookup", json!({})),
    );
    let b = local(&o).1;
    assert!(
        b["error"]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("delegator \"intern\""),
        "{b}"
    );
    assert_eq!(o.event.delegation_chain, ["intern", "agent-b"]);
    assert!(o.response.is_none());
}

#[test]
fn without_mcp_config_the_mcp_path_is_plain_http() {
    let k = key();
    let jwk: Json = serde_json::from_str(&k.public_key().to_jwk()).unwrap();
    let cfg = json!({"identity": {"issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": {"keys": [jwk]}}]}});
    let e = Engine::from_text(cfg.to_string().as_bytes()).unwrap();
    let t = token(&k, "agent-a");
    let mut cache = e.verifier().new_cache();
    let r = req("POST", "/mcp", Some(&t), &[]);
    assert!(matches!(e.start(&r, NANOS, &mut cache), Step::Decided(_)));
    let r = req("GET", "/.well-known/oauth-protected-resource", None, &[]);
    let Step::Decided(o) = e.start(&r, NANOS, &mut cache) else {
        panic!()
    };
    assert_eq!(
        local(&o).0,
        401,
        "no document configured: an ordinary request"
    );
    let r = req("POST", "/enforce", Some(&t), &[]);
    assert!(matches!(e.start(&r, NANOS, &mut cache), Step::Decided(_)));
}

#[test]
fn a2a_unauthenticated_is_401_without_mcp_metadata() {
    let k = key();
    let e = engine(&k);
    let o = post_with(
        &e,
        "/a2a",
        None,
        &[],
        r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage"}"#,
    );
    let Verdict::Respond(r) = &o.verdict else {
        panic!()
    };
    assert_eq!(r.status, 401);
    assert!(!hdr(&r.headers, "www-authenticate")
        .unwrap()
        .contains("resource_metadata"));
}

#[test]
fn tools_list_edge_cases() {
    let k = key();
    let e = engine(&k);
    let plan = list_plan(&e, &k, &[]);
    let rw = |s: &str| {
        e.rewrite_response(&plan, Some("application/json"), Ok(s.as_bytes()))
            .map(|b| serde_json::from_slice::<Json>(&b).unwrap())
    };
    // nameless tools are dropped
    let v = rw(r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"lookup"},{"title":"x"},{"name":7}]}}"#).unwrap();
    assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 1);
    // an upstream error passes unchanged
    assert_eq!(
        rw(r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"m"}}"#),
        None
    );
    // unparsable JSON is an error, never the answer
    let v = rw("{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"tools\":[").unwrap();
    assert_eq!(v["error"]["code"], -32603, "{v}");
    // a batch answer inside one SSE event
    let data = format!("[{}]", tools_list_body(&["lookup", "delete_all"]));
    let out = e
        .rewrite_response(
            &plan,
            Some("text/event-stream"),
            Ok(format!("data: {data}\n\n").as_bytes()),
        )
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    let v: Json = serde_json::from_str(sse::parse(&out)[0].data.as_deref().unwrap()).unwrap();
    assert_eq!(v[0]["result"]["tools"].as_array().unwrap().len(), 1);
}

#[test]
fn decision_api_paths_are_classified_by_suffix() {
    let k = key();
    let e = engine_with(
        &k,
        "enforce",
        json!({"decision_api": {"paths": ["/v1/guard", "/v1/guard/batch", "/v1/health"]}}),
    );
    assert_eq!(
        e.decision_api_endpoint("/v1/guard"),
        Some(decision_api::Endpoint::Enforce)
    );
    assert_eq!(
        e.decision_api_endpoint("/v1/guard/batch"),
        Some(decision_api::Endpoint::Batch)
    );
    assert_eq!(
        e.decision_api_endpoint("/v1/health"),
        Some(decision_api::Endpoint::Health)
    );
    assert_eq!(e.decision_api_endpoint("/enforce"), None);
    let h = e.engine_health(NOW);
    let r = decision_api::health_response(&h);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("\"cachedPolicies\":2"));
}

#[test]
fn decision_api_body_limits() {
    let k = key();
    let e = engine_with(
        &k,
        "enforce",
        json!({"decision_api": {"max_body_bytes": 32}}),
    );
    let t = token(&k, "agent-a");
    let o = post_with(
        &e,
        "/enforce",
        Some(&t),
        &[],
        &json!({"action": "read:x", "context": {"pad": "x".repeat(64)}}).to_string(),
    );
    assert_eq!(local(&o).0, 413);
    let deep = format!(
        "{{\"action\":\"read:x\",\"context\":{}1{}}}",
        "[".repeat(20),
        "]".repeat(20)
    );
    let e = engine(&k);
    let o = post_with(&e, "/enforce", Some(&t), &[], &deep);
    assert_eq!(local(&o).0, 200, "nesting under the cap is fine");
    let deeper = format!(
        "{{\"action\":\"read:x\",\"context\":{}1{}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    assert_eq!(
        local(&post_with(&e, "/enforce", Some(&t), &[], &deeper)).0,
        400
    );
}
