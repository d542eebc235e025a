//! Bench-only timing of the request path by stage (cargo feature `stage-probe`).
//!
//! The request path calls [`lap`] at the end of each stage; with the feature on, the time
//! since the previous lap is added to that stage's total, with a monotonic clock (in Envoy
//! WASI's `clock_time_get`, one host call per lap), and the host exports the totals as
//! `meshguard.probe.*_ns` counters that `bench/run.py --stage-probe` reads. Without the
//! feature every call is an empty inline function, so release modules carry nothing of it.
//! Timing lives here rather than in the host so the engine's own stages can be split
//! without the engine seeing a host type.

/// A stage of the request path, in the order a request meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Copying the request headers (and the mTLS peer property) out of Envoy.
    HeaderRead,
    /// Path normalisation and the JSON-RPC endpoint lookup.
    Path,
    /// The token: per-worker cache hit, shared cache, or signature verification.
    Identity,
    /// Revocation and workload binding on the verified identity.
    IdentityControls,
    /// The audit event's request part (trace ids, method, path, authority).
    Event,
    /// Reading the request body out of Envoy.
    BodyRead,
    /// JSON-RPC parsing of the body (MCP/A2A).
    BodyParse,
    /// Route / MCP method → action and resource.
    Actions,
    /// Policy evaluation (`decide_full`: delegation, grants, shadow policies).
    Policy,
    /// Approval ids, loop detection, rate limits.
    Controls,
    /// The verdict: audit fields of the decision, forwarded headers or the local answer.
    Verdict,
    /// Carrying the verdict out in Envoy (header writes or the local response).
    Response,
    /// The decision stats.
    Metrics,
    /// The audit push (sealing and encoding the event into the buffer).
    Audit,
    /// Reading, filtering and replacing an upstream response body (`tools/list`).
    Rewrite,
}

/// Every stage, in [`Stage`] order.
pub const STAGES: [Stage; 15] = [
    Stage::HeaderRead,
    Stage::Path,
    Stage::Identity,
    Stage::IdentityControls,
    Stage::Event,
    Stage::BodyRead,
    Stage::BodyParse,
    Stage::Actions,
    Stage::Policy,
    Stage::Controls,
    Stage::Verdict,
    Stage::Response,
    Stage::Metrics,
    Stage::Audit,
    Stage::Rewrite,
];

impl Stage {
    /// The stat name part (`meshguard.probe.<name>_ns`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::HeaderRead => "header_read",
            Stage::Path => "path",
            Stage::Identity => "identity",
            Stage::IdentityControls => "identity_controls",
            Stage::Event => "event",
            Stage::BodyRead => "body_read",
            Stage::BodyParse => "body_parse",
            Stage::Actions => "actions",
            Stage::Policy => "policy",
            Stage::Controls => "controls",
            Stage::Verdict => "verdict",
            Stage::Response => "response",
            Stage::Metrics => "metrics",
            Stage::Audit => "audit",
            Stage::Rewrite => "rewrite",
        }
    }

    #[cfg(feature = "stage-probe")]
    fn index(self) -> usize {
        self as usize
    }
}

/// Whether this build times stages.
pub const ENABLED: bool = cfg!(feature = "stage-probe");

#[cfg(feature = "stage-probe")]
mod imp {
    use super::{Stage, STAGES};
    use std::cell::RefCell;
    use std::time::Instant;

    struct Clock {
        last: Option<Instant>,
        totals: [u64; STAGES.len()],
    }

    thread_local! {
        static CLOCK: RefCell<Clock> = const {
            RefCell::new(Clock { last: None, totals: [0; STAGES.len()] })
        };
    }

    pub fn begin() {
        let now = Instant::now();
        CLOCK.with(|c| c.borrow_mut().last = Some(now));
    }

    pub fn lap(stage: Stage) {
        let now = Instant::now();
        CLOCK.with(|c| {
            let mut c = c.borrow_mut();
            if let Some(last) = c.last {
                let ns = u64::try_from(now.duration_since(last).as_nanos()).unwrap_or(u64::MAX);
                if let Some(t) = c.totals.get_mut(stage.index()) {
                    *t = t.saturating_add(ns);
                }
            }
            c.last = Some(now);
        });
    }

    pub fn take() -> [u64; STAGES.len()] {
        CLOCK.with(|c| {
            let mut c = c.borrow_mut();
            c.last = None;
            std::mem::replace(&mut c.totals, [0; STAGES.len()])
        })
    }
}

#[cfg(not(feature = "stage-probe"))]
mod imp {
    use super::{Stage, STAGES};

    #[inline(always)]
    pub fn begin() {}

    #[inline(always)]
    pub fn lap(_stage: Stage) {}

    #[inline(always)]
    pub fn take() -> [u64; STAGES.len()] {
        [0; STAGES.len()]
    }
}

/// Starts timing: the next [`lap`] measures from here.
#[inline(always)]
pub fn begin() {
    imp::begin();
}

/// Ends `stage`: the time since the previous lap (or [`begin`]) is added to it. A lap
/// without a [`begin`] since the last [`take`] only restarts the clock.
#[inline(always)]
pub fn lap(stage: Stage) {
    imp::lap(stage);
}

/// The nanoseconds per stage since the last call, in [`STAGES`] order; stops the clock.
#[inline(always)]
pub fn take() -> [u64; STAGES.len()] {
    imp::take()
}

#[cfg(all(test, feature = "stage-probe"))]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_per_stage_and_take_resets() {
        begin();
        std::thread::sleep(std::time::Duration::from_millis(2));
        lap(Stage::Identity);
        lap(Stage::Policy);
        let t = take();
        assert!(t[Stage::Identity.index()] >= 2_000_000, "{t:?}");
        assert!(t[Stage::Policy.index()] < 2_000_000, "{t:?}");
        assert_eq!(take(), [0; STAGES.len()]);
        // no begin: a lap only restarts the clock
        lap(Stage::Audit);
        assert_eq!(take()[Stage::Audit.index()], 0);
    }
}
