//! The audit store: where the collector keeps events, gaps, findings and approvals, and
//! where the query tools read them.
//!
//! Two backends with the same schema and the same operations: one SQLite file
//! ([`sqlite`], the default, for one collector) and PostgreSQL ([`postgres`], for several
//! collector replicas sharing one database). [`Store`] is the one door; callers never see
//! which backend is behind it.

pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod suite;
#[cfg(test)]
mod testpg;

use super::approvals::{Approval, ApprovalStatus, Decision, GrantsState, PendingNotice};
use super::event::{Batch, GapDeclaration};
use super::integrity::{
    ChainEvent, DeclaredLoss, Finding, SignatureKind, SignatureRow, StreamReport, StreamVerifier,
    Verdict,
};
use crate::grants::Grant;
use meshguard::glob::Pattern;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the audit store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://user:password@host:port/db`).
    Postgres(String),
}

impl Location {
    /// `--store` when given (a postgres:// URL), else the `--db` file.
    pub fn from_flags(db: &Path, store: Option<&str>) -> Result<Location, StoreError> {
        match store {
            None => Ok(Location::Sqlite(db.to_path_buf())),
            Some(s) if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
                Ok(Location::Postgres(s.to_string()))
            }
            Some(s) => Err(StoreError::Location(s.to_string())),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&postgres::redact(url)),
        }
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Self {
        Location::Sqlite(p.to_path_buf())
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Self {
        Location::Sqlite(p.clone())
    }
}

impl From<&Location> for Location {
    fn from(l: &Location) -> Self {
        l.clone()
    }
}

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
    /// The PostgreSQL server could not be reached or refused the connection.
    PgConnect {
        /// The connection URL with any password removed.
        url: String,
        /// The driver's explanation.
        source: ::postgres::Error,
    },
    /// The PostgreSQL database has no MeshGuard schema yet (query tools never create it).
    PgMissing {
        /// The connection URL with any password removed.
        url: String,
    },
    /// The PostgreSQL schema was migrated by a newer meshguard.
    PgNewer {
        /// The connection URL with any password removed.
        url: String,
        /// Its newest migration.
        version: i64,
    },
    /// A PostgreSQL statement failed while the database was in use.
    Pg(::postgres::Error),
    /// `--store` is neither a postgres:// URL nor an SQLite path.
    Location(String),
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
                 understands ({}); use a newer meshguard",
                path.display(),
                sqlite::SCHEMA_VERSION
            ),
            StoreError::Sql(e) => write!(f, "audit database error: {e}"),
            StoreError::PgConnect { url, source } => write!(
                f,
                "cannot connect to the PostgreSQL audit store {url}: {source} (check the host, \
                 port, user, password and database in --store, and that the server accepts \
                 connections from this host)"
            ),
            StoreError::PgMissing { url } => write!(
                f,
                "the PostgreSQL database {url} holds no MeshGuard audit schema yet (start \
                 `meshguard collector --store {url}` once to create it)"
            ),
            StoreError::PgNewer { url, version } => write!(
                f,
                "the PostgreSQL audit store {url} was migrated to version {version}, newer \
                 than this meshguard understands ({}); use a newer meshguard",
                postgres::MIGRATIONS.len()
            ),
            StoreError::Pg(e) => write!(f, "PostgreSQL audit store error: {e}"),
            StoreError::Location(s) => write!(
                f,
                "--store {s:?}: not a postgres:// or postgresql:// URL (give the SQLite file \
                 with --db instead)"
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Open { source, .. } | StoreError::Sql(source) => Some(source),
            StoreError::PgConnect { source, .. } | StoreError::Pg(source) => Some(source),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e)
    }
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> Self {
        StoreError::Pg(e)
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

/// What one retention pass deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetainOutcome {
    /// Events deleted.
    pub events: u64,
    /// Streams whose truncation point moved.
    pub streams: u64,
}

/// Where retention cut a stream: every seq below `before_seq` was deleted on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// First seq kept.
    pub before_seq: i64,
    /// Hash of the event at `before_seq - 1`, which the first kept event links to.
    pub last_hash: String,
}

