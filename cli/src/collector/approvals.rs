//! Approvals: require_approval decisions become pending approvals (one per
//! `meshguard.approval_id`), an operator approves them for a while or denies them, and
//! approved ones in force are the grants the collector publishes (cli/COLLECTOR.md
//! "Approvals").
//!
//! The SQL lives here, behind plain types, so that [`super::store::Store`] stays the only
//! door to the database and another backend can implement the same operations.

use super::event::DecisionEvent;
use super::store::Columns;
use crate::grants::Grant;
use crate::timestamp::format_rfc3339_millis;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// The tables, created with the rest of the schema (see `store.rs`).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS approvals (
    id                   TEXT PRIMARY KEY,
    status               TEXT NOT NULL,
    agent                TEXT NOT NULL,
    action               TEXT NOT NULL,
    resource             TEXT NOT NULL,
    reason               TEXT NOT NULL,
    policy               TEXT NOT NULL,
    rule                 TEXT NOT NULL,
    workload             TEXT NOT NULL,
    first_seen_unix_nano INTEGER NOT NULL,
    last_seen_unix_nano  INTEGER NOT NULL,
    count                INTEGER NOT NULL,
    trace_ids            TEXT NOT NULL,
    decided_unix_nano    INTEGER,
    decided_by           TEXT,
    decision_reason      TEXT,
    expires_unix_nano    INTEGER
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, last_seen_unix_nano);

CREATE TABLE IF NOT EXISTS grants_state (
    id                   INTEGER PRIMARY KEY CHECK (id = 1),
    version              INTEGER NOT NULL,
    grants_sha256        TEXT NOT NULL,
    signer               TEXT NOT NULL,
    document             BLOB NOT NULL
);
";

/// Trace ids remembered per approval (the newest ones).
const TRACE_IDS: usize = 10;
/// Longest approval id accepted from an event (the filter's are 36 characters).
pub(crate) const MAX_ID: usize = 128;

pub(crate) const NANOS: i64 = 1_000_000_000;

/// Where an approval stands. `expired` is derived: approved, and the TTL has run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Waiting for an operator.
    Pending,
    /// Approved; a grant is published until `expires_at`.
    Approved,
    /// Denied by an operator.
    Denied,
    /// Approved, but past `expires_at`.
    Expired,
}

impl ApprovalStatus {
    /// The name used in the API, the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStatus(pub String);

impl fmt::Display for UnknownStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status {:?} is not one of pending, approved, denied, expired",
            self.0
        )
    }
}

impl std::error::Error for UnknownStatus {}

impl FromStr for ApprovalStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(ApprovalStatus::Pending),
            "approved" => Ok(ApprovalStatus::Approved),
            "denied" => Ok(ApprovalStatus::Denied),
            "expired" => Ok(ApprovalStatus::Expired),
            other => Err(UnknownStatus(other.to_string())),
        }
    }
}

/// One approval, as the API and `meshguard approvals list --format json` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    /// The filter's `approvalId` (`meshguard.approval_id`).
    pub id: String,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// The agent asking.
    pub agent: String,
    /// The action it asked for.
    pub action: String,
    /// The resource (empty when the action had none).
    pub resource: String,
    /// The policy's reason from the latest request.
    pub reason: String,
    /// The deciding policy of the latest request.
    pub policy: String,
    /// The deciding rule of the latest request.
    pub rule: String,
    /// `envoy.node.id` of the latest request.
    pub workload: String,
    /// The first request (RFC 3339, ms).
    pub first_seen: String,
    /// The latest request (RFC 3339, ms).
    pub last_seen: String,
    /// Requests seen.
    pub count: i64,
    /// Trace ids of the latest requests (at most 10, newest last).
    pub trace_ids: Vec<String>,
    /// When an operator decided (RFC 3339, ms).
    pub decided_at: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// The operator's reason.
    pub decision_reason: Option<String>,
    /// End of the grant (RFC 3339, seconds), for approved and expired approvals.
    pub expires_at: Option<String>,
}

/// What a new pending approval announces (webhook type `approval.pending`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingNotice {
    /// Always `approval.pending`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The approval id.
    pub approval_id: String,
    /// The agent asking.
    pub agent: String,
    /// The action.
    pub action: String,
    /// The resource (empty when none).
    pub resource: String,
    /// The policy's reason.
    pub reason: String,
    /// The deciding policy.
    pub policy: String,
    /// The request's trace id.
    pub trace_id: String,
    /// `envoy.node.id`.
    pub workload: String,
    /// When the request was made (RFC 3339, ms).
    pub time: String,
}

