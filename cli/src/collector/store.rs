//! The audit database: one SQLite file in WAL mode.
//!
//! - `events`: one row per decision, with the fields people filter on as columns and the
//!   full attributes and resource attributes as JSON. `UNIQUE(workload, stream, seq)` with
//!   `INSERT OR IGNORE` makes retried batches harmless; unchained events (no stream/seq)
//!   are deduplicated by their content hash instead.
//! - `gaps`: declared gaps (events the filter dropped).
//! - `findings`: integrity findings detected as events arrived.
//! - `approvals`, `grants_state`: pending and decided approvals and the last published
//!   grants document (see `approvals.rs`).
//!
//! Schema versions: 1 had the audit tables; 2 added the approval tables. Opening for
//! writing migrates: every table is `CREATE TABLE IF NOT EXISTS`, so an older file gains
//! the new tables in the same transaction that raises `user_version`.
//!
//! Each Export is stored in one transaction, so a failure never leaves half a batch, and
//! commits are `synchronous=FULL`: an acknowledged event survives a power cut.

use super::approvals::{self, Approval, ApprovalStatus, Decision, GrantsState, PendingNotice};
use super::event::{Batch, DecisionEvent, GapDeclaration};
use super::integrity::{self, ChainEvent, DeclaredLoss, Finding, StreamReport, StreamVerifier};
use super::integrity::{SignatureKind, SignatureRow};
use crate::grants::Grant;
use meshguard::glob::Pattern;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `PRAGMA application_id` of a MeshGuard audit database ("MGAD").
const APPLICATION_ID: i64 = 0x4d47_4144;
/// `PRAGMA user_version` of the schema below.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id                  INTEGER PRIMARY KEY,
    time_unix_nano      INTEGER NOT NULL,
    received_unix_nano  INTEGER NOT NULL,
    workload            TEXT NOT NULL,
    stream              TEXT,
    seq                 INTEGER,
    trace_id            TEXT NOT NULL,
    span_id             TEXT NOT NULL,
    severity            TEXT NOT NULL,
    body                TEXT,
    agent               TEXT NOT NULL,
    tier                TEXT NOT NULL,
    action              TEXT NOT NULL,
    resource            TEXT NOT NULL,
    decision            TEXT NOT NULL,
    effect              TEXT NOT NULL,
    enforced            INTEGER,
    policy              TEXT NOT NULL,
    rule                TEXT NOT NULL,
    reason              TEXT NOT NULL,
    mode                TEXT NOT NULL,
    bundle_version      TEXT NOT NULL,
    method              TEXT NOT NULL,
    path                TEXT NOT NULL,
    server_address      TEXT NOT NULL,
    status              INTEGER,
    request_id          TEXT NOT NULL,
    latency_us          INTEGER,
    delegation_chain    TEXT NOT NULL,
    prev_hash           TEXT,
    hash                TEXT,
    content_hash        TEXT NOT NULL,
    attributes          TEXT NOT NULL,
    resource_attributes TEXT NOT NULL,
    UNIQUE (workload, stream, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_unchained ON events (workload, content_hash) WHERE seq IS NULL;
CREATE INDEX IF NOT EXISTS events_time ON events (time_unix_nano);
CREATE INDEX IF NOT EXISTS events_agent ON events (agent, time_unix_nano);
CREATE INDEX IF NOT EXISTS events_action ON events (action, time_unix_nano);
CREATE INDEX IF NOT EXISTS events_decision ON events (decision, time_unix_nano);
CREATE INDEX IF NOT EXISTS events_trace ON events (trace_id, time_unix_nano);

CREATE TABLE IF NOT EXISTS gaps (
    id                  INTEGER PRIMARY KEY,
    workload            TEXT NOT NULL,
    stream              TEXT NOT NULL,
    from_seq            INTEGER NOT NULL,
    to_seq              INTEGER NOT NULL,
    count               INTEGER NOT NULL,
    last_hash           TEXT NOT NULL,
    time_unix_nano      INTEGER NOT NULL,
    received_unix_nano  INTEGER NOT NULL,
    UNIQUE (workload, stream, from_seq, to_seq)
);

CREATE TABLE IF NOT EXISTS findings (
    id                  INTEGER PRIMARY KEY,
    detected_unix_nano  INTEGER NOT NULL,
    workload            TEXT NOT NULL,
    stream              TEXT NOT NULL,
    seq                 INTEGER NOT NULL,
    kind                TEXT NOT NULL,
    detail              TEXT NOT NULL,
    UNIQUE (workload, stream, seq, kind)
);
";

/// Why the audit database could not be used.
#[derive(Debug)]
pub enum StoreError {
    /// The file could not be opened or created.
    Open {
        /// The database path.
        path: PathBuf,
        /// SQLite's explanation.
        source: rusqlite::Error,
    },
    /// A query tool was pointed at a file that does not exist.
    Missing {
        /// The database path.
        path: PathBuf,
    },
    /// The file is an SQLite database of something else, or not SQLite at all.
    Foreign {
        /// The database path.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The file is damaged.
    Corrupt {
        /// The database path.
        path: PathBuf,
        /// SQLite's diagnosis.
        detail: String,
    },
    /// Written by a newer meshguard.
    Newer {
        /// The database path.
        path: PathBuf,
        /// Its schema version.
        version: i64,
    },
    /// A statement failed while the database was in use (disk full, I/O error, ...).
    Sql(rusqlite::Error),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open { path, source } => write!(
                f,
                "cannot open audit database {}: {source} (check that its directory exists and is \
                 writable, or choose another path with --db)",
                path.display()
            ),
            StoreError::Missing { path } => write!(
                f,
                "no audit database at {} (start `meshguard collector --db {}` to create one, or \
                 pass the collector's --db path)",
                path.display(),
                path.display()
            ),
            StoreError::Foreign { path, reason } => write!(
                f,
                "{} is not a MeshGuard audit database ({reason}); pass another --db path",
                path.display()
            ),
            StoreError::Corrupt { path, detail } => write!(
                f,
                "audit database {} is damaged ({detail}); keep it for investigation and start \
                 the collector with a new --db path",
                path.display()
            ),
            StoreError::Newer { path, version } => write!(
                f,
                "audit database {} has schema version {version}, newer than this meshguard \
                 understands ({SCHEMA_VERSION}); use a newer meshguard",
                path.display()
            ),
            StoreError::Sql(e) => write!(f, "audit database error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Open { source, .. } | StoreError::Sql(source) => Some(source),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e)
    }
}

/// Whether SQLite says the file is damaged or not a database.
fn damage(e: &rusqlite::Error) -> Option<&'static str> {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Some("not an SQLite database, or its header is damaged"),
        Some(ErrorCode::DatabaseCorrupt) => Some("SQLite reports corruption"),
        _ => None,
    }
}

