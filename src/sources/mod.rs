//! Fetched documents: the signed policy bundle and each issuer's remote JWKS, fetched once
//! per Envoy (not once per worker) and kept at their last good version.
//!
//! [`Sources`] is the state machine of one worker VM, host-independent: the host calls
//! [`Sources::on_tick`] on its timer and starts the [`FetchRequest`]s it returns, hands
//! each answer to [`Sources::on_response`], and rebuilds the engine when an [`Update`]
//! says so ([`Update::rebuild`]). Everything between (which fetch is due and who does it,
//! `If-None-Match`, verification, rollback refusal, compilation of bundle policies,
//! parsing JWKS into keys, sharing accepted documents with the other workers and adopting
//! theirs, the sync status the status endpoint reports) happens here, through one
//! [`SharedData`] store.
//!
//! Each document has its own [`document::Tracker`]; what differs by kind is the
//! [`document::Kind`] (`bundle::BundleKind`, `jwks::JwksKind`). A new kind of document
//! is a `Kind`, a [`DocId`] variant and a field here.

pub mod bundle;
pub mod document;
pub mod fetch;
pub mod grants;
pub mod jwks;
pub mod sync;

#[cfg(test)]
mod tests;

pub use bundle::VerifiedBundle;
pub use document::{Change, FetchSpec, State, Update};
pub use fetch::{classify, DocId, Failure, FetchRequest, Fetched, Reply};
pub use sync::{authority_for, SyncStatus};

use crate::config::{self, PluginConfig};
use crate::identity::{remote_sources, RemoteKeys};
use crate::shared::SharedData;
use bundle::BundleKind;
use document::Tracker;
use grants::{GrantsKind, VerifiedGrants};
use jwks::JwksKind;
use std::collections::HashMap;
use std::rc::Rc;

/// What a tick brought: documents adopted from other workers, and fetches to start.
#[derive(Debug, Default)]
pub struct Tick {
    /// Documents other workers published (adopted or not).
    pub updates: Vec<Update>,
    /// Fetches this worker won and must start now.
    pub fetches: Vec<FetchRequest>,
}

/// The fetched documents of one worker VM.
pub struct Sources {
    store: Rc<dyn SharedData>,
    /// Jitter of this VM's fetch intervals.
    random: u64,
    bundle: Option<Tracker<BundleKind>>,
    jwks: Vec<Tracker<JwksKind>>,
    grants: Option<Tracker<GrantsKind>>,
    /// A request met an unknown `kid`: refetch remote JWKS early (within the budget).
    refresh_wanted: bool,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("bundle", &self.bundle)
            .field("jwks", &self.jwks)
            .field("grants", &self.grants)
            .finish()
    }
}

/// The sync status of the bundle, as the last fetch (by any worker) left it.
pub fn bundle_status(store: &dyn SharedData) -> SyncStatus {
    SyncStatus::load(store, &DocId::Bundle.source())
}

impl Sources {
    /// No documents configured yet; `random` jitters this VM's intervals.
    pub fn new(store: Rc<dyn SharedData>, random: u64) -> Sources {
        Sources {
            store,
            random,
            bundle: None,
            jwks: Vec::new(),
            grants: None,
            refresh_wanted: false,
        }
    }

    /// The documents of a new configuration. What is in force carries over if it still
    /// belongs to the configuration and is still acceptable (a bundle must verify with
    /// the new keys and size cap). `self` is unchanged: the caller keeps it if the new
    /// configuration is refused.
    pub fn reconfigured(&self, cfg: &PluginConfig) -> Sources {
        let bundle = cfg.bundle.as_ref().and_then(|b| {
            let spec = FetchSpec {
                cluster: b.cluster.clone(),
                path: b.path.clone(),
                authority: b
                    .authority
                    .clone()
                    .unwrap_or_else(|| authority_for(&b.cluster)),
                timeout_ms: b.timeout_ms,
                refresh_ms: b.interval_seconds.saturating_mul(1000),
                retry_ms: b.interval_seconds.saturating_mul(1000),
                max_bytes: b.max_bytes,
                conditional: true,
                forcible: false,
            };
            let tracker = Tracker::new(DocId::Bundle, BundleKind::from_config(b)?, spec);
            Some(tracker.carried(self.bundle.as_ref()))
        });
        let jwks = remote_sources(&cfg.identity)
            .into_iter()
            .map(|r| {
                let id = DocId::Jwks(r.issuer);
                let spec = FetchSpec {
                    cluster: r.cluster,
                    path: r.path,
                    authority: r.authority,
                    timeout_ms: config::default_fetch_timeout(),
                    refresh_ms: r.refresh_seconds.saturating_mul(1000),
                    retry_ms: jwks::MISSING_KEYS_RETRY_MS,
                    max_bytes: jwks::MAX_JWKS_BYTES,
                    conditional: false,
                    forcible: true,
                };
                let old = self.jwks.iter().find(|t| t.id == id);
                Tracker::new(id, JwksKind, spec).carried(old)
            })
            .collect();
        // A `grants:` section that does not compile is refused, with the precise error,
        // when the engine is built; no tracker for it here.
        let grants = crate::controls::compile_grants_source(&cfg.grants)
            .ok()
            .flatten()
            .map(|src| {
                let c = &src.config;
                let spec = FetchSpec {
                    cluster: c.cluster.clone().unwrap_or_default(),
                    path: c.path.clone().unwrap_or_default(),
                    authority: c
                        .authority
                        .clone()
                        .unwrap_or_else(|| authority_for(c.cluster.as_deref().unwrap_or_default())),
                    timeout_ms: config::default_fetch_timeout(),
                    refresh_ms: c.interval_seconds.saturating_mul(1000),
                    retry_ms: c.interval_seconds.saturating_mul(1000),
                    max_bytes: c.max_bytes,
                    conditional: true,
                    forcible: false,
                };
                Tracker::new(DocId::Grants, GrantsKind::from_source(&src), spec)
                    .carried(self.grants.as_ref())
            });
        Sources {
            store: Rc::clone(&self.store),
            random: self.random,
            bundle,
            jwks,
            grants,
            refresh_wanted: self.refresh_wanted,
        }
    }

