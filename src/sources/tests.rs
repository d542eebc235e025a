//! The document state machine, driven as Envoy's workers would drive it, over an
//! in-memory shared store.

use super::bundle::{sign, FORMAT};
use super::sync::{document, revision, FORCED_REFETCH_MS};
use super::*;
use crate::shared::MemoryStore;
use ct_codecs::{Base64, Encoder};
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use std::cell::RefCell;

/// 2027-01-15T08:00:00Z, in milliseconds.
const T0: u64 = 1_800_000_000_000;
const ISSUER: &str = "https://issuer.example";
const CLUSTER: &str = "outbound|8080||bundles.meshguard.svc.cluster.local";
const INTERVAL_MS: u64 = 60_000;
const REFRESH_MS: u64 = 300_000;

fn signer(seed: u8) -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]))
}

fn public_key(kp: &ed25519_compact::KeyPair) -> String {
    Base64::encode_to_string(kp.pk.as_ref()).unwrap()
}

fn bundle_json(version: u64, effect: &str) -> Value {
    json!({
        "format": FORMAT, "version": version, "created_at": "2027-01-15T07:00:00Z",
        "policies": [{"name": format!("bundle-{effect}"), "rules": [{"action": "read:*", "effect": effect}]}],
        "agents": [{"id": "agent-a"}]
    })
}

fn signed(version: u64, effect: &str, kp: &ed25519_compact::KeyPair) -> Vec<u8> {
    let mut b = bundle_json(version, effect);
    sign(&mut b, &kp.sk, Some("k")).unwrap();
    serde_json::to_vec_pretty(&b).unwrap()
}

fn jwk(kid: &str) -> Value {
    serde_json::from_str(
        &ES256KeyPair::generate()
            .with_key_id(kid)
            .public_key()
            .to_jwk(),
    )
    .unwrap()
}

