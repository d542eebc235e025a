//! Controls across simulated worker VMs sharing one store.

use super::*;
use crate::shared::SharedData;
use serde_json::json;
use std::cell::RefCell;

const T0: u64 = 1_800_000_000_000_000;

/// A store through which "worker 1" writes while "worker 2" gets in first: before each
/// of worker 1's first `races` writes, `other` runs a whole admission of worker 2.
struct Racing<'a> {
    shared: &'a MemoryStore,
    races: RefCell<usize>,
    other: &'a dyn Fn(&MemoryStore),
}

impl SharedData for Racing<'_> {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        SharedData::get(self.shared, key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let race = {
            let mut r = self.races.borrow_mut();
            let go = *r > 0;
            *r = r.saturating_sub(1);
            go
        };
        if race {
            (self.other)(self.shared);
        }
        SharedData::set(self.shared, key, value, cas)
    }
}

fn config(extra: serde_json::Value) -> PluginConfig {
    let mut base = json!({"identity": {"issuers": []}});
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(base).unwrap()
}

fn controls(extra: serde_json::Value) -> Controls {
    Controls::compile(&config(extra), None, &[], "policies").unwrap()
}

fn call<'a>(agent: &'a str, action: &'a str) -> Call<'a> {
    Call {
        agent,
        action,
        resource: Some("orders"),
        policy_rule: None,
        arguments: b"{}",
    }
}

#[test]
fn approval_ids_are_stable_and_distinct() {
    let a = approval_id("agent-a", "write:refund", Some("orders"));
    assert_eq!(a, approval_id("agent-a", "write:refund", Some("orders")));
    assert!(a.starts_with("apr_") && a.len() == 4 + 32, "{a}");
    // pinned: the derivation is a contract with the approval service
    let expected = {
        let d = Sha256::digest(b"agent-a\nwrite:refund\norders");
        format!("apr_{}", crate::hex::hex(&d[..16]))
    };
    assert_eq!(a, expected);
    assert_ne!(a, approval_id("agent-b", "write:refund", Some("orders")));
    assert_ne!(a, approval_id("agent-a", "write:refund", None));
    assert_eq!(approval_id("a", "b", None), approval_id("a", "b", Some("")));
}

