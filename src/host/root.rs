//! The root context of one worker VM: takes the configuration, runs the timer (audit
//! export, document fetches), installs the engines [`Worker`] compiles, and creates the
//! HTTP contexts.

use super::callouts::{Callouts, Node};
use super::http::Http;
use super::metrics::{Metrics, Published};
use super::{now_ms, Host};
use crate::audit::{AuditBuffer, AuditCounters, Chain};
use crate::config::AuditConfig;
use crate::engine::Engine;
use crate::identity::TokenCache;
use crate::sources::{Change, FetchRequest, Reply, Update};
use crate::worker::{Progress, Rebuilt, Worker};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// What the root context shares with its HTTP contexts (same VM, same thread).
pub(crate) struct Vm {
    /// The engine in force (`None` until a configuration was accepted: fail closed).
    pub(crate) engine: Option<Rc<Engine>>,
    /// Verified tokens (this worker, plus the Envoy-wide tier in shared data).
    pub(crate) cache: TokenCache,
    /// Audit events waiting for export.
    pub(crate) audit: AuditBuffer,
    /// A request met an unknown `kid`: ask for an early JWKS refetch on the next tick.
    pub(crate) jwks_wanted: bool,
    /// `created_at` of the bundle in force, for `bundleAge`.
    pub(crate) bundle_created: Option<u64>,
    /// When this VM started, for `uptimeSeconds`.
    pub(crate) started_secs: u64,
    /// Tests replace the engine's body phase with a scripted one.
    #[cfg(test)]
    pub(crate) decider: Option<Rc<dyn super::decider::Decider>>,
}

/// The root context.
pub(crate) struct Root {
    host: Rc<dyn Host>,
    vm: Rc<RefCell<Vm>>,
    metrics: Rc<Metrics>,
    worker: Worker,
    callouts: Callouts,
    node: Node,
    /// Audit counters already published to Envoy stats, so ticks publish deltas.
    published: AuditCounters,
}

impl Root {
    /// A root context with nothing configured.
    pub(crate) fn new(host: Rc<dyn Host>) -> Root {
        let now = host.now_nanos();
        // Each worker VM numbers its contexts from 1 and workers can start within the same
        // tick, so the stream id mixes the start time with a random part.
        let stream = format!("{now:x}-{:016x}", host.random());
        let vm = Vm {
            engine: None,
            cache: TokenCache::new(0),
            audit: AuditBuffer::new(&AuditConfig::default(), Chain::new(stream)),
            jwks_wanted: false,
            bundle_created: None,
            started_secs: now / 1_000_000_000,
            #[cfg(test)]
            decider: None,
        };
        Root {
            metrics: Rc::new(Metrics::define(Rc::clone(&host))),
            worker: Worker::new(host.shared(), host.random()),
            vm: Rc::new(RefCell::new(vm)),
            callouts: Callouts::default(),
            node: Node::default(),
            published: AuditCounters::default(),
            host,
        }
    }

    /// A new HTTP stream.
    pub(crate) fn new_http(&self) -> Http {
        Http::new(
            Rc::clone(&self.host),
            Rc::clone(&self.vm),
            Rc::clone(&self.metrics),
        )
    }

    /// The plugin configuration arrived or changed; false refuses it (the previous one
    /// stays in force).
    pub(crate) fn on_configure(&mut self) -> bool {
        let text = self.host.plugin_configuration();
        match self.worker.configure(&text) {
            Ok(engine) => {
                log::info!(
                    "meshguard: configured: mode {}, {} policies, version {}",
                    engine.mode().as_str(),
                    engine.policy_count(),
                    engine.policy_version()
                );
                self.node = Node::read(&*self.host);
                self.install(engine);
                true
            }
            Err(e) => {
                log::error!("meshguard: configuration rejected, keeping the previous one: {e}");
                self.metrics.config_rejected();
                false
            }
        }
    }

    /// The timer: export audit events, sync documents, publish stats.
    pub(crate) fn on_tick(&mut self) {
        self.flush();
        if std::mem::take(&mut self.vm.borrow_mut().jwks_wanted) {
            self.worker.want_jwks_refresh();
        }
        let progress = self.worker.on_tick(now_ms(&*self.host));
        self.apply(progress);
        self.publish();
    }

