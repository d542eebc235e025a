//! `meshguard collector`: the reference audit collector.
//!
//! OTLP/gRPC `LogsService/Export` in, one SQLite file out; each stream's hash chain is
//! checked as events arrive; optional JSON API and denial alerts. It is also the approval
//! service: require_approval decisions become pending approvals, and approved ones are
//! published as the signed grants document filters poll. See `cli/COLLECTOR.md` for the
//! operator's view.

pub mod alerts;
pub mod api;
pub mod approvals;
#[cfg(test)]
mod chain_proptests;
pub mod event;
pub mod grpc;
pub mod integrity;
pub mod peer;
pub mod publish;
pub mod store;

use crate::grants::{GrantsError, SigningKey};
use crate::timestamp::{self, TimeError};
use alerts::{DenialWindows, WebhookError};
use grpc::{Alerting, AuditLogsService, IngestAuth};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsServiceServer;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use store::{Location, Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long in-flight Exports may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(30);
/// How long queued alerts may take to be delivered at shutdown.
const ALERT_DRAIN: Duration = Duration::from_secs(5);
/// First retry delay of a webhook delivery (doubles per attempt).
const WEBHOOK_BACKOFF: Duration = Duration::from_millis(500);

/// `meshguard collector` flags.
#[derive(clap::Args)]
pub struct CollectorArgs {
    /// OTLP/gRPC listen address (HOST:PORT; port 0 picks a free port and prints it).
    #[arg(long, default_value = "127.0.0.1:4317")]
    listen: String,
    /// SQLite database file (created if missing; WAL mode).
    #[arg(long, default_value = "meshguard-audit.db")]
    db: PathBuf,
    /// PostgreSQL store shared by collector replicas, instead of --db
    /// (postgres://user:password@host:port/db; the schema is created or migrated).
    #[arg(
        long,
        value_name = "URL",
        env = "MESHGUARD_STORE",
        hide_env_values = true
    )]
    store: Option<String>,
    /// Delete events older than this (e.g. 90d, 12h), in bounded batches; each stream's
    /// truncation point is recorded so `audit verify` still proves what remains.
    #[arg(long, value_name = "AGE")]
    retain: Option<String>,
    /// How often the retention pass runs.
    #[arg(long, default_value = "1h", requires = "retain")]
    retain_every: String,
    /// Serve the JSON API (audit queries, approvals, grants document) on this address
    /// (off when omitted).
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<String>,
    /// Ed25519 private JWK (`meshguard keygen --alg EdDSA`) that signs the grants document
    /// served at `GET /grants` on the --http address.
    #[arg(long, value_name = "FILE", requires = "http")]
    grants_key: Option<PathBuf>,
    /// POST denial alerts and new pending approvals to this http:// URL (repeatable).
    #[arg(long = "alert-webhook", value_name = "URL")]
    alert_webhooks: Vec<String>,
    /// Alert when one agent has more than this many denials within --alert-window.
    #[arg(long, default_value_t = 5)]
    alert_threshold: u32,
    /// The alert window (e.g. 60s, 5m).
    #[arg(long, default_value = "60s")]
    alert_window: String,
    /// Serve OTLP/gRPC over TLS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA (PEM) on the OTLP/gRPC ingest, and
    /// record each stream's sender (the certificate's URI or DNS SAN).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        conflicts_with = "peer_from_xfcc"
    )]
    tls_client_ca: Option<PathBuf>,
    /// Behind an Istio sidecar: record each stream's sender from the sidecar's
    /// x-forwarded-client-cert header (pair it with the AuthorizationPolicy in istio/).
    #[arg(long)]
    peer_from_xfcc: bool,
    /// Largest Export accepted, in bytes (larger ones get RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 4_194_304,
          value_parser = clap::value_parser!(u64).range(1024..=1_073_741_824))]
    max_message_bytes: u64,
    /// Append every signed checkpoint received to this file (JSON lines), kept apart from
    /// the database: `meshguard audit verify --checkpoints` then reveals a stream cut off
    /// in the store. Put it where the store's writers cannot rewrite it (another disk,
    /// append-only storage, a log shipper).
    #[arg(long, value_name = "FILE")]
    checkpoint_log: Option<PathBuf>,
}

