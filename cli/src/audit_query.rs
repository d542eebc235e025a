//! `meshguard audit query|trace|verify`: read the collector's database.
//!
//! Filters are parsed here once and shared with the collector's JSON API, so the command
//! line and `GET /v1/events` accept exactly the same values.

use crate::collector::event::Checkpoint;
use crate::collector::integrity::{
    authenticate, missing_stream_report, SignatureKind, SignatureRow, StreamReport, TrustedKeys,
    Verdict,
};
use crate::collector::store::{EventFilter, EventRow, Location, Store, StoreError};
use crate::timestamp::{self, TimeError};
use clap::{Subcommand, ValueEnum};
use meshguard::glob::{GlobError, Pattern};
use serde_json::json;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Events returned when no limit is given.
pub const DEFAULT_LIMIT: usize = 100;
/// The most events one query may return.
pub const MAX_LIMIT: usize = 100_000;
/// Reasons longer than this are truncated in tables.
const REASON_WIDTH: usize = 48;

/// `meshguard audit ...`
#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List decisions, newest last (the newest --limit that match).
    Query(QueryArgs),
    /// Show the calls of one trace in time order, with each call's delegation chain.
    Trace(TraceArgs),
    /// Verify every stream's hash chain; exits 0 when all are intact, 1 otherwise.
    Verify(VerifyArgs),
}

/// Output format of `query` and `trace`.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document.
    Json,
    /// One JSON object per line.
    Jsonl,
}

/// Output format of `verify`.
#[derive(Clone, Copy, ValueEnum)]
pub enum VerifyFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document.
    Json,
}

/// A decision value.
#[derive(Clone, Copy, ValueEnum)]
pub enum Decision {
    /// Allowed.
    #[value(name = "allow")]
    Allow,
    /// Denied.
    #[value(name = "deny")]
    Deny,
    /// Denied pending approval.
    #[value(name = "require_approval")]
    RequireApproval,
    /// Would have been denied (audit mode).
    #[value(name = "would_deny")]
    WouldDeny,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::RequireApproval => "require_approval",
            Decision::WouldDeny => "would_deny",
        }
    }
}

#[derive(clap::Args)]
struct DbArg {
    /// The collector's SQLite database.
    #[arg(long, default_value = "meshguard-audit.db")]
    db: PathBuf,
    /// The collector's PostgreSQL store (postgres://user:password@host:port/db); replaces
    /// --db.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
}

impl DbArg {
    fn open(&self) -> Result<Store, StoreError> {
        Store::open_for_reading(Location::from_flags(&self.db, self.store.as_deref())?)
    }
}

#[derive(clap::Args)]
struct QueryArgs {
    #[command(flatten)]
    db: DbArg,
    /// Calling agent (exact).
    #[arg(long)]
    agent: Option<String>,
    /// Action glob, as in policies: `read:*`, `*:email`, `*`.
    #[arg(long, value_name = "GLOB")]
    action: Option<String>,
    /// Decision.
    #[arg(long, value_enum)]
    decision: Option<Decision>,
    /// Earliest time: an age (15m, 1h, 7d) or RFC 3339 (UTC when no offset).
    #[arg(long, value_name = "AGE|RFC3339")]
    since: Option<String>,
    /// Latest time (exclusive): an age or RFC 3339.
    #[arg(long, value_name = "AGE|RFC3339")]
    until: Option<String>,
    /// Trace id, or a prefix of one (hex).
    #[arg(long, value_name = "ID")]
    trace: Option<String>,
    /// Most events shown (the newest).
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(clap::Args)]
struct TraceArgs {
    /// Trace id (32 hex digits), or a unique prefix of one (as `audit query` shows).
    trace_id: String,
    #[command(flatten)]
    db: DbArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    db: DbArg,
    /// Also check who wrote each stream: the workloads' Ed25519 public keys, one
    /// `<workload> <base64 public key>` per line (README, "Audit integrity"). Streams
    /// without a key or without a checkpoint signed by it are reported unauthenticated;
    /// rewritten events and unsigned gap declarations are reported.
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,
    /// The checkpoint log the collector keeps outside the store (`meshguard collector
    /// --checkpoint-log`): reveals a stream cut off after its last stored checkpoint.
    #[arg(long, value_name = "FILE", requires = "keys")]
    checkpoints: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: VerifyFormat,
}