    /// A request named a `kid` its issuer does not have (a key rotation, perhaps): the
    /// next tick fetches remote JWKS early, at most every
    /// [`sync::FORCED_REFETCH_MS`] per Envoy. Missing keys do not call this: they are
    /// retried on their own schedule.
    pub fn want_jwks_refresh(&mut self) {
        self.refresh_wanted = true;
    }

    /// Adopts what other workers published, then claims the fetches that are due.
    pub fn on_tick(&mut self, now_ms: u64) -> Tick {
        let store = Rc::clone(&self.store);
        let store = &*store;
        let mut tick = Tick::default();
        if let Some(t) = &mut self.bundle {
            tick.updates.extend(t.adopt(store));
        }
        for t in &mut self.jwks {
            tick.updates.extend(t.adopt(store));
        }
        if let Some(t) = &mut self.grants {
            tick.updates.extend(t.adopt(store));
        }
        let forced = std::mem::take(&mut self.refresh_wanted);
        if let Some(t) = &self.bundle {
            tick.fetches
                .extend(t.claim(store, now_ms, self.random, forced));
        }
        for t in &self.jwks {
            tick.fetches
                .extend(t.claim(store, now_ms, self.random, forced));
        }
        if let Some(t) = &self.grants {
            tick.fetches
                .extend(t.claim(store, now_ms, self.random, false));
        }
        tick
    }

    /// How much of an answer's body the host should copy out for `doc`.
    pub fn read_limit(&self, doc: &DocId) -> usize {
        match doc {
            DocId::Bundle => self.bundle.as_ref().map(|t| t.spec.max_bytes),
            DocId::Jwks(_) => Some(jwks::MAX_JWKS_BYTES),
            DocId::Grants => self.grants.as_ref().map(|t| t.spec.max_bytes),
        }
        .unwrap_or(jwks::MAX_JWKS_BYTES)
    }

    /// The answer to a fetch; `None` when `doc` is no longer configured.
    pub fn on_response(&mut self, doc: &DocId, reply: Reply, now_ms: u64) -> Option<Update> {
        let store = Rc::clone(&self.store);
        match doc {
            DocId::Bundle => self
                .bundle
                .as_mut()
                .map(|t| t.on_reply(&*store, reply, now_ms)),
            DocId::Jwks(_) => self
                .jwks
                .iter_mut()
                .find(|t| &t.id == doc)
                .map(|t| t.on_reply(&*store, reply, now_ms)),
            DocId::Grants => self
                .grants
                .as_mut()
                .map(|t| t.on_reply(&*store, reply, now_ms)),
        }
    }

    /// A fetch the host could not start (`detail`: what the host said).
    pub fn on_not_started(
        &mut self,
        req: &FetchRequest,
        detail: String,
        now_ms: u64,
    ) -> Option<Update> {
        let store = Rc::clone(&self.store);
        let failure = Failure::NotStarted {
            cluster: req.cluster.clone(),
            detail,
        };
        match &req.doc {
            DocId::Bundle => self
                .bundle
                .as_mut()
                .map(|t| t.on_not_started(&*store, now_ms, failure)),
            doc @ DocId::Jwks(_) => self
                .jwks
                .iter_mut()
                .find(|t| &t.id == doc)
                .map(|t| t.on_not_started(&*store, now_ms, failure)),
            DocId::Grants => self
                .grants
                .as_mut()
                .map(|t| t.on_not_started(&*store, now_ms, failure)),
        }
    }

    /// The grants document in force.
    pub fn grants(&self) -> Option<&Rc<VerifiedGrants>> {
        self.grants.as_ref().and_then(|t| t.state.current())
    }

    /// Whether a bundle source is configured.
    pub fn bundle_configured(&self) -> bool {
        self.bundle.is_some()
    }

    /// The bundle in force.
    pub fn bundle(&self) -> Option<&Rc<VerifiedBundle>> {
        self.bundle.as_ref().and_then(|t| t.state.current())
    }

    /// Forgets the bundle in force (the configuration cannot be built with it).
    pub fn drop_bundle(&mut self) {
        if let Some(t) = &mut self.bundle {
            t.state = State::Missing;
        }
    }

    /// The remote keys in force, by issuer.
    pub fn jwks(&self) -> HashMap<String, Rc<RemoteKeys>> {
        self.jwks
            .iter()
            .filter_map(|t| match (&t.id, t.state.current()) {
                (DocId::Jwks(issuer), Some(keys)) => Some((issuer.clone(), Rc::clone(keys))),
                _ => None,
            })
            .collect()
    }

    /// The shared sync status of a document.
    pub fn status(&self, doc: &DocId) -> SyncStatus {
        SyncStatus::load(&*self.store, &doc.source())
    }
}
