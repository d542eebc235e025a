//! The host layer driven natively through the fake host: what Envoy would see for each
//! callback (header mutations, local responses, calls, stats).

use super::decider::Decider;
use super::fake::FakeHost;
use super::http::Http;
use super::root::Root;
use super::{Flow, Host};
use crate::engine::body::{PendingBody, ResponsePlan, Step, TooLarge};
use crate::engine::request::Request;
use crate::engine::response::LocalResponse;
use crate::engine::{DecisionKind, Engine, Outcome, Verdict};
use crate::identity::TokenCache;
use crate::sources::bundle::{sign, FORMAT};
use ct_codecs::{Base64, Encoder};
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;

const NOW: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z
const ISSUER: &str = "https://issuer.example";

fn key(kid: &str) -> ES256KeyPair {
    ES256KeyPair::generate().with_key_id(kid)
}

fn jwk(k: &ES256KeyPair) -> Value {
    serde_json::from_str(&k.public_key().to_jwk()).unwrap()
}

fn token(k: &ES256KeyPair, tier: &str) -> String {
    let mut c = Claims::with_custom_claims(json!({"trust_tier": tier}), Duration::from_secs(600))
        .with_issuer(ISSUER)
        .with_audience("agents")
        .with_subject("agent-a");
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
    k.sign(c).unwrap()
}

const POLICY: &str = "name: p\nrules:\n  - {action: 'read:*', effect: allow}\n  - {action: 'delete:*', effect: deny, reason: no deletes}\n";

fn inline(k: &ES256KeyPair) -> Value {
    json!({
        "identity": {"issuers": [{"issuer": ISSUER, "audiences": ["agents"], "jwks": {"keys": [jwk(k)]}}]},
        "policy_yaml": POLICY,
        "audit": {"cluster": "collector", "flush_interval_ms": 200},
    })
}

fn configure(host: &Rc<FakeHost>, cfg: &Value) -> Root {
    host.state.borrow_mut().config = cfg.to_string().into_bytes();
    let mut root = Root::new(Rc::clone(host) as Rc<dyn Host>);
    assert!(root.on_configure(), "configuration refused");
    root
}

