//! Envoy stats, defined once per VM (the same names across VMs add up to one stat, which
//! Envoy prefixes with `wasmcustom.`). A stat the host refuses has no id and its updates
//! are dropped: stats must never take the request path down.

use super::{Host, MetricKind};
use crate::audit::AuditCounters;
use crate::engine::{DecisionKind, Outcome, Verdict};
use crate::probe;
use crate::sources::{Change, DocId, Update};
use std::rc::Rc;

/// Stats of one kind of fetched document (`meshguard.<kind>.*`).
struct SourceStats {
    kind: &'static str,
    fetches: Option<u32>,
    failures: Option<u32>,
    rejected: Option<u32>,
    updates: Option<u32>,
}

/// The filter's stats.
pub(crate) struct Metrics {
    host: Rc<dyn Host>,
    allowed: Option<u32>,
    denied: Option<u32>,
    unauthenticated: Option<u32>,
    would_deny: Option<u32>,
    audit_emitted: Option<u32>,
    audit_sent: Option<u32>,
    audit_retried: Option<u32>,
    audit_acknowledged: Option<u32>,
    audit_dropped: Option<u32>,
    audit_exports_ok: Option<u32>,
    audit_exports_failed: Option<u32>,
    audit_buffered: Option<u32>,
    config_rejected: Option<u32>,
    bundle_version: Option<u32>,
    bundle_age: Option<u32>,
    bundle_last_sync_success: Option<u32>,
    sources: Vec<SourceStats>,
    /// `meshguard.probe.<stage>_ns`, in [`probe::STAGES`] order (only in `stage-probe` builds).
    probe_stages: Vec<Option<u32>>,
    /// `meshguard.probe.requests`: decisions timed.
    probe_requests: Option<u32>,
}

/// The kinds of fetched documents that have stats.
const SOURCE_KINDS: [&str; 3] = ["bundle", "jwks", "grants"];

impl Metrics {
    /// Defines every stat.
    pub(crate) fn define(host: Rc<dyn Host>) -> Metrics {
        let c = |n: &str| host.define_metric(MetricKind::Counter, n);
        let g = |n: &str| host.define_metric(MetricKind::Gauge, n);
        let sources = SOURCE_KINDS
            .iter()
            .map(|&kind| SourceStats {
                kind,
                fetches: c(&format!("meshguard.{kind}.fetches")),
                failures: c(&format!("meshguard.{kind}.fetch_failures")),
                rejected: c(&format!("meshguard.{kind}.rejected")),
                updates: c(&format!("meshguard.{kind}.updates")),
            })
            .collect();
        Metrics {
            allowed: c("meshguard.requests.allowed"),
            denied: c("meshguard.requests.denied"),
            unauthenticated: c("meshguard.requests.unauthenticated"),
            would_deny: c("meshguard.requests.would_deny"),
            audit_emitted: c("meshguard.audit.emitted"),
            audit_sent: c("meshguard.audit.sent"),
            audit_retried: c("meshguard.audit.retried"),
            audit_acknowledged: c("meshguard.audit.acknowledged"),
            audit_dropped: c("meshguard.audit.dropped"),
            audit_exports_ok: c("meshguard.audit.exports_ok"),
            audit_exports_failed: c("meshguard.audit.exports_failed"),
            audit_buffered: g("meshguard.audit.buffered"),
            config_rejected: c("meshguard.config.rejected"),
            bundle_version: g("meshguard.bundle.version"),
            bundle_age: g("meshguard.bundle.age_seconds"),
            bundle_last_sync_success: g("meshguard.bundle.last_sync_success"),
            sources,
            probe_stages: if probe::ENABLED {
                probe::STAGES
                    .iter()
                    .map(|s| c(&format!("meshguard.probe.{}_ns", s.name())))
                    .collect()
            } else {
                Vec::new()
            },
            probe_requests: if probe::ENABLED {
                c("meshguard.probe.requests")
            } else {
                None
            },
            host,
        }
    }

