//! The control plane of one worker VM: the configuration in force, the fetched documents
//! ([`crate::sources`]) and the engine compiled from both. Host-independent: the host
//! hands it configuration text, ticks and fetch answers, and installs the engines it
//! returns.

use crate::config::{self, ConfigError, PluginConfig};
use crate::engine::{Documents, Engine};
use crate::shared::SharedData;
use crate::sources::{DocId, FetchRequest, Reply, Sources, SyncStatus, Update};
use std::rc::Rc;

/// What the host must do after a tick or a fetch answer.
#[derive(Debug, Default)]
pub struct Progress {
    /// What happened to documents (for logs and stats).
    pub updates: Vec<Update>,
    /// Fetches to start now.
    pub fetches: Vec<FetchRequest>,
    /// The engine, if documents changed.
    pub rebuilt: Rebuilt,
}

/// Whether new documents produced a new engine.
#[derive(Debug, Default)]
pub enum Rebuilt {
    /// Nothing changed that the engine depends on.
    #[default]
    No,
    /// Install this engine.
    Engine(Rc<Engine>),
    /// The documents were accepted but the engine could not be rebuilt; the previous
    /// engine stays in force.
    Failed(ConfigError),
}

/// Configuration, documents and engine of one worker VM.
#[derive(Debug)]
pub struct Worker {
    config: Option<Rc<PluginConfig>>,
    sources: Sources,
    engine: Option<Rc<Engine>>,
    /// Envoy's shared data: rate-limit and loop counters live there, shared by every VM.
    store: Rc<dyn SharedData>,
    /// This VM's writer id for those counters.
    writer: u64,
}

impl Worker {
    /// Nothing configured yet; `random` jitters this VM's fetch intervals.
    pub fn new(store: Rc<dyn SharedData>, random: u64) -> Worker {
        Worker {
            config: None,
            sources: Sources::new(Rc::clone(&store), random),
            engine: None,
            store,
            writer: random,
        }
    }

    /// Puts a configuration in force, or refuses it and keeps the previous one. A bundle
    /// in force survives if it still verifies under the new configuration and the
    /// engine builds with it; fetched keys survive for issuers that are still remote.
    pub fn configure(&mut self, text: &[u8]) -> Result<Rc<Engine>, ConfigError> {
        let cfg = config::parse(text)?;
        let mut sources = self.sources.reconfigured(&cfg);
        let engine = match build(&cfg, &sources, &self.store, self.writer) {
            Ok(e) => e,
            Err(_) if sources.bundle().is_some() => {
                sources.drop_bundle();
                build(&cfg, &sources, &self.store, self.writer)?
            }
            Err(e) => return Err(e),
        };
        let engine = Rc::new(engine);
        self.config = Some(Rc::new(cfg));
        self.sources = sources;
        self.engine = Some(Rc::clone(&engine));
        Ok(engine)
    }

    /// The engine in force.
    pub fn engine(&self) -> Option<&Rc<Engine>> {
        self.engine.as_ref()
    }

    /// The fetched documents.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// See [`Sources::want_jwks_refresh`].
    pub fn want_jwks_refresh(&mut self) {
        self.sources.want_jwks_refresh();
    }

    /// Adopts what other workers fetched and claims the fetches that are due.
    pub fn on_tick(&mut self, now_ms: u64) -> Progress {
        if self.config.is_none() {
            return Progress::default();
        }
        let tick = self.sources.on_tick(now_ms);
        let mut progress = self.rebuilt(tick.updates);
        progress.fetches = tick.fetches;
        progress
    }

    /// How much of an answer's body to copy out (see [`Sources::read_limit`]).
    pub fn read_limit(&self, doc: &DocId) -> usize {
        self.sources.read_limit(doc)
    }

    /// The answer to a fetch.
    pub fn on_response(&mut self, doc: &DocId, reply: Reply, now_ms: u64) -> Progress {
        let update = self.sources.on_response(doc, reply, now_ms);
        self.rebuilt(update.into_iter().collect())
    }

    /// A fetch the host could not start.
    pub fn on_not_started(&mut self, req: &FetchRequest, detail: String, now_ms: u64) -> Progress {
        let update = self.sources.on_not_started(req, detail, now_ms);
        self.rebuilt(update.into_iter().collect())
    }

    /// The bundle's shared sync status (meaningful when a bundle source is configured).
    pub fn bundle_status(&self) -> SyncStatus {
        self.sources.status(&DocId::Bundle)
    }

    /// `created_at` of the bundle in force, in seconds (for `bundleAge`).
    pub fn bundle_created(&self) -> Option<u64> {
        self.sources.bundle().and_then(|b| b.created_secs())
    }

