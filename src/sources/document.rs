//! The lifecycle of one fetched document in one worker VM, whatever its kind.
//!
//! ```text
//!             fetched / adopted (accepted)
//!   Missing ─────────────────────────────────> Current(doc)
//!      │  ▲                                      │     ▲
//!      │  └─ reconfigured: no longer verifies ───┘     │ newer document accepted
//!      └─ failed / rejected: stays Missing             └─ 304, same, failed, rejected: stays
//! ```
//!
//! What differs between kinds (bundle, JWKS, ...) is only how bytes become a document
//! ([`Kind::accept`]); scheduling, cross-worker coordination and the shared sync status
//! are the same for all and live in [`Tracker`].

use super::fetch::{classify, DocId, Failure, FetchRequest, Fetched, Reply};
use super::sync::{self, SyncStatus};
use crate::shared::SharedData;
use std::rc::Rc;

/// How bytes become a document of one kind.
pub trait Kind {
    /// The accepted, parsed document.
    type Doc;

    /// Checks and parses a document (fetched, or published by another worker) against
    /// the one in force: verification, rollback refusal, compilation. `Same` when it
    /// brings nothing new.
    fn accept(
        &self,
        bytes: &[u8],
        current: Option<&Self::Doc>,
    ) -> Result<Accepted<Self::Doc>, String>;

    /// Whether a document accepted under an earlier configuration is still acceptable
    /// under this one (e.g. still signed by a configured key).
    fn still_valid(&self, _doc: &Self::Doc) -> bool {
        true
    }

    /// The update that reports `doc` going into force.
    fn installed(doc: &Self::Doc, adopted: bool) -> Change;
}

/// The verdict of [`Kind::accept`].
#[derive(Debug)]
pub enum Accepted<D> {
    /// A new document, to put in force.
    New(D),
    /// The same as the document in force.
    Same,
}

/// The state of a document in this worker.
#[derive(Debug)]
pub enum State<D> {
    /// None accepted yet: the engine runs without it.
    Missing,
    /// This one is in force.
    Current(Rc<D>),
}

impl<D> State<D> {
    /// The document in force.
    pub fn current(&self) -> Option<&Rc<D>> {
        match self {
            State::Missing => None,
            State::Current(d) => Some(d),
        }
    }
}

/// Where a document comes from and how often it is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSpec {
    /// Envoy cluster.
    pub cluster: String,
    /// Request path.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// Call timeout.
    pub timeout_ms: u64,
    /// Between scheduled fetches while a document is held (jittered ±10%).
    pub refresh_ms: u64,
    /// Between fetches while none is held (jittered ±10%).
    pub retry_ms: u64,
    /// Largest body accepted.
    pub max_bytes: usize,
    /// Whether `If-None-Match` is sent with the held document's ETag.
    pub conditional: bool,
    /// Whether a fetch may be forced early ([`super::Sources::want_jwks_refresh`]).
    pub forcible: bool,
}

/// What happened to a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Which document.
    pub doc: DocId,
    /// What happened.
    pub change: Change,
}

impl Update {
    /// Whether the engine must be rebuilt with the documents now in force.
    pub fn rebuild(&self) -> bool {
        matches!(
            self.change,
            Change::NewBundle { .. } | Change::NewKeys { .. } | Change::NewGrants { .. }
        )
    }
}

/// What happened to a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new grants document is in force.
    NewGrants {
        /// Its version.
        version: u64,
        /// Published by another worker (not fetched here).
        adopted: bool,
    },
    /// A new bundle is in force.
    NewBundle {
        /// Its version.
        version: u64,
        /// Published by another worker (not fetched here).
        adopted: bool,
    },
    /// New keys of an issuer are in force.
    NewKeys {
        /// Published by another worker (not fetched here).
        adopted: bool,
        /// Keys of the document that were skipped, and why.
        skipped: Vec<String>,
    },
    /// The source confirmed the document in force (304, or the same document again).
    NotModified,
    /// A document arrived and was refused; the last good one stays.
    Rejected(String),
    /// No usable answer; the last good document stays.
    Failed(Failure),
    /// A document another worker published was not taken (e.g. older than ours).
    NotAdopted(String),
}

/// One document's state machine.
#[derive(Debug)]
pub struct Tracker<K: Kind> {
    pub(super) id: DocId,
    pub(super) kind: K,
    pub(super) spec: FetchSpec,
    pub(super) state: State<K::Doc>,
    /// Revision of the shared document last looked at (adopted or refused).
    pub(super) seen_rev: u64,
}

impl<K: Kind> Tracker<K> {
    /// A tracker with nothing in force.
    pub fn new(id: DocId, kind: K, spec: FetchSpec) -> Tracker<K> {
        Tracker {
            id,
            kind,
            spec,
            state: State::Missing,
            seen_rev: 0,
        }
    }

