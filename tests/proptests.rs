//! Property tests (proptest) of the engine's invariants, through the public API:
//!
//! - adding a deny rule never loosens a decision (a deny never becomes an allow);
//! - a delegate never gets more than its delegators (the delegation ceiling);
//! - the glob matcher agrees with a reference matcher written from the contract.
//!
//! The audit chain property (any event sequence verifies, any single-byte change breaks it)
//! lives with the verifier in `cli/src/collector/chain_proptests.rs`.
//!
//! Case counts are proptest's default (256) unless `PROPTEST_CASES` says otherwise; each
//! property runs in well under a few seconds.
// A test crate: its helpers fail the test by panicking (clippy.toml covers only #[test]
// functions and #[cfg(test)] modules, not an integration test's helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use meshguard::actions::ActionMatch;
use meshguard::config::Effect;
use meshguard::engine::request::Request;
use meshguard::glob::Pattern;
use meshguard::identity::{Hop, Identity};
use meshguard::tier::TrustTier;
use meshguard::Engine;
use proptest::prelude::*;
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;
const AGENTS: [&str; 4] = ["agent-a", "agent-b", "ops-bot", "research-1"];

// ------------------------------------------------------------------ policies

fn tier() -> impl Strategy<Value = TrustTier> {
    prop::sample::select(TrustTier::ALL.to_vec())
}

fn tier_name(t: TrustTier) -> &'static str {
    t.as_str()
}

/// Action patterns over a small alphabet so that rules and requests collide often.
fn action_pattern() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "*",
        "read:*",
        "read:email",
        "read:orders",
        "write:*",
        "write:email",
        "delete:**",
        "tool:pay",
        "tool:*",
        "read:orders:*",
        "*:email",
    ])
    .prop_map(str::to_string)
}

fn action() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "read:email",
        "read:orders",
        "read:orders:42",
        "write:email",
        "delete:orders:42",
        "tool:pay",
    ])
    .prop_map(str::to_string)
}

fn resource_pattern() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::sample::select(vec!["email", "orders/**", "orders/*", "*"]).prop_map(str::to_string),
    )
}

fn resource() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::sample::select(vec!["email", "orders/42", "orders/42/items", "other"])
            .prop_map(str::to_string),
    )
}

fn effect() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["allow", "allow", "deny", "require_approval"])
}

fn conditions() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(vec![
            r#"agent.claims.team == "research""#,
            r#"NOT agent.claims.team == "research""#,
            "agent.claims.level >= 3",
            r#"request.headers.x-amount < 100"#,
        ])
        .prop_map(str::to_string),
        0..2,
    )
}

fn rule() -> impl Strategy<Value = Value> {
    (
        action_pattern(),
        resource_pattern(),
        effect(),
        conditions(),
        prop::option::of(tier()),
    )
        .prop_map(|(action, resource, effect, conditions, min_tier)| {
            let mut r = json!({"action": action, "effect": effect});
            if let Some(res) = resource {
                r["resource"] = json!(res);
            }
            if !conditions.is_empty() {
                r["conditions"] = json!(conditions);
            }
            if let Some(t) = min_tier {
                r["min_trust_tier"] = json!(tier_name(t));
            }
            r
        })
}

fn applies_to() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(
        (
            prop::collection::vec(tier(), 0..3),
            prop::collection::vec(
                prop::sample::select(vec!["agent-*", "ops-*", "research-1", "*"]),
                0..2,
            ),
        )
            .prop_map(|(tiers, agents)| {
                json!({"trust_tiers": tiers.iter().map(|t| tier_name(*t)).collect::<Vec<_>>(),
                       "agents": agents})
            }),
    )
}

fn policy() -> impl Strategy<Value = Value> {
    (
        applies_to(),
        prop::option::of(0usize..3),
        prop::collection::vec(rule(), 1..5),
    )
        .prop_map(|(applies, depth, rules)| {
            let mut p = json!({"name": "p", "rules": rules});
            if let Some(a) = applies {
                p["applies_to"] = a;
            }
            if let Some(d) = depth {
                p["max_delegation_depth"] = json!(d);
            }
            p
        })
}

