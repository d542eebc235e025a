//! Native microbenchmarks of the MeshGuard engine (criterion).
//!
//! `cargo bench` runs everything (a few minutes); `cargo bench -- policy` runs one group.
//! Groups:
//! - `policy/decide/N`: one policy decision with N rules (N = 10, 100, 1,000, 10,000):
//!   distinct action patterns, a mix of exact actions, `*` and `**` wildcards, resources,
//!   several policies with tier and agent selectors; the request matches an exact rule and
//!   two wildcards (the realistic case), and `policy/miss/N` matches nothing (default deny).
//! - `condition/*`: condition evaluation against a request-shaped lookup.
//! - `identity/verify/ALG`: one full token verification (signature + claims + identity
//!   mapping) per algorithm, keys generated with jwt-simple; `identity/cached` is the
//!   verified-token cache hit the filter takes for every request after the first.
//! - `audit/push`: sealing one decision into the hash chain and encoding its OTLP record.
//! - `path/normalise/*`: request path normalisation, for an already-normal path (the
//!   common case, no allocation beyond the result) and for one with dot segments,
//!   escapes and duplicate slashes.
//! - `engine/handle_cached`: the whole request path of the filter (action mapping, cached
//!   identity, decision, audit event), minus the proxy-wasm host calls.
//! - `mcp/tools_call_1k`: an MCP `tools/call` with a ~1 KiB body and a condition on an
//!   argument, through `Engine::start` + `Engine::handle_body` (cached identity).
//! - `mcp/tools_list_100`: filtering a 100-tool `tools/list` JSON response
//!   (`Engine::rewrite_response`), each tool decided for the agent.
//!
//! Sample sizes are kept small so that the full run stays within a few minutes on 2 cores.
// Benchmark set-up aborts on a broken fixture, like a test: the workspace lints against
// unwrap/expect/panic/indexing are for product code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jwt_simple::prelude::*;
use meshguard::actions::ActionMatch;
use meshguard::audit::{AuditBuffer, AuditEvent, Chain};
use meshguard::condition::{Condition, Lookup, Value as CValue};
use meshguard::config::{parse_policy_yaml, AuditConfig, IdentityConfig, Policy};
use meshguard::engine::body::Step;
use meshguard::engine::request::Request;
use meshguard::identity::Verifier;
use meshguard::policy::{PolicySet, Subject};
use meshguard::tier::TrustTier;
use meshguard::Engine;
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::Duration as StdDuration;

const NOW: u64 = 1_800_000_000;
const VERBS: [&str; 8] = [
    "read", "write", "delete", "search", "export", "pay", "admin", "notify",
];

/// `n` rules spread over policies of at most 100 rules each: ~80% exact actions
/// (`verb:resource-i`), ~10% `verb:resource-i:*`, ~5% `verb:group-i:**`, ~5% with a
/// resource glob, plus the three rules the benchmark request hits. Policies alternate
/// between tier selectors, agent globs and "every agent".
fn policies(n: usize) -> Vec<Policy> {
    let mut out = Vec::new();
    let mut rules = Vec::new();
    let mut pi = 0;
    let flush = |rules: &mut Vec<Value>, out: &mut Vec<Policy>, pi: &mut usize| {
        if rules.is_empty() {
            return;
        }
        let applies = match *pi % 3 {
            0 => json!({"trust_tiers": ["verified", "trusted"]}),
            1 => json!({"agents": [format!("team-{}-*", *pi)]}),
            _ => json!(null),
        };
        let mut p =
            json!({"name": format!("policy-{pi}"), "version": 1, "rules": std::mem::take(rules)});
        if !applies.is_null() {
            p["applies_to"] = applies;
        }
        out.push(serde_json::from_value(p).expect("policy"));
        *pi += 1;
    };
    // The rules the benchmark request (`read:orders`, resource `orders`) hits, whatever n.
    rules.push(json!({"name": "read-orders", "action": "read:orders", "effect": "allow"}));
    rules.push(json!({"action": "read:*", "effect": "allow"}));
    rules.push(json!({"action": "delete:*", "effect": "deny", "reason": "no deletes"}));
    for i in 3..n {
        let verb = VERBS[i % VERBS.len()];
        let rule = match i % 20 {
            0 | 1 => json!({"action": format!("{verb}:resource-{i}:*"), "effect": "allow"}),
            2 => json!({"action": format!("{verb}:group-{i}:**"), "effect": "require_approval"}),
            3 => {
                json!({"action": format!("{verb}:resource-{i}"), "resource": format!("bucket-{i}/**"), "effect": "allow"})
            }
            4 => json!({"action": format!("{verb}:resource-{i}"), "effect": "deny", "reason": "r"}),
            _ => json!({"action": format!("{verb}:resource-{i}"), "effect": "allow"}),
        };
        rules.push(rule);
        if rules.len() == 100 {
            flush(&mut rules, &mut out, &mut pi);
        }
    }
    flush(&mut rules, &mut out, &mut pi);
    out
}

