//! The local status endpoint (`status.path`): answered from the engine in force and the
//! bundle's shared sync status (see [`crate::health`]).

use super::root::Vm;
use super::{now_ms, Host};
use crate::engine::request::Request;
use crate::engine::Engine;
use crate::health;
use crate::sources;
use std::cell::RefCell;

/// The local port of the downstream connection (an int64, little-endian).
fn local_port(host: &dyn Host) -> Option<u16> {
    host.property(&["destination", "port"])
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(i64::from_le_bytes)
        .and_then(|p| u16::try_from(p).ok())
}

/// Answers the request if it is for the status endpoint; true when it was.
pub(crate) fn answer(host: &dyn Host, vm: &RefCell<Vm>, engine: &Engine, req: &Request) -> bool {
    let Some(st) = engine.status_config() else {
        return false;
    };
    // The port is a host call: asked only for a request on the status path.
    if req.path_only() != st.path {
        return false;
    }
    let port = if st.ports.is_empty() {
        None
    } else {
        local_port(host)
    };
    if !health::is_status_request(st, req, port) {
        return false;
    }
    let sync = sources::bundle_status(&*host.shared());
    let (created, started) = {
        let vm = vm.borrow();
        (vm.bundle_created, vm.started_secs)
    };
    let report = health::report(engine, &sync, created, now_ms(host) / 1000, started);
    let body = serde_json::to_vec(&report).unwrap_or_default();
    host.send_response(
        health::http_status(&report),
        &[
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ],
        &body,
    );
    true
}
