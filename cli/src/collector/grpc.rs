//! `opentelemetry.proto.collector.logs.v1.LogsService/Export`: decode, store in one
//! transaction, report integrity findings, feed the denial alerts.

use super::alerts::{AlertQueue, Denial, DenialWindows};
use super::event::{self, Batch};
use super::peer;
use super::store::{InsertOutcome, Store};
use crate::timestamp::now_nanos;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsService;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use std::sync::{Arc, Mutex, PoisonError};
use tonic::codegen::http;
use tonic::{Request, Response, Status};

/// Denial counting plus the queue to the webhook sender.
pub struct Alerting {
    /// Per-agent windows.
    pub windows: Mutex<DenialWindows>,
    /// Where alerts go.
    pub queue: AlertQueue,
}

/// How the Export handler learns who is sending (see `peer.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IngestAuth {
    /// Nobody is authenticated; no peer is recorded.
    #[default]
    None,
    /// TLS with a required client certificate: its SAN is the peer.
    ClientCertificate,
    /// The `x-forwarded-client-cert` header of the Istio sidecar in front.
    Xfcc,
}

/// The Export handler.
pub struct AuditLogsService {
    store: Arc<Mutex<Store>>,
    alerting: Option<Arc<Alerting>>,
    auth: IngestAuth,
    checkpoint_log: Option<Arc<std::path::PathBuf>>,
}

impl AuditLogsService {
    /// A handler writing to `store`, alerting through `alerting` when configured.
    pub fn new(store: Arc<Mutex<Store>>, alerting: Option<Arc<Alerting>>) -> AuditLogsService {
        AuditLogsService {
            store,
            alerting,
            auth: IngestAuth::None,
            checkpoint_log: None,
        }
    }

    /// Records the peer identity `auth` yields with each stream; Exports without one are
    /// refused (UNAUTHENTICATED).
    pub fn with_auth(mut self, auth: IngestAuth) -> AuditLogsService {
        self.auth = auth;
        self
    }

    fn peer<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        let peer = match self.auth {
            IngestAuth::None => return Ok(None),
            IngestAuth::ClientCertificate => request
                .peer_certs()
                .and_then(|certs| certs.first().and_then(|c| peer::from_certificate(c))),
            IngestAuth::Xfcc => request
                .metadata()
                .get("x-forwarded-client-cert")
                .and_then(|v| v.to_str().ok())
                .and_then(peer::from_xfcc),
        };
        match peer {
            Some(p) => Ok(Some(p)),
            None => Err(Status::unauthenticated(match self.auth {
                IngestAuth::Xfcc => {
                    "no client identity in x-forwarded-client-cert: send through the mesh \
                     (mTLS) so the collector's sidecar can name the sender"
                }
                _ => {
                    "the client certificate has no URI or DNS subject alternative name to \
                     record as the sender"
                }
            })),
        }
    }

    /// Also appends each batch's signed checkpoints to `path` (JSON lines), after the
    /// batch is stored.
    pub fn with_checkpoint_log(mut self, path: std::path::PathBuf) -> AuditLogsService {
        self.checkpoint_log = Some(Arc::new(path));
        self
    }
}

