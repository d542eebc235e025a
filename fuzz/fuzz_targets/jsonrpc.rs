//! MCP / A2A JSON-RPC bodies and SSE responses through the engine's body phase, the way
//! the filter runs them: `Engine::start` → `Engine::handle_body` → (when the outcome asks
//! for it) `Engine::rewrite_response`. Input: a selector byte (endpoint, response type,
//! oversized response), the request body, a NUL byte, the upstream response body. The
//! JSON-RPC and SSE parsers also run directly on the same bytes.
#![no_main]
// A target reports a finding by panicking: that is its whole job.
#![allow(clippy::panic)]

use libfuzzer_sys::fuzz_target;
use meshguard::actions::{jsonrpc, sse};
use meshguard::engine::body::{Step, TooLarge};
use meshguard::Engine;
use meshguard_fuzz::{engine, post, split_nul, NOW_NANOS};

thread_local! {
    // A broken fixture panics on the first input.
    static ENGINE: Engine = engine().unwrap_or_else(|e| panic!("fixture engine: {e}"));
}

const PATHS: [&str; 4] = ["/mcp", "/a2a", "/enforce", "/enforce/batch"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (request_body, response_body) = split_nul(rest);
    let _ = jsonrpc::parse(request_body);
    let _ = jsonrpc::check_depth(request_body, jsonrpc::MAX_DEPTH);
    if let Ok(text) = std::str::from_utf8(response_body) {
        // The events are the stream cut in pieces: nothing dropped, nothing added (the
        // response rewrite writes untouched events back from `raw`).
        let joined: String = sse::parse(text).iter().map(|ev| ev.raw).collect();
        assert_eq!(joined, text, "SSE events do not add up to the stream");
        // `tools/list` filtering reads a tool's name with a scan of the validated text:
        // it must read what serde reads.
        if text.trim_start().starts_with('{')
            && jsonrpc::check_depth(response_body, jsonrpc::MAX_DEPTH).is_ok()
            && serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok()
        {
            #[derive(serde::Deserialize)]
            struct Named {
                #[serde(default)]
                name: Option<String>,
            }
            let by_serde = serde_json::from_str::<Named>(text).ok().and_then(|n| n.name);
            let by_scan = jsonrpc::sole_member(text, "name")
                .and_then(jsonrpc::raw_str)
                .map(|n| n.into_owned());
            assert_eq!(by_scan, by_serde, "tool name read differently: {text}");
        }
    }
    ENGINE.with(|engine| {
        let path = PATHS
            .get(usize::from(selector & 3))
            .copied()
            .unwrap_or("/mcp");
        let req = post(path);
        let mut cache = engine.verifier().new_cache();
        let outcome = match engine.start(&req, NOW_NANOS, &mut cache) {
            Step::ReadBody(p) => {
                let body = if selector & 0x10 != 0 && request_body.len() > 64 {
                    Err(TooLarge)
                } else {
                    Ok(request_body)
                };
                engine.handle_body(p, &req, body, NOW_NANOS, &mut cache)
            }
            // The fixture request is well-formed and authenticated: every endpoint above
            // must ask for its body.
            Step::Decided(o) => panic!("{path} decided on headers alone: {:?}", o.event.reason),
        };
        let _ = outcome.event.attributes();
        if let Some(plan) = &outcome.response {
            let content_type = if selector & 4 != 0 {
                "text/event-stream"
            } else {
                "application/json; charset=utf-8"
            };
            let _ = plan.max_body_bytes(200, Some(content_type));
            let body = if selector & 8 != 0 {
                Err(TooLarge)
            } else {
                Ok(response_body)
            };
            if let Some(out) = engine.rewrite_response(plan, Some(content_type), body) {
                // What replaces an upstream answer is text a client can read.
                assert!(
                    std::str::from_utf8(&out).is_ok(),
                    "rewritten response is not UTF-8"
                );
            }
        }
    });
});
