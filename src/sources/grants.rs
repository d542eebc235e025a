//! The signed grants document (`grants.cluster` + `grants.path`) as a fetched document:
//! the approval service publishes it, every filter polls it. Format and verification
//! live with the grants ([`crate::controls::grants`]); this is only its lifecycle.

use super::document::{Accepted, Change, Kind};
use crate::controls::grants::{verify_grants_document, GrantsDoc};
use crate::controls::GrantsSource;
use crate::sources::bundle::BundleKeys;

/// A grants document that verified and is not older than the one it replaced.
#[derive(Debug)]
pub struct VerifiedGrants {
    doc: GrantsDoc,
    /// As signed and transported: re-verified when the configuration changes.
    bytes: Vec<u8>,
}

impl VerifiedGrants {
    /// The document.
    pub fn doc(&self) -> &GrantsDoc {
        &self.doc
    }
}

/// The grants document as a fetched document: verification with the configured keys.
#[derive(Debug)]
pub struct GrantsKind {
    keys: BundleKeys,
    max_bytes: usize,
}

impl GrantsKind {
    /// From the compiled `grants:` source.
    pub fn from_source(src: &GrantsSource) -> GrantsKind {
        GrantsKind {
            keys: src.keys.clone(),
            max_bytes: src.config.max_bytes,
        }
    }
}

impl Kind for GrantsKind {
    type Doc = VerifiedGrants;

    fn accept(
        &self,
        bytes: &[u8],
        current: Option<&VerifiedGrants>,
    ) -> Result<Accepted<VerifiedGrants>, String> {
        let doc = verify_grants_document(bytes, &self.keys, self.max_bytes, None)
            .map_err(|e| e.to_string())?;
        match current.map(|c| c.doc.version) {
            Some(v) if v == doc.version => Ok(Accepted::Same),
            // A lower version is a rollback: it could revive grants an operator withdrew.
            Some(v) if v > doc.version => Err(format!(
                "grants document version {} is older than version {v} in force (rollback refused)",
                doc.version
            )),
            _ => Ok(Accepted::New(VerifiedGrants {
                doc,
                bytes: bytes.to_vec(),
            })),
        }
    }

    fn still_valid(&self, doc: &VerifiedGrants) -> bool {
        verify_grants_document(&doc.bytes, &self.keys, self.max_bytes, None).is_ok()
    }

    fn installed(doc: &VerifiedGrants, adopted: bool) -> Change {
        Change::NewGrants {
            version: doc.doc.version,
            adopted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controls::grants::{sign_grants_document, FORMAT};
    use ct_codecs::{Base64, Encoder};
    use serde_json::{json, Value};

    fn kp(seed: u8) -> ed25519_compact::KeyPair {
        ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]))
    }

    fn kind(k: &ed25519_compact::KeyPair) -> GrantsKind {
        GrantsKind {
            keys: BundleKeys::parse(&[Value::String(
                Base64::encode_to_string(k.pk.as_ref()).unwrap(),
            )])
            .unwrap(),
            max_bytes: 64 * 1024,
        }
    }

    fn doc(version: u64, k: &ed25519_compact::KeyPair) -> Vec<u8> {
        let mut d = json!({
            "format": FORMAT, "version": version, "created_at": "2026-11-29T10:00:00Z",
            "grants": [{"id": "apr_1", "agent": "agent-a", "action": "write:refund",
                        "expires_at": "2027-01-15T09:00:00Z", "approved_by": "alice"}]
        });
        sign_grants_document(&mut d, &k.sk, None).unwrap();
        serde_json::to_vec(&d).unwrap()
    }

    fn new(a: Accepted<VerifiedGrants>) -> VerifiedGrants {
        match a {
            Accepted::New(g) => g,
            Accepted::Same => panic!("expected a new document"),
        }
    }

    #[test]
    fn newer_documents_replace_same_is_nothing_new_older_is_a_rollback() {
        let k = kp(7);
        let kind = kind(&k);
        let v2 = new(kind.accept(&doc(2, &k), None).unwrap());
        assert_eq!(v2.doc().version, 2);
        assert!(matches!(
            kind.accept(&doc(2, &k), Some(&v2)),
            Ok(Accepted::Same)
        ));
        let e = kind.accept(&doc(1, &k), Some(&v2)).err().unwrap();
        assert!(e.contains("rollback"), "{e}");
        let v3 = new(kind.accept(&doc(3, &k), Some(&v2)).unwrap());
        assert!(matches!(
            GrantsKind::installed(&v3, true),
            Change::NewGrants {
                version: 3,
                adopted: true
            }
        ));
    }

    #[test]
    fn tampered_or_foreign_documents_are_refused_and_keys_are_rechecked() {
        let k = kp(7);
        let kind = kind(&k);
        let mut bytes = doc(2, &k);
        let at = bytes.windows(5).position(|w| w == b"alice").unwrap();
        bytes[at] = b'A';
        assert!(kind.accept(&bytes, None).is_err(), "tampered");
        assert!(kind.accept(&doc(2, &kp(8)), None).is_err(), "wrong key");
        assert!(kind.accept(b"<html>", None).is_err(), "not JSON");
        let v2 = new(kind.accept(&doc(2, &k), None).unwrap());
        assert!(kind.still_valid(&v2));
        assert!(!self::kind(&kp(9)).still_valid(&v2), "key rotated away");
    }
}
