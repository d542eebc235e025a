//! `Engine::rewrite_response` on a 100-tool `tools/list` answer in V8, the shape of
//! `bench/run.py`'s `mg-mcp-list` (tools `t_0`…`t_99`; `t_1*`, `t_2*` allowed, `t_3*`
//! denied, the rest default-denied: 78 of 100 hidden). Best of 7 rounds of 2,000 answers,
//! so a loaded machine shows its least-disturbed round.

use jwt_simple::prelude::*;
use meshguard::engine::body::Step;
use meshguard::engine::request::Request;
use meshguard::Engine;
use serde_json::{json, Value};
use std::time::Instant;

const NOW: u64 = 1_800_000_000;

fn main() {
    let es = ES256KeyPair::generate().with_key_id("es");
    let jwk: Value = serde_json::from_str(&es.public_key().to_jwk()).unwrap_or_default();
    let cfg = json!({
        "identity": {"issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": {"keys": [jwk]}}]},
        "actions": {"mcp": {"paths": ["/mcp"], "tools": {"pay": "write:payment"}}},
        "policy_yaml": "name: p\nrules:\n  - {action: 'tool:t_1*', effect: allow}\n  - {action: 'tool:t_2*', effect: allow}\n  - {action: 'tool:t_3*', effect: deny}\n  - {name: small-payments, action: 'write:payment', effect: allow, conditions: ['context.amount <= 100 AND context.currency == \"EUR\"']}\n",
    });
    let Ok(engine) = Engine::from_text(cfg.to_string().as_bytes()) else {
        println!("error: engine");
        return;
    };
    let mut claims =
        Claims::with_custom_claims(json!({"trust_tier": "verified"}), Duration::from_secs(600))
            .with_issuer("https://issuer.example")
            .with_audience("agents")
            .with_subject("agent-bench");
    claims.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    claims.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
    let Ok(token) = es.sign(claims) else {
        println!("error: token");
        return;
    };
    let req = Request {
        method: "POST".into(),
        path: "/mcp".into(),
        authority: "tools.internal".into(),
        headers: vec![
            ("authorization".into(), format!("Bearer {token}")),
            ("content-type".into(), "application/json".into()),
        ],
        peer_uri_sans: Vec::new(),
    };
    let now_ns = NOW * 1_000_000_000;
    let mut cache = engine.verifier().new_cache();
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let plan = match engine.start(&req, now_ns, &mut cache) {
        Step::ReadBody(p) => {
            engine
                .handle_body(p, &req, Ok(list.as_bytes()), now_ns, &mut cache)
                .response
        }
        Step::Decided(_) => None,
    };
    let Some(plan) = plan else {
        println!("error: no tools/list plan");
        return;
    };
    let tools: Vec<Value> = (0..100)
        .map(|i| {
            json!({"name": format!("t_{i}"), "description": "A tool that does something useful.",
            "inputSchema": {"type": "object", "properties": {"a": {"type": "string"}}}})
        })
        .collect();
    let answer =
        serde_json::to_string(&json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}))
            .unwrap_or_default();
    let out = engine.rewrite_response(&plan, Some("application/json"), Ok(answer.as_bytes()));
    let kept = out
        .as_deref()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .and_then(|v| v["result"]["tools"].as_array().map(Vec::len));
    if kept != Some(22) {
        println!("error: {kept:?} tools kept, expected 22");
        return;
    }
    let n = 2_000u32;
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(engine.rewrite_response(
                &plan,
                Some("application/json"),
                Ok(std::hint::black_box(answer.as_bytes())),
            ));
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    println!(
        "best: {best:.1} us per 100-tool answer ({} bytes, 22 kept)",
        answer.len()
    );
}