/// Why an audit command could not answer.
#[derive(Debug)]
pub enum QueryError {
    /// The action glob does not compile.
    Action(GlobError),
    /// A time flag or parameter could not be parsed.
    Time {
        /// Which flag or parameter.
        field: &'static str,
        /// Why.
        source: TimeError,
    },
    /// Unknown decision value.
    Decision(String),
    /// A trace id that is not hex.
    TraceId(String),
    /// A limit that is not a number in range.
    Limit(String),
    /// A trace prefix that matches several traces.
    AmbiguousTrace {
        /// The prefix given.
        prefix: String,
        /// Some of the traces it matches.
        candidates: Vec<String>,
    },
    /// No events carry this trace id.
    NoSuchTrace(String),
    /// The database could not be read.
    Store(StoreError),
    /// Output could not be written.
    Output(std::io::Error),
    /// The keys file or checkpoint log could not be read or parsed.
    Integrity {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Action(e) => write!(f, "action: {e}"),
            QueryError::Time { field, source } => write!(f, "{field}: {source}"),
            QueryError::Decision(d) => write!(
                f,
                "decision {d:?} is not one of allow, deny, require_approval, would_deny"
            ),
            QueryError::TraceId(t) => write!(
                f,
                "trace id {t:?} is not hex (give the 32 hex digits of a W3C trace id, or a prefix)"
            ),
            QueryError::Limit(l) => write!(f, "limit {l:?} must be a number from 1 to {MAX_LIMIT}"),
            QueryError::AmbiguousTrace { prefix, candidates } => write!(
                f,
                "trace prefix {prefix:?} matches several traces ({}); give more digits",
                candidates.join(", ")
            ),
            QueryError::NoSuchTrace(t) => write!(f, "no events with trace id {t}"),
            QueryError::Store(e) => e.fmt(f),
            QueryError::Output(e) => write!(f, "cannot write output: {e}"),
            QueryError::Integrity { path, detail } => write!(f, "{}: {detail}", path.display()),
        }
    }
}

impl std::error::Error for QueryError {}

impl From<StoreError> for QueryError {
    fn from(e: StoreError) -> Self {
        QueryError::Store(e)
    }
}

impl From<std::io::Error> for QueryError {
    fn from(e: std::io::Error) -> Self {
        QueryError::Output(e)
    }
}

/// A query as typed (command line or URL parameters), before parsing.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct FilterText {
    /// Exact agent.
    pub agent: Option<String>,
    /// Action glob.
    pub action: Option<String>,
    /// Decision.
    pub decision: Option<String>,
    /// Age or RFC 3339.
    pub since: Option<String>,
    /// Age or RFC 3339.
    pub until: Option<String>,
    /// Trace id or prefix.
    pub trace: Option<String>,
    /// Number of events.
    pub limit: Option<String>,
}

/// Normalizes a trace id or prefix to lowercase hex (dashes allowed, as in UUID-shaped
/// request ids).
pub fn parse_trace_id(input: &str) -> Result<String, QueryError> {
    let id: String = input
        .trim()
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(QueryError::TraceId(input.to_string()));
    }
    Ok(id)
}

impl FilterText {
    /// Parses every field; `now` anchors ages such as `1h`.
    pub fn parse(&self, now: i64) -> Result<EventFilter, QueryError> {
        let action = non_empty(&self.action)
            .map(Pattern::new)
            .transpose()
            .map_err(QueryError::Action)?;
        let decision = match non_empty(&self.decision) {
            None => None,
            Some(d) => Some(
                Decision::from_str(d, false)
                    .map(|d| d.as_str().to_string())
                    .map_err(|_| QueryError::Decision(d.to_string()))?,
            ),
        };
        let time = |field: &'static str, v: Option<&str>| {
            v.map(|s| timestamp::parse_instant(s, now))
                .transpose()
                .map_err(|source| QueryError::Time { field, source })
        };
        let limit = match non_empty(&self.limit) {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| QueryError::Limit(l.to_string()))?,
        };
        Ok(EventFilter {
            agent: non_empty(&self.agent).map(str::to_string),
            action,
            decision,
            since: time("since", non_empty(&self.since))?,
            until: time("until", non_empty(&self.until))?,
            trace: non_empty(&self.trace).map(parse_trace_id).transpose()?,
            limit,
        })
    }
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Resolves a trace id or unique prefix to the full id stored.
pub fn resolve_trace(store: &Store, input: &str) -> Result<String, QueryError> {
    let prefix = parse_trace_id(input)?;
    let mut found = store.traces_matching(&prefix, 5)?;
    match found.len() {
        0 => Err(QueryError::NoSuchTrace(prefix)),
        1 => Ok(found.remove(0)),
        _ => Err(QueryError::AmbiguousTrace {
            prefix,
            candidates: found,
        }),
    }
}