/// An open audit store.
pub enum Store {
    /// One SQLite file.
    Sqlite(sqlite::SqliteStore),
    /// A PostgreSQL database shared by collector replicas.
    Postgres(postgres::PgStore),
}

macro_rules! dispatch {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            Store::Sqlite($s) => $call,
            Store::Postgres($s) => $call,
        }
    };
}

impl Store {
    /// Opens (creating or migrating if needed) the store the collector writes.
    pub fn open_for_writing(at: impl Into<Location>) -> Result<Store, StoreError> {
        match at.into() {
            Location::Sqlite(p) => Ok(Store::Sqlite(sqlite::SqliteStore::open_for_writing(&p)?)),
            Location::Postgres(url) => Ok(Store::Postgres(postgres::PgStore::open(&url, true)?)),
        }
    }

    /// Opens an existing store for the query tools and the JSON API; it is never written.
    pub fn open_for_reading(at: impl Into<Location>) -> Result<Store, StoreError> {
        match at.into() {
            Location::Sqlite(p) => Ok(Store::Sqlite(sqlite::SqliteStore::open_for_reading(&p)?)),
            Location::Postgres(url) => Ok(Store::Postgres(postgres::PgStore::open(&url, false)?)),
        }
    }

    /// Stores one decoded Export in one transaction and checks the hash-chain links it
    /// makes judgeable.
    pub fn insert_batch(
        &mut self,
        batch: &Batch,
        received_unix_nano: i64,
    ) -> Result<InsertOutcome, StoreError> {
        dispatch!(self, s => s.insert_batch(batch, received_unix_nano))
    }

    /// Approvals, newest request first, optionally of one status (`expired` as of `now`).
    pub fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: usize,
        now_unix_nano: i64,
    ) -> Result<Vec<Approval>, StoreError> {
        dispatch!(self, s => s.approvals(status, limit, now_unix_nano))
    }

    /// One approval by id.
    pub fn approval(&self, id: &str, now_unix_nano: i64) -> Result<Option<Approval>, StoreError> {
        dispatch!(self, s => s.approval(id, now_unix_nano))
    }

    /// Approves or denies; `None` when the id is unknown.
    pub fn decide_approval(
        &mut self,
        id: &str,
        decision: &Decision,
        now_unix_nano: i64,
    ) -> Result<Option<Approval>, StoreError> {
        dispatch!(self, s => s.decide_approval(id, decision, now_unix_nano))
    }

    /// The grants in force at `now`.
    pub fn active_grants(&self, now_unix_nano: i64) -> Result<Vec<Grant>, StoreError> {
        dispatch!(self, s => s.active_grants(now_unix_nano))
    }

    /// The last published grants document, if any.
    pub fn grants_state(&self) -> Result<Option<GrantsState>, StoreError> {
        dispatch!(self, s => s.grants_state())
    }

    /// Stores a newly published grants document; false (nothing written) when its version
    /// is not above the stored one.
    pub fn save_grants_state(&mut self, state: &GrantsState) -> Result<bool, StoreError> {
        dispatch!(self, s => s.save_grants_state(state))
    }

    /// The newest `filter.limit` events that match, oldest first.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<EventRow>, StoreError> {
        dispatch!(self, s => s.events(filter))
    }

    /// The distinct trace ids starting with `prefix` (at most `max`).
    pub fn traces_matching(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.traces_matching(prefix, max))
    }

    /// Every event of one trace, in time order.
    pub fn trace(&self, trace_id: &str) -> Result<Vec<EventRow>, StoreError> {
        dispatch!(self, s => s.trace(trace_id))
    }

    /// Number of events stored.
    pub fn count_events(&self) -> Result<i64, StoreError> {
        dispatch!(self, s => s.count_events())
    }

    /// The full integrity pass over every stream, from one consistent snapshot.
    pub fn verify_all(&mut self) -> Result<Vec<StreamReport>, StoreError> {
        dispatch!(self, s => s.verify_all())
    }

    /// Deletes chained events older than `cutoff_unix_nano` (a whole prefix of each stream,
    /// so what remains still verifies) and unchained ones by time, at most `batch` rows per
    /// transaction; records each stream's truncation point first.
    pub fn retain(
        &mut self,
        cutoff_unix_nano: i64,
        batch: usize,
    ) -> Result<RetainOutcome, StoreError> {
        dispatch!(self, s => s.retain(cutoff_unix_nano, batch))
    }

    /// Every stored checkpoint and gap signature, by workload and stream (none in a store
    /// written before checkpoints existed).
    pub fn signatures(&self) -> Result<Vec<SignatureRow>, StoreError> {
        dispatch!(self, s => s.signatures())
    }

    /// The stored `meshguard.hash` of one event, if the event is stored.
    pub fn event_hash_at(
        &self,
        workload: &str,
        stream: &str,
        seq: i64,
    ) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.event_hash_at(workload, stream, seq))
    }

    /// Makes the store self-contained after shutdown (SQLite: WAL checkpoint).
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.checkpoint(),
            Store::Postgres(_) => Ok(()),
        }
    }
}

