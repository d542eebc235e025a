//! The agent controls through the whole request path (`Engine::handle_with`).

use super::*;
use jwt_simple::prelude::*;
use serde_json::{json, Value as Json};

const NOW: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z
const A: &str = "spiffe://cluster.local/ns/agents/sa/agent-a";

fn key() -> ES256KeyPair {
    ES256KeyPair::generate().with_key_id("k1")
}

fn engine(k: &ES256KeyPair, extra: Json) -> Engine {
    let jwk: Json = serde_json::from_str(&k.public_key().to_jwk()).unwrap();
    let mut cfg = json!({
        "identity": {"issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": {"keys": [jwk]}}]},
        "policies": [
            {"name": "base", "rules": [
                {"name": "reads", "action": "read:*", "effect": "allow"},
                {"name": "refunds", "action": "write:refund", "effect": "require_approval"},
                {"name": "no-deletes", "action": "delete:*", "effect": "deny", "reason": "never"},
                {"name": "emails", "action": "write:email", "effect": "allow", "rate_limit": "2/m"}
            ]}
        ]
    });
    for (k, v) in extra.as_object().unwrap() {
        if k == "identity" {
            for (ik, iv) in v.as_object().unwrap() {
                cfg["identity"][ik] = iv.clone();
            }
        } else {
            cfg[k] = v.clone();
        }
    }
    Engine::from_text(cfg.to_string().as_bytes()).unwrap()
}

fn token(k: &ES256KeyPair, sub: &str, extra: Json) -> String {
    let mut c = Claims::with_custom_claims(extra, Duration::from_secs(600))
        .with_issuer("https://issuer.example")
        .with_audience("agents")
        .with_subject(sub);
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
    k.sign(c).unwrap()
}

fn req(token: &str, action: &str, resource: Option<&str>) -> Request {
    let mut headers = vec![
        ("authorization".to_string(), format!("Bearer {token}")),
        ("x-meshguard-action".to_string(), action.to_string()),
    ];
    if let Some(r) = resource {
        headers.push(("x-meshguard-resource".into(), r.into()));
    }
    Request {
        method: "POST".into(),
        path: "/x?q=1".into(),
        authority: "tools.local".into(),
        headers,
        peer_uri_sans: Vec::new(),
    }
}

/// One simulated worker VM: its own token cache, the Envoy-wide store, its writer id.
struct Worker<'a> {
    cache: TokenCache,
    store: &'a MemoryStore,
    writer: u64,
}

impl<'a> Worker<'a> {
    fn new(e: &Engine, store: &'a MemoryStore, writer: u64) -> Worker<'a> {
        Worker {
            cache: e.verifier().new_cache(),
            store,
            writer,
        }
    }
    fn run_at(&mut self, e: &Engine, r: &Request, secs: u64) -> Outcome {
        e.handle_with(
            r,
            secs * 1_000_000_000,
            State {
                cache: &mut self.cache,
                counters: Counters {
                    store: self.store,
                    writer: self.writer,
                },
            },
        )
    }
    fn run(&mut self, e: &Engine, r: &Request) -> Outcome {
        self.run_at(e, r, NOW)
    }
}

fn status(o: &Outcome) -> (u16, Json) {
    match &o.verdict {
        Verdict::Respond(r) => (r.status, serde_json::from_str(&r.body).unwrap()),
        Verdict::Forward { .. } => (200, Json::Null),
    }
}

fn response_header<'a>(o: &'a Outcome, name: &str) -> Option<&'a str> {
    match &o.verdict {
        Verdict::Respond(r) => r
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str()),
        Verdict::Forward { .. } => None,
    }
}

#[test]
fn revoked_tokens_are_refused_even_when_cached() {
    let k = key();
    let store = MemoryStore::new();
    let before = engine(&k, json!({}));
    let t = token(&k, "agent-a", json!({"jti": "tok-1"}));
    let mut w = Worker::new(&before, &store, 1);
    assert_eq!(status(&w.run(&before, &req(&t, "read:x", None))).0, 200);
    assert_eq!(w.cache.len(), 1, "the verification is cached");
    // a configuration update revokes the token; the worker keeps its cache
    let after = engine(&k, json!({"revoked": {"jti": ["tok-1"]}}));
    let o = w.run(&after, &req(&t, "read:x", None));
    let (s, b) = status(&o);
    assert_eq!((s, b["errorCode"].as_str()), (401, Some("revoked")));
    assert_eq!(o.event.identity_error, "revoked");
    assert!(response_header(&o, "www-authenticate")
        .unwrap()
        .contains("invalid_token"));
}