/// What one Export did to the store.
#[derive(Debug, Default)]
pub struct InsertOutcome {
    /// Indices (into `Batch::events`) of events stored for the first time.
    pub inserted: Vec<usize>,
    /// Events already stored (retried batches).
    pub duplicates: usize,
    /// Gap declarations stored for the first time.
    pub gaps: usize,
    /// Integrity findings detected by this Export, with their workload and stream.
    pub findings: Vec<(String, String, Finding)>,
    /// Approvals this Export opened (new ids, or expired grants asked for again).
    pub pending: Vec<PendingNotice>,
}

/// Which events a query wants.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Exact agent id.
    pub agent: Option<String>,
    /// Action glob (MeshGuard glob semantics).
    pub action: Option<Pattern>,
    /// Exact decision.
    pub decision: Option<String>,
    /// Earliest event time (inclusive), ns since the epoch.
    pub since: Option<i64>,
    /// Latest event time (exclusive), ns since the epoch.
    pub until: Option<i64>,
    /// Trace id or a prefix of one (lowercase hex).
    pub trace: Option<String>,
    /// Most events returned (the newest ones).
    pub limit: usize,
}

/// One stored event, for output.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// ns since the epoch.
    pub time_unix_nano: i64,
    /// `envoy.node.id`.
    pub workload: String,
    /// Chain stream, if any.
    pub stream: Option<String>,
    /// Chain seq, if any.
    pub seq: Option<i64>,
    /// Trace id hex.
    pub trace_id: String,
    /// Span id hex.
    pub span_id: String,
    /// Calling agent.
    pub agent: String,
    /// Trust tier.
    pub trust_tier: String,
    /// Agents from the original delegator to the caller.
    pub delegation_chain: Vec<String>,
    /// Action.
    pub action: String,
    /// Resource.
    pub resource: String,
    /// allow, deny, require_approval, would_deny.
    pub decision: String,
    /// Policy effect before the mode applied.
    pub effect: String,
    /// Whether the decision was enforced.
    pub enforced: Option<bool>,
    /// Deciding policy.
    pub policy: String,
    /// Deciding rule.
    pub rule: String,
    /// Why.
    pub reason: String,
    /// enforce or audit.
    pub mode: String,
    /// Policy version in force.
    pub bundle_version: String,
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// `:authority`.
    pub server_address: String,
    /// Status MeshGuard answered with (0 when forwarded).
    pub status: Option<i64>,
    /// `x-request-id`.
    pub request_id: String,
    /// Time spent in the filter.
    pub latency_us: Option<i64>,
    /// Chain link.
    pub prev_hash: Option<String>,
    /// Chain hash.
    pub hash: Option<String>,
    /// Every attribute as received.
    pub attributes: Value,
    /// Resource attributes as received.
    pub resource_attributes: Value,
}

const ROW_COLUMNS: &str = "time_unix_nano, workload, stream, seq, trace_id, span_id, agent, tier, \
    delegation_chain, action, resource, decision, effect, enforced, policy, rule, reason, mode, \
    bundle_version, method, path, server_address, status, request_id, latency_us, prev_hash, \
    hash, attributes, resource_attributes";