/// A request through a new HTTP context, headers only.
fn call(root: &Root, host: &FakeHost, headers: &[(&str, &str)]) -> (Flow, Http) {
    let mut h = vec![
        (":method", "GET"),
        (":path", "/v1/orders/7"),
        (":authority", "tools"),
    ];
    h.extend_from_slice(headers);
    host.new_request(&h);
    let mut http = root.new_http();
    (http.on_request_headers(true), http)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn without_a_configuration_requests_fail_closed() {
    let host = FakeHost::at(NOW);
    let root = Root::new(Rc::clone(&host) as Rc<dyn Host>);
    let (flow, _) = call(&root, &host, &[]);
    assert_eq!(flow, Flow::Pause);
    let sent = host.take_sent().unwrap();
    assert_eq!(sent.status, 503);
    assert_eq!(sent.json()["decision"], "deny");
}

#[test]
fn an_allowed_request_is_forwarded_with_identity_headers_and_audited() {
    let (host, k) = (FakeHost::at(NOW), key("k1"));
    let root = configure(&host, &inline(&k));
    let auth = bearer(&token(&k, "verified"));
    let (flow, _) = call(
        &root,
        &host,
        &[
            ("authorization", &auth),
            ("x-meshguard-action", "read:orders"),
            ("x-meshguard-agent", "spoofed"),
        ],
    );
    assert_eq!(flow, Flow::Continue);
    assert!(host.take_sent().is_none());
    assert_eq!(
        host.request_header("x-meshguard-agent").as_deref(),
        Some("agent-a")
    );
    assert_eq!(
        host.request_header("x-meshguard-trust-tier").as_deref(),
        Some("verified")
    );
    assert_eq!(
        host.request_header("x-meshguard-decision").as_deref(),
        Some("allow")
    );
    assert_eq!(host.metric("meshguard.requests.allowed"), 1);
    assert_eq!(root.vm().borrow().audit.queued(), 1);
    assert_eq!(
        host.state.borrow().tick_period,
        Some(std::time::Duration::from_millis(200))
    );
}

#[test]
fn denials_and_identity_failures_are_answered_locally_and_counted() {
    let (host, k) = (FakeHost::at(NOW), key("k1"));
    let root = configure(&host, &inline(&k));
    let auth = bearer(&token(&k, "verified"));
    let (flow, _) = call(
        &root,
        &host,
        &[
            ("authorization", &auth),
            ("x-meshguard-action", "delete:orders"),
        ],
    );
    assert_eq!(flow, Flow::Pause);
    let sent = host.take_sent().unwrap();
    assert_eq!(
        (sent.status, sent.json()["reason"].as_str()),
        (403, Some("no deletes"))
    );
    let (flow, _) = call(&root, &host, &[("x-meshguard-action", "read:orders")]);
    assert_eq!(flow, Flow::Pause);
    let sent = host.take_sent().unwrap();
    assert_eq!(
        (sent.status, sent.json()["errorCode"].as_str()),
        (401, Some("missing_token"))
    );
    assert!(sent
        .headers
        .iter()
        .any(|(k, v)| k == "www-authenticate" && v.starts_with("Bearer ")));
    assert_eq!(host.metric("meshguard.requests.denied"), 1);
    assert_eq!(host.metric("meshguard.requests.unauthenticated"), 1);
    assert!(
        !root.vm().borrow().jwks_wanted,
        "a missing token is no reason to refetch keys"
    );
}

#[test]
fn audit_mode_forwards_and_counts_would_deny() {
    let (host, k) = (FakeHost::at(NOW), key("k1"));
    let mut cfg = inline(&k);
    cfg["mode"] = json!("audit");
    let root = configure(&host, &cfg);
    let (flow, _) = call(&root, &host, &[("x-meshguard-action", "read:orders")]);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(
        host.request_header("x-meshguard-decision").as_deref(),
        Some("would_deny")
    );
    assert_eq!(host.metric("meshguard.requests.would_deny"), 1);
}

#[test]
fn a_bad_configuration_is_refused_counted_and_the_previous_one_kept() {
    let (host, k) = (FakeHost::at(NOW), key("k1"));
    let mut root = configure(&host, &inline(&k));
    host.state.borrow_mut().config = br#"{"identity": {"issuers": []}}"#.to_vec();
    assert!(!root.on_configure());
    assert_eq!(host.metric("meshguard.config.rejected"), 1);
    let auth = bearer(&token(&k, "verified"));
    let (flow, _) = call(
        &root,
        &host,
        &[("authorization", &auth), ("x-meshguard-action", "read:x")],
    );
    assert_eq!(
        flow,
        Flow::Continue,
        "the previous configuration still decides"
    );
}

#[test]
fn audit_batches_are_exported_acknowledged_and_retried() {
    let (host, k) = (FakeHost::at(NOW), key("k1"));
    let mut root = configure(&host, &inline(&k));
    call(&root, &host, &[("x-meshguard-action", "read:orders")]);
    root.on_tick();
    let calls = host.grpc_calls();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(
        (c.cluster.as_str(), c.method.as_str()),
        ("collector", "Export")
    );
    assert_eq!(
        c.service,
        "opentelemetry.proto.collector.logs.v1.LogsService"
    );
    assert!(!c.message.is_empty());
    root.on_grpc_call_response(c.token, 0);
    assert_eq!(host.metric("meshguard.audit.acknowledged"), 1);
    assert_eq!(host.metric("meshguard.audit.exports_ok"), 1);
    assert_eq!(host.metric("meshguard.audit.emitted"), 1);

    // A failed export keeps the events and retries them after a backoff.
    call(&root, &host, &[("x-meshguard-action", "read:orders")]);
    root.on_tick();
    let c = host.grpc_calls().remove(0);
    host.state.borrow_mut().grpc_message = Some("unavailable".into());
    root.on_grpc_call_response(c.token, 14);
    assert_eq!(host.metric("meshguard.audit.exports_failed"), 1);
    assert_eq!(host.metric("meshguard.audit.retried"), 1);
    assert_eq!(host.metric("meshguard.audit.buffered"), 1);
    host.advance_ms(1_000);
    root.on_tick();
    let c = host.grpc_calls().remove(0);
    root.on_grpc_call_response(c.token, 0);
    assert_eq!(host.metric("meshguard.audit.acknowledged"), 2);
    assert_eq!(host.metric("meshguard.audit.buffered"), 0);
}

#[test]
fn an_export_that_cannot_start_keeps_the_events() {
    let (host, k) = (FakeHost::at(NOW), key("k1"));
    let mut root = configure(&host, &inline(&k));
    call(&root, &host, &[("x-meshguard-action", "read:orders")]);
    host.state.borrow_mut().refuse_calls = Some("ParseFailure".into());
    root.on_tick();
    assert!(host.grpc_calls().is_empty());
    assert_eq!(root.vm().borrow().audit.queued(), 1);
    assert_eq!(host.metric("meshguard.audit.exports_failed"), 1);
}

#[test]
fn without_a_collector_events_are_logged_not_buffered() {
    let (host, k) = (FakeHost::at(NOW), key("k1"));
    let mut cfg = inline(&k);
    cfg.as_object_mut().unwrap().remove("audit");
    let mut root = configure(&host, &cfg);
    call(&root, &host, &[("x-meshguard-action", "read:orders")]);
    root.on_tick();
    assert_eq!(root.vm().borrow().audit.queued(), 0);
    assert!(host.grpc_calls().is_empty());
}

// ---- fetched documents -----------------------------------------------------------

fn signer() -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([3; 32]))
}

