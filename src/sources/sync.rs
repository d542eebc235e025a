//! Cross-worker coordination of fetched documents through Envoy's shared data.
//!
//! Envoy runs one VM per worker (plus the main thread). They coordinate through
//! [`SharedData`], a key-value store with compare-and-swap:
//!
//! * `meshguard/<source>/next`: `"<next_fetch_ms> <last_forced_fetch_ms>"`. A VM whose
//!   tick finds the time has come CAS-writes the next slot; only the winner fetches.
//! * `meshguard/<source>/data`: the last accepted document (verified bundle, usable JWKS).
//! * `meshguard/<source>/rev`: a counter written after `data`. Every VM reads this small
//!   value on its tick and copies the document out only when it changed.
//! * `meshguard/<source>/status`: [`SyncStatus`] as JSON, for health and stats on any VM.

use crate::shared::SharedData;
use serde::{Deserialize, Serialize};

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
///
/// The very first claim of a source is not protected: a key never written has no CAS
/// token in Envoy, so workers starting in the same instant may each fetch once.
pub fn claim_fetch(
    store: &dyn SharedData,
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
pub fn publish(store: &dyn SharedData, source: &str, document: &[u8]) -> u64 {
    let rev_key = key(source, "rev");
    let next = parse_slot(store.get(&rev_key).0).0.wrapping_add(1);
    store.set(&key(source, "data"), document, None);
    store.set(&rev_key, next.to_string().as_bytes(), None);
    next
}

/// The revision of a source's shared document (0: none yet), read without copying it.
pub fn revision(store: &dyn SharedData, source: &str) -> u64 {
    parse_slot(store.get(&key(source, "rev")).0).0
}

/// The shared document of a source.
pub fn document(store: &dyn SharedData, source: &str) -> Option<Vec<u8>> {
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
    pub fn load(store: &dyn SharedData, source: &str) -> SyncStatus {
        store
            .get(&key(source, "status"))
            .0
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes it back (last writer wins: only the fetching VM writes).
    pub fn store(&self, store: &dyn SharedData, source: &str) {
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
    use crate::shared::MemoryStore;

    #[test]
    fn one_fetch_per_interval_across_workers() {
        let store = MemoryStore::new();
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
        let store = MemoryStore::new();
        assert_eq!(revision(&store, "bundle"), 0);
        assert_eq!(publish(&store, "bundle", b"v1"), 1);
        assert_eq!(publish(&store, "bundle", b"v2"), 2);
        assert_eq!(revision(&store, "bundle"), 2);
        assert_eq!(document(&store, "bundle").as_deref(), Some(&b"v2"[..]));
    }

    #[test]
    fn lost_cas_race_does_not_fetch() {
        let store = MemoryStore::new();
        let k = key("bundle", "next");
        store.set(&k, b"0 0", None);
        let (_, cas) = store.get(&k);
        store.set(&k, b"60000 0", cas); // another VM claimed in between
        assert!(!store.set(&k, b"x", cas));
    }

    #[test]
    fn forced_refetch_is_debounced() {
        let store = MemoryStore::new();
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
    fn status_round_trips() {
        let store = MemoryStore::new();
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
        assert_eq!(
            authority_for("outbound|8080||jwks.meshguard.svc.cluster.local"),
            "jwks.meshguard.svc.cluster.local"
        );
        assert_eq!(authority_for("meshguard-bundles"), "meshguard-bundles");
        let j = jittered(60_000, 123_456);
        assert!((54_000..66_000).contains(&j));
    }
}