/// Runs an audit subcommand.
pub fn run(args: AuditArgs) -> Result<ExitCode, QueryError> {
    match args.command {
        AuditCommand::Query(a) => query(a),
        AuditCommand::Trace(a) => trace(a),
        AuditCommand::Verify(a) => verify(a),
    }
}

fn query(a: QueryArgs) -> Result<ExitCode, QueryError> {
    let text = FilterText {
        agent: a.agent,
        action: a.action,
        decision: a.decision.map(|d| d.as_str().to_string()),
        since: a.since,
        until: a.until,
        trace: a.trace,
        limit: Some(a.limit.to_string()),
    };
    let filter = text.parse(timestamp::now_nanos())?;
    let store = a.db.open()?;
    let events = store.events(&filter)?;
    let mut out = std::io::stdout().lock();
    match a.format {
        Format::Table => out.write_all(events_table(&events).as_bytes())?,
        Format::Json => writeln!(out, "{}", pretty(&json!(events)))?,
        Format::Jsonl => {
            for e in &events {
                writeln!(out, "{}", json!(e))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn trace(a: TraceArgs) -> Result<ExitCode, QueryError> {
    let store = a.db.open()?;
    let id = match resolve_trace(&store, &a.trace_id) {
        Err(QueryError::NoSuchTrace(t)) => {
            eprintln!("meshguard: no events with trace id {t}");
            return Ok(ExitCode::from(1));
        }
        other => other?,
    };
    let events = store.trace(&id)?;
    let mut out = std::io::stdout().lock();
    match a.format {
        Format::Table => out.write_all(trace_table(&id, &events).as_bytes())?,
        Format::Json => writeln!(
            out,
            "{}",
            pretty(&json!({ "trace_id": id, "events": events }))
        )?,
        Format::Jsonl => {
            for e in &events {
                writeln!(out, "{}", json!(e))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs) -> Result<ExitCode, QueryError> {
    let mut store = a.db.open()?;
    let mut reports = store.verify_all()?;
    if let Some(keys_path) = &a.keys {
        let bad = |path: &PathBuf, detail: String| QueryError::Integrity {
            path: path.clone(),
            detail,
        };
        let text = std::fs::read_to_string(keys_path).map_err(|e| bad(keys_path, e.to_string()))?;
        let keys = TrustedKeys::parse(&text).map_err(|e| bad(keys_path, e))?;
        let outside = match &a.checkpoints {
            Some(p) => read_checkpoint_log(p).map_err(|e| bad(p, e))?,
            None => Vec::new(),
        };
        authenticate_all(&store, &mut reports, &keys, &outside)?;
    }
    let intact = all_intact(&reports);
    let mut out = std::io::stdout().lock();
    match a.format {
        VerifyFormat::Table => out.write_all(verify_table(&reports).as_bytes())?,
        VerifyFormat::Json => writeln!(out, "{}", pretty(&verify_json(&reports)))?,
    }
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Reads the collector's checkpoint log (JSON lines of checkpoints).
pub fn read_checkpoint_log(path: &std::path::Path) -> Result<Vec<SignatureRow>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let c: Checkpoint = serde_json::from_str(line)
            .map_err(|e| format!("line {}: not a checkpoint: {e}", n + 1))?;
        out.push(SignatureRow {
            workload: c.workload,
            stream: c.stream,
            kind: SignatureKind::Checkpoint,
            from_seq: c.seq,
            to_seq: c.seq,
            count: 0,
            hash: c.hash,
            signature: c.signature,
        });
    }
    Ok(out)
}

/// Adds the signature checks to every chained stream's report, plus a report for each
/// stream the checkpoint log knows and the store no longer holds.
pub fn authenticate_all(
    store: &Store,
    reports: &mut Vec<StreamReport>,
    keys: &TrustedKeys,
    outside: &[SignatureRow],
) -> Result<(), QueryError> {
    let stored = store.signatures()?;
    for (workload, stream) in outside
        .iter()
        .map(|c| (c.workload.as_str(), c.stream.as_str()))
        .collect::<std::collections::BTreeSet<_>>()
    {
        if !reports
            .iter()
            .any(|r| r.workload == workload && r.stream.as_deref() == Some(stream))
        {
            reports.push(missing_stream_report(workload, stream));
        }
    }
    for r in reports.iter_mut() {
        let Some(stream) = r.stream.clone() else {
            continue;
        };
        let mine = |s: &&SignatureRow| s.workload == r.workload && s.stream == stream;
        let in_store: Vec<&SignatureRow> = stored.iter().filter(mine).collect();
        let in_log: Vec<&SignatureRow> = outside.iter().filter(mine).collect();
        let workload = r.workload.clone();
        let mut failure = None;
        let mut lookup = |seq: i64| match store.event_hash_at(&workload, &stream, seq) {
            Ok(h) => h,
            Err(e) => {
                failure = Some(e);
                None
            }
        };
        authenticate(r, keys, &in_store, &in_log, &mut lookup);
        if let Some(e) = failure {
            return Err(e.into());
        }
    }
    Ok(())
}

/// Whether every stream is intact (declared losses allowed; unchained events are not).
pub fn all_intact(reports: &[StreamReport]) -> bool {
    reports.iter().all(|r| r.verdict == Verdict::Intact)
}

/// The JSON of a verification (also served as `GET /v1/integrity`).
pub fn verify_json(reports: &[StreamReport]) -> serde_json::Value {
    json!({ "intact": all_intact(reports), "streams": reports })
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn policy_rule(e: &EventRow) -> String {
    match (e.policy.is_empty(), e.rule.is_empty()) {
        (true, true) => "-".into(),
        (false, true) => e.policy.clone(),
        (true, false) => format!("-/{}", e.rule),
        (false, false) => format!("{}/{}", e.policy, e.rule),
    }
}

/// Aligned columns; the last column is not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            if i + 1 < widths.len() {
                l.extend(std::iter::repeat_n(
                    ' ',
                    w.saturating_sub(cell.chars().count()),
                ));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// The `audit query` table.
pub fn events_table(events: &[EventRow]) -> String {
    if events.is_empty() {
        return "no matching events\n".into();
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.time.clone(),
                dash(&e.trace_id.chars().take(8).collect::<String>()),
                dash(&e.agent),
                dash(&e.action),
                dash(&e.resource),
                dash(&e.decision),
                policy_rule(e),
                truncate(&dash(&e.reason), REASON_WIDTH),
            ]
        })
        .collect();
    table(
        &[
            "TIME",
            "TRACE",
            "AGENT",
            "ACTION",
            "RESOURCE",
            "DECISION",
            "POLICY/RULE",
            "REASON",
        ],
        &rows,
    )
}

/// The `audit trace` table.
pub fn trace_table(trace_id: &str, events: &[EventRow]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let chain = if e.delegation_chain.is_empty() {
                dash(&e.agent)
            } else {
                e.delegation_chain.join(" > ")
            };
            vec![
                e.time.clone(),
                chain,
                dash(&e.action),
                dash(&e.resource),
                dash(&e.decision),
                policy_rule(e),
                truncate(&dash(&e.reason), REASON_WIDTH),
            ]
        })
        .collect();
    let mut out = format!("trace {trace_id}: {} call(s)\n", events.len());
    out.push_str(&table(
        &[
            "TIME",
            "CHAIN",
            "ACTION",
            "RESOURCE",
            "DECISION",
            "POLICY/RULE",
            "REASON",
        ],
        &rows,
    ));
    out
}

/// The `audit verify` table, then one line per finding and declared loss.
pub fn verify_table(reports: &[StreamReport]) -> String {
    if reports.is_empty() {
        return "no audit streams yet: nothing to verify\n".into();
    }
    let seqs = |r: &StreamReport| match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!("{a}..{b}"),
        _ => "-".into(),
    };
    let count =
        |r: &StreamReport, kind: &str| r.findings.iter().filter(|f| f.kind() == kind).count();
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                dash(&r.workload),
                r.stream.clone().unwrap_or_else(|| "(unchained)".into()),
                r.events.to_string(),
                seqs(r),
                r.declared_lost_events.to_string(),
                count(r, "altered").to_string(),
                count(r, "break").to_string(),
                count(r, "gap").to_string(),
                count(r, "conflict").to_string(),
                r.findings
                    .iter()
                    .filter(|f| {
                        matches!(
                            f.kind(),
                            "unauthenticated"
                                | "bad_signature"
                                | "rewritten"
                                | "unsigned"
                                | "unsigned_gap"
                                | "truncated"
                        )
                    })
                    .count()
                    .to_string(),
                r.verdict.as_str().to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "WORKLOAD",
            "STREAM",
            "EVENTS",
            "SEQ",
            "DECLARED-LOSS",
            "ALTERED",
            "BREAK",
            "GAP",
            "CONFLICT",
            "AUTH",
            "VERDICT",
        ],
        &rows,
    );
    for r in reports {
        let name = format!(
            "{}/{}",
            dash(&r.workload),
            r.stream.as_deref().unwrap_or("(unchained)")
        );
        if let Some(n) = r.truncated_before {
            out.push_str(&format!(
                "{name}: truncated on purpose before seq {n} (retention deleted seqs 1..{})\n",
                n - 1
            ));
        }
        for l in &r.declared_losses {
            out.push_str(&format!(
                "{name}: declared loss of seqs {}..{} ({} events dropped by the filter)\n",
                l.from_seq, l.to_seq, l.count
            ));
        }
        for f in &r.findings {
            out.push_str(&format!("{name}: {}\n", f.describe()));
        }
        if r.verdict == Verdict::Unchained {
            out.push_str(&format!(
                "{name}: {} event(s) without meshguard.stream/seq cannot be verified\n",
                r.events
            ));
        }
    }
    let broken = reports
        .iter()
        .filter(|r| r.verdict != Verdict::Intact)
        .count();
    out.push_str(&if broken == 0 {
        format!("all {} stream(s) intact\n", reports.len())
    } else {
        format!("{broken} of {} stream(s) not intact\n", reports.len())
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_with_actionable_errors() {
        let now = 100_000 * 1_000_000_000;
        let f = FilterText {
            agent: Some("agent-a".into()),
            action: Some("read:*".into()),
            decision: Some("would_deny".into()),
            since: Some("1h".into()),
            until: Some("2025-01-31T00:00:00Z".into()),
            trace: Some("4BF9-2F35".into()),
            limit: Some("7".into()),
        }
        .parse(now)
        .unwrap();
        assert!(f.action.as_ref().unwrap().matches("read:orders"));
        assert!(!f.action.as_ref().unwrap().matches("write:orders"));
        assert_eq!(f.decision.as_deref(), Some("would_deny"));
        assert_eq!(f.since, Some(now - 3_600 * 1_000_000_000));
        assert_eq!(f.until, Some(1_738_281_600 * 1_000_000_000));
        assert_eq!(f.trace.as_deref(), Some("4bf92f35"));
        assert_eq!(f.limit, 7);
        assert_eq!(
            FilterText::default().parse(now).unwrap().limit,
            DEFAULT_LIMIT
        );

        let err = |t: FilterText| t.parse(now).unwrap_err().to_string();
        assert!(err(FilterText {
            decision: Some("maybe".into()),
            ..Default::default()
        })
        .contains("allow, deny"));
        assert!(err(FilterText {
            since: Some("yesterday".into()),
            ..Default::default()
        })
        .starts_with("since:"));
        assert!(err(FilterText {
            trace: Some("xyz".into()),
            ..Default::default()
        })
        .contains("not hex"));
        assert!(err(FilterText {
            limit: Some("0".into()),
            ..Default::default()
        })
        .contains("from 1 to"));
        assert!(err(FilterText {
            action: Some("read:[".into()),
            ..Default::default()
        })
        .contains("invalid glob"));
    }

    #[test]
    fn tables_align_and_truncate() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