/// Why the collector could not start or stopped abnormally.
#[derive(Debug)]
pub enum CollectorError {
    /// A listen address that cannot be bound.
    Listen {
        /// The flag.
        flag: &'static str,
        /// The address given.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The database cannot be used.
    Store(StoreError),
    /// A bad `--alert-webhook`.
    Webhook(WebhookError),
    /// A bad `--alert-window`.
    Window(TimeError),
    /// A bad `--retain` or `--retain-every`.
    Retain(&'static str, TimeError),
    /// A `--grants-key` that cannot be used.
    GrantsKey(GrantsError),
    /// A TLS file that cannot be read.
    Tls {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The async runtime or signal handlers could not be set up.
    Runtime(std::io::Error),
    /// The gRPC server failed.
    Serve(tonic::transport::Error),
}

impl fmt::Display for CollectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectorError::Listen { flag, addr, source } => write!(
                f,
                "{flag} {addr:?}: cannot listen there: {source} (use HOST:PORT such as \
                 127.0.0.1:4317, with a port that is free)"
            ),
            CollectorError::Store(e) => e.fmt(f),
            CollectorError::Webhook(e) => e.fmt(f),
            CollectorError::Window(e) => write!(f, "--alert-window: {e}"),
            CollectorError::Retain(flag, e) => write!(f, "{flag}: {e}"),
            CollectorError::GrantsKey(e) => write!(f, "--grants-key: {e}"),
            CollectorError::Tls { flag, path, source } => write!(
                f,
                "{flag} {}: cannot read it: {source} (give a PEM file)",
                path.display()
            ),
            CollectorError::Runtime(e) => write!(f, "cannot start the collector: {e}"),
            CollectorError::Serve(e) => write!(f, "the gRPC server failed: {e}"),
        }
    }
}

impl std::error::Error for CollectorError {}

impl From<StoreError> for CollectorError {
    fn from(e: StoreError) -> Self {
        CollectorError::Store(e)
    }
}

/// Runs the collector until SIGINT or SIGTERM.
pub fn run(args: CollectorArgs) -> Result<(), CollectorError> {
    // Check every flag before touching the network or the disk.
    let window = timestamp::parse_duration(&args.alert_window).map_err(CollectorError::Window)?;
    let location = Location::from_flags(&args.db, args.store.as_deref())?;
    let retention = match &args.retain {
        Some(age) => Some(Retention {
            age: timestamp::parse_duration(age)
                .map_err(|e| CollectorError::Retain("--retain", e))?,
            every: timestamp::parse_duration(&args.retain_every)
                .map_err(|e| CollectorError::Retain("--retain-every", e))?,
        }),
        None => None,
    };
    let webhooks = args
        .alert_webhooks
        .iter()
        .map(|u| alerts::parse_webhook(u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CollectorError::Webhook)?;
    let grants_key = args
        .grants_key
        .as_deref()
        .map(SigningKey::load)
        .transpose()
        .map_err(CollectorError::GrantsKey)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CollectorError::Runtime)?;
    runtime.block_on(serve(
        args, location, retention, window, webhooks, grants_key,
    ))
}

async fn bind(flag: &'static str, addr: &str) -> Result<TcpListener, CollectorError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| CollectorError::Listen {
            flag,
            addr: addr.to_string(),
            source,
        })
}

/// `--retain` and `--retain-every`.
#[derive(Debug, Clone, Copy)]
struct Retention {
    age: Duration,
    every: Duration,
}

/// Rows deleted per retention transaction: short enough not to stall Exports.
const RETAIN_BATCH: usize = 5_000;

