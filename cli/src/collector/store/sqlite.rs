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
//! - `truncations`: where retention (`--retain`) cut each stream on purpose.
//! - `stream_peers`: the authenticated ingest peers of each stream (see `peer.rs`).
//!
//! Schema versions: 1 had the audit tables; 2 added the approval tables; 3 added
//! `truncations` and `stream_peers` (and `signatures`, the signed audit checkpoints). Opening for
//! writing migrates: every table is `CREATE TABLE IF NOT EXISTS`, so an older file gains
//! the new tables in the same transaction that raises `user_version`.
//!
//! Each Export is stored in one transaction, so a failure never leaves half a batch, and
//! commits are `synchronous=FULL`: an acknowledged event survives a power cut.

use super::{
    batch_signatures, chain_event_from_columns, conflict, events_query, finish, json_column,
    links_to_check, peer_claims, signature_from_columns, verifier, EventFilter, EventRow,
    InsertOutcome, RetainOutcome, SqlArg, StoreError, Truncation, ROW_COLUMNS, SIGNATURE_COLUMNS,
};
use crate::collector::approvals::{self, Approval, ApprovalStatus, Decision, GrantsState};
use crate::collector::event::{Batch, DecisionEvent, GapDeclaration};
use crate::collector::integrity::SignatureRow;
use crate::collector::integrity::{self, DeclaredLoss, Finding, StreamReport};
use crate::grants::Grant;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `PRAGMA application_id` of a MeshGuard audit database ("MGAD").
const APPLICATION_ID: i64 = 0x4d47_4144;
/// `PRAGMA user_version` of the schema below.
pub(crate) const SCHEMA_VERSION: i64 = 3;

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

CREATE TABLE IF NOT EXISTS truncations (
    workload            TEXT NOT NULL,
    stream              TEXT NOT NULL,
    before_seq          INTEGER NOT NULL,
    last_hash           TEXT NOT NULL,
    truncated_unix_nano INTEGER NOT NULL,
    PRIMARY KEY (workload, stream)
);

CREATE TABLE IF NOT EXISTS stream_peers (
    workload             TEXT NOT NULL,
    stream               TEXT NOT NULL,
    peer                 TEXT NOT NULL,
    namespace            TEXT NOT NULL,
    first_seen_unix_nano INTEGER NOT NULL,
    last_seen_unix_nano  INTEGER NOT NULL,
    PRIMARY KEY (workload, stream, peer, namespace)
);
";

/// Whether SQLite says the file is damaged or not a database.
fn damage(e: &rusqlite::Error) -> Option<&'static str> {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Some("not an SQLite database, or its header is damaged"),
        Some(ErrorCode::DatabaseCorrupt) => Some("SQLite reports corruption"),
        _ => None,
    }
}