fn bundle(version: u64, effect: &str) -> Vec<u8> {
    let mut b = json!({"format": FORMAT, "version": version, "created_at": "2027-01-15T07:00:00Z",
        "policies": [{"name": format!("bundle-{effect}"), "rules": [{"action": "read:*", "effect": effect}]}]});
    sign(&mut b, &signer().sk, None).unwrap();
    serde_json::to_vec(&b).unwrap()
}

fn bundled(k: &ES256KeyPair) -> Value {
    let mut cfg = inline(k);
    cfg["bundle"] = json!({"cluster": "bundles", "path": "/b.json", "interval_seconds": 1,
        "public_keys": [Base64::encode_to_string(signer().pk.as_ref()).unwrap()]});
    cfg["status"] = json!({"path": "/health"});
    cfg
}

fn health(root: &Root, host: &FakeHost) -> Value {
    host.new_request(&[
        (":method", "GET"),
        (":path", "/health"),
        (":authority", "x"),
    ]);
    assert_eq!(root.new_http().on_request_headers(true), Flow::Pause);
    host.take_sent().unwrap().json()
}

#[test]
fn tick_fetch_answer_rebuilds_the_engine() {
    let (host, k) = (FakeHost::at(NOW), key("k1"));
    let mut root = configure(&host, &bundled(&k));
    let auth = bearer(&token(&k, "verified"));
    let read = [
        ("authorization", auth.as_str()),
        ("x-meshguard-action", "read:orders"),
    ];
    assert_eq!(
        call(&root, &host, &read).0,
        Flow::Continue,
        "the inline policy"
    );
    assert_eq!(health(&root, &host)["policySource"], "inline");

    root.on_tick();
    let fetch = host.http_calls().remove(0);
    assert_eq!(fetch.cluster, "bundles");
    assert_eq!(fetch.header(":path"), Some("/b.json"));
    assert_eq!(fetch.header(":authority"), Some("bundles"));
    assert_eq!(fetch.timeout, std::time::Duration::from_millis(5_000));
    let body = bundle(1, "deny");
    host.answer_call(&[(":status", "200"), ("etag", "\"v1\"")], &body);
    root.on_http_call_response(fetch.token, body.len());

    assert_eq!(host.metric("meshguard.bundle.version"), 1);
    assert_eq!(host.metric("meshguard.bundle.fetches"), 1);
    assert_eq!(host.metric("meshguard.bundle.updates"), 1);
    assert_eq!(call(&root, &host, &read).0, Flow::Pause);
    assert_eq!(host.take_sent().unwrap().json()["policy"], "bundle-deny");
    let h = health(&root, &host);
    assert_eq!(
        (h["bundleVersion"].as_str(), h["status"].as_str()),
        (Some("1"), Some("healthy"))
    );
    assert_eq!(h["bundleAge"], "1h0m");

    // The next fetch is conditional; 304 changes nothing.
    host.advance_ms(1_200);
    root.on_tick();
    let fetch = host.http_calls().remove(0);
    assert_eq!(fetch.header("if-none-match"), Some("\"v1\""));
    host.answer_call(&[(":status", "304")], b"");
    root.on_http_call_response(fetch.token, 0);
    assert_eq!(host.metric("meshguard.bundle.updates"), 1);
    assert_eq!(host.metric("meshguard.bundle.last_sync_success"), 1);
}

