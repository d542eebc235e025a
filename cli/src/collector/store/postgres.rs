//! The audit store in PostgreSQL, shared by several collector replicas.
//!
//! Same tables, keys and indexes as the SQLite file (see `sqlite.rs`), created by
//! versioned migrations (`meshguard_migrations`), applied under an advisory lock so that
//! replicas starting together migrate once.
//!
//! Events of one stream may reach any replica, in any order, more than once. Each Export
//! is one transaction that first takes a transaction-scoped advisory lock per stream (and
//! per approval id) it touches, in a fixed order: writers of one stream are serialized
//! across replicas, so the link checks on arrival see every committed neighbour and the
//! idempotent inserts (`ON CONFLICT DO NOTHING` on `(workload, stream, seq)`) decide
//! "first copy" exactly once. Exports of different streams never wait for each other.
//!
//! Attributes stay TEXT (not jsonb): the verifier re-hashes them as received, and jsonb
//! would reorder keys and normalise numbers.

use super::{
    batch_signatures, chain_event_from_columns, conflict, events_query, finish, json_column,
    links_to_check, lock_key, peer_claims, signature_from_columns, verifier, EventFilter, EventRow,
    InsertOutcome, RetainOutcome, SqlArg, StoreError, Truncation, ROW_COLUMNS, SIGNATURE_COLUMNS,
};
use crate::collector::approvals::{self, Approval, ApprovalStatus, Decision, GrantsState};
use crate::collector::event::{Batch, DecisionEvent, GapDeclaration};
use crate::collector::integrity::SignatureRow;
use crate::collector::integrity::{self, DeclaredLoss, Finding, StreamReport};
use crate::grants::Grant;
use crate::timestamp::{format_rfc3339_millis, now_nanos};
use ::postgres::types::ToSql;
use ::postgres::{Client, GenericClient, IsolationLevel, NoTls, Row, Transaction};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

/// The migrations, in order; the schema version is how many have been applied.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3];

const V1: &str = "
CREATE TABLE events (
    id                  BIGSERIAL PRIMARY KEY,
    time_unix_nano      BIGINT NOT NULL,
    received_unix_nano  BIGINT NOT NULL,
    workload            TEXT NOT NULL,
    stream              TEXT,
    seq                 BIGINT,
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
    enforced            BOOLEAN,
    policy              TEXT NOT NULL,
    rule                TEXT NOT NULL,
    reason              TEXT NOT NULL,
    mode                TEXT NOT NULL,
    bundle_version      TEXT NOT NULL,
    method              TEXT NOT NULL,
    path                TEXT NOT NULL,
    server_address      TEXT NOT NULL,
    status              BIGINT,
    request_id          TEXT NOT NULL,
    latency_us          BIGINT,
    delegation_chain    TEXT NOT NULL,
    prev_hash           TEXT,
    hash                TEXT,
    content_hash        TEXT NOT NULL,
    attributes          TEXT NOT NULL,
    resource_attributes TEXT NOT NULL,
    UNIQUE (workload, stream, seq)
);
CREATE UNIQUE INDEX events_unchained ON events (workload, content_hash) WHERE seq IS NULL;
CREATE INDEX events_time ON events (time_unix_nano);
CREATE INDEX events_agent ON events (agent, time_unix_nano);
CREATE INDEX events_action ON events (action, time_unix_nano);
CREATE INDEX events_decision ON events (decision, time_unix_nano);
CREATE INDEX events_trace ON events (trace_id text_pattern_ops, time_unix_nano);

CREATE TABLE gaps (
    id                  BIGSERIAL PRIMARY KEY,
    workload            TEXT NOT NULL,
    stream              TEXT NOT NULL,
    from_seq            BIGINT NOT NULL,
    to_seq              BIGINT NOT NULL,
    count               BIGINT NOT NULL,
    last_hash           TEXT NOT NULL,
    time_unix_nano      BIGINT NOT NULL,
    received_unix_nano  BIGINT NOT NULL,
    UNIQUE (workload, stream, from_seq, to_seq)
);

CREATE TABLE findings (
    id                  BIGSERIAL PRIMARY KEY,
    detected_unix_nano  BIGINT NOT NULL,
    workload            TEXT NOT NULL,
    stream              TEXT NOT NULL,
    seq                 BIGINT NOT NULL,
    kind                TEXT NOT NULL,
    detail              TEXT NOT NULL,
    UNIQUE (workload, stream, seq, kind)
);

CREATE TABLE truncations (
    workload            TEXT NOT NULL,
    stream              TEXT NOT NULL,
    before_seq          BIGINT NOT NULL,
    last_hash           TEXT NOT NULL,
    truncated_unix_nano BIGINT NOT NULL,
    PRIMARY KEY (workload, stream)
);

