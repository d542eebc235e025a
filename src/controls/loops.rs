//! Loop detection: the same agent repeating the same call (action, resource, arguments)
//! more than `loop.max_repeats` times within `loop.window_seconds` (README "Agent
//! controls").
//!
//! The state of one call fingerprint is the list of its recent timestamps (at most
//! `max_repeats + 1` of them, so it stays small), in the shared store, updated with
//! compare-and-swap: the window is exact (sliding, millisecond resolution) and holds across
//! worker VMs. Every attempt is recorded, refused ones included, so a looping agent has to
//! pause for a whole window before the call passes again.

use super::store::{cas_update, SharedData, Step};
use crate::config::{ConfigError, LoopConfig};
use sha2::{Digest, Sha256};

/// The largest `max_repeats` accepted (it bounds the stored state).
pub const MAX_REPEATS: u32 = 1_000;
/// The longest window accepted, in seconds (one day).
pub const MAX_WINDOW_SECS: u64 = 86_400;

/// Compiled `loop:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopDetector {
    /// Identical calls allowed within the window.
    pub max_repeats: u32,
    /// The window in milliseconds.
    pub window_ms: u64,
}

/// The answer of loop detection for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopCheck {
    /// Within bounds.
    Ok,
    /// The call was seen `count` times within the window, this one included.
    Loop {
        /// Calls within the window.
        count: usize,
    },
}

/// The fingerprint of a call: SHA-256 of `agent \n action \n resource \n arguments`,
/// as 32 hex digits. `arguments` is whatever identifies the call's arguments (MCP tool
/// arguments as JSON, or the method and the path with its query for REST).
pub fn fingerprint(agent: &str, action: &str, resource: &str, arguments: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [agent.as_bytes(), action.as_bytes(), resource.as_bytes()] {
        h.update(part);
        h.update(b"\n");
    }
    h.update(arguments);
    let digest = h.finalize();
    crate::hex::hex(digest.get(..16).unwrap_or_default())
}

impl LoopDetector {
    /// Validates `loop:`.
    pub fn compile(cfg: &LoopConfig) -> Result<LoopDetector, ConfigError> {
        if cfg.max_repeats == 0 || cfg.max_repeats > MAX_REPEATS {
            return Err(ConfigError::invalid(
                "loop.max_repeats",
                format!("must be between 1 and {MAX_REPEATS} (identical calls allowed per window)"),
            ));
        }
        if cfg.window_seconds == 0 || cfg.window_seconds > MAX_WINDOW_SECS {
            return Err(ConfigError::invalid(
                "loop.window_seconds",
                format!("must be between 1 and {MAX_WINDOW_SECS}"),
            ));
        }
        Ok(LoopDetector {
            max_repeats: cfg.max_repeats,
            window_ms: cfg.window_seconds.saturating_mul(1000),
        })
    }

    /// Records one call under `key` (see [`fingerprint`]) and says whether it loops.
    /// When every attempt to record conflicts with other VMs the call is let through:
    /// loop detection is a guard against runaway agents, not an access rule.
    pub fn record(&self, store: &dyn SharedData, key: &str, now_ms: u64, writer: u64) -> LoopCheck {
        let keep = usize::try_from(self.max_repeats)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let since = now_ms.saturating_sub(self.window_ms);
        let r = cas_update(store, key, |value| {
            let text = value
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default();
            let mut stamps: Vec<u64> = text
                .split(' ')
                .skip(1)
                .filter_map(|t| t.parse().ok())
                .filter(|t| *t > since && *t <= now_ms)
                .collect();
            stamps.push(now_ms);
            let drop = stamps.len().saturating_sub(keep);
            stamps.drain(..drop);
            let count = stamps.len();
            let mut out = format!("{writer:x}");
            for t in &stamps {
                out.push(' ');
                out.push_str(&t.to_string());
            }
            let verdict = if count > keep.saturating_sub(1) {
                LoopCheck::Loop { count }
            } else {
                LoopCheck::Ok
            };
            Step::Write(out.into_bytes(), verdict)
        });
        r.unwrap_or(LoopCheck::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controls::store::MemoryStore;

    const T0: u64 = 1_800_000_000_000;

    fn detector(max: u32, secs: u64) -> LoopDetector {
        LoopDetector::compile(&LoopConfig {
            max_repeats: max,
            window_seconds: secs,
        })
        .unwrap()
    }

    #[test]
    fn the_repeat_after_max_is_a_loop_and_the_window_slides() {
        let s = MemoryStore::new();
        let d = detector(3, 10);
        for i in 0..3 {
            assert_eq!(d.record(&s, "k", T0 + i, 1), LoopCheck::Ok, "call {i}");
        }
        assert_eq!(d.record(&s, "k", T0 + 3, 1), LoopCheck::Loop { count: 4 });
        // still looping while the agent keeps trying
        assert!(matches!(
            d.record(&s, "k", T0 + 5_000, 1),
            LoopCheck::Loop { .. }
        ));
        // a full quiet window later it passes again
        assert_eq!(d.record(&s, "k", T0 + 15_001, 1), LoopCheck::Ok);
        // another fingerprint is independent
        assert_eq!(d.record(&s, "other", T0 + 3, 1), LoopCheck::Ok);
    }

    #[test]
    fn calls_spread_wider_than_the_window_never_loop() {
        let s = MemoryStore::new();
        let d = detector(2, 1);
        for i in 0..50 {
            assert_eq!(
                d.record(&s, "k", T0 + i * 600, 1),
                LoopCheck::Ok,
                "call {i}"
            );
        }
    }

    #[test]
    fn state_stays_bounded() {
        let s = MemoryStore::new();
        let d = detector(5, 60);
        for i in 0..1000 {
            d.record(&s, "k", T0 + i, 1);
        }
        let v = crate::shared::SharedData::get(&s, "k").0.unwrap();
        assert_eq!(String::from_utf8(v).unwrap().split(' ').count(), 1 + 6);
    }

    #[test]
    fn two_workers_share_the_count() {
        let s = MemoryStore::new();
        let d = detector(4, 10);
        let results: Vec<_> = (0..5)
            .map(|i| d.record(&s, "k", T0 + i, 1 + i % 2))
            .collect();
        assert_eq!(results[..4], [LoopCheck::Ok; 4]);
        assert_eq!(results[4], LoopCheck::Loop { count: 5 });
    }

    #[test]
    fn bad_settings_name_the_field() {
        let bad = |m, w| {
            LoopDetector::compile(&LoopConfig {
                max_repeats: m,
                window_seconds: w,
            })
            .unwrap_err()
            .field()
            .to_string()
        };
        assert_eq!(bad(0, 10), "loop.max_repeats");
        assert_eq!(bad(5000, 10), "loop.max_repeats");
        assert_eq!(bad(5, 0), "loop.window_seconds");
        assert_eq!(bad(5, 10_000_000), "loop.window_seconds");
    }

    #[test]
    fn fingerprints_separate_fields() {
        let a = fingerprint("a", "b", "c", b"{}");
        assert_eq!(a, fingerprint("a", "b", "c", b"{}"));
        assert_ne!(a, fingerprint("a", "b\nc", "", b"{}"));
        assert_ne!(a, fingerprint("a", "b", "c", b"{\"x\":1}"));
        assert_eq!(a.len(), 32);
    }
}