fn jwks(keys: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

/// A configuration with a bundle source (signed by `keys`) and one remote issuer.
fn config(keys: &[&ed25519_compact::KeyPair]) -> PluginConfig {
    let keys: Vec<String> = keys.iter().map(|k| public_key(k)).collect();
    crate::config::parse(
        json!({
            "identity": {"issuers": [{"issuer": ISSUER, "audiences": ["agents"],
                "jwks_cluster": "jwks", "jwks_path": "/keys", "jwks_refresh_seconds": REFRESH_MS / 1000}]},
            "bundle": {"cluster": CLUSTER, "path": "/bundles/current.json", "public_keys": keys,
                "interval_seconds": INTERVAL_MS / 1000, "max_bytes": 4096},
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

/// A worker VM of the Envoy whose shared data is `store`.
fn worker(store: &MemoryStore, random: u64) -> Sources {
    Sources::new(Rc::new(store.clone()), random).reconfigured(&config(&[&signer(1)]))
}

fn jwks_doc() -> DocId {
    DocId::Jwks(ISSUER.into())
}

fn reply(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut h = vec![(":status".to_string(), status.to_string())];
    h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Reply {
        headers: h,
        body_size: body.len(),
        body: (!body.is_empty()).then(|| body.to_vec()),
    }
}

fn ok(body: &[u8]) -> Reply {
    reply(200, &[("etag", "\"e1\"")], body)
}

/// The answer Envoy delivers when the call failed without a response.
fn no_response() -> Reply {
    Reply::default()
}

/// Ticks and returns the fetch of `doc` it started, if any.
fn tick_fetch(s: &mut Sources, now: u64, doc: &DocId) -> Option<FetchRequest> {
    s.on_tick(now).fetches.into_iter().find(|f| &f.doc == doc)
}

/// A worker holding bundle v1 (fetched at T0).
fn with_v1(store: &MemoryStore) -> Sources {
    let mut s = worker(store, 0);
    tick_fetch(&mut s, T0, &DocId::Bundle).unwrap();
    s.on_response(&DocId::Bundle, ok(&signed(1, "allow", &signer(1))), T0)
        .unwrap();
    s
}

fn rejected(u: Option<Update>) -> String {
    match u.map(|u| u.change) {
        Some(Change::Rejected(reason)) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn bundle_version(s: &Sources) -> Option<u64> {
    s.bundle().map(|b| b.version())
}

#[test]
fn first_tick_fetches_the_bundle_and_the_keys() {
    let store = MemoryStore::new();
    let mut s = worker(&store, 0);
    let fetches = s.on_tick(T0).fetches;
    assert_eq!(fetches.len(), 2, "{fetches:?}");
    let b = &fetches[0];
    assert_eq!(b.doc, DocId::Bundle);
    assert_eq!(
        (b.cluster.as_str(), b.path.as_str()),
        (CLUSTER, "/bundles/current.json")
    );
    assert_eq!(
        b.authority, "bundles.meshguard.svc.cluster.local",
        "Istio cluster → host"
    );
    assert_eq!(b.etag, None, "nothing held: unconditional");
    assert!(b.headers().contains(&(":method", "GET")));
    let j = &fetches[1];
    assert_eq!(
        (j.doc.source(), j.cluster.as_str(), j.path.as_str()),
        (format!("jwks/{ISSUER}"), "jwks", "/keys")
    );
    assert_eq!(j.timeout_ms, crate::config::default_fetch_timeout());
    assert!(
        s.on_tick(T0 + 100).fetches.is_empty(),
        "claimed for an interval"
    );
}

#[test]
fn first_bundle_is_installed_published_and_recorded() {
    let store = MemoryStore::new();
    let mut s = worker(&store, 0);
    tick_fetch(&mut s, T0, &DocId::Bundle).unwrap();
    let body = signed(1, "allow", &signer(1));
    let u = s.on_response(&DocId::Bundle, ok(&body), T0 + 5).unwrap();
    assert_eq!(
        u.change,
        Change::NewBundle {
            version: 1,
            adopted: false
        }
    );
    assert!(u.rebuild());
    assert_eq!(bundle_version(&s), Some(1));
    assert_eq!(s.bundle().unwrap().created_secs(), Some(1_799_996_400));
    assert_eq!(
        s.bundle().unwrap().policies().len(),
        1,
        "compiled once, here"
    );
    assert_eq!(revision(&store, "bundle"), 1);
    assert_eq!(document(&store, "bundle"), Some(body));
    let st = s.status(&DocId::Bundle);
    assert!(st.last_ok && st.reachable);
    assert_eq!(
        (st.updates, st.etag.as_deref(), st.last_success_ms),
        (1, Some("\"e1\""), T0 + 5)
    );
}

#[test]
fn the_next_fetch_is_conditional_and_304_keeps_the_bundle() {
    let store = MemoryStore::new();
    let mut s = with_v1(&store);
    assert!(tick_fetch(&mut s, T0 + INTERVAL_MS / 2, &DocId::Bundle).is_none());
    let f = tick_fetch(&mut s, T0 + INTERVAL_MS * 11 / 10, &DocId::Bundle).expect("due");
    assert_eq!(f.etag.as_deref(), Some("\"e1\""));
    assert!(f.headers().contains(&("if-none-match", "\"e1\"")));
    let u = s.on_response(
        &DocId::Bundle,
        reply(304, &[], b""),
        T0 + INTERVAL_MS * 11 / 10,
    );
    assert_eq!(u.unwrap().change, Change::NotModified);
    assert_eq!(bundle_version(&s), Some(1));
    let st = s.status(&DocId::Bundle);
    assert_eq!(
        (st.last_ok, st.updates),
        (true, 1),
        "a success, not an update"
    );
    assert_eq!(revision(&store, "bundle"), 1, "nothing republished");
}

#[test]
fn the_same_version_again_changes_nothing() {
    let store = MemoryStore::new();
    let mut s = with_v1(&store);
    let u = s.on_response(&DocId::Bundle, ok(&signed(1, "allow", &signer(1))), T0 + 1);
    assert_eq!(u.unwrap().change, Change::NotModified);
    assert_eq!(revision(&store, "bundle"), 1);
}

#[test]
fn a_newer_bundle_replaces_the_one_in_force() {
    let store = MemoryStore::new();
    let mut s = with_v1(&store);
    let u = s.on_response(&DocId::Bundle, ok(&signed(2, "deny", &signer(1))), T0 + 1);
    assert_eq!(
        u.unwrap().change,
        Change::NewBundle {
            version: 2,
            adopted: false
        }
    );
    assert_eq!(bundle_version(&s), Some(2));
    assert_eq!(revision(&store, "bundle"), 2);
    assert_eq!(s.status(&DocId::Bundle).updates, 2);
}

#[test]
fn a_tampered_bundle_is_rejected_and_the_last_good_one_stays() {
    let store = MemoryStore::new();
    let mut s = with_v1(&store);
    let mut doc: Value = serde_json::from_slice(&signed(2, "allow", &signer(1))).unwrap();
    doc["policies"][0]["rules"][0]["effect"] = json!("deny");
    let reason = rejected(s.on_response(
        &DocId::Bundle,
        ok(&serde_json::to_vec(&doc).unwrap()),
        T0 + 1,
    ));
    assert!(reason.contains("no signature verifies"), "{reason}");
    assert_eq!(bundle_version(&s), Some(1));
    assert_eq!(revision(&store, "bundle"), 1, "not shared");
    let st = s.status(&DocId::Bundle);
    assert_eq!((st.last_ok, st.reachable, st.rejected), (false, true, 1));
    assert_eq!(st.last_error.as_deref(), Some(reason.as_str()));
}

#[test]
fn a_rollback_is_refused() {
    let store = MemoryStore::new();
    let mut s = with_v1(&store);
    s.on_response(&DocId::Bundle, ok(&signed(5, "allow", &signer(1))), T0 + 1);
    let reason =
        rejected(s.on_response(&DocId::Bundle, ok(&signed(4, "deny", &signer(1))), T0 + 2));
    assert!(reason.contains("rollback refused"), "{reason}");
    assert_eq!(bundle_version(&s), Some(5));
}

#[test]
fn an_unsigned_bundle_is_rejected() {
    let store = MemoryStore::new();
    let mut s = with_v1(&store);
    let body = serde_json::to_vec(&bundle_json(2, "deny")).unwrap();
    assert_eq!(
        rejected(s.on_response(&DocId::Bundle, ok(&body), T0 + 1)),
        "bundle has no signatures"
    );
}

#[test]
fn a_bundle_signed_with_an_unknown_key_is_rejected() {
    let store = MemoryStore::new();
    let mut s = with_v1(&store);
    let reason =
        rejected(s.on_response(&DocId::Bundle, ok(&signed(2, "deny", &signer(9))), T0 + 1));
    assert!(reason.contains("wrong key"), "{reason}");
    assert_eq!(bundle_version(&s), Some(1));
}

#[test]
fn an_oversized_answer_is_rejected_without_reading_it() {
    let store = MemoryStore::new();
    let mut s = with_v1(&store);
    assert_eq!(s.read_limit(&DocId::Bundle), 4096);
    let big = Reply {
        headers: vec![(":status".into(), "200".into())],
        body_size: 70_000,
        body: None,
    };
    let reason = rejected(s.on_response(&DocId::Bundle, big, T0 + 1));
    assert_eq!(reason, "70000 bytes is over the 4096-byte cap");
    assert_eq!(s.status(&DocId::Bundle).rejected, 1);
}

#[test]
fn html_and_truncated_bundles_are_rejected() {
    let store = MemoryStore::new();
    let mut s = with_v1(&store);
    let reason = rejected(s.on_response(&DocId::Bundle, ok(b"<html>login</html>"), T0 + 1));
    assert!(
        reason.starts_with("not a meshguard-bundle/v1 bundle"),
        "{reason}"
    );
    let body = signed(2, "deny", &signer(1));
    let reason = rejected(s.on_response(&DocId::Bundle, ok(&body[..body.len() / 2]), T0 + 2));
    assert!(
        reason.starts_with("not a meshguard-bundle/v1 bundle"),
        "{reason}"
    );
    assert_eq!(s.status(&DocId::Bundle).rejected, 2);
    assert_eq!(bundle_version(&s), Some(1));
}

#[test]
fn a_bundle_whose_policies_do_not_compile_is_rejected() {
    let store = MemoryStore::new();
    let mut s = with_v1(&store);
    let mut b = bundle_json(2, "allow");
    b["policies"][0]["rules"][0]["conditions"] = json!(["time.hour >= "]);
    sign(&mut b, &signer(1).sk, None).unwrap();
    let reason =
        rejected(s.on_response(&DocId::Bundle, ok(&serde_json::to_vec(&b).unwrap()), T0 + 1));
    assert!(
        reason.contains("do not compile") && reason.contains("bundle.policies[0]"),
        "{reason}"
    );
    assert_eq!(bundle_version(&s), Some(1));
}

#[test]
fn a_server_that_does_not_answer_is_unreachable() {
    let store = MemoryStore::new();
    let mut s = with_v1(&store);
    let u = s
        .on_response(&DocId::Bundle, no_response(), T0 + 1)
        .unwrap();
    assert_eq!(u.change, Change::Failed(Failure::NoResponse));
    assert!(!u.rebuild());
    let st = s.status(&DocId::Bundle);
    assert_eq!((st.last_ok, st.reachable, st.failures), (false, false, 1));
    assert_eq!(
        bundle_version(&s),
        Some(1),
        "the last good bundle keeps enforcing"
    );
}

#[test]
fn envoys_own_503_is_no_answer_from_the_source() {
    let store = MemoryStore::new();
    let mut s = with_v1(&store);
    let local = reply(503, &[("content-type", "text/plain")], b"upstream connect error or disconnect/reset before headers. reset reason: connection failure");
    let u = s.on_response(&DocId::Bundle, local, T0 + 1).unwrap();
    assert_eq!(
        u.change,
        Change::Failed(Failure::LocalReply { status: 503 })
    );
    assert!(!s.status(&DocId::Bundle).reachable);
    let timeout = reply(504, &[], b"upstream request timeout");
    let u = s.on_response(&DocId::Bundle, timeout, T0 + 2).unwrap();
    assert_eq!(
        u.change,
        Change::Failed(Failure::LocalReply { status: 504 })
    );
    // The same status from the source itself (Envoy adds its service time): reachable.
    let upstream = reply(
        503,
        &[("x-envoy-upstream-service-time", "3")],
        b"upstream connect error",
    );
    let u = s.on_response(&DocId::Bundle, upstream, T0 + 3).unwrap();
    assert_eq!(u.change, Change::Failed(Failure::Status(503)));
    assert!(s.status(&DocId::Bundle).reachable);
}

#[test]
fn error_statuses_are_failures_of_a_reachable_source() {
    let store = MemoryStore::new();
    let mut s = worker(&store, 0);
    let u = s
        .on_response(&DocId::Bundle, reply(404, &[], b"not found"), T0)
        .unwrap();
    assert_eq!(u.change, Change::Failed(Failure::Status(404)));
    let st = s.status(&DocId::Bundle);
    assert_eq!(
        (st.reachable, st.last_error.as_deref()),
        (true, Some("HTTP status 404"))
    );
    s.on_response(&DocId::Bundle, reply(500, &[], b"oops"), T0 + 1);
    assert_eq!(s.status(&DocId::Bundle).failures, 2);
}

#[test]
fn a_fetch_that_cannot_start_is_a_failure_naming_the_cluster() {
    let store = MemoryStore::new();
    let mut s = worker(&store, 0);
    let f = tick_fetch(&mut s, T0, &DocId::Bundle).unwrap();
    let u = s.on_not_started(&f, "BadArgument".into(), T0).unwrap();
    let Change::Failed(failure) = &u.change else {
        panic!("{u:?}")
    };
    assert!(!failure.reachable());
    assert!(failure.reason().contains(CLUSTER) && failure.reason().contains("BadArgument"));
    assert_eq!(s.status(&DocId::Bundle).failures, 1);
}

#[test]
fn keys_are_parsed_once_and_installed() {
    let store = MemoryStore::new();
    let mut s = worker(&store, 0);
    let doc = jwks(&[
        jwk("k1"),
        json!({"kty": "RSA", "use": "enc", "kid": "enc", "n": "x", "e": "AQAB"}),
    ]);
    let u = s.on_response(&jwks_doc(), ok(&doc), T0).unwrap();
    let Change::NewKeys {
        adopted: false,
        skipped,
    } = &u.change
    else {
        panic!("{u:?}")
    };
    assert_eq!(
        skipped.len(),
        1,
        "the encryption key is skipped and reported"
    );
    assert!(skipped[0].starts_with("keys[1]"), "{skipped:?}");
    let keys = s.jwks();
    assert_eq!(keys[ISSUER].kids(), [Some("k1")]);
    assert_eq!(revision(&store, &jwks_doc().source()), 1);
}

#[test]
fn an_empty_key_set_is_rejected_and_the_last_keys_stay() {
    let store = MemoryStore::new();
    let mut s = worker(&store, 0);
    s.on_response(&jwks_doc(), ok(&jwks(&[jwk("k1")])), T0);
    let reason = rejected(s.on_response(&jwks_doc(), ok(br#"{"keys": []}"#), T0 + 1));
    assert_eq!(reason, "the key set is empty");
    assert_eq!(s.jwks()[ISSUER].kids(), [Some("k1")]);
}

#[test]
fn a_key_set_of_only_unusable_keys_is_rejected() {
    let store = MemoryStore::new();
    let mut s = worker(&store, 0);
    s.on_response(&jwks_doc(), ok(&jwks(&[jwk("k1")])), T0);
    let oct = br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x"}]}"#;
    let reason = rejected(s.on_response(&jwks_doc(), ok(oct), T0 + 1));
    assert!(
        reason.starts_with("no usable signing key") && reason.contains("symmetric"),
        "{reason}"
    );
    let reason = rejected(s.on_response(&jwks_doc(), ok(b"<html>login</html>"), T0 + 2));
    assert!(reason.starts_with("not JSON"), "{reason}");
    assert_eq!(s.jwks()[ISSUER].kids(), [Some("k1")]);
    assert_eq!(s.status(&jwks_doc()).rejected, 2);
}

#[test]
fn rotated_keys_replace_the_old_ones_and_the_same_keys_are_not_republished() {
    let store = MemoryStore::new();
    let mut s = worker(&store, 0);
    let (a, b) = (jwk("a"), jwk("b"));
    s.on_response(&jwks_doc(), ok(&jwks(std::slice::from_ref(&a))), T0);
    let u = s
        .on_response(&jwks_doc(), ok(&jwks(&[a.clone(), b])), T0 + 1)
        .unwrap();
    assert!(matches!(u.change, Change::NewKeys { adopted: false, .. }));
    assert_eq!(s.jwks()[ISSUER].kids(), [Some("a"), Some("b")]);
    assert_eq!(revision(&store, &jwks_doc().source()), 2);
    // The same document, re-serialised: nothing new, nothing published, no rebuild.
    let again = serde_json::to_vec_pretty(
        &serde_json::from_slice::<Value>(&document(&store, &jwks_doc().source()).unwrap()).unwrap(),
    )
    .unwrap();
    let u = s.on_response(&jwks_doc(), ok(&again), T0 + 2).unwrap();
    assert_eq!(u.change, Change::NotModified);
    assert!(!u.rebuild());
    assert_eq!(revision(&store, &jwks_doc().source()), 2);
}

#[test]
fn missing_keys_are_retried_every_five_seconds_then_on_the_refresh_interval() {
    let store = MemoryStore::new();
    let mut s = worker(&store, 0);
    tick_fetch(&mut s, T0, &jwks_doc()).unwrap();
    s.on_response(
        &jwks_doc(),
        reply(503, &[("x-envoy-upstream-service-time", "1")], b""),
        T0,
    );
    assert!(
        tick_fetch(&mut s, T0 + 4_000, &jwks_doc()).is_none(),
        "not before 4.5 s"
    );
    tick_fetch(&mut s, T0 + 5_500, &jwks_doc()).expect("retried within 5.5 s");
    s.on_response(&jwks_doc(), ok(&jwks(&[jwk("k1")])), T0 + 5_500);
    // The slot claimed while keys were missing still runs out after ~5 s; from then on,
    // with keys held, fetches are a refresh interval apart (±10%).
    let t = T0 + 11_000;
    tick_fetch(&mut s, t, &jwks_doc()).expect("the slot claimed before the keys came");
    s.on_response(&jwks_doc(), reply(304, &[], b""), t);
    assert!(tick_fetch(&mut s, t + 11_000, &jwks_doc()).is_none());
    assert!(tick_fetch(&mut s, t + REFRESH_MS * 9 / 10 - 1, &jwks_doc()).is_none());
    assert!(tick_fetch(&mut s, t + REFRESH_MS * 11 / 10, &jwks_doc()).is_some());
}

#[test]
fn unknown_kid_refetches_are_limited_to_one_per_30_seconds() {
    let store = MemoryStore::new();
    let mut s = worker(&store, 0);
    tick_fetch(&mut s, T0, &jwks_doc()).unwrap(); // scheduled
    s.on_response(&jwks_doc(), ok(&jwks(&[jwk("k1")])), T0);
    s.want_jwks_refresh();
    let forced = s.on_tick(T0 + 1_000).fetches;
    assert_eq!(
        forced.len(),
        1,
        "a scheduled fetch does not spend the budget: {forced:?}"
    );
    assert_eq!(forced[0].doc, jwks_doc(), "the bundle is not forced");
    s.want_jwks_refresh();
    assert!(
        tick_fetch(&mut s, T0 + 20_000, &jwks_doc()).is_none(),
        "within 30 s of the last forced fetch"
    );
    assert!(
        tick_fetch(&mut s, T0 + 25_000, &jwks_doc()).is_none(),
        "the wish was used up"
    );
    s.want_jwks_refresh();
    assert!(tick_fetch(&mut s, T0 + 1_000 + FORCED_REFETCH_MS, &jwks_doc()).is_some());
}

#[test]
fn two_workers_fetch_once_per_interval_and_the_other_adopts() {
    let store = MemoryStore::new();
    let mut a = worker(&store, 1);
    let mut b = worker(&store, 2);
    let fa = tick_fetch(&mut a, T0, &DocId::Bundle);
    let fb = tick_fetch(&mut b, T0 + 10, &DocId::Bundle);
    assert!(fa.is_some() && fb.is_none(), "one fetch for the Envoy");
    a.on_response(&DocId::Bundle, ok(&signed(3, "deny", &signer(1))), T0 + 20);
    let adopted = b.on_tick(T0 + 30).updates;
    assert_eq!(adopted.len(), 1);
    assert_eq!(
        adopted[0].change,
        Change::NewBundle {
            version: 3,
            adopted: true
        }
    );
    assert!(adopted[0].rebuild());
    assert_eq!(bundle_version(&b), Some(3));
    assert!(b.on_tick(T0 + 40).updates.is_empty(), "adopted once");
    assert!(
        a.on_tick(T0 + 40).updates.is_empty(),
        "the fetching worker does not adopt its own write"
    );
    // Over ten intervals of ticks from both workers, about ten fetches, not twenty.
    let mut fetches = 0;
    for step in 1..=100 {
        let now = T0 + step * INTERVAL_MS / 10;
        for w in [&mut a, &mut b] {
            if tick_fetch(w, now, &DocId::Bundle).is_some() {
                fetches += 1;
                w.on_response(&DocId::Bundle, reply(304, &[], b""), now);
            }
        }
    }
    assert!(
        (9..=11).contains(&fetches),
        "{fetches} fetches in 10 intervals"
    );
}

/// A store that lets another worker act between this worker's read and its write.
struct Racing {
    inner: MemoryStore,
    between: RefCell<Option<Box<dyn FnOnce()>>>,
}

impl SharedData for Racing {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        if key.ends_with("/next") {
            if let Some(other) = self.between.borrow_mut().take() {
                other();
            }
        }
        self.inner.set(key, value, cas)
    }
}

#[test]
fn a_lost_cas_race_means_no_fetch() {
    let store = MemoryStore::new();
    let a = Rc::new(RefCell::new(with_v1(&store)));
    let racing = Rc::new(Racing {
        inner: store.clone(),
        between: RefCell::new(None),
    });
    let mut b = Sources::new(racing.clone(), 2).reconfigured(&config(&[&signer(1)]));
    b.on_tick(T0 + 10); // adopts v1
    let due = T0 + INTERVAL_MS * 2;
    let won = Rc::new(RefCell::new(None));
    let (a2, won2) = (Rc::clone(&a), Rc::clone(&won));
    *racing.between.borrow_mut() = Some(Box::new(move || {
        *won2.borrow_mut() = tick_fetch(&mut a2.borrow_mut(), due, &DocId::Bundle);
    }));
    let lost = tick_fetch(&mut b, due, &DocId::Bundle);
    assert!(
        won.borrow().is_some(),
        "worker A claimed between B's read and write"
    );
    assert!(lost.is_none(), "B's stale CAS token loses");
}

#[test]
fn an_older_document_from_another_worker_is_not_adopted() {
    let store = MemoryStore::new();
    let mut a = with_v1(&store);
    let mut b = worker(&store, 2);
    b.on_tick(T0 + 1);
    b.on_response(&DocId::Bundle, ok(&signed(7, "allow", &signer(1))), T0 + 2);
    a.on_response(&DocId::Bundle, ok(&signed(3, "allow", &signer(1))), T0 + 3);
    let u = b.on_tick(T0 + 4).updates;
    assert_eq!(u.len(), 1);
    let Change::NotAdopted(reason) = &u[0].change else {
        panic!("{u:?}")
    };
    assert!(reason.contains("rollback"), "{reason}");
    assert_eq!(bundle_version(&b), Some(7));
}

#[test]
fn keys_published_by_another_worker_are_adopted() {
    let store = MemoryStore::new();
    let mut a = worker(&store, 1);
    let mut b = worker(&store, 2);
    a.on_response(&jwks_doc(), ok(&jwks(&[jwk("k1")])), T0);
    let u = b.on_tick(T0 + 1).updates;
    assert!(
        matches!(
            &u[..],
            [Update {
                change: Change::NewKeys { adopted: true, .. },
                ..
            }]
        ),
        "{u:?}"
    );
    assert_eq!(b.jwks()[ISSUER].kids(), [Some("k1")]);
}

#[test]
fn reconfiguration_keeps_a_bundle_that_still_verifies() {
    let store = MemoryStore::new();
    let s = with_v1(&store);
    let mut s = s.reconfigured(&config(&[&signer(2), &signer(1)]));
    assert_eq!(
        bundle_version(&s),
        Some(1),
        "still signed by a configured key"
    );
    s.on_response(&jwks_doc(), ok(&jwks(&[jwk("k1")])), T0);
    let rotated = s.reconfigured(&config(&[&signer(2)]));
    assert_eq!(
        bundle_version(&rotated),
        None,
        "its key was removed: no longer trusted"
    );
    assert_eq!(rotated.jwks().len(), 1, "fetched keys survive");
    assert_eq!(
        bundle_version(&s),
        Some(1),
        "the old value is untouched until committed"
    );
    let mut no_bundle = config(&[&signer(1)]);
    no_bundle.bundle = None;
    let plain = s.reconfigured(&no_bundle);
    assert!(!plain.bundle_configured() && plain.bundle().is_none());
}

#[test]
fn reconfiguration_does_not_readopt_the_shared_bundle() {
    let store = MemoryStore::new();
    let s = with_v1(&store);
    let mut s = s.reconfigured(&config(&[&signer(1)]));
    assert!(
        s.on_tick(T0 + 1).updates.is_empty(),
        "revision already seen"
    );
}

#[test]
fn answers_for_documents_no_longer_configured_are_ignored() {
    let store = MemoryStore::new();
    let s = worker(&store, 0);
    let mut cfg = config(&[&signer(1)]);
    cfg.bundle = None;
    cfg.identity.issuers[0].jwks_cluster = None;
    cfg.identity.issuers[0].jwks_path = None;
    cfg.identity.issuers[0].jwks = Some(json!({"keys": [jwk("inline")]}));
    let mut s = s.reconfigured(&cfg);
    assert!(s.on_tick(T0).fetches.is_empty());
    assert!(s.on_response(&DocId::Bundle, ok(b"{}"), T0).is_none());
    assert!(s.on_response(&jwks_doc(), ok(b"{}"), T0).is_none());
}