    fn inc(&self, id: Option<u32>, by: u64) {
        if let Some(id) = id.filter(|_| by > 0) {
            self.host
                .increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    fn set(&self, id: Option<u32>, value: u64) {
        if let Some(id) = id {
            self.host.record_metric(id, value);
        }
    }

    /// Counts a request's decision.
    pub(crate) fn decision(&self, outcome: &Outcome) {
        let id = match (&outcome.verdict, outcome.kind) {
            (Verdict::Forward { .. }, DecisionKind::Allow) => self.allowed,
            (Verdict::Forward { .. }, _) => self.would_deny,
            (Verdict::Respond(_), _) if outcome.identity_error.is_some() => self.unauthenticated,
            (Verdict::Respond(_), _) => self.denied,
        };
        self.inc(id, 1);
    }

    /// Adds a `stage-probe` build's stage times; `decided`: they end a decision (not a
    /// response rewrite), so the request is counted.
    pub(crate) fn probe(&self, totals: [u64; probe::STAGES.len()], decided: bool) {
        if !probe::ENABLED {
            return;
        }
        for (id, ns) in self.probe_stages.iter().zip(totals) {
            self.inc(*id, ns);
        }
        if decided {
            self.inc(self.probe_requests, 1);
        }
    }

    /// Counts a configuration refused.
    pub(crate) fn config_rejected(&self) {
        self.inc(self.config_rejected, 1);
    }

    /// The bundle version in force (0: inline policy).
    pub(crate) fn bundle_version(&self, version: Option<u64>) {
        self.set(self.bundle_version, version.unwrap_or(0));
    }

    fn source(&self, doc: &DocId) -> Option<&SourceStats> {
        self.sources.iter().find(|s| s.kind == doc.kind())
    }

    /// Counts a fetch started.
    pub(crate) fn fetch_started(&self, doc: &DocId) {
        self.inc(self.source(doc).and_then(|s| s.fetches), 1);
    }

    /// Counts what a fetch did (adoptions from other workers are not fetches: not counted).
    pub(crate) fn update(&self, update: &Update) {
        let Some(s) = self.source(&update.doc) else {
            return;
        };
        let id = match &update.change {
            Change::NewBundle { adopted: false, .. }
            | Change::NewKeys { adopted: false, .. }
            | Change::NewGrants { adopted: false, .. } => s.updates,
            Change::Rejected(_) => s.rejected,
            Change::Failed(_) => s.failures,
            _ => None,
        };
        self.inc(id, 1);
    }

    /// Publishes what changed since the last call: audit counters (as deltas), the audit
    /// queue, the bundle's age and last sync.
    pub(crate) fn publish(&self, now: Published, before: &AuditCounters) {
        let c = &now.audit;
        self.inc(self.audit_emitted, c.emitted.saturating_sub(before.emitted));
        self.inc(self.audit_sent, c.sent.saturating_sub(before.sent));
        self.inc(self.audit_retried, c.retried.saturating_sub(before.retried));
        self.inc(
            self.audit_acknowledged,
            c.acknowledged.saturating_sub(before.acknowledged),
        );
        self.inc(self.audit_dropped, c.dropped.saturating_sub(before.dropped));
        self.inc(
            self.audit_exports_ok,
            c.exports_ok.saturating_sub(before.exports_ok),
        );
        self.inc(
            self.audit_exports_failed,
            c.exports_failed.saturating_sub(before.exports_failed),
        );
        self.set(self.audit_buffered, now.buffered as u64);
        if let Some(age) = now.bundle_age_secs {
            self.set(self.bundle_age, age);
        }
        if let Some(ok) = now.bundle_last_sync_ok {
            self.set(self.bundle_last_sync_success, u64::from(ok));
        }
    }
}

/// The values [`Metrics::publish`] reports.
pub(crate) struct Published {
    /// Audit counters now.
    pub(crate) audit: AuditCounters,
    /// Events waiting.
    pub(crate) buffered: usize,
    /// Age of the bundle in force.
    pub(crate) bundle_age_secs: Option<u64>,
    /// Whether the last bundle fetch succeeded (when a bundle source is configured).
    pub(crate) bundle_last_sync_ok: Option<bool>,
}