#[test]
fn rejected_and_failed_fetches_are_counted_and_reported() {
    let (host, k) = (FakeHost::at(NOW), key("k1"));
    let mut root = configure(&host, &bundled(&k));
    root.on_tick();
    let fetch = host.http_calls().remove(0);
    host.answer_call(&[(":status", "200")], b"<html>not a bundle</html>");
    root.on_http_call_response(fetch.token, 25);
    assert_eq!(host.metric("meshguard.bundle.rejected"), 1);
    assert!(health(&root, &host)["lastError"]
        .as_str()
        .unwrap()
        .contains("not a meshguard-bundle/v1"));

    // Envoy's own 503 when the source is down: a failure, source unreachable.
    host.advance_ms(1_200);
    root.on_tick();
    let fetch = host.http_calls().remove(0);
    host.answer_call(
        &[(":status", "503")],
        b"upstream connect error or disconnect/reset before headers",
    );
    root.on_http_call_response(fetch.token, 57);
    assert_eq!(host.metric("meshguard.bundle.fetch_failures"), 1);
    let h = health(&root, &host);
    assert_eq!(
        (h["gatewayReachable"].as_bool(), h["status"].as_str()),
        (Some(false), Some("degraded"))
    );

    // A call that cannot start (no such cluster).
    host.advance_ms(1_200);
    host.state.borrow_mut().refuse_calls = Some("BadArgument".into());
    root.on_tick();
    assert_eq!(host.metric("meshguard.bundle.fetch_failures"), 2);
    assert_eq!(host.metric("meshguard.bundle.fetches"), 3);
    assert!(health(&root, &host)["lastError"]
        .as_str()
        .unwrap()
        .contains("is the cluster defined?"));
    assert_eq!(host.metric("meshguard.bundle.last_sync_success"), 0);
}

#[test]
fn a_second_worker_adopts_the_bundle_without_fetching() {
    let (a, k) = (FakeHost::at(NOW), key("k1"));
    let b = FakeHost::worker_of(&a);
    let mut root_a = configure(&a, &bundled(&k));
    let mut root_b = configure(&b, &bundled(&k));
    root_a.on_tick();
    let fetch = a.http_calls().remove(0);
    let body = bundle(2, "deny");
    a.answer_call(&[(":status", "200")], &body);
    root_a.on_http_call_response(fetch.token, body.len());
    root_b.on_tick();
    assert!(
        b.http_calls().is_empty(),
        "one fetch per interval per Envoy"
    );
    assert_eq!(b.metric("meshguard.bundle.version"), 2);
    assert_eq!(
        b.metric("meshguard.bundle.updates"),
        0,
        "adopted, not fetched"
    );
    assert_eq!(root_b.control().engine().unwrap().bundle_version(), Some(2));
}

#[test]
fn remote_keys_are_fetched_and_an_unknown_kid_refetches_them() {
    let host = FakeHost::at(NOW);
    let (k1, k2) = (key("k1"), key("k2"));
    let cfg = json!({
        "identity": {"issuers": [{"issuer": ISSUER, "audiences": ["agents"],
            "jwks_cluster": "idp", "jwks_path": "/jwks", "jwks_refresh_seconds": 300}]},
        "policy_yaml": POLICY,
    });
    let mut root = configure(&host, &cfg);
    let read = |t: &str| {
        [
            ("authorization", bearer(t)),
            ("x-meshguard-action", "read:x".into()),
        ]
    };
    let status = |root: &Root, t: &str| {
        let h = read(t);
        let h: Vec<(&str, &str)> = h.iter().map(|(a, b)| (*a, b.as_str())).collect();
        match call(root, &host, &h).0 {
            Flow::Continue => 200,
            Flow::Pause => host.take_sent().unwrap().status,
        }
    };
    assert_eq!(
        status(&root, &token(&k1, "verified")),
        401,
        "keys not fetched yet"
    );
    assert!(
        !root.vm().borrow().jwks_wanted,
        "missing keys have their own schedule"
    );
    let answer = |root: &mut Root, keys: &[&ES256KeyPair]| {
        let fetch = host.http_calls().pop().expect("a JWKS fetch");
        assert_eq!(
            (fetch.cluster.as_str(), fetch.header(":path")),
            ("idp", Some("/jwks"))
        );
        let doc =
            serde_json::to_vec(&json!({"keys": keys.iter().map(|k| jwk(k)).collect::<Vec<_>>()}))
                .unwrap();
        host.answer_call(&[(":status", "200")], &doc);
        root.on_http_call_response(fetch.token, doc.len());
    };
    root.on_tick();
    answer(&mut root, &[&k1]);
    assert_eq!(status(&root, &token(&k1, "verified")), 200);
    assert_eq!(
        status(&root, &token(&k2, "verified")),
        401,
        "rotated key not known yet"
    );
    assert!(root.vm().borrow().jwks_wanted);
    host.advance_ms(1_000);
    root.on_tick();
    answer(&mut root, &[&k1, &k2]);
    assert_eq!(status(&root, &token(&k2, "verified")), 200);
    assert_eq!(host.metric("meshguard.jwks.fetches"), 2);
    assert_eq!(host.metric("meshguard.jwks.updates"), 2);
}