#[test]
fn a_revoked_agent_mid_chain_is_refused_after_caching() {
    let k = key();
    let store = MemoryStore::new();
    let t = token(
        &k,
        "agent-a",
        json!({"act": {"sub": "agent-z", "act": {"sub": "agent-m"}}}),
    );
    let before = engine(&k, json!({}));
    let mut w = Worker::new(&before, &store, 1);
    let o = w.run(&before, &req(&t, "read:x", None));
    assert_eq!(status(&o).0, 200);
    // RFC 8693: the outermost act (agent-z) acts now, nested ones acted earlier
    assert_eq!(o.event.delegation_chain, ["agent-a", "agent-m", "agent-z"]);
    let after = engine(&k, json!({"revoked": {"agents": ["agent-m"]}}));
    let o = w.run(&after, &req(&t, "read:x", None));
    let (s, b) = status(&o);
    assert_eq!((s, b["errorCode"].as_str()), (401, Some("revoked")));
    assert!(b["reason"].as_str().unwrap().contains("agent-m"), "{b}");
    // audit mode records it and forwards
    let audit = engine(
        &k,
        json!({"mode": "audit", "revoked": {"agents": ["agent-m"]}}),
    );
    let o = w.run(&audit, &req(&t, "read:x", None));
    assert_eq!(
        (status(&o).0, o.event.decision.as_str()),
        (200, "would_deny")
    );
    assert_eq!(o.event.identity_error, "revoked");
}

#[test]
fn bundle_revocations_apply() {
    let k = key();
    let cfg: PluginConfig = {
        let jwk: Json = serde_json::from_str(&k.public_key().to_jwk()).unwrap();
        serde_json::from_value(json!({"identity": {"issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": {"keys": [jwk]}}]}})).unwrap()
    };
    let bundle: crate::sources::bundle::Bundle = serde_json::from_value(
        json!({"format": "meshguard-bundle/v1", "version": 2, "created_at": "x",
        "policies": [{"name": "p", "rules": [{"action": "*", "effect": "allow"}]}],
        "revocations": [{"agent": "agent-b"}, {"jti": "tok-9"}]}),
    )
    .unwrap();
    let bundle = VerifiedBundle::unsigned_for_tests(bundle);
    let e = Engine::build(
        &cfg,
        Documents {
            bundle: Some(&bundle),
            jwks: None,
            grants: None,
        },
    )
    .unwrap();
    let store = MemoryStore::new();
    let mut w = Worker::new(&e, &store, 1);
    assert_eq!(
        status(&w.run(&e, &req(&token(&k, "agent-a", json!({})), "read:x", None))).0,
        200
    );
    assert_eq!(
        status(&w.run(&e, &req(&token(&k, "agent-b", json!({})), "read:x", None))).0,
        401
    );
    assert_eq!(
        status(&w.run(
            &e,
            &req(
                &token(&k, "agent-a", json!({"jti": "tok-9"})),
                "read:x",
                None
            )
        ))
        .0,
        401
    );
}

#[test]
fn rate_limits_hold_across_two_workers_with_429_and_retry_after() {
    let k = key();
    let e = engine(
        &k,
        json!({"rate_limits": [{"name": "reads", "action": "read:*", "limit": "3/s"}]}),
    );
    let store = MemoryStore::new();
    let mut w1 = Worker::new(&e, &store, 1);
    let mut w2 = Worker::new(&e, &store, 2);
    let t = token(&k, "agent-a", json!({}));
    let r = req(&t, "read:orders", None);
    let results: Vec<u16> = (0..6)
        .map(|i| {
            let w = if i % 2 == 0 { &mut w1 } else { &mut w2 };
            status(&w.run(&e, &r)).0
        })
        .collect();
    assert_eq!(results, [200, 200, 200, 429, 429, 429]);
    let o = w1.run(&e, &r);
    let (s, b) = status(&o);
    assert_eq!(s, 429);
    assert_eq!(response_header(&o, "retry-after"), Some("1"));
    assert_eq!(b["decision"], "rate_limited");
    assert_eq!(b["rule"], "reads");
    assert_eq!(b["bundleVersion"], e.policy_version());
    assert_eq!(
        (o.event.decision.as_str(), o.event.status, o.event.enforced),
        ("rate_limited", 429, true)
    );
    // another agent has its own budget; a second later the budget is back
    let other = token(&k, "agent-b", json!({}));
    assert_eq!(
        status(&w2.run(&e, &req(&other, "read:orders", None))).0,
        200
    );
    assert_eq!(status(&w2.run_at(&e, &r, NOW + 1)).0, 200);
}