struct Facts {
    hour: f64,
    domain: String,
}

impl Lookup for Facts {
    fn lookup(&self, name: &str) -> Option<CValue> {
        match name {
            "time.hour" => Some(CValue::Num(self.hour)),
            "agent.trust_tier" => Some(CValue::Str("verified".into())),
            "request.headers.x-recipient-domain" => Some(CValue::Str(self.domain.clone())),
            "request.headers.x-amount" => Some(CValue::Str("1250".into())),
            "agent.claims.team" => Some(CValue::Str("research".into())),
            _ => None,
        }
    }
}

fn bench_policy(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy");
    g.sample_size(30)
        .warm_up_time(StdDuration::from_millis(300))
        .measurement_time(StdDuration::from_secs(1));
    let facts = Facts {
        hour: 10.0,
        domain: "example.com".into(),
    };
    let subject = Subject {
        agent_id: "agent-a",
        tier: TrustTier::Verified,
    };
    for n in [10usize, 100, 1_000, 10_000] {
        let set = PolicySet::compile(&policies(n), "policies").expect("compile");
        let d = set.evaluate(&subject, "read:orders", Some("orders"), 0, &facts);
        assert_eq!(d.rule.as_deref(), Some("read-orders"), "{d:?}");
        g.bench_with_input(BenchmarkId::new("decide", n), &set, |b, set| {
            b.iter(|| {
                set.evaluate(
                    black_box(&subject),
                    black_box("read:orders"),
                    Some("orders"),
                    0,
                    &facts,
                )
            })
        });
        g.bench_with_input(BenchmarkId::new("miss", n), &set, |b, set| {
            b.iter(|| {
                set.evaluate(
                    black_box(&subject),
                    black_box("transfer:funds:now"),
                    None,
                    0,
                    &facts,
                )
            })
        });
    }
    g.finish();
}