fn json_column(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

impl EventRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
        let time_unix_nano: i64 = r.get(0)?;
        let chain: String = r.get(8)?;
        let enforced: Option<i64> = r.get(13)?;
        Ok(EventRow {
            time: crate::timestamp::format_rfc3339_millis(time_unix_nano),
            time_unix_nano,
            workload: r.get(1)?,
            stream: r.get(2)?,
            seq: r.get(3)?,
            trace_id: r.get(4)?,
            span_id: r.get(5)?,
            agent: r.get(6)?,
            trust_tier: r.get(7)?,
            delegation_chain: serde_json::from_str(&chain).unwrap_or_default(),
            action: r.get(9)?,
            resource: r.get(10)?,
            decision: r.get(11)?,
            effect: r.get(12)?,
            enforced: enforced.map(|v| v != 0),
            policy: r.get(14)?,
            rule: r.get(15)?,
            reason: r.get(16)?,
            mode: r.get(17)?,
            bundle_version: r.get(18)?,
            method: r.get(19)?,
            path: r.get(20)?,
            server_address: r.get(21)?,
            status: r.get(22)?,
            request_id: r.get(23)?,
            latency_us: r.get(24)?,
            prev_hash: r.get(25)?,
            hash: r.get(26)?,
            attributes: json_column(&r.get::<_, String>(27)?),
            resource_attributes: json_column(&r.get::<_, String>(28)?),
        })
    }
}