/// Policies, named uniquely.
fn policies() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(policy(), 0..4).prop_map(|mut ps| {
        for (i, p) in ps.iter_mut().enumerate() {
            p["name"] = json!(format!("policy-{i}"));
        }
        ps
    })
}

/// An issuer the decisions never use (identities are built directly), required by the
/// configuration (MeshGuard fails closed without one).
fn issuer() -> Value {
    let pk = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([3; 32])).pk;
    let x =
        <ct_codecs::Base64UrlSafeNoPadding as ct_codecs::Encoder>::encode_to_string(pk.as_ref())
            .unwrap();
    json!({"issuer": "https://issuer.example", "audiences": ["agents"],
           "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x}]}})
}

fn engine(policies: &[Value], grants: &[Value]) -> Engine {
    let cfg = json!({
        "identity": {"issuers": [issuer()], "max_delegation_depth": 4},
        "policies": policies,
        "grants": {"inline": grants},
    });
    Engine::from_text(cfg.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("generated config does not build: {e}\n{cfg}"))
}

/// Inline grants: they lift default denials and require_approval, never a deny rule.
fn grants() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["agent-*", "ops-bot", "*"]),
            action_pattern(),
        ),
        0..2,
    )
    .prop_map(|gs| {
        gs.into_iter()
            .enumerate()
            .map(|(i, (agent, action))| {
                json!({"id": format!("g{i}"), "agent": agent, "action": action,
                       "expires_at": "2030-01-01T00:00:00Z"})
            })
            .collect()
    })
}

/// A chain of 1 to 3 distinct agents (the last one is the caller), with tiers.
fn chain() -> impl Strategy<Value = Vec<Hop>> {
    (
        Just(AGENTS.to_vec()).prop_shuffle(),
        prop::collection::vec(tier(), 1..4),
    )
        .prop_map(|(agents, tiers)| {
            tiers
                .into_iter()
                .zip(agents)
                .map(|(tier, a)| Hop {
                    agent_id: a.to_string(),
                    tier,
                })
                .collect()
        })
}

fn claims() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::sample::select(vec!["research", "ops"])),
        prop::option::of(0u8..6),
    )
        .prop_map(|(team, level)| {
            let mut c = json!({});
            if let Some(t) = team {
                c["team"] = json!(t);
            }
            if let Some(l) = level {
                c["level"] = json!(l);
            }
            c
        })
}

fn identity(chain: &[Hop], claims: &Value) -> Identity {
    let last = chain.last().expect("a chain has a caller");
    Identity {
        agent_id: last.agent_id.clone(),
        tier: chain
            .iter()
            .map(|h| h.tier)
            .min()
            .unwrap_or(TrustTier::Untrusted),
        issuer: "https://issuer.example".into(),
        chain: chain.to_vec(),
        claims: claims.clone(),
        expires_at: NOW + 600,
    }
}

fn request(amount: Option<u16>) -> Request {
    let mut headers = Vec::new();
    if let Some(a) = amount {
        headers.push(("x-amount".to_string(), a.to_string()));
    }
    Request {
        method: "POST".into(),
        path: "/x".into(),
        authority: "svc".into(),
        headers,
        peer_uri_sans: Vec::new(),
    }
}

