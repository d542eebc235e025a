//! `meshguard approvals list|approve|deny`: the operator's side of approvals, through the
//! collector's HTTP API (`--url`) or directly on its database (`--db`). See
//! cli/COLLECTOR.md "Approvals".

use crate::collector::api::parse_ttl;
use crate::collector::approvals::{ApprovalStatus, Decision};
use crate::collector::store::{Location, Store, StoreError};
use crate::timestamp::now_nanos;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// How long one API call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `meshguard approvals ...`
#[derive(clap::Args)]
pub struct ApprovalsArgs {
    #[command(subcommand)]
    command: ApprovalsCommand,
}

#[derive(clap::Subcommand)]
enum ApprovalsCommand {
    /// List approvals, newest request first.
    List(ListArgs),
    /// Approve for a while: a grant is published until the TTL runs out. Exit 1 when the
    /// id is unknown.
    Approve(ApproveArgs),
    /// Deny (also withdraws a grant in force). Exit 1 when the id is unknown.
    Deny(DenyArgs),
}

/// Where the approvals are.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// The collector's HTTP API (its --http address), e.g. http://127.0.0.1:4318.
    #[arg(long)]
    url: Option<String>,
    /// The collector's SQLite database, used directly (on the collector's host).
    #[arg(long)]
    db: Option<PathBuf>,
    /// The collector's PostgreSQL store, used directly (postgres://...).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
}

