//! The counter store shared by every worker VM of an Envoy: Envoy's shared data (a
//! key-value store with compare-and-swap), or [`MemoryStore`] natively.
//!
//! The store is [`SharedData`], the one trait over Envoy's shared data that the token
//! cache and the fetched documents use too.

pub use crate::shared::{MemoryStore, SharedData};

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
    store: &dyn SharedData,
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
        let store: &dyn SharedData = &s;
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
        impl crate::shared::SharedData for Hostile {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                crate::shared::SharedData::get(&self.0, key)
            }
            fn set(&self, key: &str, _value: &[u8], _cas: Option<u32>) -> bool {
                // another worker always wrote in between
                crate::shared::SharedData::set(&self.0, key, b"other", None);
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
