//! Per-agent rate limits counted across worker VMs (README "Agent controls").
//!
//! Algorithm: GCRA (the generic cell rate algorithm, a token bucket kept as one number).
//! A limit of N per period P lets an agent send N requests back to back and then one
//! every P/N; the state of an (agent, limit) pair is its theoretical arrival time (TAT)
//! in microseconds, updated with compare-and-swap in the shared store. Error bound: the
//! sustained rate is exactly N per P; any window of length P admits at most 2N (a full
//! bucket spent at its start and refilled by its end); every refusal says exactly when
//! the next request would pass (`Retry-After`, rounded up to whole seconds).

use super::store::{cas_update, SharedData, Step};
use crate::glob::Pattern;

/// A parsed `N/s`, `N/m` or `N/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests per period.
    pub count: u32,
    /// The period in seconds (1, 60 or 3600).
    pub period_secs: u64,
}

/// The largest N accepted: beyond it the emission interval drops below a microsecond.
pub const MAX_COUNT: u32 = 1_000_000;

impl Limit {
    /// Parses `N/s`, `N/m` or `N/h` (also `N/second`, `N/minute`, `N/hour`).
    pub fn parse(text: &str) -> Result<Limit, String> {
        let (n, unit) = text.trim().split_once('/').ok_or_else(|| {
            format!("{text:?} is not a rate; write N/s, N/m or N/h (e.g. \"10/m\")")
        })?;
        let count: u32 = n.trim().parse().map_err(|_| {
            format!("{text:?}: {n:?} is not a whole number of requests; write N/s, N/m or N/h")
        })?;
        if count == 0 || count > MAX_COUNT {
            return Err(format!(
                "{text:?}: the number of requests must be between 1 and {MAX_COUNT}"
            ));
        }
        let period_secs = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            other => return Err(format!("{text:?}: unknown period {other:?}; use s, m or h")),
        };
        Ok(Limit { count, period_secs })
    }

    fn period_us(self) -> u64 {
        self.period_secs.saturating_mul(1_000_000)
    }

    /// Time between two requests at the sustained rate, in microseconds.
    fn interval_us(self) -> u64 {
        (self.period_us() / u64::from(self.count)).max(1)
    }

    /// GCRA step: given the stored TAT, admit (returning the new TAT) or refuse
    /// (returning the wait in microseconds).
    fn step(self, stored_tat_us: u64, now_us: u64) -> Result<u64, u64> {
        let interval = self.interval_us();
        let tolerance = self.period_us().saturating_sub(interval);
        let tat = stored_tat_us.max(now_us);
        let ahead = tat - now_us;
        if ahead > tolerance {
            Err(ahead - tolerance)
        } else {
            Ok(tat.saturating_add(interval))
        }
    }
}

/// The answer of a rate limit for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted and admitted.
    Admitted,
    /// Over the limit; retry after this many whole seconds (at least 1).
    Limited {
        /// `Retry-After`, in seconds.
        retry_after_secs: u64,
    },
}