fn bench_condition(c: &mut Criterion) {
    let mut g = c.benchmark_group("condition");
    g.sample_size(30)
        .warm_up_time(StdDuration::from_millis(300))
        .measurement_time(StdDuration::from_secs(1));
    let facts = Facts {
        hour: 10.0,
        domain: "example.com".into(),
    };
    for (name, text) in [
        ("business_hours", "time.hour >= 9 AND time.hour <= 17"),
        (
            "header_eq",
            r#"request.headers.x-recipient-domain == "example.com""#,
        ),
        ("numeric_header", "request.headers.x-amount > 1000"),
        (
            "in_list",
            r#"agent.claims.team in ["research", "analytics", "ops", "finance"]"#,
        ),
        (
            "compound",
            r#"(time.hour >= 9 AND time.hour <= 17) AND NOT agent.trust_tier == "untrusted" AND (request.headers.x-recipient-domain == "example.com" OR request.headers.x-amount < 100)"#,
        ),
        ("missing_value", "context.amount > 10"),
    ] {
        let cond = Condition::parse(text).expect("condition");
        g.bench_function(name, |b| b.iter(|| cond.eval(black_box(&facts))));
    }
    g.bench_function("parse_compound", |b| {
        b.iter(|| Condition::parse(black_box(r#"(time.hour >= 9 AND time.hour <= 17) AND NOT agent.trust_tier == "untrusted" AND (request.headers.x-recipient-domain == "example.com" OR request.headers.x-amount < 100)"#)))
    });
    g.finish();
}

fn claims() -> JWTClaims<Value> {
    let mut c = Claims::with_custom_claims(
        json!({"trust_tier": "verified", "team": "research"}),
        Duration::from_secs(600),
    )
    .with_issuer("https://issuer.example")
    .with_audience("agents")
    .with_subject("agent-a");
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
    c
}

fn verifier_for(jwk: &str) -> Verifier {
    let jwk: Value = serde_json::from_str(jwk).expect("jwk");
    let cfg: IdentityConfig = serde_json::from_value(json!({
        "issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": {"keys": [jwk]}}]
    }))
    .expect("identity config");
    Verifier::compile(&cfg).expect("verifier")
}

fn bench_identity(c: &mut Criterion) {
    let mut g = c.benchmark_group("identity");
    g.sample_size(20)
        .warm_up_time(StdDuration::from_millis(300))
        .measurement_time(StdDuration::from_secs(2));
    let es = ES256KeyPair::generate().with_key_id("es");
    let ed = Ed25519KeyPair::generate().with_key_id("ed");
    let rs = RS256KeyPair::generate(2048).expect("rsa").with_key_id("rs");
    let ps = PS256KeyPair::generate(2048).expect("rsa").with_key_id("ps");
    let cases: Vec<(&str, String, String)> = vec![
        (
            "ES256",
            es.public_key().to_jwk(),
            es.sign(claims()).expect("sign"),
        ),
        (
            "EdDSA",
            ed.public_key().to_jwk(),
            ed.sign(claims()).expect("sign"),
        ),
        (
            "RS256",
            rs.public_key().to_jwk(),
            rs.sign(claims()).expect("sign"),
        ),
        (
            "PS256",
            ps.public_key().to_jwk(),
            ps.sign(claims()).expect("sign"),
        ),
    ];
    for (alg, jwk, token) in &cases {
        let v = verifier_for(jwk);
        let id = v.verify(token, NOW).expect("verifies");
        assert_eq!(id.agent_id, "agent-a");
        g.bench_function(BenchmarkId::new("verify", alg), |b| {
            b.iter(|| v.verify(black_box(token), NOW))
        });
    }
    // The verified-token cache: what every request after a token's first costs.
    let (_, jwk, token) = &cases[0];
    let v = verifier_for(jwk);
    let mut cache = v.new_cache();
    let header = format!("Bearer {token}");
    v.authenticate(Some(&header), NOW, &mut cache).expect("ok");
    g.bench_function("cached", |b| {
        b.iter(|| v.authenticate(Some(black_box(&header)), NOW, &mut cache))
    });
    g.finish();
}

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        time_unix_nano: NOW * 1_000_000_000 + i,
        trace_id: vec![0x4b; 16],
        span_id: vec![0x2c; 8],
        decision: "allow".into(),
        effect: "allow".into(),
        enforced: true,
        agent_id: "agent-a".into(),
        trust_tier: "verified".into(),
        delegation_chain: vec!["agent-a".into()],
        action: "read:orders".into(),
        resource: "orders".into(),
        policy: "verified-agent-policy".into(),
        rule: "rules[0]".into(),
        reason: "allowed by rule rules[0] of policy verified-agent-policy".into(),
        mode: "enforce".into(),
        bundle_version: "inline-0123456789abcdef".into(),
        method: "GET".into(),
        path: "/v1/orders/42".into(),
        authority: "tools.internal".into(),
        latency_us: 7,
        identity_error: String::new(),
        status: 0,
        request_id: "6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f".into(),
        ..AuditEvent::default()
    }
}