CREATE TABLE approvals (
    id                   TEXT PRIMARY KEY,
    status               TEXT NOT NULL,
    agent                TEXT NOT NULL,
    action               TEXT NOT NULL,
    resource             TEXT NOT NULL,
    reason               TEXT NOT NULL,
    policy               TEXT NOT NULL,
    rule                 TEXT NOT NULL,
    workload             TEXT NOT NULL,
    first_seen_unix_nano BIGINT NOT NULL,
    last_seen_unix_nano  BIGINT NOT NULL,
    count                BIGINT NOT NULL,
    trace_ids            TEXT NOT NULL,
    decided_unix_nano    BIGINT,
    decided_by           TEXT,
    decision_reason      TEXT,
    expires_unix_nano    BIGINT
);
CREATE INDEX approvals_status ON approvals (status, last_seen_unix_nano);

CREATE TABLE grants_state (
    id                   BIGINT PRIMARY KEY CHECK (id = 1),
    version              BIGINT NOT NULL,
    grants_sha256        TEXT NOT NULL,
    signer               TEXT NOT NULL,
    document             BYTEA NOT NULL
);
";

/// Ingest authentication: the peers of each stream.
const V2: &str = "
CREATE TABLE stream_peers (
    workload             TEXT NOT NULL,
    stream               TEXT NOT NULL,
    peer                 TEXT NOT NULL,
    namespace            TEXT NOT NULL,
    first_seen_unix_nano BIGINT NOT NULL,
    last_seen_unix_nano  BIGINT NOT NULL,
    PRIMARY KEY (workload, stream, peer, namespace)
);
";

/// Audit integrity: the checkpoints and gap declarations the filter signed (README, "Audit
/// integrity"); the keys that verify them are never stored.
const V3: &str = "
CREATE TABLE signatures (
    id                  BIGSERIAL PRIMARY KEY,
    workload            TEXT NOT NULL,
    stream              TEXT NOT NULL,
    kind                TEXT NOT NULL,
    from_seq            BIGINT NOT NULL,
    to_seq              BIGINT NOT NULL,
    count               BIGINT NOT NULL,
    hash                TEXT NOT NULL,
    signature           TEXT NOT NULL,
    received_unix_nano  BIGINT NOT NULL,
    UNIQUE (workload, stream, kind, from_seq, to_seq, count, hash, signature)
);
";

/// The schema version the database is at; an error when a newer collector migrated it
/// past what this one knows.
fn applied_version(c: &mut impl GenericClient, url: &str) -> Result<i64, StoreError> {
    let current: i64 = c
        .query_one(
            "SELECT coalesce(max(version), 0) FROM meshguard_migrations",
            &[],
        )?
        .try_get(0)?;
    if current > i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX) {
        return Err(StoreError::PgNewer {
            url: redact(url),
            version: current,
        });
    }
    Ok(current)
}

/// The URL with its password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// The `?N` placeholders of the SQL shared with SQLite, as PostgreSQL's `$N`.
fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// A connection to the shared PostgreSQL audit store.
pub struct PgStore {
    // Reads take `&self` like the SQLite store's; the driver wants `&mut`. Never
    // borrowed twice: no method calls another while holding it.
    client: RefCell<Client>,
}