#[test]
fn rule_level_rate_limits_and_audit_mode() {
    let k = key();
    let t = token(&k, "agent-a", json!({}));
    let r = req(&t, "write:email", None);
    for (mode, third) in [("enforce", 429), ("audit", 200)] {
        let e = engine(&k, json!({"mode": mode}));
        let store = MemoryStore::new();
        let mut w = Worker::new(&e, &store, 1);
        assert_eq!(status(&w.run(&e, &r)).0, 200);
        assert_eq!(status(&w.run(&e, &r)).0, 200);
        let o = w.run(&e, &r);
        assert_eq!(status(&o).0, third, "{mode}");
        assert_eq!(o.decision.rule.as_deref(), Some("rule:base/emails"));
        assert_eq!(o.decision.retry_after_secs, Some(30));
        if mode == "audit" {
            assert_eq!(
                (o.event.decision.as_str(), o.event.enforced),
                ("would_deny", false)
            );
            assert!(o.event.reason.contains("rate limit"), "{}", o.event.reason);
        }
    }
}

#[test]
fn handle_without_a_shared_store_still_limits_per_worker() {
    let k = key();
    let e = engine(&k, json!({}));
    let t = token(&k, "agent-a", json!({}));
    let mut cache = e.verifier().new_cache();
    let codes: Vec<u16> = (0..3)
        .map(|_| {
            status(&e.handle(
                &req(&t, "write:email", None),
                NOW * 1_000_000_000,
                &mut cache,
            ))
            .0
        })
        .collect();
    assert_eq!(codes, [200, 200, 429]);
}

#[test]
fn loops_are_denied_with_a_reason_and_audited() {
    let k = key();
    let e = engine(
        &k,
        json!({"loop": {"max_repeats": 2, "window_seconds": 30}}),
    );
    let store = MemoryStore::new();
    let mut w1 = Worker::new(&e, &store, 1);
    let mut w2 = Worker::new(&e, &store, 2);
    let t = token(&k, "agent-a", json!({}));
    let r = req(&t, "read:orders", Some("orders/7"));
    assert_eq!(status(&w1.run(&e, &r)).0, 200);
    assert_eq!(status(&w2.run(&e, &r)).0, 200);
    let o = w1.run(&e, &r);
    let (s, b) = status(&o);
    assert_eq!(s, 403);
    assert!(
        b["reason"].as_str().unwrap().starts_with("loop detected"),
        "{b}"
    );
    assert_eq!(b["rule"], "loop");
    assert_eq!(o.event.decision, "deny");
    assert!(o.event.reason.starts_with("loop detected"));
    // another resource, or other arguments, is not the same call
    assert_eq!(
        status(&w1.run(&e, &req(&t, "read:orders", Some("orders/8")))).0,
        200
    );
    let mut other_args = r.clone();
    other_args.path = "/x?q=2".into();
    assert_eq!(status(&w2.run(&e, &other_args)).0, 200);
    // after a quiet window the call passes again
    assert_eq!(status(&w2.run_at(&e, &r, NOW + 31)).0, 200);
}

#[test]
fn audit_mode_records_loops_without_enforcing() {
    let k = key();
    let e = engine(
        &k,
        json!({"mode": "audit", "loop": {"max_repeats": 1, "window_seconds": 5}}),
    );
    let store = MemoryStore::new();
    let mut w = Worker::new(&e, &store, 1);
    let t = token(&k, "agent-a", json!({}));
    let r = req(&t, "read:x", None);
    assert_eq!(w.run(&e, &r).event.decision, "allow");
    let o = w.run(&e, &r);
    assert_eq!(status(&o).0, 200, "forwarded");
    assert_eq!(
        (o.event.decision.as_str(), o.event.enforced),
        ("would_deny", false)
    );
    assert!(
        o.event.reason.starts_with("loop detected"),
        "{}",
        o.event.reason
    );
}

