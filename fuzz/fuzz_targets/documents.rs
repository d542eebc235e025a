//! Signed documents the filter fetches: policy bundles, grants documents, JWKS. The
//! first byte picks the mode; modes 2 and 3 sign the fuzzer's JSON with the fixed key
//! first, so the parts behind the signature check (policy compilation, grant compilation,
//! canonical form) see arbitrary documents.
#![no_main]
// A target reports a finding by panicking: that is its whole job.
#![allow(clippy::panic)]

use libfuzzer_sys::fuzz_target;
use meshguard::controls::grants::{sign_grants_document, verify_grants_document};
use meshguard::identity::RemoteKeys;
use meshguard::sources::bundle::{self, BundleKeys};
use meshguard_fuzz::{document_key, document_public_keys};

const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, doc)) = data.split_first() else {
        return;
    };
    let Ok(keys) = BundleKeys::parse(&document_public_keys()) else {
        return;
    };
    match mode % 5 {
        0 => {
            let _ = bundle::accept(doc, &keys, MAX, None).map_err(|e| e.to_string());
        }
        1 => {
            let _ = verify_grants_document(doc, &keys, MAX, Some(1)).map_err(|e| e.to_string());
        }
        2 => {
            let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(doc) else {
                return;
            };
            if bundle::sign(&mut json, &document_key().sk, Some("k")).is_err() {
                return;
            }
            let signed = json.to_string();
            match bundle::verify(signed.as_bytes(), &keys, MAX) {
                // A document signed with a configured key verifies (or is refused for its
                // shape, never for its signature).
                Err(bundle::BundleError::BadSignature) => {
                    panic!("a freshly signed bundle fails its signature: {signed}")
                }
                _ => {
                    let _ = bundle::accept(signed.as_bytes(), &keys, MAX, None);
                }
            }
        }
        3 => {
            let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(doc) else {
                return;
            };
            if sign_grants_document(&mut json, &document_key().sk, None).is_err() {
                return;
            }
            let signed = json.to_string();
            if let Err(meshguard::controls::grants::GrantsError::BadSignature) =
                verify_grants_document(signed.as_bytes(), &keys, MAX, None)
            {
                panic!("a freshly signed grants document fails its signature: {signed}");
            }
        }
        _ => {
            if let Ok(k) = RemoteKeys::parse(doc) {
                let _ = (k.kids(), k.skipped());
                // A refresh is recognised as unchanged by this digest alone (sources/jwks.rs).
                let again = RemoteKeys::read(doc).map(|(_, d)| d);
                assert_eq!(again.as_deref(), Ok(k.digest()));
            }
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(doc) {
                let _ = BundleKeys::parse(std::slice::from_ref(&v));
            }
        }
    }
});