impl PgStore {
    /// Connects; when `writing`, applies pending migrations, else requires the schema and
    /// makes every transaction read-only.
    pub fn open(url: &str, writing: bool) -> Result<PgStore, StoreError> {
        let client = Client::connect(url, NoTls).map_err(|source| StoreError::PgConnect {
            url: redact(url),
            source,
        })?;
        let mut store = PgStore {
            client: RefCell::new(client),
        };
        if writing {
            let mut tx = store.client.get_mut().transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&lock_key("migrate", &[])],
            )?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS meshguard_migrations (
                     version BIGINT PRIMARY KEY, applied_unix_nano BIGINT NOT NULL)",
            )?;
            let current = applied_version(&mut tx, url)?;
            for (version, sql) in (1..)
                .zip(MIGRATIONS.iter())
                .skip_while(|(v, _)| *v <= current)
            {
                tx.batch_execute(sql)?;
                tx.execute(
                    "INSERT INTO meshguard_migrations (version, applied_unix_nano) VALUES ($1, $2)",
                    &[&version, &now_nanos()],
                )?;
            }
            tx.commit()?;
        } else {
            let client = store.client.get_mut();
            let present: bool = client
                .query_one(
                    "SELECT to_regclass('meshguard_migrations') IS NOT NULL",
                    &[],
                )?
                .try_get(0)?;
            if !present {
                return Err(StoreError::PgMissing { url: redact(url) });
            }
            applied_version(client, url)?;
            client.batch_execute("SET default_transaction_read_only = on")?;
        }
        Ok(store)
    }

    /// See [`super::Store::insert_batch`].
    pub fn insert_batch(
        &mut self,
        batch: &Batch,
        received_unix_nano: i64,
    ) -> Result<InsertOutcome, StoreError> {
        let mut tx = self.client.get_mut().transaction()?;
        // One lock per stream and approval id, taken in key order so two replicas never
        // wait for each other in a cycle.
        let mut keys = BTreeSet::new();
        for e in &batch.events {
            if let Some(c) = &e.chain {
                keys.insert(lock_key("stream", &[&e.workload, &c.stream]));
            }
            if let Some(id) = approvals::requested_id(e) {
                keys.insert(lock_key("approval", &[&id]));
            }
        }
        for g in &batch.gaps {
            keys.insert(lock_key("stream", &[&g.workload, &g.stream]));
        }
        for k in keys {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&k])?;
        }
        let mut out = InsertOutcome::default();
        let insert = tx.prepare(&dollars(INSERT_EVENT))?;
        let existing = tx.prepare(
            "SELECT content_hash, hash FROM events WHERE workload=$1 AND stream=$2 AND seq=$3",
        )?;
        let mut conflicts = Vec::new();
        for (i, e) in batch.events.iter().enumerate() {
            if insert_event(&mut tx, &insert, e, received_unix_nano)? {
                out.inserted.push(i);
                continue;
            }
            out.duplicates += 1;
            if let Some(c) = &e.chain {
                let stored = tx.query_opt(&existing, &[&e.workload, &c.stream, &c.seq])?;
                if let Some(row) = stored {
                    let content_hash: String = row.try_get(0)?;
                    let hash: Option<String> = row.try_get(1)?;
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
        let insert_gap = tx.prepare(
            "INSERT INTO gaps (workload, stream, from_seq, to_seq, count, last_hash, \
             time_unix_nano, received_unix_nano) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) \
             ON CONFLICT DO NOTHING",
        )?;
        let mut new_gaps: Vec<&GapDeclaration> = Vec::new();
        for g in &batch.gaps {
            let time = i64::try_from(g.time_unix_nano).unwrap_or(i64::MAX);
            let n = tx.execute(
                &insert_gap,
                &[
                    &g.workload,
                    &g.stream,
                    &g.from_seq,
                    &g.to_seq,
                    &g.count,
                    &g.last_hash,
                    &time,
                    &received_unix_nano,
                ],
            )?;
            if n == 1 {
                out.gaps += 1;
                new_gaps.push(g);
            }
        }
        insert_signatures(&mut tx, batch, received_unix_nano)?;
        for e in out.inserted.iter().filter_map(|&i| batch.events.get(i)) {
            if let Some(notice) = record_approval(&mut tx, e, received_unix_nano)? {
                out.pending.push(notice);
            }
        }
        if let Some(peer) = &batch.peer {
            let seen = tx.prepare(
                "INSERT INTO stream_peers (workload, stream, peer, namespace, \
                 first_seen_unix_nano, last_seen_unix_nano) VALUES ($1,$2,$3,$4,$5,$5) \
                 ON CONFLICT (workload, stream, peer, namespace) DO UPDATE SET \
                 last_seen_unix_nano = GREATEST(stream_peers.last_seen_unix_nano, \
                 excluded.last_seen_unix_nano)",
            )?;
            for (workload, stream, namespace) in peer_claims(batch) {
                tx.execute(
                    &seen,
                    &[&workload, &stream, peer, &namespace, &received_unix_nano],
                )?;
            }
        }
        let mut findings = conflicts;
        findings.extend(online_checks(&mut tx, batch, &out.inserted, &new_gaps)?);
        let record = tx.prepare(
            "INSERT INTO findings (detected_unix_nano, workload, stream, seq, kind, detail) \
             VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING",
        )?;
        for (workload, stream, f) in findings {
            let detail = serde_json::to_string(&f).unwrap_or_default();
            let n = tx.execute(
                &record,
                &[
                    &received_unix_nano,
                    &workload,
                    &stream,
                    &f.seq(),
                    &f.kind(),
                    &detail,
                ],
            )?;
            if n == 1 {
                out.findings.push((workload, stream, f));
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// See [`super::Store::signatures`].
    pub fn signatures(&self) -> Result<Vec<SignatureRow>, StoreError> {
        let rows = self.client.borrow_mut().query(
            &format!(
                "SELECT {SIGNATURE_COLUMNS} FROM signatures ORDER BY workload, stream, from_seq"
            ),
            &[],
        )?;
        Ok(rows
            .iter()
            .map(signature_from_columns)
            .collect::<Result<_, _>>()?)
    }

    /// See [`super::Store::event_hash_at`].
    pub fn event_hash_at(
        &self,
        workload: &str,
        stream: &str,
        seq: i64,
    ) -> Result<Option<String>, StoreError> {
        let row = self.client.borrow_mut().query_opt(
            "SELECT hash FROM events WHERE workload=$1 AND stream=$2 AND seq=$3",
            &[&workload, &stream, &seq],
        )?;
        Ok(match row {
            Some(r) => r.try_get::<_, Option<String>>(0)?,
            None => None,
        })
    }

    /// See [`super::Store::approvals`].
    pub fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: usize,
        now_unix_nano: i64,
    ) -> Result<Vec<Approval>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let status = status.map(ApprovalStatus::as_str);
        let sql = dollars(&format!(
            "SELECT {} FROM approvals WHERE ?2::text IS NULL OR {} = ?2::text \
             ORDER BY last_seen_unix_nano DESC, id LIMIT ?3",
            approvals::columns(),
            approvals::STATUS
        ));
        let rows = self
            .client
            .borrow_mut()
            .query(&sql, &[&now_unix_nano, &status, &limit])?;
        Ok(rows
            .iter()
            .map(approval_from_row)
            .collect::<Result<_, ::postgres::Error>>()?)
    }

    /// See [`super::Store::approval`].
    pub fn approval(&self, id: &str, now_unix_nano: i64) -> Result<Option<Approval>, StoreError> {
        get_approval(&mut *self.client.borrow_mut(), id, now_unix_nano)
    }

    /// See [`super::Store::decide_approval`].
    pub fn decide_approval(
        &mut self,
        id: &str,
        decision: &Decision,
        now_unix_nano: i64,
    ) -> Result<Option<Approval>, StoreError> {
        let (status, by, reason, expires) = approvals::decision_fields(decision, now_unix_nano);
        let mut tx = self.client.get_mut().transaction()?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key("approval", &[id])],
        )?;
        let n = tx.execute(
            "UPDATE approvals SET status = $2, decided_unix_nano = $3, decided_by = $4, \
             decision_reason = $5, expires_unix_nano = $6 WHERE id = $1",
            &[
                &id,
                &status.as_str(),
                &now_unix_nano,
                &by,
                &reason,
                &expires,
            ],
        )?;
        let out = if n == 0 {
            None
        } else {
            get_approval(&mut tx, id, now_unix_nano)?
        };
        tx.commit()?;
        Ok(out)
    }

    /// See [`super::Store::active_grants`].
    pub fn active_grants(&self, now_unix_nano: i64) -> Result<Vec<Grant>, StoreError> {
        let rows = self.client.borrow_mut().query(
            "SELECT id, agent, action, resource, expires_unix_nano, coalesce(decision_reason, ''), \
             coalesce(decided_by, '') FROM approvals \
             WHERE status = 'approved' AND expires_unix_nano > $1 ORDER BY id",
            &[&now_unix_nano],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                let resource: String = r.try_get(3)?;
                Ok(Grant {
                    id: r.try_get(0)?,
                    agent: r.try_get(1)?,
                    action: r.try_get(2)?,
                    resource: (!resource.is_empty()).then_some(resource),
                    expires_at: approvals::expires_text(r.try_get(4)?),
                    reason: r.try_get(5)?,
                    approved_by: r.try_get(6)?,
                })
            })
            .collect::<Result<_, ::postgres::Error>>()?)
    }

    /// See [`super::Store::grants_state`].
    pub fn grants_state(&self) -> Result<Option<GrantsState>, StoreError> {
        let row = self.client.borrow_mut().query_opt(
            "SELECT version, grants_sha256, signer, document FROM grants_state WHERE id = 1",
            &[],
        )?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(GrantsState {
            version: u64::try_from(r.try_get::<_, i64>(0)?).unwrap_or(0),
            grants_sha256: r.try_get(1)?,
            signer: r.try_get(2)?,
            document: r.try_get(3)?,
        }))
    }

    /// See [`super::Store::save_grants_state`].
    pub fn save_grants_state(&mut self, state: &GrantsState) -> Result<bool, StoreError> {
        let version = i64::try_from(state.version).unwrap_or(i64::MAX);
        let n = self.client.get_mut().execute(
            "INSERT INTO grants_state (id, version, grants_sha256, signer, document) \
             VALUES (1, $1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
             grants_sha256 = excluded.grants_sha256, signer = excluded.signer, \
             document = excluded.document WHERE excluded.version > grants_state.version",
            &[
                &version,
                &state.grants_sha256,
                &state.signer,
                &state.document,
            ],
        )?;
        Ok(n == 1)
    }

    /// See [`super::Store::events`].
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<EventRow>, StoreError> {
        let (sql, args) = events_query(filter, |n| format!("${n}"), ("LIKE", '%'));
        let args: Vec<Box<dyn ToSql + Sync>> = args
            .into_iter()
            .map(|a| -> Box<dyn ToSql + Sync> {
                match a {
                    SqlArg::Text(t) => Box::new(t),
                    SqlArg::Int(i) => Box::new(i),
                }
            })
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|b| &**b).collect();
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction()?;
        let portal = tx.bind(sql.as_str(), &params)?;
        let mut out = Vec::new();
        'fetch: while out.len() < filter.limit {
            let rows = tx.query_portal(&portal, 500)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let ev = event_row(row)?;
                if filter
                    .action
                    .as_ref()
                    .is_some_and(|p| !p.matches(&ev.action))
                {
                    continue;
                }
                out.push(ev);
                if out.len() >= filter.limit {
                    break 'fetch;
                }
            }
        }
        tx.commit()?;
        out.reverse();
        Ok(out)
    }

    /// See [`super::Store::traces_matching`].
    pub fn traces_matching(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
        let rows = self.client.borrow_mut().query(
            "SELECT DISTINCT trace_id FROM events WHERE trace_id LIKE $1 ORDER BY trace_id LIMIT $2",
            &[
                &format!("{prefix}%"),
                &i64::try_from(max).unwrap_or(i64::MAX),
            ],
        )?;
        Ok(rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, ::postgres::Error>>()?)
    }

    /// See [`super::Store::trace`].
    pub fn trace(&self, trace_id: &str) -> Result<Vec<EventRow>, StoreError> {
        let rows = self.client.borrow_mut().query(
            &format!(
                "SELECT {ROW_COLUMNS} FROM events WHERE trace_id = $1 ORDER BY time_unix_nano, id"
            ),
            &[&trace_id],
        )?;
        Ok(rows
            .iter()
            .map(event_row)
            .collect::<Result<_, ::postgres::Error>>()?)
    }

    /// See [`super::Store::count_events`].
    pub fn count_events(&self) -> Result<i64, StoreError> {
        Ok(self
            .client
            .borrow_mut()
            .query_one("SELECT count(*) FROM events", &[])?
            .try_get(0)?)
    }

    /// See [`super::Store::verify_all`]: one REPEATABLE READ snapshot, so replicas writing
    /// meanwhile cannot make the pass see half an Export.
    pub fn verify_all(&mut self) -> Result<Vec<StreamReport>, StoreError> {
        let mut tx = self
            .client
            .get_mut()
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let streams: Vec<(String, String)> = tx
            .query(
                "SELECT workload, stream FROM events WHERE stream IS NOT NULL AND seq IS NOT NULL
                 UNION SELECT workload, stream FROM gaps
                 UNION SELECT workload, stream FROM truncations ORDER BY 1, 2",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, ::postgres::Error>>()?;
        let gaps_stmt = tx.prepare(
            "SELECT from_seq, to_seq, count, last_hash FROM gaps WHERE workload=$1 AND stream=$2",
        )?;
        let events_stmt = tx.prepare(
            "SELECT seq, time_unix_nano, trace_id, prev_hash, hash, attributes FROM events
             WHERE workload=$1 AND stream=$2 AND seq IS NOT NULL AND seq >= $3 ORDER BY seq",
        )?;
        let conflicts_stmt = tx.prepare(
            "SELECT detail FROM findings WHERE workload=$1 AND stream=$2 AND kind='conflict'",
        )?;
        let truncation_stmt = tx.prepare(
            "SELECT before_seq, last_hash FROM truncations WHERE workload=$1 AND stream=$2",
        )?;
        let peers_stmt = tx.prepare(
            "SELECT peer, namespace FROM stream_peers WHERE workload=$1 AND stream=$2 ORDER BY 1, 2",
        )?;
        let mut reports = Vec::new();
        for (workload, stream) in &streams {
            let gaps: Vec<DeclaredLoss> = tx
                .query(&gaps_stmt, &[workload, stream])?
                .iter()
                .map(|r| {
                    Ok(DeclaredLoss {
                        from_seq: r.try_get(0)?,
                        to_seq: r.try_get(1)?,
                        count: r.try_get(2)?,
                        last_hash: r.try_get(3)?,
                    })
                })
                .collect::<Result<_, ::postgres::Error>>()?;
            let truncation = match tx.query_opt(&truncation_stmt, &[workload, stream])? {
                Some(r) => Some(Truncation {
                    before_seq: r.try_get(0)?,
                    last_hash: r.try_get(1)?,
                }),
                None => None,
            };
            let mut verifier = verifier(workload, stream, gaps, truncation.as_ref());
            let from = truncation.as_ref().map_or(i64::MIN, |t| t.before_seq);
            // A portal keeps memory flat on long streams.
            let portal = tx.bind(&events_stmt, &[workload, stream, &from])?;
            loop {
                let rows = tx.query_portal(&portal, 1000)?;
                if rows.is_empty() {
                    break;
                }
                for r in &rows {
                    verifier.push(&chain_event_from_columns(r)?);
                }
            }
            let recorded: Vec<Finding> = tx
                .query(&conflicts_stmt, &[workload, stream])?
                .iter()
                .filter_map(|r| {
                    r.try_get::<_, &str>(0)
                        .ok()
                        .and_then(|d| serde_json::from_str(d).ok())
                })
                .collect();
            let peers: Vec<(String, String)> = tx
                .query(&peers_stmt, &[workload, stream])?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, ::postgres::Error>>()?;
            reports.push(finish(verifier, recorded, truncation.as_ref(), &peers));
        }
        let unchained = tx.query(
            "SELECT workload, count(*) FROM events WHERE seq IS NULL GROUP BY workload ORDER BY 1",
            &[],
        )?;
        for r in &unchained {
            let workload: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            reports.push(integrity::unchained_report(
                &workload,
                u64::try_from(n).unwrap_or(0),
            ));
        }
        tx.commit()?;
        Ok(reports)
    }

    /// See [`super::Store::retain`]. One replica at a time (a session advisory lock);
    /// the others skip the pass.
    pub fn retain(
        &mut self,
        cutoff_unix_nano: i64,
        batch: usize,
    ) -> Result<RetainOutcome, StoreError> {
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let key = lock_key("retention", &[]);
        let mut out = RetainOutcome::default();
        let locked: bool = self
            .client
            .get_mut()
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
            .try_get(0)?;
        if !locked {
            return Ok(out);
        }
        let result = self.retain_locked(cutoff_unix_nano, batch, &mut out);
        self.client
            .get_mut()
            .execute("SELECT pg_advisory_unlock($1)", &[&key])?;
        result.map(|()| out)
    }

    fn retain_locked(
        &mut self,
        cutoff_unix_nano: i64,
        batch: i64,
        out: &mut RetainOutcome,
    ) -> Result<(), StoreError> {
        let mut tx = self.client.get_mut().transaction()?;
        let cuts = tx.query(
            "SELECT e.workload, e.stream, e.seq, e.hash FROM events e
             JOIN (SELECT workload, stream, max(seq) AS seq FROM events
                   WHERE seq IS NOT NULL AND time_unix_nano < $1 GROUP BY 1, 2) m
             ON e.workload = m.workload AND e.stream = m.stream AND e.seq = m.seq",
            &[&cutoff_unix_nano],
        )?;
        for r in &cuts {
            let workload: String = r.try_get(0)?;
            let stream: String = r.try_get(1)?;
            let seq: i64 = r.try_get(2)?;
            let hash: Option<String> = r.try_get(3)?;
            // The stream's writers must not interleave with moving its start.
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&lock_key("stream", &[&workload, &stream])],
            )?;
            let n = tx.execute(
                "INSERT INTO truncations (workload, stream, before_seq, last_hash, \
                 truncated_unix_nano) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (workload, stream) DO UPDATE SET before_seq = excluded.before_seq, \
                 last_hash = excluded.last_hash, truncated_unix_nano = excluded.truncated_unix_nano \
                 WHERE excluded.before_seq > truncations.before_seq",
                &[
                    &workload,
                    &stream,
                    &seq.saturating_add(1),
                    &hash.unwrap_or_default(),
                    &now_nanos(),
                ],
            )?;
            out.streams += n;
        }
        tx.execute(
            "DELETE FROM gaps USING truncations t WHERE t.workload = gaps.workload \
             AND t.stream = gaps.stream AND gaps.to_seq < t.before_seq",
            &[],
        )?;
        tx.commit()?;
        loop {
            let n = self.client.get_mut().execute(
                "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE \
                 (e.seq IS NULL AND e.time_unix_nano < $1) OR EXISTS (SELECT 1 FROM \
                 truncations t WHERE t.workload = e.workload AND t.stream = e.stream AND \
                 e.seq < t.before_seq) LIMIT $2)",
                &[&cutoff_unix_nano, &batch],
            )?;
            out.events += n;
            if i64::try_from(n).unwrap_or(0) < batch {
                break;
            }
        }
        Ok(())
    }
}