    /// This tracker under a new configuration (`kind`, `spec`), keeping what `old` holds
    /// if it is still acceptable.
    pub fn carried(mut self, old: Option<&Tracker<K>>) -> Tracker<K> {
        if let Some(old) = old {
            self.seen_rev = old.seen_rev;
            if let Some(doc) = old.state.current().filter(|d| self.kind.still_valid(d)) {
                self.state = State::Current(Rc::clone(doc));
            }
        }
        self
    }

    fn update(&self, change: Change) -> Update {
        Update {
            doc: self.id.clone(),
            change,
        }
    }

    /// Takes a document another worker published, if there is a new one.
    pub fn adopt(&mut self, store: &dyn SharedData) -> Option<Update> {
        let source = self.id.source();
        let rev = sync::revision(store, &source);
        if rev == self.seen_rev {
            return None;
        }
        self.seen_rev = rev;
        let bytes = sync::document(store, &source)?;
        match self.kind.accept(&bytes, self.state.current().map(|d| &**d)) {
            Ok(Accepted::New(doc)) => {
                let change = K::installed(&doc, true);
                self.state = State::Current(Rc::new(doc));
                Some(self.update(change))
            }
            Ok(Accepted::Same) => None,
            Err(reason) => Some(self.update(Change::NotAdopted(reason))),
        }
    }

    /// The fetch to start now, if one is due and this worker won the claim.
    pub fn claim(
        &self,
        store: &dyn SharedData,
        now_ms: u64,
        random: u64,
        forced: bool,
    ) -> Option<FetchRequest> {
        let source = self.id.source();
        let held = self.state.current().is_some();
        let every = if held {
            self.spec.refresh_ms
        } else {
            self.spec.retry_ms
        };
        let interval = sync::jittered(every, random);
        if !sync::claim_fetch(
            store,
            &source,
            now_ms,
            interval,
            forced && self.spec.forcible,
        ) {
            return None;
        }
        let etag = if self.spec.conditional && held {
            SyncStatus::load(store, &source).etag
        } else {
            None
        };
        Some(FetchRequest {
            doc: self.id.clone(),
            cluster: self.spec.cluster.clone(),
            path: self.spec.path.clone(),
            authority: self.spec.authority.clone(),
            etag,
            timeout_ms: self.spec.timeout_ms,
        })
    }

    /// Handles the answer to this worker's fetch.
    pub fn on_reply(&mut self, store: &dyn SharedData, reply: Reply, now_ms: u64) -> Update {
        match classify(reply, self.spec.max_bytes) {
            Fetched::NotModified => self.succeeded(store, now_ms, None, Change::NotModified),
            Fetched::Failed(f) => self.failed(store, now_ms, f),
            Fetched::TooLarge { size, max } => self.rejected(
                store,
                now_ms,
                format!("{size} bytes is over the {max}-byte cap"),
            ),
            Fetched::Body { body, etag } => self.on_body(store, now_ms, &body, etag),
        }
    }

    fn on_body(
        &mut self,
        store: &dyn SharedData,
        now_ms: u64,
        body: &[u8],
        etag: Option<String>,
    ) -> Update {
        match self.kind.accept(body, self.state.current().map(|d| &**d)) {
            Ok(Accepted::New(doc)) => {
                let change = K::installed(&doc, false);
                self.state = State::Current(Rc::new(doc));
                // We hold it already: do not adopt our own write.
                self.seen_rev = sync::publish(store, &self.id.source(), body);
                self.succeeded(store, now_ms, etag, change)
            }
            Ok(Accepted::Same) => self.succeeded(store, now_ms, etag, Change::NotModified),
            Err(reason) => self.rejected(store, now_ms, reason),
        }
    }

    /// Handles a fetch the host could not start.
    pub fn on_not_started(
        &mut self,
        store: &dyn SharedData,
        now_ms: u64,
        failure: Failure,
    ) -> Update {
        self.failed(store, now_ms, failure)
    }

    fn succeeded(
        &self,
        store: &dyn SharedData,
        now_ms: u64,
        etag: Option<String>,
        change: Change,
    ) -> Update {
        let source = self.id.source();
        let mut st = SyncStatus::load(store, &source);
        st.succeeded(now_ms, etag, change != Change::NotModified);
        st.store(store, &source);
        self.update(change)
    }

    fn failed(&self, store: &dyn SharedData, now_ms: u64, failure: Failure) -> Update {
        let source = self.id.source();
        let mut st = SyncStatus::load(store, &source);
        st.failed(now_ms, failure.reachable(), failure.reason());
        st.store(store, &source);
        self.update(Change::Failed(failure))
    }

    fn rejected(&self, store: &dyn SharedData, now_ms: u64, reason: String) -> Update {
        let source = self.id.source();
        let mut st = SyncStatus::load(store, &source);
        st.rejected(now_ms, reason.clone());
        st.store(store, &source);
        self.update(Change::Rejected(reason))
    }
}