#[test]
fn controls_load_from_yaml_and_from_istiod_json() {
    let k = key();
    let jwks = serde_json::to_string(
        &json!({"keys": [serde_json::from_str::<Json>(&k.public_key().to_jwk()).unwrap()]}),
    )
    .unwrap();
    let yaml = format!(
        "identity:\n  issuers:\n    - issuer: https://issuer.example\n      audiences: [agents]\n      jwks: '{jwks}'\n  workload_binding:\n    agents: {{agent-a: \"{A}\"}}\nrevoked: {{jti: [t-1], agents: [agent-x]}}\nrate_limits:\n  - {{name: email, agents: \"bot-*\", action: \"write:email\", limit: 10/m}}\nloop: {{max_repeats: 5, window_seconds: 10}}\ngrants:\n  inline:\n    - {{id: g-1, agent: agent-a, action: \"write:refund\", expires_at: \"2027-01-15T09:00:00Z\"}}\n  interval_seconds: 5\npolicies:\n  - name: p\n    rules:\n      - {{action: \"read:*\", effect: allow, rate_limit: 100/h}}\n"
    );
    let e = Engine::from_text(yaml.as_bytes()).unwrap();
    assert_eq!(
        (e.controls().grant_count(), e.controls().revocation_count()),
        (1, 2)
    );
    // istiod: compact JSON, sorted keys, numbers as Go float64
    let istiod = json!({
        "grants": {"interval_seconds": 5.0, "max_bytes": 262144.0},
        "identity": {"issuers": [{"audiences": ["agents"], "issuer": "https://issuer.example", "jwks": jwks}]},
        "loop": {"max_repeats": 5.0, "window_seconds": 1e+01}
    });
    let e = Engine::from_text(istiod.to_string().as_bytes()).unwrap();
    assert!(e.controls().counts());
    let bad =
        json!({"identity": {"issuers": []}, "loop": {"max_repeats": 5.5, "window_seconds": 10}});
    assert_eq!(
        Engine::from_text(bad.to_string().as_bytes())
            .unwrap_err()
            .field(),
        "loop.max_repeats"
    );
}

#[test]
fn require_approval_carries_a_stable_approval_id() {
    let k = key();
    let e = engine(&k, json!({}));
    let store = MemoryStore::new();
    let mut w1 = Worker::new(&e, &store, 1);
    let mut w2 = Worker::new(&e, &store, 2);
    let t = token(&k, "agent-a", json!({}));
    let r = req(&t, "write:refund", Some("order-7"));
    let o1 = w1.run(&e, &r);
    let o2 = w2.run(&e, &r);
    let (s, b) = status(&o1);
    let expected = crate::controls::approval_id("agent-a", "write:refund", Some("order-7"));
    assert_eq!((s, b["decision"].as_str()), (403, Some("require_approval")));
    assert_eq!(b["approvalId"], expected.as_str());
    assert_eq!(status(&o2).1["approvalId"], expected.as_str());
    assert_eq!(o1.event.approval_id, expected);
    assert!(o1
        .event
        .attributes()
        .iter()
        .any(|(k, v)| *k == "meshguard.approval_id" && v.to_json() == json!(expected)));
    // plain denials carry none
    let (_, b) = status(&w1.run(&e, &req(&t, "delete:x", None)));
    assert!(b.get("approvalId").is_none(), "{b}");
    // another resource is another approval
    let (_, b) = status(&w1.run(&e, &req(&t, "write:refund", Some("order-8"))));
    assert_ne!(b["approvalId"], expected.as_str());
}

fn grant(id: &str, agent: &str, action: &str, expires_at: &str) -> Json {
    json!({"id": id, "agent": agent, "action": action, "expires_at": expires_at, "approved_by": "alice", "reason": "INC-1"})
}