fn decide(
    engine: &Engine,
    id: &Identity,
    action: &str,
    res: &Option<String>,
    req: &Request,
) -> Effect {
    let m = ActionMatch {
        action: action.to_string(),
        resource: res.clone(),
        source: "proptest".into(),
    };
    engine.decide(id, &m, req, NOW).effect
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures print their minimal case; nothing is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Adding a deny rule anywhere (to an existing policy or as a new policy, with any
    /// selector, resource or condition) never makes any decision less strict: a deny stays
    /// a deny, a require_approval never becomes an allow. Checked through the engine's
    /// whole decision (delegation ceiling, grants, conditions).
    #[test]
    fn adding_a_deny_rule_never_loosens_a_decision(
        base in policies(),
        grants in grants(),
        deny in rule().prop_map(|mut r| { r["effect"] = json!("deny"); r }),
        target in any::<prop::sample::Index>(),
        new_policy in applies_to(),
        chain in chain(),
        claims in claims(),
        action in action(),
        res in resource(),
        amount in prop::option::of(0u16..200),
    ) {
        let mut stricter = base.clone();
        if stricter.is_empty() || new_policy.is_some() {
            let mut p = json!({"name": "added", "rules": [deny]});
            if let Some(a) = new_policy {
                p["applies_to"] = a;
            }
            stricter.push(p);
        } else {
            let i = target.index(stricter.len());
            stricter[i]["rules"].as_array_mut().unwrap().push(deny);
        }
        let id = identity(&chain, &claims);
        let req = request(amount);
        let before = decide(&engine(&base, &grants), &id, &action, &res, &req);
        let after = decide(&engine(&stricter, &grants), &id, &action, &res, &req);
        prop_assert!(after >= before, "{before:?} became {after:?} after adding a deny rule");
    }

    /// The delegation ceiling: a delegated call is never decided more leniently than any
    /// agent of the chain (caller or delegator) acting on its own, at its own tier or at
    /// the chain's effective tier (the lowest along it).
    #[test]
    fn a_delegate_never_gets_more_than_its_delegators(
        policies in policies(),
        grants in grants(),
        chain in chain(),
        claims in claims(),
        action in action(),
        res in resource(),
    ) {
        let engine = engine(&policies, &grants);
        let req = request(None);
        let whole = identity(&chain, &claims);
        let chained = decide(&engine, &whole, &action, &res, &req);
        for hop in &chain {
            // each agent on its own, at its own tier and at the chain's tier
            for tier in [hop.tier, hop.tier.min(whole.tier)] {
                let alone = identity(&[Hop { agent_id: hop.agent_id.clone(), tier }], &claims);
                let direct = decide(&engine, &alone, &action, &res, &req);
                prop_assert!(
                    chained >= direct,
                    "chain {chain:?} got {chained:?}, but {} alone at {tier:?} gets {direct:?}",
                    hop.agent_id
                );
            }
        }
    }
}

// ------------------------------------------------------------------ globs

/// A pattern piece, after `:` is read as the separator `/` (README "Policy language").
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Lit(u8),
    /// `*`: any run of bytes within a segment.
    Star,
    /// `?`: one byte within a segment.
    One,
    /// `**/` opening the pattern: nothing, or any run of whole segments.
    LeadingAny,
    /// `/**` closing the pattern: the separator and anything after it.
    TrailingAny,
    /// `/**/` inside the pattern: one separator, or any run of segments between two.
    MiddleAny,
    /// The whole pattern is `**` or `*`: anything.
    All,
}

fn tokens(pattern: &str) -> Vec<Tok> {
    let p = pattern.replace(':', "/");
    if p == "**" || p == "*" {
        return vec![Tok::All];
    }
    let segs: Vec<&str> = p.split('/').collect();
    let last = segs.len() - 1;
    let mut out = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        if *seg == "**" {
            out.push(match i {
                0 => Tok::LeadingAny,
                i if i == last => Tok::TrailingAny,
                _ => Tok::MiddleAny,
            });
            continue;
        }
        // the separator before this segment, unless a `**` next to it owns it
        if i > 0 && segs[i - 1] != "**" {
            out.push(Tok::Lit(b'/'));
        }
        for b in seg.bytes() {
            out.push(match b {
                b'*' => Tok::Star,
                b'?' => Tok::One,
                b => Tok::Lit(b),
            });
        }
    }
    out
}