const INSERT_EVENT: &str = "INSERT INTO events (
    time_unix_nano, received_unix_nano, workload, stream, seq, trace_id, span_id, severity, body,
    agent, tier, action, resource, decision, effect, enforced, policy, rule, reason, mode,
    bundle_version, method, path, server_address, status, request_id, latency_us,
    delegation_chain, prev_hash, hash, content_hash, attributes, resource_attributes
) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,
    ?24,?25,?26,?27,?28,?29,?30,?31,?32,?33) ON CONFLICT DO NOTHING";

fn insert_event(
    tx: &mut Transaction<'_>,
    stmt: &::postgres::Statement,
    e: &DecisionEvent,
    received_unix_nano: i64,
) -> Result<bool, StoreError> {
    let chain = e.chain.as_ref();
    let delegation = e
        .attributes
        .get("meshguard.delegation.chain")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()))
        .to_string();
    let time = i64::try_from(e.time_unix_nano).unwrap_or(i64::MAX);
    let stream = chain.map(|c| c.stream.as_str());
    let seq = chain.map(|c| c.seq);
    let prev_hash = chain.map(|c| c.prev_hash.as_str());
    let hash = chain.map(|c| c.hash.as_str());
    let text = |k: &str| e.text(k);
    let (agent, tier, action, resource) = (
        text("meshguard.agent.id"),
        text("meshguard.trust_tier"),
        text("meshguard.action"),
        text("meshguard.resource"),
    );
    let (decision, effect, policy, rule) = (
        text("meshguard.decision"),
        text("meshguard.effect"),
        text("meshguard.policy"),
        text("meshguard.rule"),
    );
    let (reason, mode, bundle, method) = (
        text("meshguard.reason"),
        text("meshguard.mode"),
        text("meshguard.bundle.version"),
        text("http.request.method"),
    );
    let (path, server, request_id) = (
        text("url.path"),
        text("server.address"),
        text("meshguard.request_id"),
    );
    let enforced = e.flag("meshguard.enforced");
    let status = e.int("http.response.status_code");
    let latency = e.int("meshguard.latency_us");
    let attributes = Value::Object(e.attributes.clone()).to_string();
    let resource_attributes = Value::Object(e.resource.clone()).to_string();
    let n = tx.execute(
        stmt,
        &[
            &time,
            &received_unix_nano,
            &e.workload,
            &stream,
            &seq,
            &e.trace_id,
            &e.span_id,
            &e.severity,
            &e.body,
            &agent,
            &tier,
            &action,
            &resource,
            &decision,
            &effect,
            &enforced,
            &policy,
            &rule,
            &reason,
            &mode,
            &bundle,
            &method,
            &path,
            &server,
            &status,
            &request_id,
            &latency,
            &delegation,
            &prev_hash,
            &hash,
            &e.content_hash,
            &attributes,
            &resource_attributes,
        ],
    )?;
    Ok(n == 1)
}

