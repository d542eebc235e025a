//! An issuer's remote JWKS as a fetched document: parsed once into keys
//! ([`RemoteKeys`]); a document without a single usable signing key is refused so the
//! last good keys stay in force.

use super::document::{Accepted, Change, Kind};
use crate::identity::RemoteKeys;

/// Until an issuer's keys arrive, they are retried this often (no jitter budget is spent:
/// unknown-`kid` refetches keep theirs).
pub const MISSING_KEYS_RETRY_MS: u64 = 5_000;

/// Largest JWKS accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// The JWKS as a fetched document.
#[derive(Debug, Default)]
pub struct JwksKind;

impl Kind for JwksKind {
    type Doc = RemoteKeys;

    fn accept(
        &self,
        bytes: &[u8],
        current: Option<&RemoteKeys>,
    ) -> Result<Accepted<RemoteKeys>, String> {
        let keys = RemoteKeys::parse(bytes)?;
        Ok(match current {
            Some(c) if c.same_document(&keys) => Accepted::Same,
            _ => Accepted::New(keys),
        })
    }

    fn installed(doc: &RemoteKeys, adopted: bool) -> Change {
        Change::NewKeys {
            adopted,
            skipped: doc.skipped().to_vec(),
        }
    }
}