#[test]
fn grants_allow_until_expiry_and_deny_rules_still_win() {
    let k = key();
    let exp = "2027-01-15T08:10:00Z"; // NOW + 600
    let e = engine(
        &k,
        json!({"grants": {"inline": [
            grant("g-refund", "agent-a", "write:refund", exp),
            grant("g-delete", "agent-a", "delete:*", exp),
            grant("g-default", "agent-a", "tool:*", exp)
        ]}}),
    );
    let store = MemoryStore::new();
    let mut w = Worker::new(&e, &store, 1);
    let t = token(&k, "agent-a", json!({}));
    // require_approval lifted
    let o = w.run(&e, &req(&t, "write:refund", None));
    assert_eq!(status(&o).0, 200);
    assert_eq!(o.decision.grant.as_deref(), Some("g-refund"));
    assert_eq!(
        o.decision.rule.as_deref(),
        Some("refunds"),
        "the lifted rule stays visible"
    );
    assert_eq!(
        (o.event.decision.as_str(), o.event.grant.as_str()),
        ("allow", "g-refund")
    );
    assert!(
        o.event.reason.contains("approved by alice"),
        "{}",
        o.event.reason
    );
    assert!(o
        .event
        .attributes()
        .iter()
        .any(|(k, _)| *k == "meshguard.grant"));
    // default deny lifted
    assert_eq!(status(&w.run(&e, &req(&t, "tool:search", None))).0, 200);
    // an explicit deny rule wins
    let o = w.run(&e, &req(&t, "delete:orders", None));
    assert_eq!(status(&o).0, 403);
    assert_eq!(o.decision.grant, None);
    // expiry boundary: valid one second before, expired at the instant
    assert_eq!(
        status(&w.run_at(&e, &req(&t, "write:refund", None), NOW + 599)).0,
        200
    );
    let o = w.run_at(&e, &req(&t, "write:refund", None), NOW + 600);
    assert_eq!(status(&o).1["decision"], "require_approval");
    // other agents are not covered
    let b = token(&k, "agent-b", json!({}));
    assert_eq!(status(&w.run(&e, &req(&b, "write:refund", None))).0, 403);
}

#[test]
fn a_grant_to_the_caller_does_not_lift_the_delegation_ceiling() {
    let k = key();
    let exp = "2027-01-15T09:00:00Z";
    let e = engine(
        &k,
        json!({"grants": {"inline": [grant("g-b", "agent-b", "tool:run", exp)]}}),
    );
    let store = MemoryStore::new();
    let mut w = Worker::new(&e, &store, 1);
    // agent-a delegates to agent-b; only agent-b holds a grant
    let t = token(&k, "agent-a", json!({"act": {"sub": "agent-b"}}));
    let o = w.run(&e, &req(&t, "tool:run", None));
    assert_eq!(status(&o).0, 403);
    assert!(
        o.decision.reason.contains("delegator \"agent-a\""),
        "{}",
        o.decision.reason
    );
    // with a grant for the delegator too, the chain is allowed
    let e = engine(
        &k,
        json!({"grants": {"inline": [grant("g-b", "agent-b", "tool:run", exp), grant("g-a", "agent-a", "tool:run", exp)]}}),
    );
    assert_eq!(status(&w.run(&e, &req(&t, "tool:run", None))).0, 200);
}

#[test]
fn grants_documents_install_into_the_engine() {
    let k = key();
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([9; 32]));
    let pk = <ct_codecs::Base64 as ct_codecs::Encoder>::encode_to_string(kp.pk.as_ref()).unwrap();
    let mut e = engine(
        &k,
        json!({"grants": {"cluster": "approvals", "path": "/grants", "public_keys": [pk]}}),
    );
    let src = e.grants_source().unwrap();
    assert_eq!(src.config.interval_seconds, 5);
    let mut doc = json!({"format": "meshguard-grants/v1", "version": 1, "created_at": "2027-01-15T07:59:00Z",
        "grants": [grant("g-1", "agent-a", "write:refund", "2027-01-15T09:00:00Z")]});
    crate::controls::grants::sign_grants_document(&mut doc, &kp.sk, None).unwrap();
    let verified = crate::controls::grants::verify_grants_document(
        &serde_json::to_vec(&doc).unwrap(),
        &src.keys,
        src.config.max_bytes,
        None,
    )
    .unwrap();
    let store = MemoryStore::new();
    let mut w = Worker::new(&e, &store, 1);
    let t = token(&k, "agent-a", json!({}));
    assert_eq!(status(&w.run(&e, &req(&t, "write:refund", None))).0, 403);
    e.set_grants_document(Some(&verified)).unwrap();
    let o = w.run(&e, &req(&t, "write:refund", None));
    assert_eq!((status(&o).0, o.event.grant.as_str()), (200, "g-1"));
}