/// An operator's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Approve for `ttl_seconds` from now.
    Approve {
        /// How long the grant lasts.
        ttl_seconds: u64,
        /// Who approves.
        by: String,
        /// Why (may be empty).
        reason: String,
    },
    /// Deny (also withdraws a grant in force).
    Deny {
        /// Who denies.
        by: String,
        /// Why (may be empty).
        reason: String,
    },
}

/// The persisted state of the published grants document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantsState {
    /// Version of the last document made.
    pub version: u64,
    /// SHA-256 (hex) of the canonical JSON of its grants.
    pub grants_sha256: String,
    /// The public key (base64) that signed it.
    pub signer: String,
    /// The signed document's bytes.
    pub document: Vec<u8>,
}

/// The stored status, with `expired` derived at `?1` (now, ns).
pub(crate) const STATUS: &str =
    "CASE WHEN status = 'approved' AND expires_unix_nano <= ?1 THEN 'expired' ELSE status END";

/// The columns [`from_row`] reads, in its order (with [`STATUS`] second).
pub(crate) fn columns() -> String {
    format!(
        "id, {STATUS}, agent, action, resource, reason, policy, rule, workload, \
         first_seen_unix_nano, last_seen_unix_nano, count, trace_ids, decided_unix_nano, \
         decided_by, decision_reason, expires_unix_nano"
    )
}

/// The approval in a row of [`columns`].
pub(crate) fn from_columns<R: Columns + ?Sized>(r: &R) -> Result<Approval, R::Error> {
    let status = r.text(1)?;
    let traces = r.text(12)?;
    Ok(Approval {
        id: r.text(0)?,
        status: status.parse().unwrap_or(ApprovalStatus::Pending),
        agent: r.text(2)?,
        action: r.text(3)?,
        resource: r.text(4)?,
        reason: r.text(5)?,
        policy: r.text(6)?,
        rule: r.text(7)?,
        workload: r.text(8)?,
        first_seen: format_rfc3339_millis(r.int(9)?),
        last_seen: format_rfc3339_millis(r.int(10)?),
        count: r.int(11)?,
        trace_ids: serde_json::from_str(&traces).unwrap_or_default(),
        decided_at: r.opt_int(13)?.map(format_rfc3339_millis),
        decided_by: r.opt_text(14)?,
        decision_reason: r.opt_text(15)?,
        expires_at: r.opt_int(16)?.map(expires_text),
    })
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
    from_columns(r)
}

/// Grant expiry as RFC 3339 whole seconds, rounded down so a grant never outlives its TTL.
pub(crate) fn expires_text(nanos: i64) -> String {
    meshguard::time::format(u64::try_from(nanos.div_euclid(NANOS)).unwrap_or(0))
}

pub(crate) fn push_trace(json: &str, trace: &str) -> String {
    let mut ids: Vec<String> = serde_json::from_str(json).unwrap_or_default();
    if !trace.is_empty() {
        ids.retain(|t| t != trace);
        ids.push(trace.to_string());
    }
    let skip = ids.len().saturating_sub(TRACE_IDS);
    let ids: Vec<String> = ids.into_iter().skip(skip).collect();
    serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into())
}

/// Records one newly stored decision event (inside the Export's transaction). Returns a
/// notice when it opened a pending approval: a new id, or one whose grant had expired
/// (the agent asks again, so the operator is asked again). Requests for an approval that
/// is pending, denied or still approved (the filter has not polled yet) only count.
/// The `approval.pending` notice for a require_approval event.
pub(crate) fn pending_notice(e: &DecisionEvent, id: &str, time: i64) -> PendingNotice {
    PendingNotice {
        kind: "approval.pending",
        approval_id: id.to_string(),
        agent: e.text("meshguard.agent.id"),
        action: e.text("meshguard.action"),
        resource: e.text("meshguard.resource"),
        reason: e.text("meshguard.reason"),
        policy: e.text("meshguard.policy"),
        trace_id: e.trace_id.clone(),
        workload: e.workload.clone(),
        time: format_rfc3339_millis(time),
    }
}

/// The approval id a require_approval event asks for, if it is one and the id is usable.
pub(crate) fn requested_id(e: &DecisionEvent) -> Option<String> {
    if e.text("meshguard.decision") != "require_approval" {
        return None;
    }
    let id = e.text("meshguard.approval_id");
    (!id.is_empty() && id.len() <= MAX_ID).then_some(id)
}