/// Appends checkpoints as JSON lines and syncs them: an acknowledged batch's checkpoint is
/// on disk before the filter forgets the batch.
fn append_checkpoints(
    path: &std::path::Path,
    checkpoints: &[event::Checkpoint],
) -> std::io::Result<()> {
    use std::io::Write;
    if checkpoints.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for c in checkpoints {
        text.push_str(&serde_json::to_string(c).unwrap_or_default());
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

#[tonic::async_trait]
impl LogsService for AuditLogsService {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let peer = self.peer(&request)?;
        let request = request.into_inner();
        let store = Arc::clone(&self.store);
        let checkpoint_log = self.checkpoint_log.clone();
        // SQLite and hashing are blocking work: keep them off the async workers.
        let stored = tokio::task::spawn_blocking(move || {
            let mut batch = event::decode(&request);
            batch.peer = peer;
            let received = now_nanos();
            // A panic while holding the lock can only happen mid-transaction, which SQLite
            // rolled back; the store is still consistent, so keep using it.
            let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
            let outcome = store
                .insert_batch(&batch, received)
                .map_err(|e| e.to_string())?;
            // Under the store's lock, so lines are never interleaved. A failure answers
            // UNAVAILABLE: the filter resends, the store ignores the repeat, the log gets it.
            if let Some(path) = &checkpoint_log {
                append_checkpoints(path, &batch.checkpoints).map_err(|e| {
                    format!(
                        "checkpoint log {} not written ({e}); check the path and free space",
                        path.display()
                    )
                })?;
            }
            Ok::<_, String>((batch, outcome))
        })
        .await
        .map_err(|e| Status::internal(format!("the export handler failed: {e}")))?;
        let (batch, outcome) = stored.map_err(|e| {
            eprintln!("meshguard collector: export not stored: {e}");
            // UNAVAILABLE is retryable for OTLP senders: the filter keeps the batch and
            // sends it again, so nothing is lost while the disk is full or locked.
            Status::unavailable(format!("audit events not stored, retry later: {e}"))
        })?;
        for (workload, stream, f) in &outcome.findings {
            eprintln!(
                "meshguard collector: integrity: workload {workload:?} stream {stream:?}: {}",
                f.describe()
            );
        }
        for p in &outcome.pending {
            eprintln!(
                "meshguard collector: approval pending: {} (agent {:?}, action {:?}, resource {:?})",
                p.approval_id, p.agent, p.action, p.resource
            );
        }
        if let Some(alerting) = &self.alerting {
            feed_alerts(alerting, &batch, &outcome);
            for p in &outcome.pending {
                alerting.queue.send(p.clone());
            }
        }
        let message = batch.status_message();
        let partial_success = if batch.rejected.is_empty() && message.is_empty() {
            None
        } else {
            Some(ExportLogsPartialSuccess {
                rejected_log_records: i64::try_from(batch.rejected.len()).unwrap_or(i64::MAX),
                error_message: message,
            })
        };
        Ok(Response::new(ExportLogsServiceResponse { partial_success }))
    }
}

/// Only newly stored events count, so a retried batch cannot raise an alert twice.
fn feed_alerts(alerting: &Alerting, batch: &Batch, outcome: &InsertOutcome) {
    let mut windows = alerting
        .windows
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for e in outcome.inserted.iter().filter_map(|&i| batch.events.get(i)) {
        if !e.is_denial() {
            continue;
        }
        let denial = Denial::new(
            i64::try_from(e.time_unix_nano).unwrap_or(i64::MAX),
            e.text("meshguard.action"),
            e.text("meshguard.reason"),
            e.trace_id.clone(),
        );
        if let Some(alert) = windows.observe(&e.text("meshguard.agent.id"), denial) {
            eprintln!(
                "meshguard collector: alert: agent {:?} denied {} times in {}s",
                alert.agent, alert.count, alert.window_seconds
            );
            alerting.queue.send(alert);
        }
    }
}

/// Tonic reports a message over the size limit as OUT_OF_RANGE; gRPC's status-code guide
/// (and OTLP senders) expect RESOURCE_EXHAUSTED. Tonic answers such requests before the
/// handler runs, with a trailers-only response, so the code is in the headers.
pub fn size_limit_status<B>(mut response: http::Response<B>) -> http::Response<B> {
    const OUT_OF_RANGE: &str = "11";
    const RESOURCE_EXHAUSTED: http::HeaderValue = http::HeaderValue::from_static("8");
    let too_large = response
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == OUT_OF_RANGE.as_bytes())
        && response
            .headers()
            .get("grpc-message")
            // grpc-message is percent-encoded.
            .is_some_and(|m| {
                String::from_utf8_lossy(m.as_bytes())
                    .replace("%20", " ")
                    .contains("too large")
            });
    if too_large {
        response
            .headers_mut()
            .insert("grpc-status", RESOURCE_EXHAUSTED);
    }
    response
}