#[test]
fn workload_binding_checks_the_mtls_peer() {
    let k = key();
    let e = engine(
        &k,
        json!({"identity": {"workload_binding": {"agents": {"agent-a": A}, "claim": "workload", "required": true}}}),
    );
    let store = MemoryStore::new();
    let mut w = Worker::new(&e, &store, 1);
    let t = token(&k, "agent-a", json!({}));
    let mut r = req(&t, "read:x", None);
    // plain text
    let o = w.run(&e, &r);
    assert_eq!(
        (status(&o).0, status(&o).1["errorCode"].as_str()),
        (401, Some("wrong_workload"))
    );
    // the wrong workload
    r.peer_uri_sans = vec!["spiffe://cluster.local/ns/agents/sa/agent-b".into()];
    assert_eq!(status(&w.run(&e, &r)).1["errorCode"], "wrong_workload");
    // the right one, also after caching
    r.peer_uri_sans = vec![A.into()];
    assert_eq!(status(&w.run(&e, &r)).0, 200);
    assert_eq!(status(&w.run(&e, &r)).0, 200);
    // an unbound agent is refused because binding is required; a claim binds it
    let unbound = token(&k, "agent-c", json!({}));
    let mut rc = req(&unbound, "read:x", None);
    rc.peer_uri_sans = vec![A.into()];
    assert_eq!(status(&w.run(&e, &rc)).0, 401);
    let bound = token(&k, "agent-c", json!({"workload": A}));
    let mut rc = req(&bound, "read:x", None);
    rc.peer_uri_sans = vec![A.into()];
    assert_eq!(status(&w.run(&e, &rc)).0, 200);
}

#[test]
fn malformed_act_claims_are_401_not_panics() {
    let k = key();
    let e = engine(&k, json!({}));
    let store = MemoryStore::new();
    let mut w = Worker::new(&e, &store, 1);
    for act in [
        json!("agent-b"),
        json!({"sub": 7}),
        json!({}),
        json!([{"sub": "x"}]),
        json!({"sub": "b", "act": "c"}),
    ] {
        let t = token(&k, "agent-a", json!({ "act": act }));
        let o = w.run(&e, &req(&t, "read:x", None));
        let (s, b) = status(&o);
        assert_eq!(
            (s, b["errorCode"].as_str()),
            (401, Some("bad_delegation")),
            "{act}"
        );
    }
    // very deep nesting is bounded
    let mut act = json!({"sub": "leaf"});
    for i in 0..200 {
        act = json!({"sub": format!("h{i}"), "act": act});
    }
    let t = token(&k, "agent-a", json!({ "act": act }));
    assert_eq!(status(&w.run(&e, &req(&t, "read:x", None))).0, 401);
}

#[test]
fn configuration_errors_name_control_fields() {
    let k = key();
    let jwk: Json = serde_json::from_str(&k.public_key().to_jwk()).unwrap();
    let base = json!({"identity": {"issuers": [{"issuer": "i", "audiences": ["a"], "jwks": {"keys": [jwk]}}]}});
    let err = |patch: Json| {
        let mut c = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        Engine::from_text(c.to_string().as_bytes())
            .unwrap_err()
            .field()
            .to_string()
    };
    assert_eq!(
        err(json!({"rate_limits": [{"name": "x", "action": "*", "limit": "5/x"}]})),
        "rate_limits[0].limit"
    );
    assert_eq!(
        err(json!({"revoked": {"agents": "agent-a"}})),
        "revoked.agents"
    );
    assert_eq!(err(json!({"loop": {"max_repeats": 3}})), "loop");
    assert_eq!(
        err(
            json!({"policies": [{"name": "p", "rules": [{"action": "x", "effect": "allow", "rate_limit": "abc"}]}]})
        ),
        "policies[0].rules[0].rate_limit"
    );
    assert_eq!(
        err(
            json!({"grants": {"inline": [{"id": "g", "agent": "a", "action": "x", "expires_at": 1800000000}]}})
        ),
        "grants.inline[0].expires_at"
    );
    assert_eq!(
        err(
            json!({"grants": {"inline": [{"id": "g", "agent": "a", "action": "{", "expires_at": "2027-01-01T00:00:00Z"}]}})
        ),
        "grants.inline[0].action"
    );
}
