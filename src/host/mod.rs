//! The host layer: moves bytes between Envoy and the engine side, decides nothing.
//!
//! The logic is written against [`Host`], a small trait over what proxy-wasm offers
//! (headers, bodies, local responses, callouts, stats, shared data, time). On wasm32 it
//! is bound to proxy-wasm (`envoy.rs`, `shared.rs`); `cargo test` drives the same logic
//! through an in-memory fake (`fake.rs`, `tests.rs`).
//!
//! * `root.rs`: the root context of a worker VM: configure, tick, install engines.
//! * `http.rs`: one HTTP stream: request headers, request body (JSON-RPC), response
//!   headers and body (rewritten responses).
//! * `decider.rs`: the engine as a stream drives it (a seam for the tests).
//! * `status.rs`: the local status endpoint.
//! * `callouts.rs`: HTTP fetches and audit exports in flight, by call token.
//! * `metrics.rs`: Envoy stats.
//! * `pairs.rs`: proxy-wasm's serialised header map, read in place.
//!
//! Configuration, fetched documents and engines are [`crate::control::Control`]'s;
//! decisions are the engine's; this layer only carries them out.

mod callouts;
mod decider;
mod http;
mod metrics;
mod root;
mod status;

#[cfg(target_arch = "wasm32")]
mod envoy;
#[cfg(any(target_arch = "wasm32", test))]
mod pairs;
#[cfg(target_arch = "wasm32")]
mod shared;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use crate::shared::SharedData;
use std::rc::Rc;
use std::time::Duration;

/// What a callback tells Envoy to do with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Go on to the next filter.
    Continue,
    /// Hold the stream: on headers, wait for the body (or a local response was sent);
    /// on a body, keep buffering it.
    Pause,
}

/// A stat's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricKind {
    /// Only grows.
    Counter,
    /// Set to a value.
    Gauge,
}

/// What the host logic needs from Envoy. Stream calls act on the stream whose callback
/// is running, root calls on the root context (proxy-wasm's effective context).
/// Implementations never panic: a host error reads as "absent" or "not done".
pub(crate) trait Host {
    /// Wall clock, nanoseconds since the epoch.
    fn now_nanos(&self) -> u64;
    /// A random value (stream ids, fetch jitter).
    fn random(&self) -> u64;
    /// A property (`["xds", "node", "id"]`).
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Envoy's shared data, for every worker VM of this Envoy.
    fn shared(&self) -> Rc<dyn SharedData>;

    /// The plugin configuration text.
    fn plugin_configuration(&self) -> Vec<u8>;
    /// How often `on_tick` runs.
    fn set_tick_period(&self, period: Duration);
    /// Defines a stat; `None` when the host refuses it.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32>;
    /// Adds to a counter.
    fn increment_metric(&self, id: u32, by: i64);
    /// Sets a gauge.
    fn record_metric(&self, id: u32, value: u64);

    /// Starts an HTTP call; the token, or what the host said.
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: Vec<(&str, &str)>,
        timeout: Duration,
    ) -> Result<u32, String>;
    /// The headers of the HTTP call answer being delivered.
    fn http_call_response_headers(&self) -> Vec<(String, String)>;
    /// Up to `max` bytes of its body.
    fn http_call_response_body(&self, max: usize) -> Option<Vec<u8>>;
    /// Starts a unary gRPC call; the token, or what the host said.
    fn dispatch_grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout: Duration,
    ) -> Result<u32, String>;
    /// The status message of the gRPC call answer being delivered.
    fn grpc_status_message(&self) -> Option<String>;

    /// Calls `each` with every request header in order (pseudo-headers included; lossy
    /// UTF-8), borrowed from one read of the header map: the caller copies what it keeps.
    fn request_headers(&self, each: &mut dyn FnMut(&str, &str));
    /// Sets (`Some`) or removes (`None`) a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    /// The first `size` bytes of the buffered request body.
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces the first `size` bytes of the buffered request body.
    fn set_request_body(&self, size: usize, body: &[u8]);
    /// A response header.
    fn response_header(&self, name: &str) -> Option<String>;
    /// Sets (`Some`) or removes (`None`) a response header.
    fn set_response_header(&self, name: &str, value: Option<&str>);
    /// The first `size` bytes of the buffered response body.
    fn response_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces the first `size` bytes of the buffered response body.
    fn set_response_body(&self, size: usize, body: &[u8]);
    /// Answers the stream locally.
    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]);
}

/// Milliseconds since the epoch.
fn now_ms(host: &dyn Host) -> u64 {
    host.now_nanos() / 1_000_000
}
