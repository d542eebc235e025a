//! The optional read-only JSON API (`--http`):
//!
//! - `GET /v1/events?agent=&action=&decision=&since=&until=&trace=&limit=`
//! - `GET /v1/traces/{trace_id}`
//! - `GET /v1/integrity`
//! - `GET /healthz`
//!
//! Every request opens its own read-only connection: WAL lets readers run beside the
//! writer without blocking it, and a query can never modify the audit trail.

use super::store::{Store, StoreError};
use crate::audit_query::{self, FilterText, QueryError};
use crate::timestamp::now_nanos;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// An API failure, answered as `{"error": "..."}`.
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

type Db = Arc<PathBuf>;

/// The API's routes over the database at `db`.
pub fn router(db: PathBuf) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/events", get(events))
        .route("/v1/traces/{trace_id}", get(trace))
        .route("/v1/integrity", get(integrity))
        .with_state(Arc::new(db))
}

/// Runs blocking database work off the async workers.
async fn with_store<T, F>(db: Db, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut store = Store::open_for_reading(&db)?;
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