#[test]
fn the_status_endpoint_answers_only_on_its_ports() {
    let (host, k) = (FakeHost::at(NOW), key("k1"));
    let mut cfg = inline(&k);
    cfg["status"] = json!({"path": "/health", "ports": [8080]});
    let root = configure(&host, &cfg);
    let port = |p: i64| {
        host.state
            .borrow_mut()
            .properties
            .insert("destination.port".into(), p.to_le_bytes().to_vec())
    };
    port(8080);
    let h = health(&root, &host);
    assert_eq!(
        (h["status"].as_str(), h["policySource"].as_str()),
        (Some("healthy"), Some("inline"))
    );
    port(9090);
    host.new_request(&[
        (":method", "GET"),
        (":path", "/health"),
        (":authority", "x"),
    ]);
    root.new_http().on_request_headers(true);
    assert_eq!(
        host.take_sent().unwrap().status,
        401,
        "just a request on another listener"
    );
}

// ---- the body phase ----------------------------------------------------------------

/// The engine's body phase, scripted: requests to `/mcp` need their body; the decision
/// is the real engine's on the headers, then the forwarded body is upper-cased, a second
/// event is added, and JSON responses are wrapped in brackets.
struct Scripted {
    engine: Rc<Engine>,
    request_cap: usize,
    response_cap: usize,
    bodies: RefCell<Vec<Result<Vec<u8>, TooLarge>>>,
}

impl Decider for Scripted {
    fn start(&self, req: &Request, now: u64, cache: &mut TokenCache) -> Step {
        if req.path.starts_with("/mcp") {
            Step::ReadBody(PendingBody::for_test(self.request_cap))
        } else {
            self.engine.start(req, now, cache)
        }
    }

    fn handle_body(
        &self,
        _pending: PendingBody,
        req: &Request,
        body: Result<&[u8], TooLarge>,
        now: u64,
        cache: &mut TokenCache,
    ) -> Outcome {
        self.bodies.borrow_mut().push(body.map(<[u8]>::to_vec));
        let mut o = self.engine.handle(req, now, cache);
        match (body, &mut o.verdict) {
            (Err(TooLarge), _) => {
                o.verdict = Verdict::Respond(LocalResponse {
                    status: 413,
                    headers: vec![],
                    body: "{\"error\":\"body too large\"}".into(),
                });
                o.kind = DecisionKind::Deny;
            }
            (Ok(b), Verdict::Forward { body, .. }) => {
                *body = Some(b.to_ascii_uppercase());
                let mut second = o.event.clone();
                second.action = "tools/call#2".into();
                o.more_events.push(second);
                o.response = Some(ResponsePlan::for_test(self.response_cap));
            }
            (Ok(_), Verdict::Respond(_)) => {}
        }
        o
    }

    fn response_cap(&self, _plan: &ResponsePlan, status: u16, ct: Option<&str>) -> Option<usize> {
        (status == 200 && ct == Some("application/json")).then_some(self.response_cap)
    }

