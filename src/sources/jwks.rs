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
        // Compared before the keys are parsed: parsing an ES256 key builds its tables.
        let (doc, digest) = RemoteKeys::read(bytes)?;
        if current.is_some_and(|c| c.digest() == digest) {
            return Ok(Accepted::Same);
        }
        Ok(Accepted::New(RemoteKeys::from_document(&doc, digest)?))
    }

    fn installed(doc: &RemoteKeys, adopted: bool) -> Change {
        Change::NewKeys {
            adopted,
            skipped: doc.skipped().to_vec(),
        }
    }
}
