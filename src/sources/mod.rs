//! Fetching bundles and JWKS once per Envoy, not once per worker.
//!
//! Envoy runs one VM per worker (plus the main thread). They coordinate through Envoy's
//! shared data, a key-value store with compare-and-swap:
//!
//! * `meshguard/<source>/next`: `"<next_fetch_ms> <last_forced_fetch_ms>"`. A VM whose
//!   tick finds the time has come CAS-writes the next slot; only the winner fetches.
//! * `meshguard/<source>/data`: the last accepted document (verified bundle, usable JWKS).
//! * `meshguard/<source>/rev`: a counter written after `data`. Every VM reads this small
//!   value on its tick and copies the document out only when it changed.
//! * `meshguard/<source>/status`: [`SyncStatus`] as JSON, for health and stats on any VM.

pub mod bundle;

use serde::{Deserialize, Serialize};

/// Envoy's shared data, or an in-memory stand-in for tests.
pub trait SharedStore {
    /// The value and its CAS token.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes if the CAS token still matches (`None`: unconditionally); false otherwise.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// Shared-data key of a source's item (`next`, `data`, `status`).
pub fn key(source: &str, item: &str) -> String {
    format!("meshguard/{source}/{item}")
}

/// Smallest time between two fetches forced by an unknown `kid`.
pub const FORCED_REFETCH_MS: u64 = 30_000;

fn parse_slot(v: Option<Vec<u8>>) -> (u64, u64) {
    let text = v
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    let mut parts = text
        .split_whitespace()
        .map(|p| p.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Tries to take the next fetch of `source`. Normal fetches happen once `next` has passed;
/// a forced fetch (unknown `kid`) happens early, but forced fetches happen at most every
/// [`FORCED_REFETCH_MS`] (scheduled fetches do not count against that budget, so a key
/// rotated just after a scheduled fetch is still picked up within seconds).
/// Returns true when this VM should fetch now.
pub fn claim_fetch(
    store: &dyn SharedStore,
    source: &str,
    now_ms: u64,
    interval_ms: u64,
    forced: bool,
) -> bool {
    let k = key(source, "next");
    let (value, cas) = store.get(&k);
    let (next, last_forced) = parse_slot(value);
    let scheduled = now_ms >= next;
    let early = !scheduled
        && forced
        && (last_forced == 0 || now_ms.saturating_sub(last_forced) >= FORCED_REFETCH_MS);
    if !scheduled && !early {
        return false;
    }
    let forced_at = if early { now_ms } else { last_forced };
    let slot = format!("{} {forced_at}", now_ms.saturating_add(interval_ms));
    store.set(&k, slot.as_bytes(), cas.or(Some(0)))
}

/// Shares an accepted document with the other VMs; returns its revision.
pub fn publish(store: &dyn SharedStore, source: &str, document: &[u8]) -> u64 {
    let rev_key = key(source, "rev");
    let next = parse_slot(store.get(&rev_key).0).0.wrapping_add(1);
    store.set(&key(source, "data"), document, None);
    store.set(&rev_key, next.to_string().as_bytes(), None);
    next
}

/// The revision of a source's shared document (0: none yet), read without copying it.
pub fn revision(store: &dyn SharedStore, source: &str) -> u64 {
    parse_slot(store.get(&key(source, "rev")).0).0
}

/// The shared document of a source.
pub fn document(store: &dyn SharedStore, source: &str) -> Option<Vec<u8>> {
    store.get(&key(source, "data")).0
}

/// What the last fetch of a source did, shared by all VMs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// When the last fetch finished (ms since the epoch), 0 if never.
    pub last_attempt_ms: u64,
    /// When a fetch last succeeded (new data or not modified).
    pub last_success_ms: u64,
    /// Whether the last fetch succeeded.
    pub last_ok: bool,
    /// Whether the source answered at all last time (any HTTP status).
    pub reachable: bool,
    /// ETag of the accepted document, for `If-None-Match`.
    pub etag: Option<String>,
    /// Fetches that failed (no answer, error status).
    pub failures: u64,
    /// Documents rejected (bad signature, rollback, unparsable...).
    pub rejected: u64,
    /// Documents accepted.
    pub updates: u64,
    /// Why the last fetch failed or was rejected.
    pub last_error: Option<String>,
}

impl SyncStatus {
    /// Reads a source's status from the store.
    pub fn load(store: &dyn SharedStore, source: &str) -> SyncStatus {
        store
            .get(&key(source, "status"))
            .0
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes it back (last writer wins: only the fetching VM writes).
    pub fn store(&self, store: &dyn SharedStore, source: &str) {
        if let Ok(b) = serde_json::to_vec(self) {
            store.set(&key(source, "status"), &b, None);
        }
    }

    /// Records a fetch that brought new accepted data or nothing new.
    pub fn succeeded(&mut self, now_ms: u64, etag: Option<String>, updated: bool) {
        self.last_attempt_ms = now_ms;
        self.last_success_ms = now_ms;
        self.last_ok = true;
        self.reachable = true;
        self.last_error = None;
        if etag.is_some() {
            self.etag = etag;
        }
        if updated {
            self.updates += 1;
        }
    }

    /// Records a failed fetch (`reachable`: an HTTP status came back).
    pub fn failed(&mut self, now_ms: u64, reachable: bool, error: String) {
        self.last_attempt_ms = now_ms;
        self.last_ok = false;
        self.reachable = reachable;
        self.failures += 1;
        self.last_error = Some(error);
    }

    /// Records a document that arrived but was not accepted.
    pub fn rejected(&mut self, now_ms: u64, error: String) {
        self.last_attempt_ms = now_ms;
        self.last_ok = false;
        self.reachable = true;
        self.rejected += 1;
        self.last_error = Some(error);
    }
}

/// How an HTTP answer to a fetch is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// 304: what we have is current.
    NotModified,
    /// 200 with a body.
    Body {
        /// The document.
        body: Vec<u8>,
        /// Its ETag, if any.
        etag: Option<String>,
    },
    /// Anything else.
    Failed {
        /// Whether an HTTP status came back (the source is reachable but unhappy).
        reachable: bool,
        /// Why.
        reason: String,
    },
}

/// Classifies an HTTP call response (`status` from `:status`; `None` when the call failed
/// without a response, e.g. connection refused or timeout).
pub fn classify(status: Option<u16>, etag: Option<String>, body: Option<Vec<u8>>) -> Fetched {
    match status {
        Some(304) => Fetched::NotModified,
        Some(200) => Fetched::Body {
            body: body.unwrap_or_default(),
            etag,
        },
        Some(s) => Fetched::Failed {
            reachable: true,
            reason: format!("HTTP status {s}"),
        },
        None => Fetched::Failed {
            reachable: false,
            reason: "no response (connection failed or timed out)".into(),
        },
    }
}

/// The `:authority` for a fetch from `cluster`: Istio names outbound clusters
/// `outbound|PORT|SUBSET|HOST`, and the sidecar or gateway in front of the source routes
/// by HOST (the cluster name itself is answered with 400); other names are used as is.
pub fn authority_for(cluster: &str) -> String {
    let mut parts = cluster.split('|');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("outbound" | "inbound"), Some(_port), Some(_subset), Some(host), None)
            if !host.is_empty() =>
        {
            host.to_string()
        }
        _ => cluster.to_string(),
    }
}

