//! Token parsing and verification against a fixed JWKS. The first byte picks the mode:
//! a raw token (or `Authorization` value) as the caller sends it; fuzzer bytes as the
//! claims of a correctly signed token (so the claims mapping, expiry, audience, tier and
//! delegation chain see arbitrary JSON); or fuzzer bytes as both header and claims.
#![no_main]
// A target reports a finding by panicking: that is its whole job.
#![allow(clippy::panic)]

use libfuzzer_sys::fuzz_target;
use meshguard::Engine;
use meshguard_fuzz::{engine, sign_token, split_nul, ISSUER, NOW, TOKEN_HEADER};

thread_local! {
    // A broken fixture panics on the first input.
    static ENGINE: Engine = engine().unwrap_or_else(|e| panic!("fixture engine: {e}"));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    ENGINE.with(|engine| {
        let verifier = engine.verifier();
        let token = match mode % 3 {
            0 => {
                let text = String::from_utf8_lossy(rest);
                if let Ok(t) = verifier.token_from_header(Some(&text)) {
                    let _ = verifier.verify(t, NOW);
                }
                text.into_owned()
            }
            1 => sign_token(TOKEN_HEADER, rest),
            _ => {
                let (header, payload) = split_nul(rest);
                sign_token(header, payload)
            }
        };
        match verifier.verify(&token, NOW) {
            Ok(identity) => {
                // A verified identity names an agent of the one configured issuer, and
                // its effective tier is never above any hop of its delegation chain.
                assert!(
                    !identity.agent_id.is_empty(),
                    "verified token with an empty agent id"
                );
                assert_eq!(identity.issuer, ISSUER);
                assert!(
                    identity.chain.iter().all(|hop| identity.tier <= hop.tier),
                    "effective tier {:?} above a hop of {:?}",
                    identity.tier,
                    identity.chain
                );
            }
            Err(e) => {
                let _ = (e.code(), e.to_string());
            }
        }
    });
});