/// Same checks as the SQLite store's, inside the Export's transaction (whose advisory
/// locks make every committed neighbour of these streams visible).
fn online_checks(
    tx: &mut Transaction<'_>,
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
    // One round trip per stream for all of this Export's links, not three per link.
    let mut by_stream: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for (workload, stream, seq) in links_to_check(batch, inserted, new_gaps) {
        by_stream.entry((workload, stream)).or_default().push(seq);
    }
    let events_q = tx.prepare(
        "SELECT seq, prev_hash, hash FROM events WHERE workload=$1 AND stream=$2 AND seq = ANY($3)",
    )?;
    let gaps_q = tx.prepare(
        "SELECT to_seq, last_hash FROM gaps WHERE workload=$1 AND stream=$2 AND to_seq = ANY($3)",
    )?;
    for ((workload, stream), seqs) in by_stream {
        let mut wanted: Vec<i64> = seqs.iter().flat_map(|&q| [q, q - 1]).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut stored: BTreeMap<i64, (Option<String>, Option<String>)> = BTreeMap::new();
        for r in tx.query(&events_q, &[&workload, &stream, &wanted])? {
            stored.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?));
        }
        let mut gaps: Vec<(i64, String)> = Vec::new();
        for r in tx.query(&gaps_q, &[&workload, &stream, &wanted])? {
            gaps.push((r.try_get(0)?, r.try_get(1)?));
        }
        for seq in seqs {
            let Some((prev_hash, _)) = stored.get(&seq) else {
                continue;
            };
            let before = seq - 1;
            let predecessor = stored.get(&before).and_then(|(_, h)| h.as_deref());
            let gap_hashes: Vec<String> = gaps
                .iter()
                .filter(|(to, _)| *to == before)
                .map(|(_, h)| h.clone())
                .collect();
            let expected = integrity::expected_prev(seq, predecessor, &gap_hashes);
            if let Some(f) =
                integrity::check_link(seq, prev_hash.as_deref().unwrap_or(""), expected)
            {
                findings.push((workload.clone(), stream.clone(), f));
            }
        }
    }
    Ok(findings)
}