/// Status, decider, reason and expiry (whole seconds) a decision stores.
pub(crate) fn decision_fields(
    decision: &Decision,
    now_unix_nano: i64,
) -> (ApprovalStatus, &str, &str, Option<i64>) {
    match decision {
        Decision::Approve {
            ttl_seconds,
            by,
            reason,
        } => {
            let ttl = i64::try_from(*ttl_seconds)
                .unwrap_or(i64::MAX)
                .saturating_mul(NANOS);
            // Whole seconds: the grants document carries `expires_at` in RFC 3339
            // seconds, and the stored expiry must be the one the filters enforce, or a
            // request refused just after the published expiry would not reopen the
            // approval (the stored expiry would still lie ahead).
            let expires = now_unix_nano.saturating_add(ttl);
            (
                ApprovalStatus::Approved,
                by,
                reason,
                Some(expires - expires.rem_euclid(NANOS)),
            )
        }
        Decision::Deny { by, reason } => (ApprovalStatus::Denied, by, reason, None),
    }
}

pub fn record(
    conn: &Connection,
    e: &DecisionEvent,
    received_unix_nano: i64,
) -> rusqlite::Result<Option<PendingNotice>> {
    let Some(id) = requested_id(e) else {
        return Ok(None);
    };
    let time = i64::try_from(e.time_unix_nano).unwrap_or(i64::MAX);
    let reason = e.text("meshguard.reason");
    let policy = e.text("meshguard.policy");
    let rule = e.text("meshguard.rule");
    let existing: Option<(String, Option<i64>, String)> = conn
        .prepare_cached("SELECT status, expires_unix_nano, trace_ids FROM approvals WHERE id = ?1")?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let notice = || pending_notice(e, &id, time);
    match existing {
        None => {
            conn.prepare_cached(
                "INSERT INTO approvals (id, status, agent, action, resource, reason, policy, \
                 rule, workload, first_seen_unix_nano, last_seen_unix_nano, count, trace_ids) \
                 VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, 1, ?10)",
            )?
            .execute(params![
                id,
                e.text("meshguard.agent.id"),
                e.text("meshguard.action"),
                e.text("meshguard.resource"),
                reason,
                policy,
                rule,
                e.workload,
                time,
                push_trace("[]", &e.trace_id),
            ])?;
            Ok(Some(notice()))
        }
        Some((status, expires, traces)) => {
            let reopen = status == ApprovalStatus::Approved.as_str()
                && expires.is_some_and(|x| x <= received_unix_nano);
            conn.prepare_cached(
                "UPDATE approvals SET count = count + 1, \
                 first_seen_unix_nano = min(first_seen_unix_nano, ?2), \
                 last_seen_unix_nano = max(last_seen_unix_nano, ?2), \
                 reason = ?3, policy = ?4, rule = ?5, workload = ?6, trace_ids = ?7 WHERE id = ?1",
            )?
            .execute(params![
                id,
                time,
                reason,
                policy,
                rule,
                e.workload,
                push_trace(&traces, &e.trace_id)
            ])?;
            if !reopen {
                return Ok(None);
            }
            conn.prepare_cached(
                "UPDATE approvals SET status = 'pending', decided_unix_nano = NULL, \
                 decided_by = NULL, decision_reason = NULL, expires_unix_nano = NULL WHERE id = ?1",
            )?
            .execute(params![id])?;
            Ok(Some(notice()))
        }
    }
}

/// Approvals, newest request first; `status` filters (with `expired` derived at `now`).
pub fn list(
    conn: &Connection,
    status: Option<ApprovalStatus>,
    limit: usize,
    now_unix_nano: i64,
) -> rusqlite::Result<Vec<Approval>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {} FROM approvals WHERE ?2 IS NULL OR {STATUS} = ?2 \
         ORDER BY last_seen_unix_nano DESC, id LIMIT ?3",
        columns()
    ))?;
    let rows = stmt.query_map(
        params![now_unix_nano, status.map(ApprovalStatus::as_str), limit],
        from_row,
    )?;
    rows.collect()
}

/// One approval by id.
pub fn get(conn: &Connection, id: &str, now_unix_nano: i64) -> rusqlite::Result<Option<Approval>> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM approvals WHERE id = ?2",
        columns()
    ))?
    .query_row(params![now_unix_nano, id], from_row)
    .optional()
}