#[test]
fn rate_limit_holds_when_every_write_races_with_another_worker() {
    let c =
        controls(json!({"rate_limits": [{"name": "email", "action": "write:*", "limit": "10/m"}]}));
    let shared = MemoryStore::new();
    let worker2 = |s: &MemoryStore| {
        let _ = c.check_call(
            Counters {
                store: s,
                writer: 2,
            },
            &call("agent-a", "write:email"),
            T0,
        );
    };
    let racing = Racing {
        shared: &shared,
        races: RefCell::new(0),
        other: &worker2,
    };
    // the key exists before the races (a racing first write is the next test's subject)
    let first = c.check_call(
        Counters {
            store: &racing,
            writer: 1,
        },
        &call("agent-a", "write:email"),
        T0,
    );
    assert_eq!(first, None);
    racing.races.replace(4);
    let mut mine = 1;
    for _ in 0..5 {
        let r = c.check_call(
            Counters {
                store: &racing,
                writer: 1,
            },
            &call("agent-a", "write:email"),
            T0,
        );
        if r.is_none() {
            mine += 1;
        }
    }
    // worker 2 took 4 (one per race), worker 1 the remaining 6: exactly the limit
    assert_eq!(mine, 6);
    let over = c.check_call(
        Counters {
            store: &shared,
            writer: 2,
        },
        &call("agent-a", "write:email"),
        T0,
    );
    match over {
        Some(Refusal::RateLimited {
            limit,
            retry_after_secs,
            rate,
        }) => {
            assert_eq!(
                (limit.as_str(), rate.as_str(), retry_after_secs),
                ("email", "10/m", 6)
            );
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
}

#[test]
fn racing_first_writes_of_a_key_are_detected_and_recounted() {
    // Both workers see the key absent; worker 2's unconditional first write lands
    // between worker 1's read and worker 1's write-back check.
    let l = Limit::parse("3/s").unwrap();
    let shared = MemoryStore::new();
    let worker2 = |s: &MemoryStore| {
        // worker 2 writes unconditionally over whatever is there (its own first write)
        SharedData::set(s, "k", format!("{} 2", T0 + 333_333).as_bytes(), None);
    };
    struct Late<'a>(&'a MemoryStore, RefCell<bool>, &'a dyn Fn(&MemoryStore));
    impl SharedData for Late<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            SharedData::get(self.0, key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            let ok = SharedData::set(self.0, key, value, cas);
            if self.1.replace(false) {
                (self.2)(self.0); // overwrites worker 1's first write
            }
            ok
        }
    }
    let late = Late(&shared, RefCell::new(true), &worker2);
    assert_eq!(ratelimit::admit(&late, "k", l, T0, 1), Admission::Admitted);
    // worker 1 noticed its write was replaced and counted itself on top: 2 used, 1 left
    assert_eq!(
        ratelimit::admit(&shared, "k", l, T0, 1),
        Admission::Admitted
    );
    assert!(matches!(
        ratelimit::admit(&shared, "k", l, T0, 2),
        Admission::Limited { .. }
    ));
}

#[test]
fn limits_are_per_agent_and_filtered_by_agent_and_action_globs() {
    let c = controls(json!({"rate_limits": [
        {"name": "bots", "agents": "bot-*", "action": "read:*", "limit": "1/s"}
    ]}));
    let s = MemoryStore::new();
    let n = |agent, action| {
        c.check_call(
            Counters {
                store: &s,
                writer: 1,
            },
            &call(agent, action),
            T0,
        )
    };
    assert_eq!(n("bot-1", "read:x"), None);
    assert!(n("bot-1", "read:x").is_some());
    assert_eq!(n("bot-2", "read:x"), None, "each agent has its own counter");
    assert_eq!(n("human-1", "read:x"), None);
    assert_eq!(n("human-1", "read:x"), None, "not governed by the limit");
    assert_eq!(n("bot-1", "write:x"), None, "other actions are not counted");
}

#[test]
fn rule_level_limits_apply_to_the_rule_that_allowed() {
    let policies: Vec<Policy> = serde_json::from_value(json!([
        {"name": "p", "rules": [{"name": "r", "action": "read:*", "effect": "allow", "rate_limit": "2/m"},
                                {"action": "list:*", "effect": "allow", "rate_limit": "1/h"}]}
    ]))
    .unwrap();
    let c = Controls::compile(&config(json!({})), None, &policies, "policies").unwrap();
    let s = MemoryStore::new();
    let mut k = call("agent-a", "read:x");
    k.policy_rule = Some(("p", "r"));
    let n = |k: &Call<'_>| {
        c.check_call(
            Counters {
                store: &s,
                writer: 1,
            },
            k,
            T0,
        )
    };
    assert_eq!(n(&k), None);
    assert_eq!(n(&k), None);
    match n(&k) {
        Some(Refusal::RateLimited { limit, .. }) => assert_eq!(limit, "rule:p/r"),
        other => panic!("{other:?}"),
    }
    let mut unnamed = call("agent-a", "list:x");
    unnamed.policy_rule = Some(("p", "rules[1]"));
    assert_eq!(n(&unnamed), None);
    assert!(n(&unnamed).is_some());
    // without the allowing rule, no rule limit
    assert_eq!(n(&call("agent-a", "read:x")), None);
}

#[test]
fn loops_are_detected_across_workers_before_rate_limits() {
    let c = controls(json!({
        "loop": {"max_repeats": 3, "window_seconds": 10.0},
        "rate_limits": [{"name": "all", "action": "*", "limit": "100/s"}]
    }));
    let s = MemoryStore::new();
    for i in 0..3u64 {
        let r = c.check_call(
            Counters {
                store: &s,
                writer: 1 + i % 2,
            },
            &call("agent-a", "tool:search"),
            T0 + i,
        );
        assert_eq!(r, None, "call {i}");
    }
    let r = c.check_call(
        Counters {
            store: &s,
            writer: 2,
        },
        &call("agent-a", "tool:search"),
        T0 + 10,
    );
    assert_eq!(
        r,
        Some(Refusal::Loop {
            count: 4,
            max_repeats: 3,
            window_secs: 10
        })
    );
    // different arguments are a different call
    let mut other = call("agent-a", "tool:search");
    other.arguments = b"{\"q\":\"other\"}";
    assert_eq!(
        c.check_call(
            Counters {
                store: &s,
                writer: 1
            },
            &other,
            T0 + 11
        ),
        None
    );
}