/// `approvals::record` for PostgreSQL; the caller holds the approval id's lock.
fn record_approval(
    tx: &mut Transaction<'_>,
    e: &DecisionEvent,
    received_unix_nano: i64,
) -> Result<Option<approvals::PendingNotice>, StoreError> {
    let Some(id) = approvals::requested_id(e) else {
        return Ok(None);
    };
    let time = i64::try_from(e.time_unix_nano).unwrap_or(i64::MAX);
    let reason = e.text("meshguard.reason");
    let policy = e.text("meshguard.policy");
    let rule = e.text("meshguard.rule");
    let existing = tx.query_opt(
        "SELECT status, expires_unix_nano, trace_ids FROM approvals WHERE id = $1",
        &[&id],
    )?;
    match existing {
        None => {
            tx.execute(
                "INSERT INTO approvals (id, status, agent, action, resource, reason, policy, \
                 rule, workload, first_seen_unix_nano, last_seen_unix_nano, count, trace_ids) \
                 VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $9, $9, 1, $10)",
                &[
                    &id,
                    &e.text("meshguard.agent.id"),
                    &e.text("meshguard.action"),
                    &e.text("meshguard.resource"),
                    &reason,
                    &policy,
                    &rule,
                    &e.workload,
                    &time,
                    &approvals::push_trace("[]", &e.trace_id),
                ],
            )?;
            Ok(Some(approvals::pending_notice(e, &id, time)))
        }
        Some(row) => {
            let status: String = row.try_get(0)?;
            let expires: Option<i64> = row.try_get(1)?;
            let traces: String = row.try_get(2)?;
            let reopen = status == ApprovalStatus::Approved.as_str()
                && expires.is_some_and(|x| x <= received_unix_nano);
            tx.execute(
                "UPDATE approvals SET count = count + 1, \
                 first_seen_unix_nano = LEAST(first_seen_unix_nano, $2), \
                 last_seen_unix_nano = GREATEST(last_seen_unix_nano, $2), \
                 reason = $3, policy = $4, rule = $5, workload = $6, trace_ids = $7 WHERE id = $1",
                &[
                    &id,
                    &time,
                    &reason,
                    &policy,
                    &rule,
                    &e.workload,
                    &approvals::push_trace(&traces, &e.trace_id),
                ],
            )?;
            if !reopen {
                return Ok(None);
            }
            tx.execute(
                "UPDATE approvals SET status = 'pending', decided_unix_nano = NULL, \
                 decided_by = NULL, decision_reason = NULL, expires_unix_nano = NULL WHERE id = $1",
                &[&id],
            )?;
            Ok(Some(approvals::pending_notice(e, &id, time)))
        }
    }
}

