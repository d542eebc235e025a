//! The proxy-wasm glue: moves bytes between Envoy and the engine, nothing more.
//!
//! Root context (one per worker VM, plus the main thread's): keeps the last good
//! configuration, the verified bundle and fetched JWKS, rebuilds the engine when any of
//! them changes, polls bundle/JWKS sources (one fetch per interval per Envoy, coordinated
//! through shared data), and exports audit batches from `on_tick`.
//! HTTP context (one per request): copies the request headers out, asks the engine, and
//! applies the verdict.

use crate::audit::otlp::AnyValue;
use crate::audit::{self, AuditBuffer, Chain};
use crate::config::AuditConfig;
use crate::config::{self, PluginConfig};
use crate::engine::request::Request;
use crate::engine::response::HEADER_PREFIX;
use crate::engine::{Engine, Sources, Verdict};
use crate::health;
use crate::identity::{parse_remote_jwks, remote_sources, SharedTokens, TokenCache};
use crate::sources::bundle::{self, Bundle};
use crate::sources::{self, Fetched, SharedStore, SyncStatus};
use crate::time;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::new()) });
}}

const LOGS_SERVICE: &str = "opentelemetry.proto.collector.logs.v1.LogsService";
const BUNDLE_SOURCE: &str = "bundle";
/// How often an issuer whose keys never arrived is retried.
const MISSING_KEYS_RETRY_MS: u64 = 5_000;

fn jwks_source(issuer: &str) -> String {
    format!("jwks/{issuer}")
}

/// Envoy's shared data. Host errors read as "absent" / "not written": coordination degrades
/// to extra fetches, never to a VM abort.
struct EnvoyShared;

impl SharedStore for EnvoyShared {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}

/// The Envoy-wide tier of the verified-token cache (see `identity::SharedTokens`).
struct EnvoyTokens;

impl SharedTokens for EnvoyTokens {
    fn get(&self, slot: &str) -> Option<Vec<u8>> {
        hostcalls::get_shared_data(slot).ok().and_then(|(v, _)| v)
    }
    fn put(&self, slot: &str, entry: &[u8]) {
        let _ = hostcalls::set_shared_data(slot, Some(entry), None);
    }
}

/// Envoy stats, defined once per VM (same names across VMs aggregate into one stat). A
/// host that refuses a metric gets id 0 and its updates are dropped: stats must never take
/// the request path down.
struct Metrics {
    allowed: u32,
    denied: u32,
    unauthenticated: u32,
    would_deny: u32,
    audit_emitted: u32,
    audit_sent: u32,
    audit_retried: u32,
    audit_acknowledged: u32,
    audit_dropped: u32,
    audit_exports_ok: u32,
    audit_exports_failed: u32,
    audit_buffered: u32,
    config_rejected: u32,
    bundle_version: u32,
    bundle_age: u32,
    bundle_last_sync_success: u32,
    bundle_fetches: u32,
    bundle_failures: u32,
    bundle_rejected: u32,
    bundle_updates: u32,
    jwks_fetches: u32,
    jwks_failures: u32,
    jwks_rejected: u32,
    jwks_updates: u32,
}

impl Metrics {
    fn define() -> Metrics {
        let c = |n: &str| hostcalls::define_metric(MetricType::Counter, n).unwrap_or(0);
        let g = |n: &str| hostcalls::define_metric(MetricType::Gauge, n).unwrap_or(0);
        Metrics {
            allowed: c("meshguard.requests.allowed"),
            denied: c("meshguard.requests.denied"),
            unauthenticated: c("meshguard.requests.unauthenticated"),
            would_deny: c("meshguard.requests.would_deny"),
            audit_emitted: c("meshguard.audit.emitted"),
            audit_sent: c("meshguard.audit.sent"),
            audit_retried: c("meshguard.audit.retried"),
            audit_acknowledged: c("meshguard.audit.acknowledged"),
            audit_dropped: c("meshguard.audit.dropped"),
            audit_exports_ok: c("meshguard.audit.exports_ok"),
            audit_exports_failed: c("meshguard.audit.exports_failed"),
            audit_buffered: g("meshguard.audit.buffered"),
            config_rejected: c("meshguard.config.rejected"),
            bundle_version: g("meshguard.bundle.version"),
            bundle_age: g("meshguard.bundle.age_seconds"),
            bundle_last_sync_success: g("meshguard.bundle.last_sync_success"),
            bundle_fetches: c("meshguard.bundle.fetches"),
            bundle_failures: c("meshguard.bundle.fetch_failures"),
            bundle_rejected: c("meshguard.bundle.rejected"),
            bundle_updates: c("meshguard.bundle.updates"),
            jwks_fetches: c("meshguard.jwks.fetches"),
            jwks_failures: c("meshguard.jwks.fetch_failures"),
            jwks_rejected: c("meshguard.jwks.rejected"),
            jwks_updates: c("meshguard.jwks.updates"),
        }
    }

