//! The optional JSON API (`--http`):
//!
//! - `GET /v1/events?agent=&action=&decision=&since=&until=&trace=&limit=`
//! - `GET /v1/traces/{trace_id}`
//! - `GET /v1/integrity`
//! - `GET /healthz`
//! - `GET /api/approvals?status=&limit=`, `GET /api/approvals/{id}`
//! - `POST /api/approvals/{id}/approve`, `POST /api/approvals/{id}/deny`
//! - `GET /grants`: the signed grants document (with `--grants-key`)
//!
//! Audit queries open their own read-only connection per request: WAL lets readers run
//! beside the writer without blocking it, and a query can never modify the audit trail.
//! Approvals are written through the collector's one writer connection, which also
//! serialises publishing the grants document.

use super::approvals::{ApprovalStatus, Decision};
use super::publish::{self, PublishError};
use super::store::{Location, Store, StoreError};
use crate::audit_query::{self, FilterText, QueryError};
use crate::grants::SigningKey;
use crate::timestamp::now_nanos;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// An API failure, answered as `{"error": "..."}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match &e {
            QueryError::NoSuchTrace(_) => StatusCode::NOT_FOUND,
            QueryError::Store(_) | QueryError::Output(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

type Db = Arc<Location>;

/// What the approval routes need: the collector's writer and the grants signing key.
#[derive(Clone)]
pub struct Approvals {
    /// The collector's one writer connection.
    pub store: Arc<Mutex<Store>>,
    /// `--grants-key`; without it `GET /grants` answers 404.
    pub key: Option<SigningKey>,
}

/// Longest grant an approval may give.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 86_400);
/// Most approvals one list returns.
const MAX_LIST: usize = 10_000;

/// The API's routes over the database at `db`, with approvals written through `approvals`.
pub fn router(db: Location, approvals: Approvals) -> Router {
    let queries = Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/events", get(events))
        .route("/v1/traces/{trace_id}", get(trace))
        .route("/v1/integrity", get(integrity))
        .with_state(Arc::new(db));
    let approval_routes = Router::new()
        .route("/api/approvals", get(list_approvals))
        .route("/api/approvals/{id}", get(get_approval))
        .route("/api/approvals/{id}/approve", post(approve))
        .route("/api/approvals/{id}/deny", post(deny))
        .route("/grants", get(grants_document))
        .with_state(approvals);
    queries.merge(approval_routes)
}

/// Runs blocking work on the writer connection off the async workers.
async fn with_writer<T, F>(a: &Approvals, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T, ApiError> + Send + 'static,
{
    let store = Arc::clone(&a.store);
    tokio::task::spawn_blocking(move || {
        // A panic under the lock rolled its transaction back: the store is consistent.
        let mut s = store.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut s)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// `GET /api/approvals` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_approvals(
    State(a): State<Approvals>,
    Query(p): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let status = match p.status.as_deref() {
        None | Some("" | "all") => None,
        Some(s) => Some(
            s.parse::<ApprovalStatus>()
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("status: {e}")))?,
        ),
    };
    let limit = p.limit.unwrap_or(1000).min(MAX_LIST);
    let now = now_nanos();
    let list = with_writer(&a, move |s| Ok(s.approvals(status, limit, now)?)).await?;
    Ok(Json(json!({ "approvals": list })))
}

fn no_such_approval(id: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no approval {id:?} (ids come from require_approval decisions: approvalId)"),
    )
}

async fn get_approval(
    State(a): State<Approvals>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let now = now_nanos();
    let key = id.clone();
    match with_writer(&a, move |s| Ok(s.approval(&key, now)?)).await? {
        Some(found) => Ok(Json(json!(found))),
        None => Err(no_such_approval(&id)),
    }
}

/// `POST /api/approvals/{id}/approve` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// TTL such as `30s`, `15m`, `1h`, `7d`.
    #[serde(rename = "for")]
    ttl: String,
    /// Who approves.
    #[serde(alias = "by")]
    approved_by: String,
    #[serde(default)]
    reason: String,
}

/// `POST /api/approvals/{id}/deny` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyBody {
    /// Who denies.
    #[serde(alias = "by")]
    denied_by: String,
    #[serde(default)]
    reason: String,
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON like {shape}: {e}"),
        )
    })
}

fn named(who: &str, field: &str) -> Result<String, ApiError> {
    let who = who.trim();
    if who.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{field}: say who decides (a name or an email)"),
        ));
    }
    Ok(who.to_string())
}