fn get_approval(
    client: &mut impl ::postgres::GenericClient,
    id: &str,
    now_unix_nano: i64,
) -> Result<Option<Approval>, StoreError> {
    let sql = dollars(&format!(
        "SELECT {} FROM approvals WHERE id = ?2",
        approvals::columns()
    ));
    match client.query_opt(&sql, &[&now_unix_nano, &id])? {
        Some(r) => Ok(Some(approval_from_row(&r)?)),
        None => Ok(None),
    }
}

fn approval_from_row(r: &Row) -> Result<Approval, ::postgres::Error> {
    approvals::from_columns(r)
}

fn event_row(r: &Row) -> Result<EventRow, ::postgres::Error> {
    let time_unix_nano: i64 = r.try_get(0)?;
    let chain: String = r.try_get(8)?;
    Ok(EventRow {
        time: format_rfc3339_millis(time_unix_nano),
        time_unix_nano,
        workload: r.try_get(1)?,
        stream: r.try_get(2)?,
        seq: r.try_get(3)?,
        trace_id: r.try_get(4)?,
        span_id: r.try_get(5)?,
        agent: r.try_get(6)?,
        trust_tier: r.try_get(7)?,
        delegation_chain: serde_json::from_str(&chain).unwrap_or_default(),
        action: r.try_get(9)?,
        resource: r.try_get(10)?,
        decision: r.try_get(11)?,
        effect: r.try_get(12)?,
        enforced: r.try_get(13)?,
        policy: r.try_get(14)?,
        rule: r.try_get(15)?,
        reason: r.try_get(16)?,
        mode: r.try_get(17)?,
        bundle_version: r.try_get(18)?,
        method: r.try_get(19)?,
        path: r.try_get(20)?,
        server_address: r.try_get(21)?,
        status: r.try_get(22)?,
        request_id: r.try_get(23)?,
        latency_us: r.try_get(24)?,
        prev_hash: r.try_get(25)?,
        hash: r.try_get(26)?,
        attributes: json_column(r.try_get(27)?),
        resource_attributes: json_column(r.try_get(28)?),
    })
}

/// The checkpoints and the signed gap declarations of a batch (retries are ignored), as
/// the SQLite store keeps them.
fn insert_signatures(
    tx: &mut Transaction<'_>,
    batch: &Batch,
    received_unix_nano: i64,
) -> Result<(), StoreError> {
    let insert = tx.prepare(
        "INSERT INTO signatures (workload, stream, kind, from_seq, to_seq, count, hash, \
         signature, received_unix_nano) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) \
         ON CONFLICT DO NOTHING",
    )?;
    for r in batch_signatures(batch) {
        tx.execute(
            &insert,
            &[
                &r.workload,
                &r.stream,
                &r.kind.as_str(),
                &r.from_seq,
                &r.to_seq,
                &r.count,
                &r.hash,
                &r.signature,
                &received_unix_nano,
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_and_placeholders_converted() {
        assert_eq!(
            redact("postgres://mg:secret@db:5432/audit"),
            "postgres://mg:***@db:5432/audit"
        );
        assert_eq!(redact("postgres://db/audit"), "postgres://db/audit");
        assert_eq!(
            dollars("a = ?1 AND b = ?12 OR c = ?"),
            "a = $1 AND b = $12 OR c = ?"
        );
    }
}
