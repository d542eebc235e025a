//! Envoy's shared data as the engine side sees it: one key-value store with
//! compare-and-swap, shared by every worker VM of one Envoy.
//!
//! Two users, one trait: the verified-token cache (`meshguard/tok/<slot>`, see
//! [`crate::identity::TokenCache`]) and the fetched documents (`meshguard/<source>/...`,
//! see [`crate::sources`]). The host implements it over Envoy's shared data; tests and
//! the CLI use [`MemoryStore`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A key-value store with compare-and-swap. Keys are never deleted (Envoy's shared data
/// cannot delete), so every user writes a bounded set of keys.
///
/// Implementations never fail loudly: a host error reads as "absent" or "not written",
/// so coordination degrades to extra work, never to an abort.
pub trait SharedData {
    /// The value and its CAS token (`None, None` when absent).
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes if the CAS token still matches; `None` or `Some(0)` write unconditionally,
    /// and so does any token for a key that was never written (Envoy's semantics; the
    /// first write of a key can therefore race). False when not written.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// Values with their CAS tokens, by key.
type Entries = HashMap<String, (Vec<u8>, u32)>;

/// An in-memory [`SharedData`] with Envoy's CAS semantics. Clones share the same data,
/// which is how tests model several worker VMs of one Envoy.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore(Rc<RefCell<Entries>>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Number of keys written.
    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }

    /// The keys written, sorted (for tests and debugging).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.0.borrow().keys().cloned().collect();
        keys.sort();
        keys
    }
}

impl SharedData for MemoryStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.0.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut map = self.0.borrow_mut();
        let current = map.get(key).map(|(_, c)| *c);
        // Envoy: an absent key is written whatever the token.
        if matches!((cas, current), (Some(c), Some(cur)) if c != 0 && c != cur) {
            return false;
        }
        let current = current.unwrap_or(0);
        map.insert(
            key.to_string(),
            (value.to_vec(), current.wrapping_add(1).max(1)),
        );
        true
    }
}

impl std::fmt::Debug for dyn SharedData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The contents belong to every VM of the Envoy; printing them would race.
        f.write_str("SharedData")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_semantics_match_envoy() {
        let a = MemoryStore::new();
        let b = a.clone();
        assert_eq!(a.get("k"), (None, None));
        assert!(a.set("k", b"1", Some(0)), "no token yet: written");
        let (v, cas) = b.get("k");
        assert_eq!(v.as_deref(), Some(&b"1"[..]));
        assert!(cas.is_some_and(|c| c != 0));
        assert!(b.set("k", b"2", cas));
        assert!(
            !a.set("k", b"3", cas),
            "stale token: the other worker wrote first"
        );
        assert!(a.set("k", b"4", None), "unconditional");
        assert!(a.set("k", b"5", Some(0)), "token 0 is unconditional too");
        assert_eq!(a.keys(), ["k"]);
    }
}
