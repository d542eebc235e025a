//! The local status endpoint: the Guardian sidecar's `/health` fields, computed from the
//! engine in force and the shared sync status.

use crate::config::StatusConfig;
use crate::engine::request::Request;
use crate::engine::Engine;
use crate::sources::SyncStatus;
use crate::time;
use serde::Serialize;

/// What `/.meshguard/health` answers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `healthy`, `degraded` (bundle source failing or not loaded yet) or `unhealthy`
    /// (no policy at all: everything is denied).
    pub status: &'static str,
    /// `enforce` or `audit`.
    pub mode: &'static str,
    /// Bundle version in force, or the inline policy's fingerprint.
    pub bundle_version: String,
    /// Age of the bundle in force (since its `created_at`), e.g. `4m32s`; empty for inline.
    pub bundle_age: String,
    /// Last successful sync (RFC 3339), empty if never.
    pub last_sync: String,
    /// Whether the last sync attempt succeeded.
    pub last_sync_success: bool,
    /// Whether the bundle source answered the last attempt.
    pub gateway_reachable: bool,
    /// Policies in force.
    pub cached_policies: usize,
    /// Agent records in force (from the bundle).
    pub cached_agents: usize,
    /// Seconds since this worker VM started.
    pub uptime_seconds: u64,
    /// `bundle`, `inline` or `none`.
    pub policy_source: &'static str,
    /// Why the last sync failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Whether a request is for the status endpoint: `GET` of `status.path` on one of
/// `status.ports` (any port when none is listed). `local_port` is the port the request
/// arrived on: Envoy does not tell wasm filters listener names, the port identifies the
/// listener.
pub fn is_status_request(st: &StatusConfig, req: &Request, local_port: Option<u16>) -> bool {
    req.method == "GET"
        && req.path_only() == st.path
        && (st.ports.is_empty() || local_port.is_some_and(|p| st.ports.contains(&p)))
}

/// The HTTP status of a report: 503 when unhealthy (no policy at all), else 200.
pub fn http_status(report: &Health) -> u16 {
    if report.status == "unhealthy" {
        503
    } else {
        200
    }
}

/// Computes the report. `bundle_created` is the active bundle's `created_at` (seconds).
pub fn report(
    engine: &Engine,
    sync: &SyncStatus,
    bundle_created: Option<u64>,
    now_secs: u64,
    started_secs: u64,
) -> Health {
    let bundled = engine.bundle_source().is_some();
    let source = match (engine.bundle_version(), engine.policy_count()) {
        (Some(_), _) => "bundle",
        (None, 0) => "none",
        (None, _) => "inline",
    };
    let status = match (source, bundled) {
        ("none", _) => "unhealthy",
        ("bundle", true) if sync.last_ok => "healthy",
        (_, true) => "degraded",
        _ => "healthy",
    };
    Health {
        status,
        mode: engine.mode().as_str(),
        bundle_version: engine.policy_version().to_string(),
        bundle_age: bundle_created
            .filter(|_| source == "bundle")
            .map(|c| time::age(now_secs.saturating_sub(c)))
            .unwrap_or_default(),
        last_sync: if sync.last_success_ms > 0 {
            time::format(sync.last_success_ms / 1000)
        } else {
            String::new()
        },
        last_sync_success: if bundled { sync.last_ok } else { true },
        gateway_reachable: if bundled { sync.reachable } else { true },
        cached_policies: engine.policy_count(),
        cached_agents: engine.agent_count(),
        uptime_seconds: now_secs.saturating_sub(started_secs),
        policy_source: source,
        last_error: sync.last_error.clone().filter(|_| bundled),
    }
}