    fn rewrite_response(
        &self,
        _plan: &ResponsePlan,
        _ct: Option<&str>,
        body: Result<&[u8], TooLarge>,
    ) -> Option<Vec<u8>> {
        Some(match body {
            Ok(b) => [b"[", b, b"]"].concat(),
            Err(TooLarge) => b"{\"error\":\"response too large\"}".to_vec(),
        })
    }
}

fn scripted(request_cap: usize, response_cap: usize) -> (Rc<FakeHost>, Root, Rc<Scripted>, String) {
    let (host, k) = (FakeHost::at(NOW), key("k1"));
    let root = configure(&host, &inline(&k));
    let engine = Rc::clone(root.vm().borrow().engine.as_ref().unwrap());
    let s = Rc::new(Scripted {
        engine,
        request_cap,
        response_cap,
        bodies: RefCell::new(Vec::new()),
    });
    root.vm().borrow_mut().decider = Some(s.clone() as Rc<dyn Decider>);
    (host, root, s, bearer(&token(&k, "verified")))
}

fn mcp_request(root: &Root, host: &FakeHost, auth: &str, end_of_stream: bool) -> (Flow, Http) {
    host.new_request(&[
        (":method", "POST"),
        (":path", "/mcp"),
        (":authority", "tools"),
        ("authorization", auth),
        ("x-meshguard-action", "read:tools"),
        ("content-length", "24"),
    ]);
    let mut http = root.new_http();
    (http.on_request_headers(end_of_stream), http)
}

fn chunk(host: &FakeHost, http: &mut Http, data: &[u8], end: bool) -> Flow {
    host.state.borrow_mut().request_body.extend_from_slice(data);
    let size = host.state.borrow().request_body.len();
    http.on_request_body(size, end)
}

fn response_chunk(host: &FakeHost, http: &mut Http, data: &[u8], end: bool) -> Flow {
    host.state
        .borrow_mut()
        .response_body
        .extend_from_slice(data);
    let size = host.state.borrow().response_body.len();
    http.on_response_body(size, end)
}

#[test]
fn a_json_rpc_request_is_held_until_its_body_is_complete() {
    let (host, root, s, auth) = scripted(64, 64);
    let (flow, mut http) = mcp_request(&root, &host, &auth, false);
    assert_eq!(flow, Flow::Pause, "headers held while the body is read");
    assert!(
        host.request_header("x-meshguard-agent").is_none(),
        "not decided yet"
    );
    assert_eq!(chunk(&host, &mut http, b"{\"method\":", false), Flow::Pause);
    assert_eq!(
        chunk(&host, &mut http, b"\"tools/list\"}", true),
        Flow::Continue
    );
    assert_eq!(
        *s.bodies.borrow(),
        [Ok(b"{\"method\":\"tools/list\"}".to_vec())]
    );
    assert_eq!(
        host.state.borrow().request_body,
        b"{\"METHOD\":\"TOOLS/LIST\"}",
        "replaced"
    );
    assert_eq!(
        host.request_header("content-length").as_deref(),
        Some("23"),
        "length fixed"
    );
    assert_eq!(
        host.request_header("x-meshguard-agent").as_deref(),
        Some("agent-a")
    );
    assert_eq!(host.metric("meshguard.requests.allowed"), 1);
    assert_eq!(
        root.vm().borrow().audit.queued(),
        2,
        "every event of the request is audited"
    );
    assert_eq!(root.vm().borrow().audit.counters.emitted, 2);
}

#[test]
fn a_body_over_the_cap_is_decided_at_once_without_buffering_more() {
    let (host, root, s, auth) = scripted(16, 64);
    let (_, mut http) = mcp_request(&root, &host, &auth, false);
    assert_eq!(chunk(&host, &mut http, b"0123456789", false), Flow::Pause);
    assert_eq!(
        chunk(&host, &mut http, b"0123456789", false),
        Flow::Pause,
        "answered: stream held"
    );
    assert_eq!(*s.bodies.borrow(), [Err(TooLarge)]);
    assert_eq!(host.take_sent().unwrap().status, 413);
    assert_eq!(host.metric("meshguard.requests.denied"), 1);
    assert_eq!(
        chunk(&host, &mut http, b"more", true),
        Flow::Continue,
        "no longer buffered"
    );
    assert_eq!(s.bodies.borrow().len(), 1, "decided once");
}