    /// The answer to a document fetch.
    pub(crate) fn on_http_call_response(&mut self, token: u32, body_size: usize) {
        let Some(doc) = self.callouts.take_fetch(token) else {
            return;
        };
        let limit = self.worker.read_limit(&doc);
        let reply = Reply {
            headers: self.host.http_call_response_headers(),
            body_size,
            body: self.host.http_call_response_body(body_size.min(limit)),
        };
        let progress = self.worker.on_response(&doc, reply, now_ms(&*self.host));
        self.apply(progress);
    }

    /// The answer to an audit export.
    pub(crate) fn on_grpc_call_response(&mut self, token: u32, status: u32) {
        let more = self
            .callouts
            .export_done(&*self.host, &self.vm, token, status);
        // Under load one batch per tick is not enough: keep going while full batches wait.
        if more {
            self.flush();
        }
        self.publish();
    }

    fn flush(&mut self) {
        self.callouts.flush(&*self.host, &self.vm, &self.node);
    }

    fn install(&mut self, engine: Rc<Engine>) {
        let tick = engine.audit_config().flush_interval_ms.clamp(50, 1_000);
        {
            let mut vm = self.vm.borrow_mut();
            vm.audit.set_limits(engine.audit_config());
            vm.cache = engine
                .verifier()
                .new_cache()
                .with_shared(self.host.shared());
            vm.bundle_created = self.worker.bundle_created();
            vm.engine = Some(Rc::clone(&engine));
        }
        self.metrics.bundle_version(engine.bundle_version());
        self.host.set_tick_period(Duration::from_millis(tick));
    }

    fn apply(&mut self, progress: Progress) {
        for update in &progress.updates {
            self.report(update);
        }
        match progress.rebuilt {
            Rebuilt::No => {}
            Rebuilt::Engine(e) => self.install(e),
            Rebuilt::Failed(e) => {
                log::error!("meshguard: could not rebuild with fetched data: {e}")
            }
        }
        for req in progress.fetches {
            self.start_fetch(req);
        }
    }

    fn start_fetch(&mut self, req: FetchRequest) {
        self.metrics.fetch_started(&req.doc);
        log::debug!(
            "meshguard: fetching {} from cluster {:?} path {}",
            req.doc,
            req.cluster,
            req.path
        );
        if let Err(detail) = self.callouts.start_fetch(&*self.host, &req) {
            let progress = self
                .worker
                .on_not_started(&req, detail, now_ms(&*self.host));
            self.apply(progress);
        }
    }

    fn report(&self, update: &Update) {
        self.metrics.update(update);
        let source = &update.doc;
        match &update.change {
            Change::NewBundle { version, .. } => {
                log::info!("meshguard: bundle version {version} in force")
            }
            Change::NewGrants { version, .. } => {
                log::info!("meshguard: grants document version {version} in force")
            }
            Change::NewKeys {
                adopted: false,
                skipped,
            } if !skipped.is_empty() => log::info!(
                "meshguard: {source}: skipped unusable keys: {}",
                skipped.join("; ")
            ),
            Change::NewKeys { .. } | Change::NotModified => {}
            Change::Rejected(reason) => {
                log::warn!("meshguard: {source} rejected: {reason}; keeping the last good data")
            }
            Change::Failed(f) => log::warn!(
                "meshguard: fetching {source} failed: {}; keeping the last good data",
                f.reason()
            ),
            Change::NotAdopted(reason) => {
                log::debug!("meshguard: shared {source} not adopted: {reason}")
            }
        }
    }

    fn publish(&mut self) {
        let (audit, buffered, created) = {
            let vm = self.vm.borrow();
            (vm.audit.counters, vm.audit.queued(), vm.bundle_created)
        };
        let now_secs = now_ms(&*self.host) / 1000;
        let bundled = self.worker.sources().bundle_configured();
        self.metrics.publish(
            Published {
                audit,
                buffered,
                bundle_age_secs: created.map(|c| now_secs.saturating_sub(c)),
                bundle_last_sync_ok: bundled.then(|| self.worker.bundle_status().last_ok),
            },
            &self.published,
        );
        self.published = audit;
    }
}

#[cfg(test)]
impl Root {
    pub(crate) fn vm(&self) -> &Rc<RefCell<Vm>> {
        &self.vm
    }

    pub(crate) fn control(&self) -> &Worker {
        &self.worker
    }
}