    fn rebuilt(&mut self, updates: Vec<Update>) -> Progress {
        let mut progress = Progress {
            updates,
            ..Progress::default()
        };
        let Some(cfg) = self.config.clone() else {
            return progress;
        };
        if progress.updates.iter().any(Update::rebuild) {
            progress.rebuilt = match build(&cfg, &self.sources, &self.store, self.writer) {
                Ok(e) => {
                    let e = Rc::new(e);
                    self.engine = Some(Rc::clone(&e));
                    Rebuilt::Engine(e)
                }
                Err(e) => Rebuilt::Failed(e),
            };
        }
        progress
    }
}

fn build(
    cfg: &PluginConfig,
    sources: &Sources,
    store: &Rc<dyn SharedData>,
    writer: u64,
) -> Result<Engine, ConfigError> {
    let jwks = sources.jwks();
    Engine::build(
        cfg,
        Documents {
            bundle: sources.bundle().map(|b| &**b),
            jwks: Some(&jwks),
            grants: sources.grants().map(|g| g.doc()),
        },
    )
    .map(|e| e.with_shared_counters(Rc::clone(store), writer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::MemoryStore;
    use crate::sources::Change;
    use ct_codecs::{Base64, Encoder};
    use serde_json::json;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn signer() -> ed25519_compact::KeyPair {
        ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32]))
    }

    fn config(policy: &str) -> Vec<u8> {
        let jwk: serde_json::Value = serde_json::from_str(
            &jwt_simple::prelude::ES256KeyPair::generate()
                .with_key_id("k")
                .public_key()
                .to_jwk(),
        )
        .unwrap();
        json!({
            "identity": {"issuers": [{"issuer": "i", "audiences": ["a"], "jwks": {"keys": [jwk]}}]},
            "policy_yaml": policy,
            "bundle": {"cluster": "b", "path": "/b", "interval_seconds": 1,
                       "public_keys": [Base64::encode_to_string(signer().pk.as_ref()).unwrap()]},
        })
        .to_string()
        .into_bytes()
    }

    fn bundle(version: u64) -> Vec<u8> {
        let mut b = json!({"format": crate::sources::bundle::FORMAT, "version": version,
            "created_at": "2027-01-15T07:00:00Z", "policies": [{"name": "p", "rules": [{"action": "*", "effect": "deny"}]}]});
        crate::sources::bundle::sign(&mut b, &signer().sk, None).unwrap();
        serde_json::to_vec(&b).unwrap()
    }

    fn ok(body: &[u8]) -> Reply {
        Reply {
            headers: vec![(":status".into(), "200".into())],
            body_size: body.len(),
            body: Some(body.to_vec()),
        }
    }

    fn with_bundle() -> Worker {
        let mut c = Worker::new(Rc::new(MemoryStore::new()), 0);
        let inline = c.configure(&config("name: inline\nrules: []\n")).unwrap();
        assert_eq!(inline.bundle_version(), None);
        let p = c.on_tick(NOW_MS);
        assert_eq!(p.fetches.len(), 1);
        let p = c.on_response(&DocId::Bundle, ok(&bundle(4)), NOW_MS);
        assert!(matches!(
            p.updates[0].change,
            Change::NewBundle { version: 4, .. }
        ));
        let Rebuilt::Engine(e) = p.rebuilt else {
            panic!("{:?}", p.rebuilt)
        };
        assert_eq!((e.bundle_version(), e.policy_version()), (Some(4), "4"));
        assert_eq!(c.bundle_created(), Some(1_799_996_400));
        c
    }

    #[test]
    fn a_fetched_bundle_rebuilds_the_engine() {
        let c = with_bundle();
        assert_eq!(c.engine().unwrap().bundle_version(), Some(4));
    }

    #[test]
    fn updates_that_change_nothing_do_not_rebuild() {
        let mut c = with_bundle();
        let p = c.on_response(&DocId::Bundle, ok(&bundle(4)), NOW_MS + 1);
        assert!(matches!(p.rebuilt, Rebuilt::No));
        let p = c.on_response(&DocId::Bundle, ok(&bundle(3)), NOW_MS + 2);
        assert!(matches!(p.updates[0].change, Change::Rejected(_)));
        assert!(matches!(p.rebuilt, Rebuilt::No));
    }

    #[test]
    fn reconfiguration_keeps_the_bundle_and_a_refused_one_keeps_everything() {
        let mut c = with_bundle();
        let e = c.configure(&config("name: other\nrules: []\n")).unwrap();
        assert_eq!(e.bundle_version(), Some(4), "the bundle still verifies");
        let err = c
            .configure(br#"{"identity": {"issuers": []}}"#)
            .unwrap_err();
        assert_eq!(err.field(), "identity.issuers");
        assert_eq!(c.engine().unwrap().bundle_version(), Some(4));
        assert!(c.sources().bundle().is_some());
    }
}