#[test]
fn bad_control_settings_name_the_field() {
    let err = |extra: serde_json::Value| {
        Controls::compile(&config(extra), None, &[], "policies")
            .unwrap_err()
            .field()
            .to_string()
    };
    for (limit, field) in [
        ("5/x", "rate_limits[0].limit"),
        ("0/s", "rate_limits[0].limit"),
        ("abc", "rate_limits[0].limit"),
    ] {
        assert_eq!(
            err(json!({"rate_limits": [{"name": "a", "action": "*", "limit": limit}]})),
            field
        );
    }
    assert_eq!(
        err(
            json!({"rate_limits": [{"name": "a", "action": "*", "limit": "1/s"}, {"name": "a", "action": "*", "limit": "1/s"}]})
        ),
        "rate_limits[1].name"
    );
    assert_eq!(
        err(json!({"rate_limits": [{"name": "a", "agents": "[", "action": "*", "limit": "1/s"}]})),
        "rate_limits[0].agents"
    );
    assert_eq!(
        err(json!({"loop": {"max_repeats": 0, "window_seconds": 1}})),
        "loop.max_repeats"
    );
    assert_eq!(
        err(
            json!({"grants": {"inline": [{"id": "g", "agent": "a", "action": "x", "expires_at": "2027-02-30T00:00:00Z"}]}})
        ),
        "grants.inline[0].expires_at"
    );
    assert_eq!(err(json!({"grants": {"cluster": "c"}})), "grants");
    assert_eq!(
        err(json!({"grants": {"cluster": "c", "path": "x", "public_keys": ["AAAA"]}})),
        "grants.path"
    );
    assert_eq!(
        err(json!({"grants": {"cluster": "c", "path": "/g", "public_keys": ["AAAA"]}})),
        "grants.public_keys[0]"
    );
    let policies: Vec<Policy> = serde_json::from_value(
        json!([{"name": "p", "rules": [{"action": "x", "effect": "allow", "rate_limit": "9/y"}]}]),
    )
    .unwrap();
    let e = Controls::compile(&config(json!({})), None, &policies, "policy_yaml").unwrap_err();
    assert_eq!(e.field(), "policy_yaml[0].rules[0].rate_limit");
    // wrong types are parse errors naming the field
    let e = crate::config::parse(br#"{"identity":{"issuers":[]},"revoked":{"jti":"t-1"}}"#)
        .unwrap_err();
    assert_eq!(e.field(), "revoked.jti");
    let e = crate::config::parse(
        br#"{"identity":{"issuers":[]},"loop":{"max_repeats":-1,"window_seconds":1}}"#,
    )
    .unwrap_err();
    assert_eq!(e.field(), "loop.max_repeats");
    let e = crate::config::parse(br#"{"identity":{"issuers":[]},"revoked":{"tokens":[]}}"#)
        .unwrap_err();
    assert!(e.to_string().contains("tokens"), "{e}");
}

#[test]
fn grants_come_from_config_bundle_and_document() {
    let mut c = controls(json!({"grants": {"inline": [
        {"id": "g-inline", "agent": "agent-a", "action": "write:refund", "expires_at": "2027-01-15T09:00:00Z"}
    ]}}));
    let now = 1_800_000_000;
    assert_eq!(
        c.grant_for("agent-a", "write:refund", None, now)
            .map(|g| g.spec.id.as_str()),
        Some("g-inline")
    );
    assert!(c.grant_for("agent-b", "write:refund", None, now).is_none());
    let doc: GrantsDoc = serde_json::from_value(json!({"format": grants::FORMAT, "version": 3, "created_at": "x",
        "grants": [{"id": "g-doc", "agent": "agent-b", "action": "write:*", "expires_at": "2027-01-15T08:00:01Z"}]}))
    .unwrap();
    c.set_document(Some(&doc)).unwrap();
    assert_eq!(c.document_version(), Some(3));
    assert_eq!(
        c.grant_for("agent-b", "write:refund", None, now)
            .map(|g| g.spec.id.as_str()),
        Some("g-doc")
    );
    assert!(
        c.grant_for("agent-b", "write:refund", None, now + 1)
            .is_none(),
        "expired"
    );
    c.set_document(None).unwrap();
    assert!(c.grant_for("agent-b", "write:refund", None, now).is_none());
    // bundle grants and revocations
    let bundle: Bundle = serde_json::from_value(json!({"format": "meshguard-bundle/v1", "version": 1, "created_at": "x",
        "grants": [{"id": "g-b", "agent": "*", "action": "read:*", "expires_at": "2030-01-01T00:00:00Z"}],
        "revocations": [{"agent": "agent-x"}]}))
    .unwrap();
    let c = Controls::compile(&config(json!({})), Some(&bundle), &[], "bundle.policies").unwrap();
    assert!(c.grant_for("anyone", "read:x", None, now).is_some());
    assert_eq!((c.grant_count(), c.revocation_count()), (1, 1));
    let bad: Bundle = serde_json::from_value(
        json!({"format": "meshguard-bundle/v1", "version": 1, "created_at": "x",
        "grants": [{"id": "g-b", "agent": "*", "action": "read:*", "expires_at": "soon"}]}),
    )
    .unwrap();
    let e = Controls::compile(&config(json!({})), Some(&bad), &[], "bundle.policies").unwrap_err();
    assert_eq!(e.field(), "bundle.grants[0].expires_at");
}