/// A jittered interval: ±10%, from a caller-supplied random value, so that many Envoys
/// started together do not poll in lockstep.
pub fn jittered(interval_ms: u64, random: u64) -> u64 {
    let span = interval_ms / 5;
    if span == 0 {
        return interval_ms;
    }
    interval_ms - interval_ms / 10 + random % span
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mem(RefCell<HashMap<String, (Vec<u8>, u32)>>);
    impl SharedStore for Mem {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            match self.0.borrow().get(key) {
                Some((v, c)) => (Some(v.clone()), Some(*c)),
                None => (None, None),
            }
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            let mut m = self.0.borrow_mut();
            let current = m.get(key).map(|(_, c)| *c).unwrap_or(0);
            if matches!(cas, Some(c) if c != current) {
                return false;
            }
            m.insert(key.to_string(), (value.to_vec(), current + 1));
            true
        }
    }

    #[test]
    fn one_fetch_per_interval_across_workers() {
        let store = Mem::default();
        assert!(
            claim_fetch(&store, "bundle", 1_000, 60_000, false),
            "first VM fetches"
        );
        assert!(
            !claim_fetch(&store, "bundle", 1_001, 60_000, false),
            "second VM waits"
        );
        assert!(!claim_fetch(&store, "bundle", 60_999, 60_000, false));
        assert!(claim_fetch(&store, "bundle", 61_000, 60_000, false));
        assert!(!claim_fetch(&store, "bundle", 61_000, 60_000, false));
    }

    #[test]
    fn documents_are_published_with_a_revision() {
        let store = Mem::default();
        assert_eq!(revision(&store, "bundle"), 0);
        assert_eq!(publish(&store, "bundle", b"v1"), 1);
        assert_eq!(publish(&store, "bundle", b"v2"), 2);
        assert_eq!(revision(&store, "bundle"), 2);
        assert_eq!(document(&store, "bundle").as_deref(), Some(&b"v2"[..]));
    }

    #[test]
    fn lost_cas_race_does_not_fetch() {
        let store = Mem::default();
        let k = key("bundle", "next");
        let (_, cas) = store.get(&k);
        store.set(&k, b"0 0", None); // another VM wrote in between
        assert!(!store.set(&k, b"x", cas.or(Some(0))));
    }

    #[test]
    fn forced_refetch_is_debounced() {
        let store = Mem::default();
        assert!(
            claim_fetch(&store, "jwks", 1_000, 300_000, false),
            "scheduled"
        );
        assert!(
            claim_fetch(&store, "jwks", 2_000, 300_000, true),
            "forced right after a scheduled fetch"
        );
        assert!(
            !claim_fetch(&store, "jwks", 20_000, 300_000, true),
            "second forced within 30 s"
        );
        assert!(
            !claim_fetch(&store, "jwks", 20_000, 300_000, false),
            "not due"
        );
        assert!(claim_fetch(&store, "jwks", 32_001, 300_000, true));
        assert!(!claim_fetch(&store, "jwks", 33_000, 300_000, true));
    }

    #[test]
    fn status_round_trips_and_classifies() {
        let store = Mem::default();
        let mut s = SyncStatus::load(&store, "bundle");
        s.failed(5, false, "down".into());
        s.store(&store, "bundle");
        let mut t = SyncStatus::load(&store, "bundle");
        assert_eq!((t.failures, t.reachable, t.last_ok), (1, false, false));
        t.succeeded(9, Some("\"e1\"".into()), true);
        assert_eq!(
            (t.updates, t.etag.as_deref(), t.last_error.clone()),
            (1, Some("\"e1\""), None)
        );
        assert_eq!(classify(Some(304), None, None), Fetched::NotModified);
        assert!(matches!(
            classify(Some(500), None, Some(b"<html>".to_vec())),
            Fetched::Failed {
                reachable: true,
                ..
            }
        ));
        assert!(matches!(
            classify(None, None, None),
            Fetched::Failed {
                reachable: false,
                ..
            }
        ));
        assert_eq!(
            authority_for("outbound|8080||jwks.meshguard.svc.cluster.local"),
            "jwks.meshguard.svc.cluster.local"
        );
        assert_eq!(authority_for("meshguard-bundles"), "meshguard-bundles");
        let j = jittered(60_000, 123_456);
        assert!((54_000..66_000).contains(&j));
    }
}