/// Backtracking matcher over the tokens: slow, obviously right.
fn reference(toks: &[Tok], s: &[u8]) -> bool {
    let Some((&t, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    let seps = || {
        s.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(j, _)| j)
    };
    match t {
        Tok::Lit(c) => s.first() == Some(&c) && reference(rest, &s[1..]),
        Tok::One => s.first().is_some_and(|b| *b != b'/') && reference(rest, &s[1..]),
        Tok::Star => {
            let run = s.iter().take_while(|b| **b != b'/').count();
            (0..=run).any(|k| reference(rest, &s[k..]))
        }
        Tok::All => (0..=s.len()).any(|k| reference(rest, &s[k..])),
        Tok::LeadingAny => {
            reference(rest, s)
                || (s.first() == Some(&b'/') && reference(rest, &s[1..]))
                || seps().any(|j| reference(rest, &s[j + 1..]))
        }
        Tok::TrailingAny => {
            s.first() == Some(&b'/') && (1..=s.len()).any(|k| reference(rest, &s[k..]))
        }
        Tok::MiddleAny => {
            s.first() == Some(&b'/')
                && (reference(rest, &s[1..])
                    || seps().skip(1).any(|j| reference(rest, &s[j + 1..])))
        }
    }
}

/// Patterns of 1 to 4 segments, each `**` (never two in a row) or 1 to 3 of `a b ? *`
/// (never `**` inside a segment), joined by `/` or `:`.
fn glob_pattern() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        1 => Just("**".to_string()),
        4 => prop::collection::vec(prop::sample::select(vec!['a', 'b', '?', '*']), 1..4)
            .prop_map(|cs| cs.into_iter().collect::<String>())
            .prop_filter("no ** inside a segment", |s| !s.contains("**")),
    ];
    (
        prop::collection::vec(seg, 1..5),
        prop::collection::vec(prop::sample::select(vec!['/', ':']), 4),
    )
        .prop_filter("no two ** segments in a row", |(segs, _)| {
            !segs.windows(2).any(|w| w[0] == "**" && w[1] == "**")
        })
        .prop_map(|(segs, seps)| {
            let mut p = String::new();
            for (i, s) in segs.iter().enumerate() {
                if i > 0 {
                    p.push(seps[i - 1]);
                }
                p.push_str(s);
            }
            p
        })
}

fn glob_value() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!['a', 'b', 'c', '/', ':']), 0..9)
        .prop_map(|cs| cs.into_iter().collect())
}

proptest! {
    #![proptest_config(config(2048))]

    /// The production matcher (globset parsing + a hand-written NFA) agrees with the
    /// backtracking reference on every pattern and value.
    #[test]
    fn glob_matcher_agrees_with_the_reference(pattern in glob_pattern(), values in prop::collection::vec(glob_value(), 8)) {
        let compiled = Pattern::new(&pattern).unwrap();
        let toks = tokens(&pattern);
        for v in &values {
            let want = reference(&toks, v.replace(':', "/").as_bytes());
            prop_assert_eq!(compiled.matches(v), want, "pattern {:?} value {:?}", pattern, v);
        }
    }
}

#[test]
fn reference_matcher_knows_the_contract() {
    let m = |p: &str, v: &str| reference(&tokens(p), v.replace(':', "/").as_bytes());
    assert!(m("read:*", "read:email"));
    assert!(!m("read:*", "read:orders:42"));
    assert!(m("read:**", "read:orders:42"));
    assert!(!m("read:**", "read"));
    assert!(m("**:42", "42") && m("**:42", "read:orders:42"));
    assert!(m("a:**:b", "a:b") && m("a:**:b", "a:x:y:b") && !m("a:**:b", "ab"));
    assert!(m("*", "a:b:c"));
    assert!(m("r?ad", "read") && !m("r?ad", "r:ad"));
}

/// Regression (fuzz target `otlp`): an event whose trace id is not 16 bytes was hashed with
/// it, but its OTLP record carries none, so the collector found it altered.
#[test]
fn a_trace_id_the_record_cannot_carry_is_not_hashed() {
    use meshguard::audit::AuditEvent;
    let odd = AuditEvent {
        trace_id: vec![1, 2, 3],
        ..AuditEvent::default()
    };
    assert_eq!(odd.trace_id_hex(), "");
    let ok = AuditEvent {
        trace_id: vec![0xab; 16],
        ..AuditEvent::default()
    };
    assert_eq!(ok.trace_id_hex(), "ab".repeat(16));
}
