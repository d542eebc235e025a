//! Publishing the grants document: the approvals in force, signed with `--grants-key`
//! (format in cli/COLLECTOR.md "Grants document").
//!
//! The document is made lazily, when it is asked for: the grants in force are compared
//! with the ones of the last document (stored in the database), and only a difference
//! (an approval, a denial, a TTL running out) or a different key makes a new one. The
//! version is `max(last + 1, now in Unix seconds)`, so it grows on every change, survives
//! restarts, and even a fresh database does not go below what filters have already seen.

use super::approvals::GrantsState;
use super::store::{Store, StoreError};
use crate::grants::{self, GrantsError, SigningKey};
use meshguard::sources::bundle::canonical_json;
use std::fmt;

/// Why no document could be made.
#[derive(Debug)]
pub enum PublishError {
    /// The database failed.
    Store(StoreError),
    /// Signing failed.
    Sign(GrantsError),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Store(e) => e.fmt(f),
            PublishError::Sign(e) => write!(f, "cannot sign the grants document: {e}"),
        }
    }
}

impl std::error::Error for PublishError {}

impl From<StoreError> for PublishError {
    fn from(e: StoreError) -> Self {
        PublishError::Store(e)
    }
}

/// The current document, made anew (and stored) when the grants in force changed.
pub fn current(
    store: &mut Store,
    key: &SigningKey,
    now_unix_nano: i64,
) -> Result<GrantsState, PublishError> {
    let active = store.active_grants(now_unix_nano)?;
    let value = serde_json::to_value(&active)
        .map_err(|e| PublishError::Sign(GrantsError::Malformed(e.to_string())))?;
    let canonical = canonical_json(&value)
        .map_err(|e| PublishError::Sign(GrantsError::Malformed(e.to_string())))?;
    let digest = meshguard::audit::chain_hash(canonical.as_bytes());
    let signer = key.public_base64();
    let previous = store.grants_state()?;
    if let Some(p) = &previous {
        if p.grants_sha256 == digest && p.signer == signer {
            return Ok(p.clone());
        }
    }
    let now_secs = u64::try_from(now_unix_nano / 1_000_000_000).unwrap_or(0);
    let version = previous
        .as_ref()
        .map_or(1, |p| p.version.saturating_add(1))
        .max(now_secs);
    let state = GrantsState {
        version,
        grants_sha256: digest,
        signer,
        document: grants::build(version, now_secs, &active, key).map_err(PublishError::Sign)?,
    };
    if store.save_grants_state(&state)? {
        Ok(state)
    } else {
        // Someone stored a newer document in between: serve that one.
        Ok(store.grants_state()?.unwrap_or(state))
    }
}

#[cfg(test)]
mod tests {
    use super::super::approvals::Decision;
    use super::*;
    use crate::collector::event::{decode, testing::*};
    use serde_json::json;

    const S: i64 = 1_000_000_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey {
            secret: ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32])).sk,
            kid: None,
        }
    }

    fn temp(tag: &str) -> std::path::PathBuf {
        let p =
            std::env::temp_dir().join(format!("meshguard-publish-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn approval_request(
        c: &mut Chain,
        id: &str,
    ) -> opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
        let mut r = c.event("agent-a", "delete:db", "require_approval");
        set_attr(&mut r, "meshguard.approval_id", json!(id));
        request("node-1", vec![r])
    }

    #[test]
    fn versions_grow_on_every_change_and_never_go_back() {
        let dir = temp("versions");
        let db = dir.join("audit.db");
        let k = key(1);
        let pk = [k.secret.public_key()];
        let now = 1_800_000_000 * S;
        let mut s = Store::open_for_writing(&db).unwrap();
        let empty = current(&mut s, &k, now).unwrap();
        assert_eq!(empty.version, 1_800_000_000, "starts at the Unix time");
        assert!(grants::verify(&empty.document, &pk)
            .unwrap()
            .grants
            .is_empty());
        assert_eq!(current(&mut s, &k, now + S).unwrap(), empty, "unchanged");

        let mut c = Chain::new("s1");
        s.insert_batch(&decode(&approval_request(&mut c, "apr_1")), now)
            .unwrap();
        assert_eq!(
            current(&mut s, &k, now + S).unwrap(),
            empty,
            "pending is no grant"
        );
        let approve = Decision::Approve {
            ttl_seconds: 60,
            by: "alice".into(),
            reason: "ticket 7".into(),
        };
        s.decide_approval("apr_1", &approve, now + S)
            .unwrap()
            .unwrap();
        let granted = current(&mut s, &k, now + 2 * S).unwrap();
        assert!(granted.version > empty.version);
        let doc = grants::verify(&granted.document, &pk).unwrap();
        assert_eq!(doc.grants.len(), 1);
        assert_eq!(doc.grants[0].id, "apr_1");
        assert_eq!(doc.grants[0].approved_by, "alice");
        assert_eq!(doc.grants[0].resource, None, "the event had no resource");

        // The TTL runs out: the grant leaves, the version grows.
        let expired = current(&mut s, &k, now + 62 * S).unwrap();
        assert!(expired.version > granted.version);
        assert!(grants::verify(&expired.document, &pk)
            .unwrap()
            .grants
            .is_empty());
        drop(s);

        // Reopened (a restart): same document; a new key re-signs with a higher version.
        let mut s = Store::open_for_writing(&db).unwrap();
        assert_eq!(current(&mut s, &k, now + 63 * S).unwrap(), expired);
        let other = key(2);
        let resigned = current(&mut s, &other, now + 64 * S).unwrap();
        assert!(resigned.version > expired.version);
        assert!(grants::verify(&resigned.document, &[other.secret.public_key()]).is_ok());
        // A lower version is never stored.
        let mut stale = resigned.clone();
        stale.version = 5;
        assert!(!s.save_grants_state(&stale).unwrap());
        assert_eq!(s.grants_state().unwrap().unwrap().version, resigned.version);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