async fn serve(
    args: CollectorArgs,
    location: Location,
    retention: Option<Retention>,
    window: Duration,
    webhooks: Vec<hyper::Uri>,
    grants_key: Option<SigningKey>,
) -> Result<(), CollectorError> {
    let grpc_listener = bind("--listen", &args.listen).await?;
    let http_listener = match &args.http {
        Some(a) => Some(bind("--http", a).await?),
        None => None,
    };
    // The PostgreSQL client blocks: open (and later drop) it on the blocking pool.
    let store = {
        let location = location.clone();
        tokio::task::spawn_blocking(move || Store::open_for_writing(&location))
            .await
            .map_err(|e| CollectorError::Runtime(std::io::Error::other(e)))??
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(Signals::install()?.wait(stop_tx));

    let store = Arc::new(Mutex::new(store));
    let (alerting, alert_task) = if webhooks.is_empty() {
        (None, None)
    } else {
        let (queue, task) = alerts::start(webhooks.clone(), WEBHOOK_BACKOFF);
        let alerting = Arc::new(Alerting {
            windows: Mutex::new(DenialWindows::new(args.alert_threshold, window)),
            queue,
        });
        (Some(alerting), Some(task))
    };

    let local = |l: &TcpListener| {
        l.local_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string())
    };
    eprintln!(
        "meshguard collector: OTLP/gRPC listening on {}",
        local(&grpc_listener)
    );
    eprintln!("meshguard collector: database {location}");
    let retention_task = retention.map(|r| {
        eprintln!(
            "meshguard collector: retention: deleting events older than {}s every {}s",
            r.age.as_secs(),
            r.every.as_secs()
        );
        tokio::spawn(retain_loop(Arc::clone(&store), r, stop_rx.clone()))
    });
    let http_task = http_listener.map(|l| {
        eprintln!(
            "meshguard collector: HTTP API listening on http://{}",
            local(&l)
        );
        if let Some(k) = &grants_key {
            eprintln!(
                "meshguard collector: grants document at http://{}/grants, signed by public key {}",
                local(&l),
                k.public_base64()
            );
        }
        let router = api::router(
            location.clone(),
            api::Approvals {
                store: Arc::clone(&store),
                key: grants_key.clone(),
            },
        );
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(l, router).with_graceful_shutdown(stop).await {
                eprintln!("meshguard collector: HTTP API stopped: {e}");
            }
        })
    });
    if !webhooks.is_empty() {
        eprintln!(
            "meshguard collector: alerting {} webhook(s) when an agent has more than {} denials within {}s",
            webhooks.len(),
            args.alert_threshold,
            window.as_secs()
        );
    }

    let (tls, auth) = ingest_tls(&args)?;
    let max = usize::try_from(args.max_message_bytes).unwrap_or(usize::MAX);
    let mut audit_service = AuditLogsService::new(Arc::clone(&store), alerting).with_auth(auth);
    if let Some(path) = &args.checkpoint_log {
        eprintln!(
            "meshguard collector: checkpoint log {} (outside the database)",
            path.display()
        );
        audit_service = audit_service.with_checkpoint_log(path.clone());
    }
    let service = LogsServiceServer::new(audit_service)
        .max_decoding_message_size(max)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let mut stop = stop_rx.clone();
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(CollectorError::Serve)?;
    }
    let server = builder
        .layer(tower::util::MapResponseLayer::new(grpc::size_limit_status))
        .add_service(service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc_listener),
            stopping,
        );
    // Graceful: after the signal, stop accepting and let in-flight Exports finish, but not
    // forever (an unfinished Export's transaction is rolled back; its sender retries).
    let mut stop = stop_rx.clone();
    let drained = async move {
        let _ = stop.wait_for(|s| *s).await;
        tokio::time::sleep(DRAIN).await;
    };
    let served = tokio::select! {
        r = server => r.map_err(CollectorError::Serve),
        () = drained => {
            eprintln!("meshguard collector: in-flight exports did not finish within {}s", DRAIN.as_secs());
            Ok(())
        }
    };
    if let Some(t) = http_task {
        let _ = tokio::time::timeout(DRAIN, t).await;
    }
    signals.abort();
    if let Some(t) = retention_task {
        t.abort();
    }
    if let Some(task) = alert_task {
        // The service (and with it the last queue handle) is gone once the server stopped.
        if tokio::time::timeout(ALERT_DRAIN, task).await.is_err() {
            eprintln!("meshguard collector: undelivered alerts abandoned at shutdown");
        }
    }
    let checkpoint = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || {
            store
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .checkpoint()
        })
        .await
    };
    // Dropped on the blocking pool: the PostgreSQL client owns a runtime of its own.
    let _ = tokio::task::spawn_blocking(move || drop(store)).await;
    match checkpoint {
        Ok(Ok(())) => eprintln!("meshguard collector: stopped; database checkpointed"),
        // The WAL still holds everything: SQLite replays it on next open.
        Ok(Err(e)) => eprintln!("meshguard collector: stopped; WAL checkpoint failed: {e}"),
        Err(e) => eprintln!("meshguard collector: stopped; WAL checkpoint failed: {e}"),
    }
    served
}

/// The ingest's TLS settings and how senders are identified.
fn ingest_tls(
    args: &CollectorArgs,
) -> Result<(Option<tonic::transport::ServerTlsConfig>, IngestAuth), CollectorError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |flag: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| CollectorError::Tls {
            flag,
            path: path.clone(),
            source,
        })
    };
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        let auth = if args.peer_from_xfcc {
            IngestAuth::Xfcc
        } else {
            IngestAuth::None
        };
        return Ok((None, auth));
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
        read("--tls-cert", cert)?,
        read("--tls-key", key)?,
    ));
    let mut auth = IngestAuth::None;
    if let Some(ca) = &args.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read("--tls-client-ca", ca)?));
        auth = IngestAuth::ClientCertificate;
    } else if args.peer_from_xfcc {
        auth = IngestAuth::Xfcc;
    }
    Ok((Some(tls), auth))
}

/// Runs the retention pass now and every `r.every` until the stop flag.
async fn retain_loop(store: Arc<Mutex<Store>>, r: Retention, mut stop: watch::Receiver<bool>) {
    loop {
        let store = Arc::clone(&store);
        let cutoff = timestamp::now_nanos()
            .saturating_sub(i64::try_from(r.age.as_nanos()).unwrap_or(i64::MAX));
        let pass = tokio::task::spawn_blocking(move || {
            store
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(cutoff, RETAIN_BATCH)
        })
        .await;
        match pass {
            Ok(Ok(o)) if o.events > 0 || o.streams > 0 => eprintln!(
                "meshguard collector: retention: deleted {} events, {} streams truncated",
                o.events, o.streams
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("meshguard collector: retention pass failed: {e}"),
            Err(e) => eprintln!("meshguard collector: retention pass failed: {e}"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(r.every) => {}
        }
    }
}

/// SIGINT and SIGTERM handlers, installed up front so a failure stops startup.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, CollectorError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate()).map_err(CollectorError::Runtime)?,
                int: signal(SignalKind::interrupt()).map_err(CollectorError::Runtime)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Resolves on the first signal by flipping the stop flag.
    async fn wait(mut self, stop: watch::Sender<bool>) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("meshguard collector: shutting down");
        let _ = stop.send(true);
    }
}