    fn inc(id: u32, by: u64) {
        if id != 0 && by > 0 {
            let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    fn set(id: u32, v: u64) {
        if id != 0 {
            let _ = hostcalls::record_metric(id, v);
        }
    }
}

/// State shared by the root context and its HTTP contexts (same VM, same thread).
struct Shared {
    engine: Option<Rc<Engine>>,
    cache: TokenCache,
    audit: AuditBuffer,
    /// Counters already published to Envoy stats, so ticks publish deltas.
    published: audit::AuditCounters,
    /// A request met an unknown `kid`: refetch remote JWKS early.
    jwks_wanted: bool,
    /// `created_at` of the bundle in force, for `bundleAge`.
    bundle_created: Option<u64>,
    started_secs: u64,
}

/// What an outstanding HTTP callout is for.
#[derive(Debug, Clone)]
enum Fetch {
    Bundle,
    Jwks(String),
}

struct Root {
    shared: Rc<RefCell<Shared>>,
    metrics: Rc<Metrics>,
    /// gRPC call token -> audit batch id.
    audit_calls: HashMap<u32, u64>,
    /// HTTP call token -> what it fetches.
    fetches: HashMap<u32, Fetch>,
    /// The last configuration that compiled.
    config: Option<Rc<PluginConfig>>,
    /// The verified bundle in force.
    bundle: Option<Bundle>,
    /// Revision of the shared bundle last looked at (adopted or refused).
    bundle_rev: u64,
    /// Fetched JWKS by issuer, and the revision last looked at.
    jwks: HashMap<String, Value>,
    jwks_rev: HashMap<String, u64>,
    random: u64,
    node_id: String,
    node_cluster: String,
    pod: String,
    namespace: String,
}

fn unix_nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn now_nanos() -> u64 {
    hostcalls::get_current_time().map(unix_nanos).unwrap_or(0)
}

fn now_ms() -> u64 {
    now_nanos() / 1_000_000
}

fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

impl Root {
    fn new() -> Root {
        // Each worker VM numbers its contexts from 1 and workers can start within the same
        // tick, so the stream id mixes the start time with a random part.
        let stream = format!("{:x}-{:016x}", now_nanos(), random_u64());
        Root {
            shared: Rc::new(RefCell::new(Shared {
                engine: None,
                cache: TokenCache::new(0),
                audit: AuditBuffer::new(&AuditConfig::default(), Chain::new(stream)),
                published: audit::AuditCounters::default(),
                jwks_wanted: false,
                bundle_created: None,
                started_secs: now_nanos() / 1_000_000_000,
            })),
            metrics: Rc::new(Metrics::define()),
            audit_calls: HashMap::new(),
            fetches: HashMap::new(),
            config: None,
            bundle: None,
            bundle_rev: 0,
            jwks: HashMap::new(),
            jwks_rev: HashMap::new(),
            random: random_u64(),
            node_id: String::new(),
            node_cluster: String::new(),
            pod: String::new(),
            namespace: String::new(),
        }
    }

    fn property(&self, path: Vec<&str>) -> String {
        self.get_property(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Compiles `cfg` with the current bundle and JWKS and puts the result in force.
    fn build(
        &self,
        cfg: &PluginConfig,
        bundle: Option<&Bundle>,
    ) -> Result<Engine, crate::config::ConfigError> {
        Engine::build(
            cfg,
            Sources {
                bundle,
                jwks: Some(&self.jwks),
            },
        )
    }

    fn install(&mut self, engine: Engine) {
        let tick = Duration::from_millis(engine.audit_config().flush_interval_ms.clamp(50, 1_000));
        let mut shared = self.shared.borrow_mut();
        shared.audit.set_limits(engine.audit_config());
        shared.cache = engine
            .verifier()
            .new_cache()
            .with_shared(Box::new(EnvoyTokens));
        shared.bundle_created = self
            .bundle
            .as_ref()
            .and_then(|b| time::parse(&b.created_at));
        Metrics::set(
            self.metrics.bundle_version,
            engine.bundle_version().unwrap_or(0),
        );
        shared.engine = Some(Rc::new(engine));
        drop(shared);
        self.set_tick_period(tick);
    }

    /// Rebuilds after new JWKS; a failure keeps the engine in force.
    fn rebuild(&mut self) {
        let Some(cfg) = self.config.clone() else {
            return;
        };
        match self.build(&cfg, self.bundle.as_ref()) {
            Ok(e) => self.install(e),
            Err(e) => log::error!("meshguard: could not rebuild with fetched data: {e}"),
        }
    }

    /// Verifies a bundle and, if newer and compilable, puts it in force.
    fn accept_bundle(&mut self, bytes: &[u8]) -> Result<Option<u64>, String> {
        let Some(cfg) = self.config.clone() else {
            return Err("no configuration".into());
        };
        let Some(engine) = self.shared.borrow().engine.clone() else {
            return Err("no engine".into());
        };
        let Some(source) = engine.bundle_source() else {
            return Err("no bundle source configured".into());
        };
        let b = bundle::verify(bytes, &source.keys, source.config.max_bytes)
            .map_err(|e| e.to_string())?;
        if self.bundle.as_ref().is_some_and(|a| a.version == b.version) {
            return Ok(None);
        }
        bundle::check_newer(&b, self.bundle.as_ref().map(|a| a.version))
            .map_err(|e| e.to_string())?;
        let engine = self
            .build(&cfg, Some(&b))
            .map_err(|e| bundle::BundleError::Policy(e.to_string()).to_string())?;
        let version = b.version;
        self.bundle = Some(b);
        self.install(engine);
        log::info!("meshguard: bundle version {version} in force");
        Ok(Some(version))
    }

    /// Adopts what another VM fetched.
    fn adopt_shared(&mut self) {
        let store = EnvoyShared;
        let rev = sources::revision(&store, BUNDLE_SOURCE);
        if rev != self.bundle_rev {
            self.bundle_rev = rev;
            if let Some(bytes) = sources::document(&store, BUNDLE_SOURCE) {
                if let Err(e) = self.accept_bundle(&bytes) {
                    log::debug!("meshguard: shared bundle not adopted: {e}");
                }
            }
        }
        let issuers: Vec<String> = self
            .config
            .as_ref()
            .map(|c| {
                remote_sources(&c.identity)
                    .into_iter()
                    .map(|s| s.issuer)
                    .collect()
            })
            .unwrap_or_default();
        let mut changed = false;
        for issuer in issuers {
            let source = jwks_source(&issuer);
            let rev = sources::revision(&store, &source);
            if self.jwks_rev.get(&issuer).copied().unwrap_or(0) == rev {
                continue;
            }
            self.jwks_rev.insert(issuer.clone(), rev);
            let Some(bytes) = sources::document(&store, &source) else {
                continue;
            };
            if let Ok(doc) = serde_json::from_slice::<Value>(&bytes) {
                if parse_remote_jwks(&doc).is_ok() {
                    self.jwks.insert(issuer, doc);
                    changed = true;
                }
            }
        }
        if changed {
            self.rebuild();
        }
    }

    fn start_fetch(
        &mut self,
        what: Fetch,
        cluster: &str,
        path: &str,
        authority: &str,
        etag: Option<&str>,
        timeout_ms: u64,
    ) {
        let mut headers = vec![
            (":method", "GET"),
            (":path", path),
            (":authority", authority),
            ("accept", "application/json"),
        ];
        if let Some(e) = etag {
            headers.push(("if-none-match", e));
        }
        let (source, fetches) = match &what {
            Fetch::Bundle => (BUNDLE_SOURCE.to_string(), self.metrics.bundle_fetches),
            Fetch::Jwks(i) => (jwks_source(i), self.metrics.jwks_fetches),
        };
        Metrics::inc(fetches, 1);
        log::debug!("meshguard: fetching {source} from cluster {cluster:?} path {path}");
        match self.dispatch_http_call(
            cluster,
            headers,
            None,
            Vec::new(),
            Duration::from_millis(timeout_ms),
        ) {
            Ok(token) => {
                self.fetches.insert(token, what);
            }
            Err(status) => {
                let reason = format!("could not start the call to cluster {cluster:?} ({status:?}); is the cluster defined?");
                self.record_failure(&what, &source, false, reason);
            }
        }
    }

    fn record_failure(&self, what: &Fetch, source: &str, reachable: bool, reason: String) {
        let store = EnvoyShared;
        let mut st = SyncStatus::load(&store, source);
        log::warn!("meshguard: fetching {source} failed: {reason}; keeping the last good data");
        st.failed(now_ms(), reachable, reason);
        st.store(&store, source);
        let id = match what {
            Fetch::Bundle => self.metrics.bundle_failures,
            Fetch::Jwks(_) => self.metrics.jwks_failures,
        };
        Metrics::inc(id, 1);
    }

    fn record_rejection(&self, what: &Fetch, source: &str, reason: String) {
        let store = EnvoyShared;
        let mut st = SyncStatus::load(&store, source);
        log::warn!("meshguard: {source} rejected: {reason}; keeping the last good data");
        st.rejected(now_ms(), reason);
        st.store(&store, source);
        let id = match what {
            Fetch::Bundle => self.metrics.bundle_rejected,
            Fetch::Jwks(_) => self.metrics.jwks_rejected,
        };
        Metrics::inc(id, 1);
    }

    fn record_success(&self, what: &Fetch, source: &str, etag: Option<String>, updated: bool) {
        let store = EnvoyShared;
        let mut st = SyncStatus::load(&store, source);
        st.succeeded(now_ms(), etag, updated);
        st.store(&store, source);
        if updated {
            let id = match what {
                Fetch::Bundle => self.metrics.bundle_updates,
                Fetch::Jwks(_) => self.metrics.jwks_updates,
            };
            Metrics::inc(id, 1);
        }
    }

    /// Starts the fetches that are due and that this VM wins.
    fn maybe_fetch(&mut self) {
        let Some(cfg) = self.config.clone() else {
            return;
        };
        let store = EnvoyShared;
        let now = now_ms();
        if let Some(b) = &cfg.bundle {
            let interval = sources::jittered(b.interval_seconds.saturating_mul(1000), self.random);
            if sources::claim_fetch(&store, BUNDLE_SOURCE, now, interval, false) {
                let etag = SyncStatus::load(&store, BUNDLE_SOURCE)
                    .etag
                    .filter(|_| self.bundle.is_some());
                let authority = b
                    .authority
                    .clone()
                    .unwrap_or_else(|| sources::authority_for(&b.cluster));
                self.start_fetch(
                    Fetch::Bundle,
                    &b.cluster,
                    &b.path,
                    &authority,
                    etag.as_deref(),
                    b.timeout_ms,
                );
            }
        }
        let forced = std::mem::take(&mut self.shared.borrow_mut().jwks_wanted);
        for remote in remote_sources(&cfg.identity) {
            let source = jwks_source(&remote.issuer);
            // Until keys arrive, retry every few seconds on the schedule; the forced budget
            // is kept for unknown-kid refetches.
            let refresh_ms = if self.jwks.contains_key(&remote.issuer) {
                remote.refresh_seconds.saturating_mul(1000)
            } else {
                MISSING_KEYS_RETRY_MS
            };
            let interval = sources::jittered(refresh_ms, self.random);
            if sources::claim_fetch(&store, &source, now, interval, forced) {
                let timeout = config::default_fetch_timeout();
                self.start_fetch(
                    Fetch::Jwks(remote.issuer),
                    &remote.cluster,
                    &remote.path,
                    &remote.authority,
                    None,
                    timeout,
                );
            }
        }
    }

    fn on_fetched(&mut self, what: Fetch, fetched: Fetched) {
        let source = match &what {
            Fetch::Bundle => BUNDLE_SOURCE.to_string(),
            Fetch::Jwks(i) => jwks_source(i),
        };
        match fetched {
            Fetched::NotModified => self.record_success(&what, &source, None, false),
            Fetched::Failed { reachable, reason } => {
                self.record_failure(&what, &source, reachable, reason)
            }
            Fetched::Body { body, etag } => match &what {
                Fetch::Bundle => match self.accept_bundle(&body) {
                    Ok(new) => {
                        if new.is_some() {
                            let store = EnvoyShared;
                            // We already hold it: do not re-adopt our own write.
                            self.bundle_rev = sources::publish(&store, BUNDLE_SOURCE, &body);
                        }
                        self.record_success(&what, &source, etag, new.is_some());
                    }
                    Err(reason) => self.record_rejection(&what, &source, reason),
                },
                Fetch::Jwks(issuer) => {
                    let doc = serde_json::from_slice::<Value>(&body)
                        .map_err(|e| format!("not JSON: {e}"));
                    match doc.and_then(|d| parse_remote_jwks(&d).map(|(_, skipped)| (d, skipped))) {
                        Ok((doc, skipped)) => {
                            if !skipped.is_empty() {
                                log::info!(
                                    "meshguard: {source}: skipped unusable keys: {}",
                                    skipped.join("; ")
                                );
                            }
                            let store = EnvoyShared;
                            let rev = sources::publish(&store, &source, &body);
                            self.jwks_rev.insert(issuer.clone(), rev);
                            let changed = self.jwks.get(issuer) != Some(&doc);
                            self.jwks.insert(issuer.clone(), doc);
                            if changed {
                                self.rebuild();
                            }
                            self.record_success(&what, &source, etag, changed);
                        }
                        Err(reason) => self.record_rejection(&what, &source, reason),
                    }
                }
            },
        }
    }

    /// Sends audit batches while a call slot is free and something waits. Dispatch
    /// failures (unknown cluster, host refusing the call) put the batch back.
    fn flush(&mut self) {
        let Some(engine) = self.shared.borrow().engine.clone() else {
            return;
        };
        let cfg = engine.audit_config();
        let Some(cluster) = cfg.cluster.as_deref() else {
            return;
        };
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let resource = [
            ("service.name", AnyValue::Str("meshguard")),
            (
                "meshguard.plugin.version",
                AnyValue::Str(env!("CARGO_PKG_VERSION")),
            ),
            (
                "meshguard.config.version",
                AnyValue::Str(engine.policy_version()),
            ),
            ("envoy.node.id", AnyValue::Str(&self.node_id)),
            ("envoy.node.cluster", AnyValue::Str(&self.node_cluster)),
            ("k8s.pod.name", AnyValue::Str(&self.pod)),
            ("k8s.namespace.name", AnyValue::Str(&self.namespace)),
        ];
        loop {
            let now = now_nanos();
            let batch = self
                .shared
                .borrow_mut()
                .audit
                .take_batch(now / 1_000_000, now, &resource);
            let Some((id, message)) = batch else { break };
            match hostcalls::dispatch_grpc_call(
                cluster,
                LOGS_SERVICE,
                "Export",
                Vec::new(),
                Some(&message),
                timeout,
            ) {
                Ok(token) => {
                    self.audit_calls.insert(token, id);
                }
                Err(status) => {
                    log::warn!("meshguard: audit export to cluster {cluster:?} could not start ({status:?}); events kept for retry");
                    self.shared
                        .borrow_mut()
                        .audit
                        .finish_batch(id, false, now / 1_000_000);
                    break;
                }
            }
        }
    }

    fn publish_counters(&self) {
        let mut shared = self.shared.borrow_mut();
        let now = shared.audit.counters;
        let before = shared.published;
        let m = &self.metrics;
        Metrics::inc(m.audit_emitted, now.emitted - before.emitted);
        Metrics::inc(m.audit_sent, now.sent - before.sent);
        Metrics::inc(m.audit_retried, now.retried - before.retried);
        Metrics::inc(m.audit_acknowledged, now.acknowledged - before.acknowledged);
        Metrics::inc(m.audit_dropped, now.dropped - before.dropped);
        Metrics::inc(m.audit_exports_ok, now.exports_ok - before.exports_ok);
        Metrics::inc(
            m.audit_exports_failed,
            now.exports_failed - before.exports_failed,
        );
        Metrics::set(m.audit_buffered, shared.audit.queued() as u64);
        shared.published = now;
        if let Some(created) = shared.bundle_created {
            Metrics::set(m.bundle_age, (now_ms() / 1000).saturating_sub(created));
        }
        drop(shared);
        if self.config.as_ref().is_some_and(|c| c.bundle.is_some()) {
            let st = SyncStatus::load(&EnvoyShared, BUNDLE_SOURCE);
            Metrics::set(m.bundle_last_sync_success, u64::from(st.last_ok));
        }
    }
}

impl Context for Root {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, _response_size: usize) {
        let Some(id) = self.audit_calls.remove(&token_id) else {
            return;
        };
        let ok = status_code == 0;
        if !ok {
            let (_, message) = self.get_grpc_status();
            log::warn!(
                "meshguard: audit export failed with gRPC status {status_code} ({}); events kept for retry",
                message.unwrap_or_default()
            );
        }
        let more = {
            let mut shared = self.shared.borrow_mut();
            shared.audit.finish_batch(id, ok, now_ms());
            ok && shared.audit.batch_ready()
        };
        // Under load one batch per tick is not enough: keep going while full batches wait.
        if more {
            self.flush();
        }
        self.publish_counters();
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(what) = self.fetches.remove(&token_id) else {
            return;
        };
        let headers = self.get_http_call_response_headers_bytes();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
                .map(str::to_string)
        };
        let status = header(":status").and_then(|s| s.parse::<u16>().ok());
        let max = match &what {
            Fetch::Bundle => self
                .config
                .as_ref()
                .and_then(|c| c.bundle.as_ref())
                .map_or(1 << 20, |b| b.max_bytes),
            Fetch::Jwks(_) => 1 << 20,
        };
        if status == Some(200) && body_size > max {
            let source = match &what {
                Fetch::Bundle => BUNDLE_SOURCE.to_string(),
                Fetch::Jwks(i) => jwks_source(i),
            };
            self.record_rejection(
                &what,
                &source,
                format!("{body_size} bytes is over the {max}-byte cap"),
            );
            return;
        }
        let body = self.get_http_call_response_body(0, body_size);
        // When the source cannot be reached Envoy answers the callout itself (503 "upstream
        // connect error", 504 "upstream request timeout"): that is no answer from the source.
        let local_reply = matches!(status, Some(503 | 504))
            && header("x-envoy-upstream-service-time").is_none()
            && body.as_deref().is_some_and(|b| {
                b.starts_with(b"upstream connect error")
                    || b.starts_with(b"no healthy upstream")
                    || b.starts_with(b"upstream request timeout")
            });
        let fetched = sources::classify(status.filter(|_| !local_reply), header("etag"), body);
        self.on_fetched(what, fetched);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let parsed = config::parse(&bytes);
        let built = parsed.and_then(|cfg| {
            // A bundle in force survives reconfiguration if it still verifies and compiles.
            let keep = self.bundle.clone().filter(|_| cfg.bundle.is_some());
            match self.build(&cfg, keep.as_ref()) {
                Ok(e) => Ok((cfg, e, keep)),
                Err(_) if keep.is_some() => self.build(&cfg, None).map(|e| (cfg, e, None)),
                Err(e) => Err(e),
            }
        });
        match built {
            Ok((cfg, engine, keep)) => {
                log::info!(
                    "meshguard: configured: mode {}, {} policies, version {}",
                    engine.mode().as_str(),
                    engine.policy_count(),
                    engine.policy_version()
                );
                // Envoy 1.40 exposes the bootstrap node under `xds.node`; Istio puts the
                // pod and namespace into its metadata.
                self.node_id = self.property(vec!["xds", "node", "id"]);
                self.node_cluster = self.property(vec!["xds", "node", "cluster"]);
                self.pod = self.property(vec!["xds", "node", "metadata", "NAME"]);
                self.namespace = self.property(vec!["xds", "node", "metadata", "NAMESPACE"]);
                self.bundle = keep;
                self.config = Some(Rc::new(cfg));
                self.install(engine);
                true
            }
            Err(e) => {
                log::error!("meshguard: configuration rejected, keeping the previous one: {e}");
                Metrics::inc(self.metrics.config_rejected, 1);
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.flush();
        self.adopt_shared();
        self.maybe_fetch();
        self.publish_counters();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            shared: Rc::clone(&self.shared),
            metrics: Rc::clone(&self.metrics),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    shared: Rc<RefCell<Shared>>,
    metrics: Rc<Metrics>,
}

impl Context for Http {}

impl Http {
    /// Answers the status endpoint if this request is for it.
    fn health(&self, engine: &Engine, req: &Request) -> bool {
        let Some(st) = engine.status_config() else {
            return false;
        };
        if req.method != "GET" || req.path_only() != st.path {
            return false;
        }
        if !st.ports.is_empty() {
            // Envoy does not expose listener names to wasm; the local port of the
            // downstream connection identifies the listener (an int64, little-endian).
            let port = self
                .get_property(vec!["destination", "port"])
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map(i64::from_le_bytes)
                .and_then(|p| u16::try_from(p).ok());
            if !port.is_some_and(|p| st.ports.contains(&p)) {
                return false;
            }
        }
        let sync = SyncStatus::load(&EnvoyShared, BUNDLE_SOURCE);
        let (created, started) = {
            let s = self.shared.borrow();
            (s.bundle_created, s.started_secs)
        };
        let report = health::report(engine, &sync, created, now_ms() / 1000, started);
        let body = serde_json::to_vec(&report).unwrap_or_default();
        let code = if report.status == "unhealthy" {
            503
        } else {
            200
        };
        self.send_http_response(
            code,
            vec![
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
            ],
            Some(&body),
        );
        true
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let started = now_nanos();
        let engine = self.shared.borrow().engine.clone();
        let Some(engine) = engine else {
            // No valid configuration was ever accepted: fail closed.
            self.send_http_response(
                503,
                vec![("content-type", "application/json")],
                Some(br#"{"decision":"deny","reason":"MeshGuard has no valid configuration"}"#),
            );
            return Action::Pause;
        };
        let mut req = Request::default();
        for (name, value) in self.get_http_request_headers_bytes() {
            let value = String::from_utf8_lossy(&value).into_owned();
            match name.as_str() {
                ":method" => req.method = value,
                ":path" => req.path = value,
                ":authority" => req.authority = value,
                _ => req.headers.push((name, value)),
            }
        }
        if self.health(&engine, &req) {
            return Action::Pause;
        }
        let mut outcome = {
            let mut shared = self.shared.borrow_mut();
            engine.handle(&req, started, &mut shared.cache)
        };
        // Missing keys are retried on their own schedule; only an unknown kid hints at a
        // rotation worth an early refetch.
        if outcome.event.identity_error == "unknown_kid" {
            self.shared.borrow_mut().jwks_wanted = true;
        }
        let m = &self.metrics;
        let action = match &outcome.verdict {
            Verdict::Forward { set_headers, .. } => {
                for (name, _) in &req.headers {
                    if name.starts_with(HEADER_PREFIX) {
                        self.set_http_request_header(name, None);
                    }
                }
                for (name, value) in set_headers {
                    self.set_http_request_header(name, Some(value));
                }
                Metrics::inc(
                    if outcome.event.decision == "allow" {
                        m.allowed
                    } else {
                        m.would_deny
                    },
                    1,
                );
                Action::Continue
            }
            Verdict::Respond(r) => {
                let headers: Vec<(&str, &str)> = r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                self.send_http_response(u32::from(r.status), headers, Some(r.body.as_bytes()));
                Metrics::inc(
                    if r.status == 401 {
                        m.unauthenticated
                    } else {
                        m.denied
                    },
                    1,
                );
                Action::Pause
            }
        };
        outcome.event.latency_us = now_nanos().saturating_sub(started) / 1_000;
        if engine.audit_config().cluster.is_some() {
            self.shared.borrow_mut().audit.push(&outcome.event);
        } else {
            log::info!(
                "meshguard: {}",
                serde_json::to_string(&outcome.event).unwrap_or_default()
            );
        }
        action
    }
}