/// One result row, whichever driver read it: approvals and signatures are mapped from it
/// once for both stores.
pub(crate) trait Columns {
    /// The driver's error.
    type Error;
    /// A TEXT column.
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    /// A nullable TEXT column.
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    /// An INTEGER / BIGINT column.
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    /// A nullable INTEGER / BIGINT column.
    fn opt_int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
}

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }
    fn opt_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn opt_int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
}

impl Columns for ::postgres::Row {
    type Error = ::postgres::Error;
    fn text(&self, i: usize) -> Result<String, ::postgres::Error> {
        self.try_get(i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, ::postgres::Error> {
        self.try_get(i)
    }
    fn int(&self, i: usize) -> Result<i64, ::postgres::Error> {
        self.try_get(i)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, ::postgres::Error> {
        self.try_get(i)
    }
}

/// The columns [`signature_from_columns`] reads, in its order.
pub(crate) const SIGNATURE_COLUMNS: &str =
    "workload, stream, kind, from_seq, to_seq, count, hash, signature";

/// A stored signature from a row of [`SIGNATURE_COLUMNS`].
pub(crate) fn signature_from_columns<R: Columns + ?Sized>(r: &R) -> Result<SignatureRow, R::Error> {
    Ok(SignatureRow {
        workload: r.text(0)?,
        stream: r.text(1)?,
        kind: if r.text(2)? == SignatureKind::Gap.as_str() {
            SignatureKind::Gap
        } else {
            SignatureKind::Checkpoint
        },
        from_seq: r.int(3)?,
        to_seq: r.int(4)?,
        count: r.int(5)?,
        hash: r.text(6)?,
        signature: r.text(7)?,
    })
}

/// A chained event for the verifier from a row of `seq, time_unix_nano, trace_id,
/// prev_hash, hash, attributes` (both stores' full-pass query).
pub(crate) fn chain_event_from_columns<R: Columns + ?Sized>(r: &R) -> Result<ChainEvent, R::Error> {
    let attributes = r.text(5)?;
    Ok(ChainEvent {
        seq: r.int(0)?,
        // A negative time can only come from editing the store: it then fails the hash
        // check, as it should.
        time_unix_nano: u64::try_from(r.int(1)?).unwrap_or(0),
        trace_id: r.text(2)?,
        prev_hash: r.opt_text(3)?.unwrap_or_default(),
        hash: r.opt_text(4)?.unwrap_or_default(),
        attributes: serde_json::from_str::<serde_json::Map<String, Value>>(&attributes)
            .unwrap_or_default(),
    })
}

/// A signed checkpoint as the row the stores keep.
pub(crate) fn checkpoint_row(c: &crate::collector::event::Checkpoint) -> SignatureRow {
    SignatureRow {
        workload: c.workload.clone(),
        stream: c.stream.clone(),
        kind: SignatureKind::Checkpoint,
        from_seq: c.seq,
        to_seq: c.seq,
        count: 0,
        hash: c.hash.clone(),
        signature: c.signature.clone(),
    }
}

/// The checkpoints and signed gap declarations of a batch, as both stores keep them.
pub(crate) fn batch_signatures(batch: &Batch) -> Vec<SignatureRow> {
    let checkpoints = batch.checkpoints.iter().map(checkpoint_row);
    let gaps = batch.gaps.iter().filter_map(|g| {
        Some(SignatureRow {
            workload: g.workload.clone(),
            stream: g.stream.clone(),
            kind: SignatureKind::Gap,
            from_seq: g.from_seq,
            to_seq: g.to_seq,
            count: g.count,
            hash: g.last_hash.clone(),
            signature: g.signature.clone()?,
        })
    });
    checkpoints.chain(gaps).collect()
}

/// One bound value of an event query.
pub(crate) enum SqlArg {
    /// A TEXT value.
    Text(String),
    /// An INTEGER / BIGINT value.
    Int(i64),
}

/// The event query for `filter`, newest first, in both backends' SQL: `placeholder(n)`
/// spells the n-th parameter (`?n` or `$n`), `prefix_match` the trace-id prefix test
/// (`GLOB`, whose wildcard is `*`, or `LIKE`, whose wildcard is `%`). A pattern with
/// wildcards is matched by the caller on each row (globs are not SQL).
pub(crate) fn events_query(
    filter: &EventFilter,
    placeholder: fn(usize) -> String,
    prefix_match: (&str, char),
) -> (String, Vec<SqlArg>) {
    let mut sql = format!("SELECT {ROW_COLUMNS} FROM events WHERE 1=1");
    let mut args = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: SqlArg| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} {}", placeholder(args.len())));
    };
    if let Some(a) = &filter.agent {
        arg(&mut sql, "agent =", SqlArg::Text(a.clone()));
    }
    if let Some(d) = &filter.decision {
        arg(&mut sql, "decision =", SqlArg::Text(d.clone()));
    }
    if let Some(p) = &filter.action {
        // A pattern without wildcards is an exact action: let the index do the work.
        if !p.as_str().contains(['*', '?', '[', '{', '\\']) {
            arg(&mut sql, "action =", SqlArg::Text(p.as_str().to_string()));
        }
    }
    if let Some(t) = filter.since {
        arg(&mut sql, "time_unix_nano >=", SqlArg::Int(t));
    }
    if let Some(t) = filter.until {
        arg(&mut sql, "time_unix_nano <", SqlArg::Int(t));
    }
    if let Some(t) = &filter.trace {
        // Callers pass validated hex, so the pattern has no wildcard but ours.
        let (op, wildcard) = prefix_match;
        arg(
            &mut sql,
            &format!("trace_id {op}"),
            SqlArg::Text(format!("{t}{wildcard}")),
        );
    }
    sql.push_str(" ORDER BY time_unix_nano DESC, id DESC");
    (sql, args)
}

/// Column order shared by both backends' event queries.
pub(crate) const ROW_COLUMNS: &str = "time_unix_nano, workload, stream, seq, trace_id, span_id, \
    agent, tier, delegation_chain, action, resource, decision, effect, enforced, policy, rule, \
    reason, mode, bundle_version, method, path, server_address, status, request_id, latency_us, \
    prev_hash, hash, attributes, resource_attributes";

pub(crate) fn json_column(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

pub(crate) fn short(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// The conflict finding for a different event arriving at a stored seq.
pub(crate) fn conflict(seq: i64, new_content: &str, stored_content: &str) -> Finding {
    Finding::Conflict {
        seq,
        detail: format!(
            "a different event arrived for this seq (content hash {}, stored {}); the first \
             copy was kept",
            short(new_content),
            short(stored_content)
        ),
    }
}

/// The (workload, stream, seq) links an Export makes judgeable: its own events and their
/// successors, and the event right after each new gap declaration. Gaps (missing seqs) are
/// left to the full pass: on arrival they are indistinguishable from events still on
/// their way.
pub(crate) fn links_to_check(
    batch: &Batch,
    inserted: &[usize],
    new_gaps: &[&GapDeclaration],
) -> BTreeSet<(String, String, i64)> {
    let mut links = BTreeSet::new();
    for e in inserted.iter().filter_map(|&i| batch.events.get(i)) {
        let Some(c) = &e.chain else { continue };
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
    links
}

/// A stream verifier that treats seqs below a truncation point as deleted on purpose.
pub(crate) fn verifier(
    workload: &str,
    stream: &str,
    mut gaps: Vec<DeclaredLoss>,
    truncation: Option<&Truncation>,
) -> StreamVerifier {
    if let Some(t) = truncation {
        gaps.retain(|g| g.to_seq >= t.before_seq);
        if t.before_seq > 1 {
            gaps.push(truncation_loss(t));
        }
    }
    StreamVerifier::new(workload, stream, gaps)
}

fn truncation_loss(t: &Truncation) -> DeclaredLoss {
    DeclaredLoss {
        from_seq: 1,
        to_seq: t.before_seq - 1,
        count: t.before_seq - 1,
        last_hash: t.last_hash.clone(),
    }
}

/// Finishes a [`verifier`]: the truncation is reported as such, not as a declared loss,
/// and the stream's ingest peers (peer, claimed namespace) are checked.
pub(crate) fn finish(
    v: StreamVerifier,
    recorded: Vec<Finding>,
    truncation: Option<&Truncation>,
    peers: &[(String, String)],
) -> StreamReport {
    let recorded = match truncation {
        Some(t) => recorded
            .into_iter()
            .filter(|f| f.seq() >= t.before_seq)
            .collect(),
        None => recorded,
    };
    let mut r = v.finish(recorded);
    if let Some(t) = truncation.filter(|t| t.before_seq > 1) {
        let loss = truncation_loss(t);
        r.declared_losses.retain(|g| *g != loss);
        r.declared_lost_events = r
            .declared_lost_events
            .saturating_sub(u64::try_from(t.before_seq - 1).unwrap_or(0));
        r.truncated_before = Some(t.before_seq);
    }
    let seq = r.first_seq.unwrap_or(0);
    let distinct: BTreeSet<&str> = peers.iter().map(|(p, _)| p.as_str()).collect();
    for (peer, namespace) in peers {
        if let Some(detail) = super::peer::mismatch(peer, namespace) {
            r.findings.push(Finding::Peer {
                seq,
                peer: peer.clone(),
                detail,
            });
        }
    }
    if distinct.len() > 1 {
        let names: Vec<&str> = distinct.iter().copied().collect();
        r.findings.push(Finding::Peer {
            seq,
            peer: names.join(", "),
            detail: "one stream was sent by more than one authenticated peer".into(),
        });
    }
    r.peers = distinct.into_iter().map(str::to_string).collect();
    if !r.findings.is_empty() {
        r.verdict = Verdict::Broken;
    }
    r
}

/// The (workload, stream, claimed namespace) triples an Export speaks for, recorded
/// with its ingest peer.
pub(crate) fn peer_claims(batch: &Batch) -> BTreeSet<(String, String, String)> {
    let namespace = |r: &serde_json::Map<String, Value>| {
        r.get("k8s.namespace.name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut out = BTreeSet::new();
    for e in &batch.events {
        if let Some(c) = &e.chain {
            out.insert((e.workload.clone(), c.stream.clone(), namespace(&e.resource)));
        }
    }
    out
}

/// A stable 64-bit key for `pg_advisory_xact_lock`, the same on every replica.
pub(crate) fn lock_key(kind: &str, parts: &[&str]) -> i64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    for p in parts {
        h.update([0u8]);
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    for (dst, src) in b.iter_mut().zip(d.iter()) {
        *dst = *src;
    }
    i64::from_be_bytes(b)
}