#[test]
fn a_request_without_body_is_decided_on_the_spot() {
    let (host, root, s, auth) = scripted(64, 64);
    let (flow, _) = mcp_request(&root, &host, &auth, true);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(*s.bodies.borrow(), [Ok(Vec::new())]);
    assert_eq!(
        host.request_header("x-meshguard-decision").as_deref(),
        Some("allow")
    );
}

#[test]
fn request_trailers_end_the_body() {
    let (host, root, s, auth) = scripted(64, 64);
    let (_, mut http) = mcp_request(&root, &host, &auth, false);
    assert_eq!(chunk(&host, &mut http, b"{}", false), Flow::Pause);
    assert_eq!(http.on_request_trailers(), Flow::Continue);
    assert_eq!(*s.bodies.borrow(), [Ok(b"{}".to_vec())]);
}

#[test]
fn a_planned_response_is_buffered_and_rewritten() {
    let (host, root, _, auth) = scripted(64, 64);
    let (_, mut http) = mcp_request(&root, &host, &auth, false);
    chunk(&host, &mut http, b"{}", true);
    host.state.borrow_mut().response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
        ("content-length".into(), "13".into()),
    ];
    assert_eq!(http.on_response_headers(false), Flow::Continue);
    assert!(host
        .state
        .borrow()
        .response_headers
        .iter()
        .all(|(k, _)| k != "content-length"));
    assert_eq!(
        response_chunk(&host, &mut http, b"{\"tools\":", false),
        Flow::Pause
    );
    assert_eq!(
        response_chunk(&host, &mut http, b"[]}", true),
        Flow::Continue
    );
    assert_eq!(host.state.borrow().response_body, b"[{\"tools\":[]}]");
}

#[test]
fn a_response_over_its_cap_is_replaced_and_the_rest_dropped() {
    let (host, root, _, auth) = scripted(64, 8);
    let (_, mut http) = mcp_request(&root, &host, &auth, false);
    chunk(&host, &mut http, b"{}", true);
    host.state.borrow_mut().response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
    ];
    http.on_response_headers(false);
    assert_eq!(
        response_chunk(&host, &mut http, b"0123456789", false),
        Flow::Continue
    );
    assert_eq!(
        host.state.borrow().response_body,
        b"{\"error\":\"response too large\"}"
    );
    host.state.borrow_mut().response_body.clear();
    assert_eq!(
        response_chunk(&host, &mut http, b"tail", true),
        Flow::Continue
    );
    assert!(host.state.borrow().response_body.is_empty(), "dropped");
}

#[test]
fn response_trailers_end_the_buffered_body() {
    let (host, root, _, auth) = scripted(64, 64);
    let (_, mut http) = mcp_request(&root, &host, &auth, false);
    chunk(&host, &mut http, b"{}", true);
    host.state.borrow_mut().response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
    ];
    http.on_response_headers(false);
    assert_eq!(response_chunk(&host, &mut http, b"{}", false), Flow::Pause);
    assert_eq!(http.on_response_trailers(), Flow::Continue);
    assert_eq!(host.state.borrow().response_body, b"[{}]");
}

#[test]
fn responses_the_plan_does_not_want_stream_through() {
    let (host, root, _, auth) = scripted(64, 64);
    let (_, mut http) = mcp_request(&root, &host, &auth, false);
    chunk(&host, &mut http, b"{}", true);
    host.state.borrow_mut().response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "text/event-stream".into()),
        ("content-length".into(), "5".into()),
    ];
    assert_eq!(http.on_response_headers(false), Flow::Continue);
    assert!(host
        .state
        .borrow()
        .response_headers
        .iter()
        .any(|(k, _)| k == "content-length"));
    assert_eq!(
        response_chunk(&host, &mut http, b"data:", false),
        Flow::Continue
    );
    assert_eq!(host.state.borrow().response_body, b"data:");
}

#[test]
fn plain_requests_never_touch_the_body() {
    let (host, root, s, auth) = scripted(64, 64);
    let (flow, mut http) = call(
        &root,
        &host,
        &[("authorization", &auth), ("x-meshguard-action", "read:x")],
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(chunk(&host, &mut http, b"body", true), Flow::Continue);
    assert_eq!(http.on_response_headers(false), Flow::Continue);
    assert!(s.bodies.borrow().is_empty());
}
