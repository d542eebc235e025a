//! The proxy-wasm glue: moves bytes between Envoy and the engine, nothing more.
//!
//! Root context (one per worker VM): compiles the configuration in `on_configure`, owns
//! the token cache and the audit buffer, and exports audit batches from `on_tick`.
//! HTTP context (one per request): copies the request headers out, asks the engine,
//! and applies the verdict.

use crate::audit::{self, AuditBuffer, AuditConfig, Chain};
use crate::engine::{Engine, Verdict};
use crate::identity::TokenCache;
use crate::otlp::AnyValue;
use crate::request::Request;
use crate::response::HEADER_PREFIX;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
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

/// Envoy stats, defined once per VM. A host that refuses a metric gets id 0 and the
/// increments are simply lost: stats must never take the request path down.
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
}

struct Root {
    shared: Rc<RefCell<Shared>>,
    metrics: Rc<Metrics>,
    /// gRPC call token -> audit batch id.
    in_flight: HashMap<u32, u64>,
    node_id: String,
    node_cluster: String,
    pod: String,
    namespace: String,
}

fn now_nanos() -> u64 {
    hostcalls::get_current_time().map(unix_nanos).unwrap_or(0)
}

/// A stream id unique per VM lifetime: start time plus a random part, because every
/// worker VM numbers its contexts from 1 and workers can start within the same tick.
fn stream_id() -> String {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{:x}-{:016x}", now_nanos(), random)
}

impl Root {
    fn new() -> Root {
        Root {
            shared: Rc::new(RefCell::new(Shared {
                engine: None,
                cache: TokenCache::new(0),
                audit: AuditBuffer::new(&AuditConfig::default(), Chain::new(stream_id())),
                published: audit::AuditCounters::default(),
            })),
            metrics: Rc::new(Metrics::define()),
            in_flight: HashMap::new(),
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

    /// Sends batches while a call slot is free and something waits. Dispatch failures
    /// (unknown cluster, host refusing the call) put the batch back; they never abort the VM.
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
                    self.in_flight.insert(token, id);
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
    }
}

impl Context for Root {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, _response_size: usize) {
        let Some(id) = self.in_flight.remove(&token_id) else {
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
            shared.audit.finish_batch(id, ok, now_nanos() / 1_000_000);
            ok && shared.audit.batch_ready()
        };
        // Under load one batch per tick is not enough: keep going while full batches wait.
        if more {
            self.flush();
        }
        self.publish_counters();
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match Engine::from_text(&bytes) {
            Ok(engine) => {
                log::info!(
                    "meshguard: configured: mode {}, {} policies, version {}",
                    engine.mode().as_str(),
                    engine.policy_count(),
                    engine.policy_version()
                );
                self.node_id = self.property(vec!["node", "id"]);
                self.node_cluster = self.property(vec!["node", "cluster"]);
                // Istio puts the pod and namespace into the node metadata.
                self.pod = self.property(vec!["node", "metadata", "NAME"]);
                self.namespace = self.property(vec!["node", "metadata", "NAMESPACE"]);
                let tick = Duration::from_millis(engine.audit_config().flush_interval_ms);
                let mut shared = self.shared.borrow_mut();
                shared.audit.set_limits(engine.audit_config());
                shared.cache = engine.verifier().new_cache();
                shared.engine = Some(Rc::new(engine));
                drop(shared);
                self.set_tick_period(tick);
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

fn unix_nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let started = unix_nanos(self.get_current_time());
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
        let mut outcome = {
            let mut shared = self.shared.borrow_mut();
            engine.handle(&req, started, &mut shared.cache)
        };
        let m = &self.metrics;
        let action = match &outcome.verdict {
            Verdict::Forward { set_headers } => {
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
        let finished = unix_nanos(self.get_current_time());
        outcome.event.latency_us = finished.saturating_sub(started) / 1_000;
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