/// Applies an operator's decision; `None` when there is no such approval. Any approval may
/// be decided again: approving extends or shortens the grant, denying withdraws it.
pub fn decide(
    conn: &Connection,
    id: &str,
    decision: &Decision,
    now_unix_nano: i64,
) -> rusqlite::Result<Option<Approval>> {
    let (status, by, reason, expires) = decision_fields(decision, now_unix_nano);
    let n = conn
        .prepare_cached(
            "UPDATE approvals SET status = ?2, decided_unix_nano = ?3, decided_by = ?4, \
             decision_reason = ?5, expires_unix_nano = ?6 WHERE id = ?1",
        )?
        .execute(params![
            id,
            status.as_str(),
            now_unix_nano,
            by,
            reason,
            expires
        ])?;
    if n == 0 {
        return Ok(None);
    }
    get(conn, id, now_unix_nano)
}

/// The grants in force at `now`, ordered by id (so equal sets give equal documents).
pub fn active_grants(conn: &Connection, now_unix_nano: i64) -> rusqlite::Result<Vec<Grant>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, agent, action, resource, expires_unix_nano, coalesce(decision_reason, ''), \
         coalesce(decided_by, '') FROM approvals \
         WHERE status = 'approved' AND expires_unix_nano > ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![now_unix_nano], |r| {
        let resource: String = r.get(3)?;
        let decision_reason: String = r.get(5)?;
        Ok(Grant {
            id: r.get(0)?,
            agent: r.get(1)?,
            action: r.get(2)?,
            resource: (!resource.is_empty()).then_some(resource),
            expires_at: expires_text(r.get(4)?),
            reason: decision_reason,
            approved_by: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// The state of the last document made, if any.
pub fn grants_state(conn: &Connection) -> rusqlite::Result<Option<GrantsState>> {
    conn.prepare_cached(
        "SELECT version, grants_sha256, signer, document FROM grants_state WHERE id = 1",
    )?
    .query_row([], |r| {
        Ok(GrantsState {
            version: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            grants_sha256: r.get(1)?,
            signer: r.get(2)?,
            document: r.get(3)?,
        })
    })
    .optional()
}

/// Saves a new document, refusing to go back: a version not above the stored one is not
/// written (returns false), so two writers can never publish a lower version.
pub fn save_grants_state(conn: &Connection, state: &GrantsState) -> rusqlite::Result<bool> {
    let version = i64::try_from(state.version).unwrap_or(i64::MAX);
    let n = conn
        .prepare_cached(
            "INSERT INTO grants_state (id, version, grants_sha256, signer, document) \
             VALUES (1, ?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
             grants_sha256 = excluded.grants_sha256, signer = excluded.signer, \
             document = excluded.document WHERE excluded.version > grants_state.version",
        )?
        .execute(params![
            version,
            state.grants_sha256,
            state.signer,
            state.document
        ])?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::event::{decode, testing::*};
    use crate::collector::store::Store;
    use opentelemetry_proto::tonic::logs::v1::LogRecord;
    use serde_json::json;

    const S: i64 = 1_000_000_000;
    /// After every event time the test chain produces.
    const NOW: i64 = 1_800_000_000 * S;

    struct Db(std::path::PathBuf);

    impl Db {
        fn new(tag: &str) -> Db {
            let p = std::env::temp_dir()
                .join(format!("meshguard-approvals-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Db(p)
        }
        fn open(&self) -> Store {
            Store::open_for_writing(&self.0.join("audit.db")).unwrap()
        }
    }

    impl Drop for Db {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn asking(c: &mut Chain, agent: &str, id: &str) -> LogRecord {
        let mut r = c.event(agent, "delete:db", "require_approval");
        set_attr(&mut r, "meshguard.approval_id", json!(id));
        set_attr(&mut r, "meshguard.resource", json!("prod"));
        set_attr(&mut r, "meshguard.reason", json!("needs a human"));
        r
    }

    fn approve(ttl: u64) -> Decision {
        Decision::Approve {
            ttl_seconds: ttl,
            by: "alice".into(),
            reason: "incident 9".into(),
        }
    }

    #[test]
    fn pending_once_per_id_counting_requests_and_retries_count_once() {
        let db = Db::new("dedup");
        let mut s = db.open();
        let mut c = Chain::new("s1");
        let req = request(
            "node-1",
            vec![
                asking(&mut c, "agent-a", "apr_1"),
                asking(&mut c, "agent-a", "apr_1"),
                c.event("agent-a", "read:x", "deny"),
                asking(&mut c, "agent-b", "apr_2"),
            ],
        );
        let out = s.insert_batch(&decode(&req), NOW).unwrap();
        let ids: Vec<&str> = out.pending.iter().map(|p| p.approval_id.as_str()).collect();
        assert_eq!(ids, ["apr_1", "apr_2"]);
        assert_eq!(out.pending[0].kind, "approval.pending");
        assert_eq!(out.pending[0].resource, "prod");
        let again = s.insert_batch(&decode(&req), NOW).unwrap();
        assert!(again.pending.is_empty(), "a retried batch opens nothing");

        let a = s.approval("apr_1", NOW).unwrap().unwrap();
        assert_eq!(a.status, ApprovalStatus::Pending);
        assert_eq!(a.count, 2, "the retry did not count");
        assert_eq!(
            (a.agent.as_str(), a.action.as_str()),
            ("agent-a", "delete:db")
        );
        assert_eq!(a.resource, "prod");
        assert_eq!(a.reason, "needs a human");
        assert_eq!(a.workload, "node-1");
        assert_eq!(a.trace_ids.len(), 2);
        assert!(a.first_seen < a.last_seen);
        assert_eq!(s.approvals(None, 100, NOW).unwrap().len(), 2);
        assert!(s.approval("apr_nope", NOW).unwrap().is_none());
    }

    #[test]
    fn decisions_ttl_expiry_and_reopening() {
        let db = Db::new("decide");
        let mut s = db.open();
        let mut c = Chain::new("s1");
        let req = request(
            "n",
            vec![asking(&mut c, "a", "apr_1"), asking(&mut c, "b", "apr_2")],
        );
        s.insert_batch(&decode(&req), NOW).unwrap();
        assert!(s
            .decide_approval("apr_x", &approve(60), NOW)
            .unwrap()
            .is_none());

        let a = s
            .decide_approval("apr_1", &approve(60), NOW)
            .unwrap()
            .unwrap();
        assert_eq!(a.status, ApprovalStatus::Approved);
        assert_eq!(a.decided_by.as_deref(), Some("alice"));
        assert_eq!(a.expires_at.as_deref(), Some("2027-01-15T08:01:00Z"));
        let d = s
            .decide_approval(
                "apr_2",
                &Decision::Deny {
                    by: "bob".into(),
                    reason: "no".into(),
                },
                NOW,
            )
            .unwrap()
            .unwrap();
        assert_eq!(d.status, ApprovalStatus::Denied);
        assert_eq!(d.expires_at, None);

        let grants = s.active_grants(NOW + 59 * S).unwrap();
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].id, "apr_1");
        assert_eq!(grants[0].resource.as_deref(), Some("prod"));
        assert_eq!(grants[0].reason, "incident 9");
        let only = |st| {
            s.approvals(Some(st), 10, NOW + 61 * S)
                .unwrap()
                .into_iter()
                .map(|a| a.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(only(ApprovalStatus::Expired), ["apr_1"]);
        assert_eq!(only(ApprovalStatus::Denied), ["apr_2"]);
        assert!(only(ApprovalStatus::Approved).is_empty());
        assert!(s.active_grants(NOW + 60 * S).unwrap().is_empty());

        // A request for a denied approval only counts; one after the grant expired asks again.
        let more = request(
            "n",
            vec![asking(&mut c, "b", "apr_2"), asking(&mut c, "a", "apr_1")],
        );
        let out = s.insert_batch(&decode(&more), NOW + 61 * S).unwrap();
        let ids: Vec<&str> = out.pending.iter().map(|p| p.approval_id.as_str()).collect();
        assert_eq!(ids, ["apr_1"]);
        let a = s.approval("apr_1", NOW + 61 * S).unwrap().unwrap();
        assert_eq!(
            (a.status, a.count, a.decided_by),
            (ApprovalStatus::Pending, 2, None)
        );
        assert_eq!(
            s.approval("apr_2", NOW).unwrap().unwrap().status,
            ApprovalStatus::Denied
        );
    }

    #[test]
    fn events_without_an_approval_id_are_not_recorded() {
        let db = Db::new("noid");
        let mut s = db.open();
        let mut c = Chain::new("s1");
        let req = request("n", vec![c.event("a", "x", "require_approval")]);
        let out = s.insert_batch(&decode(&req), NOW).unwrap();
        assert_eq!(out.inserted.len(), 1, "the event itself is stored");
        assert!(out.pending.is_empty());
        assert!(s.approvals(None, 10, NOW).unwrap().is_empty());
        assert_eq!("expired".parse(), Ok(ApprovalStatus::Expired));
        assert!("later"
            .parse::<ApprovalStatus>()
            .unwrap_err()
            .to_string()
            .contains("pending"));
    }
}