/// Parses an approval TTL (`for`), at most [`MAX_TTL`].
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let d = crate::timestamp::parse_duration(text).map_err(|e| e.to_string())?;
    if d > MAX_TTL {
        return Err(format!(
            "{text:?} is longer than the longest grant ({} days)",
            MAX_TTL.as_secs() / 86_400
        ));
    }
    Ok(d.as_secs())
}

async fn decide(a: Approvals, id: String, decision: Decision) -> Result<Json<Value>, ApiError> {
    let now = now_nanos();
    let key = id.clone();
    match with_writer(&a, move |s| Ok(s.decide_approval(&key, &decision, now)?)).await? {
        Some(done) => {
            eprintln!(
                "meshguard collector: approval {} {} by {}{}",
                done.id,
                done.status,
                done.decided_by.as_deref().unwrap_or_default(),
                done.expires_at
                    .as_deref()
                    .map(|x| format!(" until {x}"))
                    .unwrap_or_default()
            );
            Ok(Json(json!(done)))
        }
        None => Err(no_such_approval(&id)),
    }
}

async fn approve(
    State(a): State<Approvals>,
    UrlPath(id): UrlPath<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: ApproveBody = body(
        &bytes,
        r#"{"for":"1h","approved_by":"alice","reason":"..."}"#,
    )?;
    let ttl_seconds =
        parse_ttl(&b.ttl).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("for: {e}")))?;
    let decision = Decision::Approve {
        ttl_seconds,
        by: named(&b.approved_by, "approved_by")?,
        reason: b.reason,
    };
    decide(a, id, decision).await
}

async fn deny(
    State(a): State<Approvals>,
    UrlPath(id): UrlPath<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: DenyBody = body(&bytes, r#"{"denied_by":"alice","reason":"..."}"#)?;
    let decision = Decision::Deny {
        by: named(&b.denied_by, "denied_by")?,
        reason: b.reason,
    };
    decide(a, id, decision).await
}

/// The grants document, with an ETag so pollers get 304 while nothing changed (as
/// `meshguard bundle serve` does).
async fn grants_document(State(a): State<Approvals>, headers: HeaderMap) -> Response {
    let Some(key) = a.key.clone() else {
        return ApiError(
            StatusCode::NOT_FOUND,
            "this collector publishes no grants document: start it with --grants-key              (an Ed25519 key from `meshguard keygen --alg EdDSA`)"
                .into(),
        )
        .into_response();
    };
    let now = now_nanos();
    let state = match with_writer(&a, move |s| Ok(publish::current(s, &key, now)?)).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let etag = format!("\"{}\"", meshguard::audit::chain_hash(&state.document));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-meshguard-grants-version", state.version.to_string());
    if matches {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default();
    }
    builder
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(state.document))
        .unwrap_or_default()
}

/// Runs blocking database work off the async workers.
async fn with_store<T, F>(db: Db, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut store = Store::open_for_reading(&*db)?;
        f(&mut store)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

async fn healthz(State(db): State<Db>) -> Result<Json<Value>, ApiError> {
    let events = with_store(db, |s| Ok(s.count_events()?)).await?;
    Ok(Json(json!({ "status": "ok", "events": events })))
}

async fn events(
    State(db): State<Db>,
    Query(text): Query<FilterText>,
) -> Result<Json<Value>, ApiError> {
    let filter = text.parse(now_nanos())?;
    let events = with_store(db, move |s| Ok(s.events(&filter)?)).await?;
    Ok(Json(json!({ "events": events })))
}

async fn trace(
    State(db): State<Db>,
    UrlPath(trace_id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    with_store(db, move |s| {
        let id = audit_query::resolve_trace(s, &trace_id)?;
        let events = s.trace(&id)?;
        Ok(Json(json!({ "trace_id": id, "events": events })))
    })
    .await
}

async fn integrity(State(db): State<Db>) -> Result<Json<Value>, ApiError> {
    with_store(db, |s| {
        let reports = s.verify_all()?;
        Ok(Json(audit_query::verify_json(&reports)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_ttls_are_bounded() {
        assert_eq!(parse_ttl("30s"), Ok(30));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert!(parse_ttl("400d").unwrap_err().contains("366 days"));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn bodies_name_the_missing_field() {
        let e = body::<ApproveBody>(br#"{"for":"1h"}"#, "{}").unwrap_err();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        assert!(e.1.contains("approved_by"), "{}", e.1);
        let ok = body::<ApproveBody>(br#"{"for":"1h","by":"alice"}"#, "{}").unwrap();
        assert_eq!((ok.approved_by.as_str(), ok.reason.as_str()), ("alice", ""));
        assert!(body::<DenyBody>(br#"{"denied_by":"x","extra":1}"#, "{}").is_err());
        assert!(named("  ", "denied_by").is_err());
    }
}
