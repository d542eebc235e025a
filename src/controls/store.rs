//! The counter store shared by every worker VM of an Envoy: Envoy's shared data (a
//! key-value store with compare-and-swap), or [`MemoryStore`] natively.
//!
//! [`CounterStore`] has exactly the shape of `crate::sources::SharedStore`, and every
//! `SharedStore` is a `CounterStore`, so the host passes the one shared-data wrapper it
//! already has; the two traits can be merged into one without touching the callers.

use std::cell::RefCell;
use std::collections::HashMap;

/// A key-value store with compare-and-swap, shared across worker VMs.
///
/// Envoy's semantics, which [`MemoryStore`] reproduces: a CAS token of `None` (or 0)
/// writes unconditionally, and a write to an absent key always succeeds whatever the
/// token. So the first write of a key can race; [`cas_update`] handles that.
pub trait CounterStore {
    /// The value and its CAS token.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes if the CAS token still matches (`None`: unconditionally); false otherwise.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

impl<T: crate::sources::SharedStore + ?Sized> CounterStore for T {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        crate::sources::SharedStore::get(self, key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        crate::sources::SharedStore::set(self, key, value, cas)
    }
}

/// An in-memory store with Envoy's CAS semantics: the CLI's store, the per-VM fallback
/// when the host passes none, and the tests' stand-in for shared data.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: RefCell<u32>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }
}

impl crate::sources::SharedStore for MemoryStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.entries.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut entries = self.entries.borrow_mut();
        if let (Some((_, current)), Some(expected)) = (entries.get(key), cas) {
            if expected != 0 && expected != *current {
                return false;
            }
        }
        let mut next = self.next_cas.borrow_mut();
        *next = next.wrapping_add(1).max(1);
        entries.insert(key.to_string(), (value.to_vec(), *next));
        true
    }
}

/// Attempts of one read-modify-write before giving up: each failed attempt means another
/// worker updated the same key in between, so this bounds the work of one request.
pub const MAX_ATTEMPTS: usize = 8;

/// What `update` decided for the value it was shown.
pub enum Step<T> {
    /// Write these bytes, then report `T`.
    Write(Vec<u8>, T),
    /// Leave the value as it is and report `T`.
    Keep(T),
}

/// Read-modify-write of one key with compare-and-swap, retried on conflict at most
/// [`MAX_ATTEMPTS`] times (`None` when every attempt conflicted).
///
/// `update` sees the current value (`None` when absent) and returns what to write; its
/// bytes must be unique to this writer (they carry the VM's writer id) so that the
/// first-write race can be detected: a write to an absent key is unconditional in
/// Envoy, so after it the value is read back, and when another VM's first write replaced
/// ours the update is redone on top of theirs. A replacement landing after the read-back
/// still loses one update; that can only happen while a key is created, at most once per
/// racing VM.
pub fn cas_update<T>(
    store: &dyn CounterStore,
    key: &str,
    mut update: impl FnMut(Option<&[u8]>) -> Step<T>,
) -> Option<T> {
    for _ in 0..MAX_ATTEMPTS {
        let (value, cas) = store.get(key);
        let (bytes, result) = match update(value.as_deref()) {
            Step::Keep(r) => return Some(r),
            Step::Write(b, r) => (b, r),
        };
        match (value.is_some(), cas.filter(|c| *c != 0)) {
            (true, Some(c)) => {
                if store.set(key, &bytes, Some(c)) {
                    return Some(result);
                }
            }
            _ => {
                if store.set(key, &bytes, None) && store.get(key).0.as_deref() == Some(&bytes) {
                    return Some(result);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_has_envoy_cas_semantics() {
        let s = MemoryStore::new();
        let store: &dyn CounterStore = &s;
        assert_eq!(store.get("k"), (None, None));
        assert!(store.set("k", b"1", Some(77)), "absent keys accept any cas");
        let (v, cas) = store.get("k");
        assert_eq!(v.as_deref(), Some(&b"1"[..]));
        let cas = cas.unwrap();
        assert!(!store.set("k", b"2", Some(cas + 1)));
        assert!(store.set("k", b"2", Some(cas)));
        assert!(!store.set("k", b"3", Some(cas)), "the token changed");
        assert!(store.set("k", b"3", None));
        assert!(store.set("k", b"4", Some(0)));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn cas_update_gives_up_after_bounded_conflicts() {
        /// A store whose conditional writes always lose.
        struct Hostile(MemoryStore);
        impl crate::sources::SharedStore for Hostile {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                crate::sources::SharedStore::get(&self.0, key)
            }
            fn set(&self, key: &str, _value: &[u8], _cas: Option<u32>) -> bool {
                // another worker always wrote in between
                crate::sources::SharedStore::set(&self.0, key, b"other", None);
                false
            }
        }
        let h = Hostile(MemoryStore::new());
        let mut calls = 0;
        let r = cas_update(&h, "k", |_| {
            calls += 1;
            Step::Write(b"mine".to_vec(), ())
        });
        assert_eq!(r, None);
        assert_eq!(calls, MAX_ATTEMPTS);
    }
}