fn parse_state(v: Option<&[u8]>) -> u64 {
    v.and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// Counts one request of `key` against `limit` in the shared store.
///
/// `writer` identifies this VM (see [`super::store::cas_update`]). When every attempt
/// conflicts with other VMs the request is refused for a second: the limit holds
/// rather than failing open under contention.
pub fn admit(
    store: &dyn SharedData,
    key: &str,
    limit: Limit,
    now_us: u64,
    writer: u64,
) -> Admission {
    let r = cas_update(store, key, |value| {
        match limit.step(parse_state(value), now_us) {
            Ok(tat) => Step::Write(
                format!("{tat} {writer:x}").into_bytes(),
                Admission::Admitted,
            ),
            Err(wait_us) => Step::Keep(Admission::Limited {
                retry_after_secs: wait_us.div_ceil(1_000_000).max(1),
            }),
        }
    });
    r.unwrap_or(Admission::Limited {
        retry_after_secs: 1,
    })
}

/// A compiled entry of `rate_limits:`.
#[derive(Debug)]
pub struct RateLimit {
    /// As configured.
    pub name: String,
    /// Agent glob (`None`: every agent).
    pub agents: Option<Pattern>,
    /// Action glob.
    pub action: Pattern,
    /// The rate.
    pub limit: Limit,
    /// The configured text, for reasons.
    pub text: String,
}

impl RateLimit {
    /// Whether the limit counts this agent's action.
    pub fn applies(&self, agent: &str, action: &str) -> bool {
        self.action.matches(action) && self.agents.as_ref().is_none_or(|p| p.matches(agent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controls::store::MemoryStore;

    const T0: u64 = 1_800_000_000_000_000;

    #[test]
    fn limits_parse_and_bad_ones_say_why() {
        assert_eq!(
            Limit::parse("5/s").unwrap(),
            Limit {
                count: 5,
                period_secs: 1
            }
        );
        assert_eq!(Limit::parse(" 10 / m ").unwrap().period_secs, 60);
        assert_eq!(Limit::parse("1/hour").unwrap().period_secs, 3600);
        for bad in [
            "5/x",
            "0/s",
            "abc",
            "-1/s",
            "1.5/s",
            "5",
            "/s",
            "99999999999/s",
            "",
        ] {
            let e = Limit::parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn burst_of_n_then_one_per_interval() {
        let s = MemoryStore::new();
        let l = Limit::parse("5/s").unwrap();
        for i in 0..5 {
            assert_eq!(admit(&s, "k", l, T0, 1), Admission::Admitted, "request {i}");
        }
        assert_eq!(
            admit(&s, "k", l, T0, 1),
            Admission::Limited {
                retry_after_secs: 1
            }
        );
        // 200 ms later one token is back, not two
        assert_eq!(admit(&s, "k", l, T0 + 200_000, 1), Admission::Admitted);
        assert!(matches!(
            admit(&s, "k", l, T0 + 200_000, 1),
            Admission::Limited { .. }
        ));
        // other keys (agents) are independent
        assert_eq!(admit(&s, "other", l, T0, 1), Admission::Admitted);
    }

    #[test]
    fn retry_after_is_the_real_wait_rounded_up() {
        let s = MemoryStore::new();
        let l = Limit::parse("2/h").unwrap();
        assert_eq!(admit(&s, "k", l, T0, 1), Admission::Admitted);
        assert_eq!(admit(&s, "k", l, T0, 1), Admission::Admitted);
        assert_eq!(
            admit(&s, "k", l, T0, 1),
            Admission::Limited {
                retry_after_secs: 1800
            }
        );
        assert_eq!(
            admit(&s, "k", l, T0 + 1_799_500_000, 1),
            Admission::Limited {
                retry_after_secs: 1
            }
        );
        assert_eq!(
            admit(&s, "k", l, T0 + 1_800_000_000, 1),
            Admission::Admitted
        );
    }

    #[test]
    fn sustained_rate_is_exact_over_long_runs() {
        let s = MemoryStore::new();
        let l = Limit::parse("10/m").unwrap();
        let mut admitted = 0;
        // one attempt every 100 ms for 10 minutes
        for i in 0..6_000u64 {
            if admit(&s, "k", l, T0 + i * 100_000, 1) == Admission::Admitted {
                admitted += 1;
            }
        }
        // burst of 10, then 10 per minute for the remaining ~10 minutes
        assert!((100..=110).contains(&admitted), "{admitted}");
    }

    #[test]
    fn two_workers_interleaving_never_exceed_the_limit() {
        let s = MemoryStore::new();
        let l = Limit::parse("7/s").unwrap();
        let mut admitted = 0;
        for i in 0..20 {
            let writer = 1 + (i % 2);
            if admit(&s, "k", l, T0, writer) == Admission::Admitted {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 7);
    }

    #[test]
    fn endless_conflicts_refuse_rather_than_fail_open() {
        /// Every conditional write loses to another worker.
        struct Busy(MemoryStore);
        impl crate::shared::SharedData for Busy {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                crate::shared::SharedData::get(&self.0, key)
            }
            fn set(&self, key: &str, _: &[u8], _: Option<u32>) -> bool {
                crate::shared::SharedData::set(&self.0, key, b"0 ff", None);
                false
            }
        }
        let s = Busy(MemoryStore::new());
        assert_eq!(
            admit(&s, "k", Limit::parse("100/s").unwrap(), T0, 1),
            Admission::Limited {
                retry_after_secs: 1
            }
        );
    }

    #[test]
    fn garbage_state_is_treated_as_empty() {
        let s = MemoryStore::new();
        crate::shared::SharedData::set(&s, "k", b"\xff\xfe not a number", None);
        assert_eq!(
            admit(&s, "k", Limit::parse("1/s").unwrap(), T0, 1),
            Admission::Admitted
        );
    }
}