impl Target {
    /// The store given by --db or --store, if any.
    fn location(&self) -> Result<Option<Location>> {
        match (&self.db, &self.store) {
            (_, Some(url)) => Ok(Some(Location::from_flags(Path::new(""), Some(url))?)),
            (Some(db), None) => Ok(Some(Location::Sqlite(db.clone()))),
            (None, None) => Ok(None),
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    target: Target,
    /// Only approvals in this state.
    #[arg(long, value_parser = ["pending", "approved", "denied", "expired"])]
    status: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(clap::Args)]
struct ApproveArgs {
    /// The approval id (`approvalId` of the 403, `apr_...`).
    id: String,
    #[command(flatten)]
    target: Target,
    /// How long the grant lasts: 30s, 15m, 1h, 7d (at most 366d).
    #[arg(long = "for", value_name = "TTL")]
    ttl: String,
    /// Who approves (recorded, and published as the grant's approved_by).
    #[arg(long)]
    by: String,
    /// Why.
    #[arg(long, default_value = "")]
    reason: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(clap::Args)]
struct DenyArgs {
    /// The approval id.
    id: String,
    #[command(flatten)]
    target: Target,
    /// Who denies.
    #[arg(long)]
    by: String,
    /// Why.
    #[arg(long, default_value = "")]
    reason: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// Why an approvals command failed (exit 2).
#[derive(Debug)]
pub enum ApprovalsCmdError {
    /// A flag that cannot be used.
    Invalid(String),
    /// The collector could not be reached or answered something unusable.
    Http(String),
    /// The collector refused the request.
    Api {
        /// HTTP status.
        status: u16,
        /// Its `error` message.
        message: String,
    },
    /// The database could not be used.
    Store(StoreError),
}

impl fmt::Display for ApprovalsCmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApprovalsCmdError::Invalid(m) | ApprovalsCmdError::Http(m) => f.write_str(m),
            ApprovalsCmdError::Api { status, message } => {
                write!(f, "the collector answered {status}: {message}")
            }
            ApprovalsCmdError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ApprovalsCmdError {}

impl From<StoreError> for ApprovalsCmdError {
    fn from(e: StoreError) -> Self {
        ApprovalsCmdError::Store(e)
    }
}

type Result<T> = std::result::Result<T, ApprovalsCmdError>;

/// An approval by id that does not exist: reported, exit 1.
struct NotFound(String);

/// Runs an approvals subcommand.
pub fn run(args: ApprovalsArgs) -> Result<ExitCode> {
    let outcome = match args.command {
        ApprovalsCommand::List(a) => list(a).map(Ok),
        ApprovalsCommand::Approve(a) => {
            let ttl_seconds =
                parse_ttl(&a.ttl).map_err(|e| ApprovalsCmdError::Invalid(format!("--for: {e}")))?;
            let body = json!({"for": a.ttl, "approved_by": a.by, "reason": a.reason});
            let decision = Decision::Approve {
                ttl_seconds,
                by: a.by.clone(),
                reason: a.reason.clone(),
            };
            decide(&a.target, &a.id, "approve", &body, &decision, a.format)
        }
        ApprovalsCommand::Deny(a) => {
            let body = json!({"denied_by": a.by, "reason": a.reason});
            let decision = Decision::Deny {
                by: a.by.clone(),
                reason: a.reason.clone(),
            };
            decide(&a.target, &a.id, "deny", &body, &decision, a.format)
        }
    }?;
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(NotFound(id)) => {
            eprintln!("meshguard: no approval {id:?}");
            Ok(ExitCode::from(1))
        }
    }
}

fn list(a: ListArgs) -> Result<()> {
    let approvals: Vec<Value> = match (&a.target.url, a.target.location()?) {
        (Some(url), _) => {
            let mut path = format!("/api/approvals?limit={}", a.limit);
            if let Some(s) = &a.status {
                path.push_str(&format!("&status={s}"));
            }
            let (_, v) = call(url, Method::GET, &path, None)?;
            v.get("approvals")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| {
                    ApprovalsCmdError::Http(format!("{url}: no approvals in the answer"))
                })?
        }
        (None, Some(db)) => {
            let status = a
                .status
                .as_deref()
                .map(str::parse::<ApprovalStatus>)
                .transpose()
                .map_err(|e| ApprovalsCmdError::Invalid(format!("--status: {e}")))?;
            let store = Store::open_for_reading(db)?;
            let rows = store.approvals(status, a.limit, now_nanos())?;
            rows.iter().map(|r| json!(r)).collect()
        }
        (None, None) => {
            return Err(ApprovalsCmdError::Invalid(
                "give --url, --db or --store".into(),
            ))
        }
    };
    match a.format {
        Format::Json => println!("{}", Value::Array(approvals)),
        Format::Table => print_table(&approvals),
    }
    Ok(())
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn print_table(rows: &[Value]) {
    let header = [
        "ID",
        "STATUS",
        "AGENT",
        "ACTION",
        "RESOURCE",
        "COUNT",
        "LAST-SEEN",
        "BY",
        "EXPIRES",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        table.push(vec![
            text(r, "id").into(),
            text(r, "status").into(),
            text(r, "agent").into(),
            text(r, "action").into(),
            text(r, "resource").into(),
            r.get("count")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .to_string(),
            text(r, "last_seen").into(),
            text(r, "decided_by").into(),
            text(r, "expires_at").into(),
        ]);
    }
    let mut widths = vec![0usize; header.len()];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn decide(
    target: &Target,
    id: &str,
    verb: &str,
    body: &Value,
    decision: &Decision,
    format: Format,
) -> Result<std::result::Result<(), NotFound>> {
    let approval: Value = match (&target.url, target.location()?) {
        (Some(url), _) => {
            let path = format!("/api/approvals/{}/{verb}", encode_segment(id));
            match call(url, Method::POST, &path, Some(body)) {
                Ok((_, v)) => v,
                Err(ApprovalsCmdError::Api { status: 404, .. }) => {
                    return Ok(Err(NotFound(id.to_string())))
                }
                Err(e) => return Err(e),
            }
        }
        (None, Some(db)) => {
            let mut store = Store::open_for_writing(db)?;
            match store.decide_approval(id, decision, now_nanos())? {
                Some(a) => json!(a),
                None => return Ok(Err(NotFound(id.to_string()))),
            }
        }
        (None, None) => {
            return Err(ApprovalsCmdError::Invalid(
                "give --url, --db or --store".into(),
            ))
        }
    };
    match format {
        Format::Json => println!("{approval}"),
        Format::Table => {
            let until = match text(&approval, "expires_at") {
                "" => String::new(),
                x => format!(" until {x}"),
            };
            println!(
                "{} {}: agent {} may{} {} {}{until} (by {})",
                text(&approval, "id"),
                text(&approval, "status"),
                text(&approval, "agent"),
                if text(&approval, "status") == ApprovalStatus::Approved.as_str() {
                    ""
                } else {
                    " not"
                },
                text(&approval, "action"),
                text(&approval, "resource"),
                text(&approval, "decided_by"),
            );
        }
    }
    Ok(Ok(()))
}

/// Percent-encodes a path segment (ids are plain, but a typo must not change the route).
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One call to the collector's API: (status, JSON body). Non-2xx answers are errors.
fn call(base: &str, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let base = base.trim_end_matches('/');
    let uri: Uri = format!("{base}{path}")
        .parse()
        .map_err(|e| ApprovalsCmdError::Invalid(format!("--url {base:?}: not a URL ({e})")))?;
    if uri.scheme_str() != Some("http") {
        return Err(ApprovalsCmdError::Invalid(format!(
            "--url {base:?}: must start with http:// (the collector's --http address)"
        )));
    }
    let payload = match body {
        Some(v) => Bytes::from(v.to_string()),
        None => Bytes::new(),
    };
    let request = Request::builder()
        .method(method)
        .uri(uri.clone())
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("meshguard/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(payload))
        .map_err(|e| ApprovalsCmdError::Invalid(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ApprovalsCmdError::Http(e.to_string()))?;
    let unreachable =
        |e: String| ApprovalsCmdError::Http(format!("cannot reach the collector at {base}: {e}"));
    let (status, bytes) = runtime.block_on(async {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let response = tokio::time::timeout(TIMEOUT, client.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok::<_, ApprovalsCmdError>((status, bytes))
    })?;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return Ok((status, value));
    }
    let message = value.get("error").and_then(Value::as_str).map_or_else(
        || String::from_utf8_lossy(&bytes).into_owned(),
        str::to_string,
    );
    Err(ApprovalsCmdError::Api { status, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("apr_0f1e"), "apr_0f1e");
        assert_eq!(encode_segment("a/../b c"), "a%2F..%2Fb%20c");
    }
}