/// An open audit database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database the collector writes, after checking that it
    /// is a MeshGuard audit database in good health.
    pub fn open_for_writing(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.configure()?;
        store.check_identity(true)?;
        store.check_health()?;
        let classify = |e: rusqlite::Error| store.classify(e);
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(classify)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::InvalidParameterName(format!(
                    "WAL journal mode unavailable (got {mode})"
                )),
            });
        }
        store
            .conn
            .execute_batch(&format!(
                "PRAGMA synchronous=FULL;
                 BEGIN IMMEDIATE;
                 {SCHEMA}
                 {}
                 {SIGNATURES_SCHEMA}
                 PRAGMA application_id={APPLICATION_ID};
                 PRAGMA user_version={SCHEMA_VERSION};
                 COMMIT;",
                approvals::SCHEMA
            ))
            .map_err(classify)?;
        Ok(store)
    }

    /// Opens an existing database for the query tools and the JSON API; it is never written.
    pub fn open_for_reading(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        // READ_WRITE without CREATE: a WAL database is best read with write access to its
        // -shm file; `query_only` below guarantees nothing is written. SQLite falls back to
        // read-only by itself when the file is write-protected.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.configure()?;
        store
            .conn
            .execute_batch("PRAGMA query_only=ON")
            .map_err(|e| store.classify(e))?;
        store.check_identity(false)?;
        Ok(store)
    }

    fn configure(&self) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(Duration::from_secs(5))
            .map_err(|e| self.classify(e))
    }

    fn classify(&self, e: rusqlite::Error) -> StoreError {
        match damage(&e) {
            Some(detail) => StoreError::Corrupt {
                path: self.path.clone(),
                detail: detail.to_string(),
            },
            None => StoreError::Open {
                path: self.path.clone(),
                source: e,
            },
        }
    }

    /// Refuses files that are not ours: another application's SQLite database must not get
    /// our tables added to it.
    fn check_identity(&self, creating: bool) -> Result<(), StoreError> {
        let classify = |e| self.classify(e);
        let app: i64 = self
            .conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(classify)?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(classify)?;
        let tables: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(classify)?;
        let foreign = |reason: String| StoreError::Foreign {
            path: self.path.clone(),
            reason,
        };
        if app != APPLICATION_ID {
            if app != 0 {
                return Err(foreign(format!("its application id is {app:#x}")));
            }
            if tables > 0 {
                return Err(foreign("it holds other tables".into()));
            }
            if !creating {
                return Err(foreign("it is empty".into()));
            }
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                path: self.path.clone(),
                version,
            });
        }
        Ok(())
    }

    /// `PRAGMA quick_check`: catches a damaged file before the collector accepts events into
    /// it (O(size of the file), a second or so per GB).
    fn check_health(&self) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA quick_check(3)")
            .map_err(|e| self.classify(e))?;
        let problems: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.classify(e))?;
        if problems.iter().all(|p| p == "ok") {
            Ok(())
        } else {
            Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: problems.join("; "),
            })
        }
    }

    /// Stores one decoded Export in one transaction, and checks the hash-chain links it
    /// makes judgeable (its own events' predecessors and successors, and the events right
    /// after its gap declarations).
    pub fn insert_batch(
        &mut self,
        batch: &Batch,
        received_unix_nano: i64,
    ) -> Result<InsertOutcome, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = InsertOutcome::default();
        {
            let mut insert = tx.prepare_cached(INSERT_EVENT)?;
            let mut existing = tx.prepare_cached(
                "SELECT content_hash, hash FROM events WHERE workload=?1 AND stream=?2 AND seq=?3",
            )?;
            let mut conflicts = Vec::new();
            for (i, e) in batch.events.iter().enumerate() {
                if insert_event(&mut insert, e, received_unix_nano)? {
                    out.inserted.push(i);
                    continue;
                }
                out.duplicates += 1;
                // A retried batch repeats events byte for byte; anything else sent for the
                // same seq is evidence of tampering or a broken sender.
                if let Some(c) = &e.chain {
                    let stored: Option<(String, Option<String>)> = existing
                        .query_row(params![e.workload, c.stream, c.seq], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()?;
                    if let Some((content_hash, hash)) = stored {
                        if content_hash != e.content_hash || hash.as_deref() != Some(&c.hash) {
                            conflicts.push((
                                e.workload.clone(),
                                c.stream.clone(),
                                Finding::Conflict {
                                    seq: c.seq,
                                    detail: format!(
                                        "a different event arrived for this seq (content hash \
                                         {}, stored {}); the first copy was kept",
                                        short(&e.content_hash),
                                        short(&content_hash)
                                    ),
                                },
                            ));
                        }
                    }
                }
            }
            let mut insert_gap = tx.prepare_cached(
                "INSERT OR IGNORE INTO gaps (workload, stream, from_seq, to_seq, count, \
                 last_hash, time_unix_nano, received_unix_nano) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
            )?;
            let mut new_gaps: Vec<&GapDeclaration> = Vec::new();
            for g in &batch.gaps {
                let n = insert_gap.execute(params![
                    g.workload,
                    g.stream,
                    g.from_seq,
                    g.to_seq,
                    g.count,
                    g.last_hash,
                    i64::try_from(g.time_unix_nano).unwrap_or(i64::MAX),
                    received_unix_nano
                ])?;
                if n == 1 {
                    out.gaps += 1;
                    new_gaps.push(g);
                }
            }
            insert_signatures(&tx, batch, received_unix_nano)?;
            // Only newly stored events count, so a retried batch never counts a request twice.
            for e in out.inserted.iter().filter_map(|&i| batch.events.get(i)) {
                if let Some(notice) = approvals::record(&tx, e, received_unix_nano)? {
                    out.pending.push(notice);
                }
            }
            let mut findings = conflicts;
            findings.extend(online_checks(&tx, batch, &out.inserted, &new_gaps)?);
            let mut record = tx.prepare_cached(
                "INSERT OR IGNORE INTO findings (detected_unix_nano, workload, stream, seq, kind, \
                 detail) VALUES (?1,?2,?3,?4,?5,?6)",
            )?;
            for (workload, stream, f) in findings {
                let detail = serde_json::to_string(&f).unwrap_or_default();
                let n = record.execute(params![
                    received_unix_nano,
                    workload,
                    stream,
                    f.seq(),
                    f.kind(),
                    detail
                ])?;
                if n == 1 {
                    out.findings.push((workload, stream, f));
                }
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Approvals, newest request first, optionally of one status (`expired` as of `now`).
    pub fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: usize,
        now_unix_nano: i64,
    ) -> Result<Vec<Approval>, StoreError> {
        // A version 1 file read by the query tools has no approval tables yet: it has no
        // approvals either.
        if self.schema_version()? < 2 {
            return Ok(Vec::new());
        }
        Ok(approvals::list(&self.conn, status, limit, now_unix_nano)?)
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// One approval by id.
    pub fn approval(&self, id: &str, now_unix_nano: i64) -> Result<Option<Approval>, StoreError> {
        Ok(approvals::get(&self.conn, id, now_unix_nano)?)
    }

    /// Approves or denies; `None` when the id is unknown.
    pub fn decide_approval(
        &mut self,
        id: &str,
        decision: &Decision,
        now_unix_nano: i64,
    ) -> Result<Option<Approval>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = approvals::decide(&tx, id, decision, now_unix_nano)?;
        tx.commit()?;
        Ok(out)
    }

    /// The grants in force at `now`.
    pub fn active_grants(&self, now_unix_nano: i64) -> Result<Vec<Grant>, StoreError> {
        Ok(approvals::active_grants(&self.conn, now_unix_nano)?)
    }

    /// The last published grants document, if any.
    pub fn grants_state(&self) -> Result<Option<GrantsState>, StoreError> {
        Ok(approvals::grants_state(&self.conn)?)
    }

    /// Stores a newly published grants document; false (nothing written) when its version
    /// is not above the stored one.
    pub fn save_grants_state(&mut self, state: &GrantsState) -> Result<bool, StoreError> {
        Ok(approvals::save_grants_state(&self.conn, state)?)
    }

    /// The newest `filter.limit` events that match, oldest first.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<EventRow>, StoreError> {
        let mut sql = format!("SELECT {ROW_COLUMNS} FROM events WHERE 1=1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: Box<dyn rusqlite::ToSql>| {
            args.push(v);
            sql.push_str(&format!(" AND {clause} ?{}", args.len()));
        };
        if let Some(a) = &filter.agent {
            arg(&mut sql, "agent =", Box::new(a.clone()));
        }
        if let Some(d) = &filter.decision {
            arg(&mut sql, "decision =", Box::new(d.clone()));
        }
        if let Some(p) = &filter.action {
            // A pattern without wildcards is an exact action: let the index do the work.
            if !p.as_str().contains(['*', '?', '[', '{', '\\']) {
                arg(&mut sql, "action =", Box::new(p.as_str().to_string()));
            }
        }
        if let Some(t) = filter.since {
            arg(&mut sql, "time_unix_nano >=", Box::new(t));
        }
        if let Some(t) = filter.until {
            arg(&mut sql, "time_unix_nano <", Box::new(t));
        }
        if let Some(t) = &filter.trace {
            // Callers pass validated hex, so the GLOB has no wildcard but ours.
            arg(&mut sql, "trace_id GLOB", Box::new(format!("{t}*")));
        }
        sql.push_str(" ORDER BY time_unix_nano DESC, id DESC");
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        let mut out = Vec::new();
        while out.len() < filter.limit {
            let Some(row) = rows.next()? else { break };
            let ev = EventRow::from_row(row)?;
            if filter
                .action
                .as_ref()
                .is_some_and(|p| !p.matches(&ev.action))
            {
                continue;
            }
            out.push(ev);
        }
        out.reverse();
        Ok(out)
    }

    /// The distinct trace ids starting with `prefix` (at most `max`).
    pub fn traces_matching(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT trace_id FROM events WHERE trace_id GLOB ?1 ORDER BY trace_id LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![format!("{prefix}*"), i64::try_from(max).unwrap_or(i64::MAX)],
            |r| r.get(0),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every event of one trace, in time order.
    pub fn trace(&self, trace_id: &str) -> Result<Vec<EventRow>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ROW_COLUMNS} FROM events WHERE trace_id = ?1 ORDER BY time_unix_nano, id"
        ))?;
        let rows = stmt.query_map([trace_id], EventRow::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of events stored.
    pub fn count_events(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))?)
    }

    /// The full integrity pass over every stream, from one consistent snapshot.
    pub fn verify_all(&mut self) -> Result<Vec<StreamReport>, StoreError> {
        let tx = self.conn.transaction()?;
        let streams: Vec<(String, String)> = {
            let mut stmt = tx.prepare(
                "SELECT workload, stream FROM events WHERE stream IS NOT NULL AND seq IS NOT NULL
                 UNION SELECT workload, stream FROM gaps ORDER BY 1, 2",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut reports = Vec::new();
        let mut gaps_stmt = tx.prepare(
            "SELECT from_seq, to_seq, count, last_hash FROM gaps WHERE workload=?1 AND stream=?2",
        )?;
        let mut events_stmt = tx.prepare(
            "SELECT seq, time_unix_nano, trace_id, prev_hash, hash, attributes FROM events
             WHERE workload=?1 AND stream=?2 AND seq IS NOT NULL ORDER BY seq",
        )?;
        let mut conflicts_stmt = tx.prepare(
            "SELECT detail FROM findings WHERE workload=?1 AND stream=?2 AND kind='conflict'",
        )?;
        for (workload, stream) in &streams {
            let gaps: Vec<DeclaredLoss> = gaps_stmt
                .query_map(params![workload, stream], |r| {
                    Ok(DeclaredLoss {
                        from_seq: r.get(0)?,
                        to_seq: r.get(1)?,
                        count: r.get(2)?,
                        last_hash: r.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let mut verifier = StreamVerifier::new(workload, stream, gaps);
            let mut rows = events_stmt.query(params![workload, stream])?;
            while let Some(r) = rows.next()? {
                let attributes: String = r.get(5)?;
                let time: i64 = r.get(1)?;
                verifier.push(&ChainEvent {
                    seq: r.get(0)?,
                    // A negative time can only come from editing the file: it then fails
                    // the hash check, as it should.
                    time_unix_nano: u64::try_from(time).unwrap_or(0),
                    trace_id: r.get(2)?,
                    prev_hash: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    hash: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    attributes: serde_json::from_str::<Map<String, Value>>(&attributes)
                        .unwrap_or_default(),
                });
            }
            let recorded: Vec<Finding> = conflicts_stmt
                .query_map(params![workload, stream], |r| r.get::<_, String>(0))?
                .filter_map(|d| d.ok().and_then(|d| serde_json::from_str(&d).ok()))
                .collect();
            reports.push(verifier.finish(recorded));
        }
        let mut unchained = tx.prepare(
            "SELECT workload, count(*) FROM events WHERE seq IS NULL GROUP BY workload ORDER BY 1",
        )?;
        let rows =
            unchained.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (workload, n) = row?;
            reports.push(integrity::unchained_report(
                &workload,
                u64::try_from(n).unwrap_or(0),
            ));
        }
        Ok(reports)
    }

    /// Moves the WAL into the main file and truncates it, so the database is one
    /// self-contained file after shutdown.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

// ---- Signed checkpoints and gap signatures (README, "Audit integrity") ----------------
// Kept apart from the tables above so another backend adds them the same way: one table,
// written with each batch, read by `meshguard audit verify --keys`.

/// The signatures table. The store only keeps what the filter signed; the keys that
/// verify it are given to `meshguard audit verify --keys` and never stored here.
const SIGNATURES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS signatures (
    id                  INTEGER PRIMARY KEY,
    workload            TEXT NOT NULL,
    stream              TEXT NOT NULL,
    kind                TEXT NOT NULL,
    from_seq            INTEGER NOT NULL,
    to_seq              INTEGER NOT NULL,
    count               INTEGER NOT NULL,
    hash                TEXT NOT NULL,
    signature           TEXT NOT NULL,
    received_unix_nano  INTEGER NOT NULL,
    UNIQUE (workload, stream, kind, from_seq, to_seq, count, hash, signature)
);
";

/// The checkpoints and the signed gap declarations of a batch (retries are ignored).
fn insert_signatures(
    tx: &rusqlite::Transaction<'_>,
    batch: &Batch,
    received_unix_nano: i64,
) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO signatures (workload, stream, kind, from_seq, to_seq, count, \
         hash, signature, received_unix_nano) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
    )?;
    for c in &batch.checkpoints {
        insert.execute(params![
            c.workload,
            c.stream,
            SignatureKind::Checkpoint.as_str(),
            c.seq,
            c.seq,
            0,
            c.hash,
            c.signature,
            received_unix_nano
        ])?;
    }
    for g in &batch.gaps {
        if let Some(sig) = &g.signature {
            insert.execute(params![
                g.workload,
                g.stream,
                SignatureKind::Gap.as_str(),
                g.from_seq,
                g.to_seq,
                g.count,
                g.last_hash,
                sig,
                received_unix_nano
            ])?;
        }
    }
    Ok(())
}

impl Store {
    /// Every stored signature, by workload and stream (none in a file written before
    /// checkpoints existed).
    pub fn signatures(&self) -> Result<Vec<SignatureRow>, StoreError> {
        let exists: i64 = self.conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='signatures'",
            [],
            |r| r.get(0),
        )?;
        if exists == 0 {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare(
            "SELECT workload, stream, kind, from_seq, to_seq, count, hash, signature \
             FROM signatures ORDER BY workload, stream, from_seq",
        )?;
        let rows = stmt.query_map([], |r| {
            let kind: String = r.get(2)?;
            Ok(SignatureRow {
                workload: r.get(0)?,
                stream: r.get(1)?,
                kind: if kind == SignatureKind::Gap.as_str() {
                    SignatureKind::Gap
                } else {
                    SignatureKind::Checkpoint
                },
                from_seq: r.get(3)?,
                to_seq: r.get(4)?,
                count: r.get(5)?,
                hash: r.get(6)?,
                signature: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stored `meshguard.hash` of one event, if the event is stored.
    pub fn event_hash_at(
        &self,
        workload: &str,
        stream: &str,
        seq: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT hash FROM events WHERE workload=?1 AND stream=?2 AND seq=?3",
                params![workload, stream, seq],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }
}

fn short(hash: &str) -> String {
    hash.chars().take(12).collect()
}

const INSERT_EVENT: &str = "INSERT OR IGNORE INTO events (
    time_unix_nano, received_unix_nano, workload, stream, seq, trace_id, span_id, severity, body,
    agent, tier, action, resource, decision, effect, enforced, policy, rule, reason, mode,
    bundle_version, method, path, server_address, status, request_id, latency_us,
    delegation_chain, prev_hash, hash, content_hash, attributes, resource_attributes
) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,
    ?24,?25,?26,?27,?28,?29,?30,?31,?32,?33)";

/// Inserts one event; false when it was already stored.
fn insert_event(
    stmt: &mut rusqlite::CachedStatement<'_>,
    e: &DecisionEvent,
    received_unix_nano: i64,
) -> Result<bool, StoreError> {
    let chain = e.chain.as_ref();
    let delegation = e
        .attributes
        .get("meshguard.delegation.chain")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let n = stmt.execute(params![
        // decode() rejected times beyond i64.
        i64::try_from(e.time_unix_nano).unwrap_or(i64::MAX),
        received_unix_nano,
        e.workload,
        chain.map(|c| c.stream.as_str()),
        chain.map(|c| c.seq),
        e.trace_id,
        e.span_id,
        e.severity,
        e.body,
        e.text("meshguard.agent.id"),
        e.text("meshguard.trust_tier"),
        e.text("meshguard.action"),
        e.text("meshguard.resource"),
        e.text("meshguard.decision"),
        e.text("meshguard.effect"),
        e.flag("meshguard.enforced"),
        e.text("meshguard.policy"),
        e.text("meshguard.rule"),
        e.text("meshguard.reason"),
        e.text("meshguard.mode"),
        e.text("meshguard.bundle.version"),
        e.text("http.request.method"),
        e.text("url.path"),
        e.text("server.address"),
        e.int("http.response.status_code"),
        e.text("meshguard.request_id"),
        e.int("meshguard.latency_us"),
        delegation.to_string(),
        chain.map(|c| c.prev_hash.as_str()),
        chain.map(|c| c.hash.as_str()),
        e.content_hash,
        Value::Object(e.attributes.clone()).to_string(),
        Value::Object(e.resource.clone()).to_string(),
    ])?;
    Ok(n == 1)
}

/// Link and content checks for what this Export made judgeable. Gaps (missing seqs) are
/// left to the full pass: on arrival they are indistinguishable from events still on
/// their way.
fn online_checks(
    tx: &rusqlite::Transaction<'_>,
    batch: &Batch,
    inserted: &[usize],
    new_gaps: &[&GapDeclaration],
) -> Result<Vec<(String, String, Finding)>, StoreError> {
    let mut findings = Vec::new();
    let mut links: BTreeSet<(String, String, i64)> = BTreeSet::new();
    for e in inserted.iter().filter_map(|&i| batch.events.get(i)) {
        let Some(c) = &e.chain else { continue };
        if let Some(f) = integrity::check_content(c.seq, &c.hash, &e.content_hash) {
            findings.push((e.workload.clone(), c.stream.clone(), f));
        }
        links.insert((e.workload.clone(), c.stream.clone(), c.seq));
        links.insert((
            e.workload.clone(),
            c.stream.clone(),
            c.seq.saturating_add(1),
        ));
    }
    for g in new_gaps {
        links.insert((
            g.workload.clone(),
            g.stream.clone(),
            g.to_seq.saturating_add(1),
        ));
    }
    let mut prev_of = tx.prepare_cached(
        "SELECT prev_hash FROM events WHERE workload=?1 AND stream=?2 AND seq=?3",
    )?;
    let mut hash_of =
        tx.prepare_cached("SELECT hash FROM events WHERE workload=?1 AND stream=?2 AND seq=?3")?;
    let mut gap_before = tx.prepare_cached(
        "SELECT last_hash FROM gaps WHERE workload=?1 AND stream=?2 AND to_seq=?3",
    )?;
    for (workload, stream, seq) in links {
        let Some(prev_hash) = prev_of
            .query_row(params![workload, stream, seq], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?
        else {
            continue;
        };
        let predecessor: Option<String> = hash_of
            .query_row(params![workload, stream, seq - 1], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?
            .flatten();
        let gap_hashes: Vec<String> = gap_before
            .query_map(params![workload, stream, seq - 1], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let expected = integrity::expected_prev(seq, predecessor.as_deref(), &gap_hashes);
        if let Some(f) = integrity::check_link(seq, prev_hash.as_deref().unwrap_or(""), expected) {
            findings.push((workload, stream, f));
        }
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::event::{decode, testing::*};
    use crate::collector::integrity::Verdict;
    use serde_json::json;

    /// A temporary directory removed on drop, even when a test fails.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("meshguard-store-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        pub fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn store(dir: &TempDir) -> Store {
        Store::open_for_writing(&dir.join("audit.db")).unwrap()
    }

    fn all(s: &Store) -> Vec<EventRow> {
        s.events(&EventFilter {
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn retried_batches_do_not_duplicate_and_columns_are_filled() {
        let dir = TempDir::new("dup");
        let mut s = store(&dir);
        let mut c = Chain::new("s1");
        let req = request(
            "node-1",
            (0..3)
                .map(|_| c.event("agent-a", "read:orders", "deny"))
                .collect(),
        );
        let batch = decode(&req);
        let first = s.insert_batch(&batch, 1).unwrap();
        assert_eq!(first.inserted.len(), 3);
        let again = s.insert_batch(&decode(&req), 2).unwrap();
        assert_eq!((again.inserted.len(), again.duplicates), (0, 3));
        assert!(again.findings.is_empty(), "{:?}", again.findings);
        let rows = all(&s);
        assert_eq!(rows.len(), 3);
        let r = &rows[0];
        assert_eq!(r.agent, "agent-a");
        assert_eq!(r.decision, "deny");
        assert_eq!(r.workload, "node-1");
        assert_eq!(r.seq, Some(1));
        assert_eq!(r.latency_us, Some(17));
        assert_eq!(r.delegation_chain, ["root", "agent-a"]);
        assert_eq!(r.attributes["meshguard.stream"], json!("s1"));
    }

    #[test]
    fn out_of_order_arrival_gives_no_false_findings() {
        let dir = TempDir::new("ooo");
        let mut s = store(&dir);
        let mut c = Chain::new("s1");
        let evs: Vec<_> = (0..6).map(|_| c.event("a", "x", "allow")).collect();
        let late = request("n", evs[3..].to_vec());
        let early = request("n", evs[..3].to_vec());
        assert!(s
            .insert_batch(&decode(&late), 1)
            .unwrap()
            .findings
            .is_empty());
        assert!(s
            .insert_batch(&decode(&early), 2)
            .unwrap()
            .findings
            .is_empty());
        let reports = s.verify_all().unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(
            reports[0].verdict,
            Verdict::Intact,
            "{:?}",
            reports[0].findings
        );
        assert_eq!(reports[0].events, 6);
    }

    #[test]
    fn tampering_and_conflicts_are_found_on_arrival() {
        let dir = TempDir::new("tamper");
        let mut s = store(&dir);
        let mut c = Chain::new("s1");
        let evs: Vec<_> = (0..3).map(|_| c.event("a", "delete:db", "deny")).collect();
        let mut forged = evs[1].clone();
        set_attr(&mut forged, "meshguard.decision", json!("allow"));
        let out = s
            .insert_batch(
                &decode(&request("n", vec![evs[0].clone(), forged, evs[2].clone()])),
                1,
            )
            .unwrap();
        let kinds: Vec<_> = out
            .findings
            .iter()
            .map(|(_, _, f)| (f.kind(), f.seq()))
            .collect();
        assert_eq!(kinds, [("altered", 2)]);
        // The genuine copy arriving later conflicts with the stored forgery.
        let out = s
            .insert_batch(&decode(&request("n", vec![evs[1].clone()])), 2)
            .unwrap();
        let kinds: Vec<_> = out
            .findings
            .iter()
            .map(|(_, _, f)| (f.kind(), f.seq()))
            .collect();
        assert_eq!(kinds, [("conflict", 2)]);
        let r = &s.verify_all().unwrap()[0];
        let kinds: Vec<_> = r.findings.iter().map(|f| (f.kind(), f.seq())).collect();
        assert_eq!(kinds, [("altered", 2), ("conflict", 2)]);
        assert_eq!(r.verdict, Verdict::Broken);
    }

    #[test]
    fn gaps_declared_or_not() {
        let dir = TempDir::new("gaps");
        let mut s = store(&dir);
        let mut c = Chain::new("s1");
        let e1 = c.event("a", "x", "allow");
        let gap = c.drop_events(2);
        let e4 = c.event("a", "x", "allow");
        let out = s
            .insert_batch(&decode(&request("n", vec![e1, e4])), 1)
            .unwrap();
        assert!(out.findings.is_empty());
        let r = &s.verify_all().unwrap()[0];
        assert_eq!(
            r.findings,
            [Finding::Gap {
                from_seq: 2,
                to_seq: 3
            }]
        );
        let out = s
            .insert_batch(&decode(&request("n", vec![gap])), 2)
            .unwrap();
        assert_eq!((out.gaps, out.findings.len()), (1, 0));
        let r = &s.verify_all().unwrap()[0];
        assert_eq!(r.verdict, Verdict::Intact, "{:?}", r.findings);
        assert_eq!(r.declared_lost_events, 2);
    }

    #[test]
    fn unchained_events_are_kept_once_and_reported() {
        let dir = TempDir::new("unchained");
        let mut s = store(&dir);
        let mut c = Chain::new("s1");
        let mut e = c.event("a", "x", "allow");
        e.attributes.retain(|kv| kv.key != "meshguard.stream");
        let req = request("n", vec![e]);
        s.insert_batch(&decode(&req), 1).unwrap();
        s.insert_batch(&decode(&req), 2).unwrap();
        assert_eq!(all(&s).len(), 1);
        let reports = s.verify_all().unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].verdict, Verdict::Unchained);
    }

    #[test]
    fn filters_and_limits() {
        let dir = TempDir::new("filter");
        let mut s = store(&dir);
        let mut c = Chain::new("s1");
        let evs = vec![
            c.event("agent-a", "read:orders", "allow"),
            c.event("agent-b", "write:email", "deny"),
            c.event("agent-a", "read:users", "deny"),
            c.event("agent-a", "delete:users", "deny"),
        ];
        s.insert_batch(&decode(&request("n", evs)), 1).unwrap();
        let q = |f: EventFilter| {
            s.events(&EventFilter { limit: 100, ..f })
                .unwrap()
                .into_iter()
                .map(|r| r.seq.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            q(EventFilter {
                agent: Some("agent-a".into()),
                ..Default::default()
            }),
            [1, 3, 4]
        );
        assert_eq!(
            q(EventFilter {
                action: Some(Pattern::new("read:*").unwrap()),
                ..Default::default()
            }),
            [1, 3]
        );
        assert_eq!(
            q(EventFilter {
                decision: Some("deny".into()),
                action: Some(Pattern::new("write:email").unwrap()),
                ..Default::default()
            }),
            [2]
        );
        let t2 = 1_700_000_000_000_000_000 + 2_000_000;
        assert_eq!(
            q(EventFilter {
                since: Some(t2),
                ..Default::default()
            }),
            [2, 3, 4]
        );
        assert_eq!(
            q(EventFilter {
                until: Some(t2),
                ..Default::default()
            }),
            [1]
        );
        assert_eq!(
            q(EventFilter {
                trace: Some("0303".into()),
                ..Default::default()
            }),
            [3]
        );
        let newest = s
            .events(&EventFilter {
                limit: 2,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            newest.iter().map(|r| r.seq.unwrap()).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(
            s.traces_matching("03", 5).unwrap(),
            ["03030303030303030303030303030303"]
        );
    }

    #[test]
    fn refuses_foreign_and_damaged_files() {
        let dir = TempDir::new("foreign");
        let junk = dir.join("junk.db");
        std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
        let e = Store::open_for_writing(&junk).err().unwrap();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("damaged"), "{e}");

        let other = dir.join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let e = Store::open_for_writing(&other).err().unwrap();
        assert!(matches!(e, StoreError::Foreign { .. }), "{e}");

        let e = Store::open_for_writing(&dir.join("no/such/dir/a.db"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("cannot open audit database"), "{e}");
        let e = Store::open_for_reading(&dir.join("absent.db"))
            .err()
            .unwrap();
        assert!(matches!(e, StoreError::Missing { .. }), "{e}");
    }

    #[test]
    fn readers_never_write() {
        let dir = TempDir::new("ro");
        drop(store(&dir));
        let r = Store::open_for_reading(&dir.join("audit.db")).unwrap();
        assert_eq!(r.count_events().unwrap(), 0);
        assert!(r.conn.execute_batch("DELETE FROM events").is_err());
    }

    #[test]
    fn version_1_files_gain_the_approval_tables() {
        let dir = TempDir::new("migrate");
        let s = store(&dir);
        s.conn
            .execute_batch(
                "DROP TABLE approvals; DROP TABLE grants_state; PRAGMA user_version = 1;",
            )
            .unwrap();
        drop(s);
        let r = Store::open_for_reading(&dir.join("audit.db")).unwrap();
        assert!(
            r.approvals(None, 10, 0).unwrap().is_empty(),
            "read as empty"
        );
        drop(r);
        let s = store(&dir);
        assert_eq!(s.schema_version().unwrap(), 2);
        assert!(s.approvals(None, 10, 0).unwrap().is_empty());
        assert!(s.grants_state().unwrap().is_none());
        assert_eq!(s.count_events().unwrap(), 0);
    }
}