fn bench_audit(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit");
    g.sample_size(30)
        .warm_up_time(StdDuration::from_millis(300))
        .measurement_time(StdDuration::from_secs(1))
        .throughput(Throughput::Elements(1));
    let cfg = AuditConfig {
        buffer_events: 1_000_000,
        buffer_bytes: 1 << 30,
        ..AuditConfig::default()
    };
    let mut buffer = AuditBuffer::new(&cfg, Chain::new("bench-stream"));
    let ev = event(1);
    let mut n = 0u64;
    // Request time: the event moves into the queue (the clone is the setup's, not timed).
    g.bench_function("push", |b| {
        b.iter_batched(
            || ev.clone(),
            |e| {
                buffer.push(e);
                n += 1;
                // Keep memory flat: what an exporter would drain.
                if n % 100_000 == 0 {
                    buffer = AuditBuffer::new(&cfg, Chain::new("bench-stream"));
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // Flush time, per event: sealing (chain v2), encoding, the Export message, for a full
    // batch of 500; and the same with a signed checkpoint per batch.
    let resource = [(
        "envoy.node.id",
        meshguard::audit::otlp::AnyValue::Str("bench-node"),
    )];
    g.throughput(Throughput::Elements(500));
    for (name, key) in [
        ("flush_500", None),
        (
            "flush_500_signed",
            Some("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=".to_string()),
        ),
    ] {
        let cfg = AuditConfig {
            signing_key: key,
            ..cfg.clone()
        };
        let mut buffer = AuditBuffer::new(&cfg, Chain::new("bench-stream"));
        g.bench_function(name, |b| {
            b.iter_batched(
                || vec![ev.clone(); 500],
                |events| {
                    for e in events {
                        buffer.push(e);
                    }
                    let (id, msg) = buffer.take_batch(0, 0, &resource).expect("a batch");
                    buffer.finish_batch(id, true, 0);
                    msg.len()
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn bench_engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.sample_size(30)
        .warm_up_time(StdDuration::from_millis(300))
        .measurement_time(StdDuration::from_secs(1));
    let es = ES256KeyPair::generate().with_key_id("es");
    let jwk: Value = serde_json::from_str(&es.public_key().to_jwk()).expect("jwk");
    let policy_yaml = "name: verified-agent-policy\nversion: 1\napplies_to: { trust_tiers: [verified] }\nrules:\n  - action: \"read:*\"\n    effect: allow\n  - name: allow-email\n    action: \"write:email\"\n    effect: allow\n    conditions: [\"time.hour >= 9 AND time.hour <= 17\"]\n  - action: \"delete:*\"\n    effect: deny\n";
    parse_policy_yaml(policy_yaml).expect("policy");
    let cfg = json!({
        "mode": "enforce",
        "identity": {"issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": {"keys": [jwk]}}]},
        "actions": {"routes": [{"method": "GET", "path": "/v1/orders/**", "action": "read:orders", "resource": "orders"}]},
        "policy_yaml": policy_yaml,
        "audit": {"cluster": "meshguard-collector"}
    });
    let engine = Engine::from_text(cfg.to_string().as_bytes()).expect("engine");
    let token = es.sign(claims()).expect("sign");
    let req = Request {
        method: "GET".into(),
        path: "/v1/orders/42?x=1".into(),
        authority: "tools.internal".into(),
        headers: vec![
            ("authorization".into(), format!("Bearer {token}")),
            ("user-agent".into(), "wrk".into()),
            (
                "x-request-id".into(),
                "6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f".into(),
            ),
            ("accept".into(), "*/*".into()),
        ],
        peer_uri_sans: Vec::new(),
    };
    let mut cache = engine.verifier().new_cache();
    let now_ns = NOW * 1_000_000_000;
    let out = engine.handle(&req, now_ns, &mut cache);
    assert_eq!(out.event.decision, "allow", "{:?}", out.event);
    let mut buffer = AuditBuffer::new(engine.audit_config(), Chain::new("bench"));
    let mut n = 0u64;
    g.bench_function("handle_cached", |b| {
        b.iter(|| engine.handle(black_box(&req), now_ns, &mut cache))
    });
    g.bench_function("handle_cached_and_audit", |b| {
        b.iter(|| {
            let out = engine.handle(black_box(&req), now_ns, &mut cache);
            buffer.push(out.event);
            n += 1;
            if n % 5_000 == 0 {
                buffer = AuditBuffer::new(engine.audit_config(), Chain::new("bench"));
            }
        })
    });
    let action = ActionMatch {
        action: "read:orders".into(),
        resource: Some("orders".into()),
        source: "bench".into(),
    };
    let id = engine
        .verifier()
        .verify(&token, NOW)
        .expect("token verifies");
    g.bench_function("decide", |b| {
        b.iter(|| engine.decide(black_box(&id), &action, &req, NOW))
    });
    g.finish();
}

fn bench_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("path");
    for (name, path) in [
        ("clean", "/v1/orders/12345/lines/7?expand=true"),
        (
            "dotted",
            "/v1//orders/./12345/%2e%2e/%6Cines/7/?expand=true",
        ),
    ] {
        g.bench_function(BenchmarkId::new("normalise", name), |b| {
            b.iter(|| meshguard::actions::path::normalise(black_box(path)))
        });
    }
    g.finish();
}

fn bench_mcp(c: &mut Criterion) {
    let mut g = c.benchmark_group("mcp");
    g.sample_size(30)
        .warm_up_time(StdDuration::from_millis(300))
        .measurement_time(StdDuration::from_secs(1));
    let es = ES256KeyPair::generate().with_key_id("es");
    let jwk: Value = serde_json::from_str(&es.public_key().to_jwk()).expect("jwk");
    let mut tools = serde_json::Map::new();
    for i in 0..100 {
        tools.insert(format!("tool_{i}"), json!(format!("tool:t{i}")));
    }
    let cfg = json!({
        "identity": {"issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": {"keys": [jwk]}}]},
        "actions": {"mcp": {"tools": tools}},
        "policy_yaml": "name: p\nrules:\n  - {action: 'tool:t1*', effect: allow}\n  - {action: 'tool:t2*', effect: deny}\n  - {name: pay, action: 'tool:t5', effect: allow, conditions: ['context.amount <= 100 AND context.currency == \"EUR\"']}\n",
    });
    let engine = Engine::from_text(cfg.to_string().as_bytes()).expect("engine");
    let token = es.sign(claims()).expect("sign");
    let req = Request {
        method: "POST".into(),
        path: "/mcp".into(),
        authority: "tools.internal".into(),
        headers: vec![
            ("authorization".into(), format!("Bearer {token}")),
            ("content-type".into(), "application/json".into()),
            ("mcp-session-id".into(), "s-1".into()),
            ("mcp-protocol-version".into(), "2025-06-18".into()),
        ],
        peer_uri_sans: Vec::new(),
    };
    let body = json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {
        "name": "tool_5",
        "arguments": {"amount": 42, "currency": "EUR", "memo": "x".repeat(880)}}})
    .to_string();
    let mut cache = engine.verifier().new_cache();
    let now_ns = NOW * 1_000_000_000;
    let run = |cache: &mut meshguard::identity::TokenCache| match engine.start(&req, now_ns, cache)
    {
        Step::ReadBody(p) => engine.handle_body(p, &req, Ok(body.as_bytes()), now_ns, cache),
        Step::Decided(o) => *o,
    };
    assert_eq!(run(&mut cache).event.decision, "allow");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("tools_call_1k", |b| b.iter(|| run(&mut cache)));
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let plan = match engine.start(&req, now_ns, &mut cache) {
        Step::ReadBody(p) => {
            engine
                .handle_body(p, &req, Ok(list.as_bytes()), now_ns, &mut cache)
                .response
        }
        Step::Decided(_) => None,
    }
    .expect("tools/list plan");
    let listed: Vec<Value> = (0..100)
        .map(|i| {
            json!({"name": format!("tool_{i}"), "description": "A tool that does something useful.",
            "inputSchema": {"type": "object", "properties": {"a": {"type": "string"}}}})
        })
        .collect();
    let response = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": listed}}).to_string();
    let out = engine
        .rewrite_response(&plan, Some("application/json"), Ok(response.as_bytes()))
        .expect("filtered");
    assert!(out.len() < response.len());
    g.throughput(Throughput::Elements(100));
    g.bench_function("tools_list_100", |b| {
        b.iter(|| {
            engine.rewrite_response(
                &plan,
                Some("application/json"),
                Ok(black_box(response.as_bytes())),
            )
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_path,
    bench_mcp,
    bench_policy,
    bench_condition,
    bench_identity,
    bench_audit,
    bench_engine
);
criterion_main!(benches);
