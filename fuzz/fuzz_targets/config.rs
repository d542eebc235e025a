//! Plugin configuration (JSON or YAML) through parsing and the whole engine build
//! (identity keys, routes, policies, conditions, controls), then one request through
//! whatever engine came out: a configuration that builds must also decide.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshguard::engine::body::Step;
use meshguard::Engine;
use meshguard_fuzz::{post, NOW_NANOS};

fuzz_target!(|data: &[u8]| {
    let parsed = meshguard::config::parse(data);
    let built = Engine::from_text(data);
    // Errors must render (they are logged by Envoy and shown by `meshguard lint`).
    if let Err(e) = &parsed {
        let _ = e.to_string();
    }
    match built {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(engine) => {
            // The engine compiles what the parser produced: it cannot accept a text the
            // parser refused.
            assert!(
                parsed.is_ok(),
                "Engine::from_text accepted what config::parse refused"
            );
            let mut cache = engine.verifier().new_cache();
            for path in ["/mcp", "/v1/email/inbox"] {
                let req = post(path);
                if let Step::ReadBody(p) = engine.start(&req, NOW_NANOS, &mut cache) {
                    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":{"amount":5}}}"#;
                    let _ = engine.handle_body(p, &req, Ok(body), NOW_NANOS, &mut cache);
                }
            }
        }
    }
});