impl EventRow {
    fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
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

/// An open SQLite audit database.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database the collector writes, after checking that it
    /// is a MeshGuard audit database in good health.
    pub fn open_for_writing(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        let store = SqliteStore {
            conn,
            path: path.to_path_buf(),
        };
        store.configure()?;
        let classify = |e: rusqlite::Error| store.classify(e);
        // Replicas may create the same file at once: the identity check and the schema are
        // one write transaction, so a second writer waits (busy timeout) and then sees the
        // first one's complete schema, never tables without the application id. Taking the
        // lock writes nothing, so a foreign file is refused untouched.
        store
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(classify)?;
        let created = store
            .check_identity(true)
            .and_then(|()| store.check_health())
            .and_then(|()| {
                store
                    .conn
                    .execute_batch(&format!(
                        "{SCHEMA}
                         {}
                         {SIGNATURES_SCHEMA}
                         PRAGMA application_id={APPLICATION_ID};
                         PRAGMA user_version={SCHEMA_VERSION};
                         COMMIT;",
                        approvals::SCHEMA
                    ))
                    .map_err(classify)
            });
        if let Err(e) = created {
            let _ = store.conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        // The journal mode cannot change inside a transaction; the file is ours by now.
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
            .execute_batch("PRAGMA synchronous=FULL;")
            .map_err(classify)?;
        Ok(store)
    }

    /// Opens an existing database for the query tools and the JSON API; it is never written.
    pub fn open_for_reading(path: &Path) -> Result<SqliteStore, StoreError> {
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
        let store = SqliteStore {
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
                                conflict(c.seq, &e.content_hash, &content_hash),
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
            if let Some(peer) = &batch.peer {
                let mut seen = tx.prepare_cached(
                    "INSERT INTO stream_peers (workload, stream, peer, namespace, \
                     first_seen_unix_nano, last_seen_unix_nano) VALUES (?1,?2,?3,?4,?5,?5) \
                     ON CONFLICT (workload, stream, peer, namespace) DO UPDATE SET \
                     last_seen_unix_nano = excluded.last_seen_unix_nano",
                )?;
                for (workload, stream, namespace) in peer_claims(batch) {
                    seen.execute(params![
                        workload,
                        stream,
                        peer,
                        namespace,
                        received_unix_nano
                    ])?;
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
        let (sql, args) = events_query(filter, |n| format!("?{n}"), ("GLOB", '*'));
        let args: Vec<rusqlite::types::Value> = args
            .into_iter()
            .map(|a| match a {
                SqlArg::Text(t) => rusqlite::types::Value::Text(t),
                SqlArg::Int(i) => rusqlite::types::Value::Integer(i),
            })
            .collect();
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        let mut out = Vec::new();
        while out.len() < filter.limit {
            let Some(row) = rows.next()? else { break };
            let ev = EventRow::from_sqlite(row)?;
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
        let rows = stmt.query_map([trace_id], EventRow::from_sqlite)?;
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
        // A version 2 file read by the query tools has no truncations table: nothing was
        // truncated.
        let truncated = self.schema_version()? >= 3;
        let tx = self.conn.transaction()?;
        let streams: Vec<(String, String)> = {
            let mut stmt = tx.prepare(if truncated {
                "SELECT workload, stream FROM events WHERE stream IS NOT NULL AND seq IS NOT NULL
                 UNION SELECT workload, stream FROM gaps
                 UNION SELECT workload, stream FROM truncations ORDER BY 1, 2"
            } else {
                "SELECT workload, stream FROM events WHERE stream IS NOT NULL AND seq IS NOT NULL
                 UNION SELECT workload, stream FROM gaps ORDER BY 1, 2"
            })?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut reports = Vec::new();
        let mut gaps_stmt = tx.prepare(
            "SELECT from_seq, to_seq, count, last_hash FROM gaps WHERE workload=?1 AND stream=?2",
        )?;
        // Rows below a truncation point may still exist while retention deletes them in
        // batches: they are no longer part of the stream.
        let mut events_stmt = tx.prepare(
            "SELECT seq, time_unix_nano, trace_id, prev_hash, hash, attributes FROM events
             WHERE workload=?1 AND stream=?2 AND seq IS NOT NULL AND seq >= ?3 ORDER BY seq",
        )?;
        let mut conflicts_stmt = tx.prepare(
            "SELECT detail FROM findings WHERE workload=?1 AND stream=?2 AND kind='conflict'",
        )?;
        let mut truncation_stmt = if truncated {
            Some(tx.prepare(
                "SELECT before_seq, last_hash FROM truncations WHERE workload=?1 AND stream=?2",
            )?)
        } else {
            None
        };
        let mut peers_stmt = if truncated {
            Some(tx.prepare(
                "SELECT peer, namespace FROM stream_peers WHERE workload=?1 AND stream=?2 \
                 ORDER BY 1, 2",
            )?)
        } else {
            None
        };
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
            let truncation = match truncation_stmt.as_mut() {
                Some(stmt) => stmt
                    .query_row(params![workload, stream], |r| {
                        Ok(Truncation {
                            before_seq: r.get(0)?,
                            last_hash: r.get(1)?,
                        })
                    })
                    .optional()?,
                None => None,
            };
            let mut verifier = verifier(workload, stream, gaps, truncation.as_ref());
            let from = truncation.as_ref().map_or(i64::MIN, |t| t.before_seq);
            let mut rows = events_stmt.query(params![workload, stream, from])?;
            while let Some(r) = rows.next()? {
                verifier.push(&chain_event_from_columns(r)?);
            }
            let recorded: Vec<Finding> = conflicts_stmt
                .query_map(params![workload, stream], |r| r.get::<_, String>(0))?
                .filter_map(|d| d.ok().and_then(|d| serde_json::from_str(&d).ok()))
                .collect();
            let peers: Vec<(String, String)> = match peers_stmt.as_mut() {
                Some(stmt) => stmt
                    .query_map(params![workload, stream], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?,
                None => Vec::new(),
            };
            reports.push(finish(verifier, recorded, truncation.as_ref(), &peers));
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

    /// See [`super::Store::retain`].
    pub fn retain(
        &mut self,
        cutoff_unix_nano: i64,
        batch: usize,
    ) -> Result<RetainOutcome, StoreError> {
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut out = RetainOutcome::default();
        // Each stream loses a whole prefix: up to its newest seq older than the cutoff.
        // The truncation point is recorded (with the hash the first kept event links to)
        // before anything is deleted, so the verifier never sees an unexplained hole.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut cuts = tx.prepare(
                "SELECT e.workload, e.stream, e.seq, e.hash FROM events e
                 JOIN (SELECT workload, stream, max(seq) AS seq FROM events
                       WHERE seq IS NOT NULL AND time_unix_nano < ?1 GROUP BY 1, 2) m
                 ON e.workload = m.workload AND e.stream = m.stream AND e.seq = m.seq",
            )?;
            let rows: Vec<(String, String, i64, Option<String>)> = cuts
                .query_map(params![cutoff_unix_nano], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            let mut record = tx.prepare(
                "INSERT INTO truncations (workload, stream, before_seq, last_hash, \
                 truncated_unix_nano) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (workload, stream) DO UPDATE SET before_seq = excluded.before_seq, \
                 last_hash = excluded.last_hash, truncated_unix_nano = excluded.truncated_unix_nano \
                 WHERE excluded.before_seq > truncations.before_seq",
            )?;
            for (workload, stream, seq, hash) in rows {
                out.streams += u64::try_from(record.execute(params![
                    workload,
                    stream,
                    seq.saturating_add(1),
                    hash.unwrap_or_default(),
                    crate::timestamp::now_nanos()
                ])?)
                .unwrap_or(0);
            }
            tx.execute(
                "DELETE FROM gaps WHERE EXISTS (SELECT 1 FROM truncations t WHERE \
                 t.workload = gaps.workload AND t.stream = gaps.stream AND gaps.to_seq < t.before_seq)",
                [],
            )?;
        }
        tx.commit()?;
        loop {
            let n = self.conn.execute(
                "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE \
                 (e.seq IS NULL AND e.time_unix_nano < ?1) OR EXISTS (SELECT 1 FROM \
                 truncations t WHERE t.workload = e.workload AND t.stream = e.stream AND \
                 e.seq < t.before_seq) LIMIT ?2)",
                params![cutoff_unix_nano, batch],
            )?;
            out.events += u64::try_from(n).unwrap_or(0);
            if i64::try_from(n).unwrap_or(0) < batch {
                break;
            }
        }
        Ok(out)
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
    for r in batch_signatures(batch) {
        insert.execute(params![
            r.workload,
            r.stream,
            r.kind.as_str(),
            r.from_seq,
            r.to_seq,
            r.count,
            r.hash,
            r.signature,
            received_unix_nano
        ])?;
    }
    Ok(())
}

impl SqliteStore {
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
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {SIGNATURE_COLUMNS} FROM signatures ORDER BY workload, stream, from_seq"
        ))?;
        let rows = stmt.query_map([], |r| signature_from_columns(r))?;
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
    for e in inserted.iter().filter_map(|&i| batch.events.get(i)) {
        let Some(c) = &e.chain else { continue };
        if let Some(f) = integrity::check_content(c.seq, &c.hash, &e.content_hash) {
            findings.push((e.workload.clone(), c.stream.clone(), f));
        }
    }
    let links = links_to_check(batch, inserted, new_gaps);
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

    fn store(dir: &TempDir) -> SqliteStore {
        SqliteStore::open_for_writing(&dir.join("audit.db")).unwrap()
    }

    #[test]
    fn refuses_foreign_and_damaged_files() {
        let dir = TempDir::new("foreign");
        let junk = dir.join("junk.db");
        std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
        let e = SqliteStore::open_for_writing(&junk).err().unwrap();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("damaged"), "{e}");

        let other = dir.join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let e = SqliteStore::open_for_writing(&other).err().unwrap();
        assert!(matches!(e, StoreError::Foreign { .. }), "{e}");

        let e = SqliteStore::open_for_writing(&dir.join("no/such/dir/a.db"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("cannot open audit database"), "{e}");
        let e = SqliteStore::open_for_reading(&dir.join("absent.db"))
            .err()
            .unwrap();
        assert!(matches!(e, StoreError::Missing { .. }), "{e}");
    }

    #[test]
    fn readers_never_write() {
        let dir = TempDir::new("ro");
        drop(store(&dir));
        let r = SqliteStore::open_for_reading(&dir.join("audit.db")).unwrap();
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
        let r = SqliteStore::open_for_reading(&dir.join("audit.db")).unwrap();
        assert!(
            r.approvals(None, 10, 0).unwrap().is_empty(),
            "read as empty"
        );
        drop(r);
        let s = store(&dir);
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert!(s.approvals(None, 10, 0).unwrap().is_empty());
        assert!(s.grants_state().unwrap().is_none());
        assert_eq!(s.count_events().unwrap(), 0);
    }
}
